"""Bad configured values end `talkinghead fit` with one line naming the value, exit status 2 and no traceback
(--debug shows it)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

TINY = str(resources.files("talkinghead.lightning_configs") / "osfv" / "tiny.yaml")


def fit(shards, tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "talkinghead", "fit", "--config", TINY, f"--data.init_args.shards={shards}",
         "--data.init_args.num_workers=0", "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
         f"--trainer.default_root_dir={tmp_path}", *extra],
        capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize(("override", "message"), [
    ("--model.init_args.loss_weights.l2=1", r"loss_weights: unknown terms \['l2'\]"),
    ("--data.init_args.batch_size=0", "data batch_size must be at least 1, got 0"),
    ("--data.init_args.batch_size=-1", "data batch_size must be at least 1, got -1"),
    ("--data.init_args.image_size=100", "data image_size 100 does not fit this OSFV configuration.*use e.g. 96"),
])
def test_bad_values_give_one_line_and_exit_2(tmp_path, synthetic_shards, override, message):
    import re

    result = fit(synthetic_shards, tmp_path, override)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Namespace(" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("talkinghead fit: ") and re.search(message, last), last
    assert not list(tmp_path.glob("**/*.ckpt"))


def test_debug_shows_the_traceback(tmp_path, synthetic_shards):
    result = fit(synthetic_shards, tmp_path, "--data.init_args.batch_size=0", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


@pytest.mark.parametrize("config", ["fsth/tiny_meta.yaml", "lpd/tiny_meta.yaml"])
def test_fsth_and_lpd_refuse_a_data_size_their_networks_were_not_built_for(synthetic_shards, config):
    from talkinghead.cli import TalkingHeadCLI
    from talkinghead.errors import ConfigError

    path = str(resources.files("talkinghead.lightning_configs") / config)
    cli = TalkingHeadCLI(args=["--config", path, f"--data.init_args.shards={synthetic_shards}",
                               "--trainer.logger=false"], run=False)
    cli.model.check_image_size(64)  # what the tiny networks are built for
    with pytest.raises(ConfigError, match=r"data image_size 100 does not match the image_size 64 .*generator.*"
                                          r"--data.init_args.image_size 64"):
        cli.model.check_image_size(100)
