"""A crafted checkpoint (a pickle whose __reduce__ calls a function) is refused by every path that reads user files,
and nothing of it runs: the function would create a marker file."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from importlib import resources

import pytest
import torch

from talkinghead.evaluation import checkpoint_image_size, load_model
from talkinghead.lightning.finetune import load_meta_module
from talkinghead.lightning.fsth import FSTHModule
from talkinghead.safe_load import UnsafeCheckpointError, safe_torch_load

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


class _Payload:
    """Unpickling this calls pathlib.Path.touch(marker): the code a malicious checkpoint would run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "talkinghead.lightning.osfv.OSFVModule"},
                "payload": _Payload(marker), "global_step": 1}, path)
    return path, marker


def test_the_payload_is_real(crafted):
    """The test's own control: without weights_only the file does run its code."""
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_safe_torch_load_refuses_and_runs_nothing(crafted):
    path, marker = crafted
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        safe_torch_load(path)
    assert not marker.exists()


def test_safe_torch_load_reads_plain_checkpoints_and_names_bad_files(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"lr": 1e-3, "betas": [0.5, 0.999]}}, good)
    assert safe_torch_load(good)["hyper_parameters"]["lr"] == 1e-3
    with pytest.raises(FileNotFoundError):
        safe_torch_load(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot read"):
        safe_torch_load(junk)


def test_library_entry_points_refuse(crafted):
    path, marker = crafted
    with pytest.raises(UnsafeCheckpointError):
        load_model(path)
    assert checkpoint_image_size(path, default=123) == 123  # best-effort reader: falls back, runs nothing
    with pytest.raises(UnsafeCheckpointError):
        load_meta_module(FSTHModule, str(path), None)
    assert not marker.exists()


def test_evaluate_refuses_in_one_line_with_exit_2(tmp_path, crafted, synthetic_shards):
    path, marker = crafted
    result = subprocess.run([sys.executable, "-m", "talkinghead", "evaluate", "--checkpoint", str(path),
                             "--data", str(synthetic_shards), "--out", str(tmp_path / "eval")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "refusing to load" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_fit_ckpt_path_defaults_to_weights_only(crafted, synthetic_shards, tmp_path):
    path, marker = crafted
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit", "--config", TINY, f"--data.init_args.shards={synthetic_shards}",
         "--data.init_args.image_size=32", "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
         f"--trainer.default_root_dir={tmp_path / 'run'}", f"--ckpt_path={path}"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("talkinghead fit: refusing to load the checkpoint"), last
    assert "Traceback" not in result.stderr
    assert not marker.exists()
