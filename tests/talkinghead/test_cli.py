import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from talkinghead.cli import TalkingHeadCLI, main

CONFIGS = resources.files("talkinghead.lightning_configs")
DATA_CONFIGS = sorted(p.name for p in (CONFIGS / "data").iterdir() if p.name.endswith(".yaml") and p.name != "tiny.yaml")
TESTS = Path(__file__).parents[1]


def config(*parts: str) -> str:
    return str(CONFIGS.joinpath(*parts))


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(TESTS)}


def test_usage_lists_every_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "synth", "demo"):
        assert f"  {command} " in text
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_configs_ship_with_the_package():
    assert {"pairs.yaml", "few_shot.yaml", "person.yaml"} <= set(DATA_CONFIGS)


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_instantiates(name, random_shards):
    cli = TalkingHeadCLI(
        args=["--config", config("data", name), "--config", config("data", "tiny.yaml"),
              "--model", "probe_module.ProbeModule", "--data.init_args.shards", str(random_shards)],
        run=False,
    )
    assert cli.datamodule.image_size == 32
    assert type(cli.datamodule).__name__.lower().startswith(name.split(".")[0].replace("_", ""))


def test_unknown_config_key_is_a_clear_error(random_shards, capsys):
    with pytest.raises(SystemExit):
        TalkingHeadCLI(
            args=["--config", config("data", "pairs.yaml"), "--model", "probe_module.ProbeModule",
                  "--data.init_args.shards", str(random_shards), "--data.init_args.batch_sizee", "3"],
            run=False,
        )
    assert "batch_sizee" in capsys.readouterr().err


def test_fit_through_the_console_command(tmp_path, synthetic_shards):
    """The real `talkinghead fit` with layered configs, training the probe model on synthetic shards."""
    result = subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit",
         "--config", config("data", "pairs.yaml"), "--config", config("data", "tiny.yaml"),
         "--model", "probe_module.ProbeModule", f"--model.record_dir={tmp_path}",
         f"--data.init_args.shards={synthetic_shards}", f"--data.init_args.val_shards={synthetic_shards}",
         "--trainer.max_epochs=2", "--trainer.accelerator=cpu", "--trainer.logger=false",
         "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"],
        capture_output=True, text=True, env=cli_env(), timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = next(tmp_path.glob("rank-0-*.txt")).read_text().splitlines()
    assert len(seen) == 2 * 8  # two epochs of samples_per_epoch from tiny.yaml
    assert list(tmp_path.glob("**/*.ckpt")), "fit saved no checkpoint"


def test_synth_command_writes_shards(tmp_path):
    out = tmp_path / "shards"
    result = subprocess.run(
        ["talkinghead" if (Path(sys.executable).parent / "talkinghead").exists() else "false", "synth",
         "--out", str(out), "--identities", "2", "--clips-per-identity", "1", "--frames", "4", "--size", "32",
         "--quiet"],
        capture_output=True, text=True, env={**cli_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 2 clips (8 frames, 32x32)" in result.stdout
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".tar"]


def test_synth_command_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--out", "x", "--size", "31"])
    assert "--size must be an even number" in capsys.readouterr().err
