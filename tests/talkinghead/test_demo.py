import subprocess
import sys


def test_demo_shows_the_embedded_model_and_continues_training(tmp_path):
    """The README's first command, shrunk: a few held-out people, a few seconds of continued training."""
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "demo", "--out", str(tmp_path), "--held-out", "2", "--identities", "2",
         "--frames", "8", "--minutes", "0.05"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("osfv_tiny.ckpt", "samples.png", "animation.mp4", "data_contact_sheet.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert str((tmp_path / "animation.mp4").resolve()) in result.stdout
    # The held-out figures are printed beside their baselines.
    for row in ("copy source frame", "no turn", "yaw -20", "yaw +20"):
        assert row in result.stdout, row

    from talkinghead.datamodules.shard_format import decode_frames

    frames = decode_frames((tmp_path / "animation.mp4").read_bytes(), "mp4")
    # 8 driving frames side by side, then the 48-frame yaw sweep; 3 panels of 64 px, upscaled 2x.
    assert frames.shape == (8 + 48, 128, 3 * 128, 3)


def test_demo_without_a_checkpoint_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "demo", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "no.ckpt")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "no checkpoint at" in result.stdout + result.stderr
    assert not (tmp_path / "samples.png").exists()
