"""wandb sweep files: valid W&B sweeps whose sampled command lines `talkinghead fit` accepts and trains, offline."""

import json
import math
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from talkinghead.cli import main
from talkinghead.commands.sweep import main as sweep_main
from talkinghead.sweeps import SweepFileError, command_line, load_sweep, next_point

CONFIGS = resources.files("talkinghead.lightning_configs")
SWEEPS = {"osfv": "osfv/tiny.yaml", "fsth": "fsth/tiny_meta.yaml", "lpd": "lpd/tiny_meta.yaml"}  # -> its tiny config


def sweep_file(name: str) -> str:
    return str(CONFIGS / "sweeps" / f"{name}.yaml")


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_file_is_valid_and_names_the_cli_keys(name, capsys):
    config = load_sweep(sweep_file(name))
    assert config["metric"]["name"] == "val/psnr"
    assert any(key.endswith("generator_optimizer.init_args.lr") for key in config["parameters"])
    assert any(".loss_weights." in key for key in config["parameters"])
    assert "data.init_args.batch_size" in config["parameters"]
    # A point's command line against the paper config the file names: the CLI parses every swept key and value
    # (--print_config validates without building the networks).
    point = next_point(config, [], seed=3)
    assert set(point) == set(config["parameters"])
    named = config["command"][config["command"].index("--config") + 1]  # lightning_configs/..., from the root
    command = command_line(config, point, config_file=str(CONFIGS / named.removeprefix("lightning_configs/")))
    assert command[:3] == ["/usr/bin/env", "talkinghead", "fit"] and command[-len(point):] == \
        [f"--{key}={value}" for key, value in point.items()]
    with pytest.raises(SystemExit) as exited:
        main([*command[2:], "--print_config"])
    assert exited.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in point.items():
        node = printed
        for part in key.split("."):
            node = node[part]
        assert node == pytest.approx(value) if isinstance(value, float) else node == value, key


def test_command_line_is_the_agents_with_extra_arguments_before_the_point():
    config = {"command": ["${env}", "${interpreter}", "${program}", "--config", "a.yaml", "${args}"],
              "program": "train.py"}
    point = {"model.init_args.lr": 0.001, "data.init_args.batch_size": 4}
    assert command_line(config, point, extra=["--trainer.max_steps=2"], config_file="b.yaml") == [
        "/usr/bin/env", "python", "train.py", "--config", "b.yaml", "--trainer.max_steps=2",
        "--model.init_args.lr=0.001", "--data.init_args.batch_size=4"]
    with pytest.raises(SweepFileError, match="no --config"):
        command_line({"command": ["talkinghead", "fit", "${args}"]}, point, config_file="b.yaml")


def test_bad_sweep_files_are_one_line_errors(tmp_path, capsys):
    cases = {
        "missing.yaml": None,
        "method.yaml": {"method": "annealing", "metric": {"name": "val/psnr"}, "parameters": {"a": {"values": [1]}},
                        "command": ["talkinghead", "fit", "${args}"]},
        "args.yaml": {"method": "random", "metric": {"name": "val/psnr"}, "parameters": {"a": {"values": [1]}},
                      "command": ["talkinghead", "fit"]},
        "metric.yaml": {"method": "random", "parameters": {"a": {"values": [1]}},
                        "command": ["talkinghead", "fit", "${args}"]},
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(yaml.safe_dump(content))
        with pytest.raises(SystemExit) as exited:
            sweep_main([str(path), "--out", str(tmp_path / "out")])
        error = capsys.readouterr().err.strip()
        assert exited.value.code == 2 and len(error.splitlines()) == 1 and name in error, error
    assert not (tmp_path / "out").exists()  # nothing ran, nothing written


def test_grid_points_cover_the_grid_once():
    config = {"method": "grid", "metric": {"name": "m"}, "parameters": {"a": {"values": [1, 2]}, "b": {"values": [3]}},
              "command": ["${args}"]}
    finished = []
    while (point := next_point(config, finished, seed=len(finished))) is not None:
        finished.append({"point": point, "metric": 1.0})
    assert sorted(run["point"]["a"] for run in finished) == [1, 2]


@pytest.fixture(scope="module")
def shards64(tmp_path_factory):
    """4 synthetic people x 2 clips x 8 frames at 64 px (the tiny FSTH and LPD networks are built for 64)."""
    from talkinghead.datamodules.synthetic_heads import write_synthetic_shards

    out = tmp_path_factory.mktemp("sweep_shards")
    write_synthetic_shards(out, identities=4, clips_per_identity=2, frames=8, size=64, seed=5, clips_per_shard=4)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sampled_points_train_offline_and_log_the_metric(name, shards64, tmp_path):
    """`talkinghead sweep` runs two points of the paper sweep with the tiny config in its place (a few batches each,
    wandb offline): both train, validate and report the sweep's metric, and the runs are wandb's."""
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "talkinghead", "sweep", sweep_file(name), "--out", str(out), "--count", "2",
               "--config", str(CONFIGS / SWEEPS[name]), "--",
               f"--data.init_args.shards={shards64}", f"--data.init_args.val_shards={shards64}",
               "--data.init_args.samples_per_epoch=8", "--trainer.max_epochs=1", "--trainer.limit_val_batches=1",
               "--trainer.enable_progress_bar=false"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 2 and runs[0]["point"] != runs[1]["point"]
    for run in runs:
        assert run["returncode"] == 0 and math.isfinite(run["metric"]) and 3 < run["metric"] < 60
        assert run["command"][-len(run["point"]):] == [f"--{key}={value}" for key, value in run["point"].items()]
        summary = json.loads((out / f"run-{run['run']}" / "metrics.json").read_text())
        assert summary["metrics"]["val/psnr"] == run["metric"] and summary["global_step"] > 0
    assert len(list((tmp_path / "sweep_runs" / "wandb").glob("offline-run-*"))) == 2
    assert "best first" in result.stdout
