import subprocess
import sys


def test_demo_trains_and_writes_its_outputs(tmp_path):
    """The README's first command, shrunk: synthetic data, a few seconds of training, the animation files."""
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "demo", "--out", str(tmp_path), "--identities", "2", "--frames", "8",
         "--minutes", "0.1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("osfv_tiny.ckpt", "samples.png", "animation.mp4", "data_contact_sheet.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert str((tmp_path / "animation.mp4").resolve()) in result.stdout

    from talkinghead.datamodules.shard_format import decode_frames

    frames = decode_frames((tmp_path / "animation.mp4").read_bytes(), "mp4")
    # 8 driving frames side by side, then the 48-frame yaw sweep; 3 panels of 64 px, upscaled 2x.
    assert frames.shape == (8 + 48, 128, 3 * 128, 3)
