"""`talkinghead inspect`: contact sheet (landmarks drawn, masks outlined) and a summary of what shards hold."""

import json
from dataclasses import replace

import numpy as np
from PIL import Image

from talkinghead.commands.inspect import main


def test_sheet_and_summary_of_synthetic_shards(synthetic_shards, tmp_path, capsys):
    sheet, summary_json = tmp_path / "sheet.png", tmp_path / "summary.json"
    assert main([str(synthetic_shards), "--out", str(sheet), "--clips", "3", "--frames", "4", "--scale", "2",
                 "--json", str(summary_json)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(summary_json.read_text())
    assert summary["clips"] >= 3 and summary["people"] >= 2 and summary["frames"] > summary["clips"]
    assert f"{summary['clips']} clips" in printed and f"{summary['people']} people" in printed
    assert {"meta.json", "landmarks.npy", "pose.npy", "mask.npz"} <= set(summary["keys"])
    assert summary["padding"] is None and "padding: not recorded" in printed
    image = np.asarray(Image.open(sheet))
    size = int(next(iter(summary["sizes"])))
    assert image.shape == (3 * 2 * size, 4 * 2 * size, 3)
    assert (image == [255, 0, 255]).all(-1).sum() > 50  # the masks' outlines


def test_padding_recorded_by_preprocessing_is_summed_up(random_clip, tmp_path, capsys):
    from talkinghead.datamodules.shard_format import ShardWriter

    shards = tmp_path / "shards"
    with ShardWriter(shards, codec="npy") as writer:
        for index, outside in enumerate((0.0, 0.02, 0.12)):
            clip = random_clip(index, num_frames=4, size=16)
            writer.write(replace(clip, meta=replace(clip.meta, extra={"outside_fraction": outside})), f"clip{index}")
    assert main([str(shards), "--out", str(tmp_path / "sheet.png")]) == 0
    printed = capsys.readouterr().out
    assert "3 clips" in printed and "max 12.0%" in printed and "1 of 3 clips over 5%" in printed


def test_bad_input_exits_2_in_one_line(tmp_path, capsys):
    import pytest

    for args, message in (([str(tmp_path / "nothing"), "--out", str(tmp_path / "s.png")], "talkinghead inspect: "),
                          ([str(tmp_path), "--out", str(tmp_path / "s.jpg")], "name it *.png")):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0] and "init_args" not in error[0]
    assert not (tmp_path / "s.png").exists()
