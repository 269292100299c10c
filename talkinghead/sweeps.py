"""wandb sweep files (lightning_configs/sweeps/) read, checked and run the way ``wandb agent`` runs them.

A sweep file is a standard W&B sweep configuration: ``method``, ``metric`` (a metric the run logs, e.g.
``val/psnr``), ``parameters`` named by the CLI's dotted keys (``model.init_args.generator_optimizer.init_args.lr``)
and a ``command`` that ends in ``${args}``. With a W&B server, ``wandb sweep FILE`` and ``wandb agent ID`` run it.
Without one, ``talkinghead sweep`` (talkinghead/commands/sweep.py) runs points on this machine: the points come from
the ``sweeps`` library (W&B's own sampler, the one its local controller uses), each command line is built as the
agent builds it (``${env}``, ``${program}``, ``${args}`` ...), runs log to wandb offline, and the sweep's metric is
read back from a :class:`~talkinghead.callbacks.summary.MetricsSummary` file the runner adds to each run.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["SweepFileError", "load_sweep", "next_point", "command_line", "SUMMARY_CALLBACK"]

SUMMARY_CALLBACK = "talkinghead.callbacks.summary.MetricsSummary"


class SweepFileError(ValueError):
    """A sweep file that is missing, unreadable or not a valid W&B sweep configuration (one line)."""


def _sweeps():
    try:
        with warnings.catch_warnings():  # sweeps 0.2's pydantic config names are v1's: a warning on every import
            warnings.simplefilter("ignore", UserWarning)
            import sweeps
    except ImportError as error:  # an optional dependency: pip install 'talkinghead[sweeps]'
        raise SweepFileError("running sweeps locally needs the 'sweeps' package: pip install 'talkinghead[sweeps]'") \
            from error
    return sweeps


def load_sweep(path: str | Path) -> dict[str, Any]:
    """The sweep configuration in ``path``, validated against W&B's sweep schema and for what a run here needs:
    a metric name, a command with ``${args}`` (else the points never reach the run) and dotted parameter names.

    Raises:
        SweepFileError: with one line naming the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepFileError(f"{path}: no such sweep file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepFileError(f"{path}: not YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise SweepFileError(f"{path}: a sweep file is a mapping with method, metric, parameters and command")
    sweeps = _sweeps()
    try:
        sweeps.SweepConfig(config)  # W&B's JSON schema: method, parameters, distributions, early_terminate ...
    except Exception as error:  # jsonschema.ValidationError and friends
        raise SweepFileError(f"{path}: not a valid W&B sweep ({str(error).splitlines()[0]})") from None
    metric = config.get("metric") or {}
    if not metric.get("name"):
        raise SweepFileError(f"{path}: metric.name is missing (name a metric the run logs, e.g. val/psnr)")
    command = config.get("command")
    if not command or "${args}" not in command:
        raise SweepFileError(f"{path}: the command must contain ${{args}}, which the agent replaces by the point's "
                             "--key=value arguments")
    return config


def next_point(config: Mapping[str, Any], finished: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any] | None:
    """The next point of the sweep given the finished runs (``{"point": {...}, "metric": value}``, metric None
    when the run failed), chosen by the ``sweeps`` library as W&B's controller chooses it (random, grid, or bayes
    on the finished metrics); None when a grid is exhausted. ``seed`` fixes the library's random draws."""
    sweeps = _sweeps()
    name = config["metric"]["name"]
    runs = [sweeps.SweepRun(name=f"run-{index}",
                            state=sweeps.RunState.failed if run.get("metric") is None else sweeps.RunState.finished,
                            config={key: {"value": value} for key, value in run["point"].items()},
                            summary_metrics={} if run.get("metric") is None else {name: run["metric"]})
            for index, run in enumerate(finished)]
    random.seed(seed)
    np.random.seed(seed % 2**32)
    proposed = sweeps.next_run(dict(config), runs)
    if proposed is None:
        return None
    return {key: _plain(entry["value"]) for key, entry in proposed.config.items()}


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so the point prints and serialises like the agent's."""
    return value.item() if isinstance(value, np.generic) else value


def command_line(config: Mapping[str, Any], point: Mapping[str, Any], *, extra: Sequence[str] = (),
                 config_file: str | None = None) -> list[str]:
    """The argument list ``wandb agent`` runs for ``point``, built with the agent's own helpers: ``${args}`` becomes
    ``--key=value`` per parameter (``${args_no_hyphens}``, ``${args_json}`` ... likewise), ``${env}`` /usr/bin/env,
    ``${interpreter}`` python, ``${program}`` the file's program, ``${envvar:NAME}`` an environment variable.

    Not the agent's, for running a paper sweep on a small machine: ``config_file`` replaces the value after the
    command's first ``--config``, and ``extra`` arguments go just before ``${args}``, so a swept value always wins
    over them.
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    variables = create_sweep_command_args({"args": {key: {"value": value} for key, value in point.items()}})
    variables |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [str(config.get("program", ""))]}
    words: list[str] = []
    replaced_config = config_file is None
    for word in map(str, create_sweep_command(list(config["command"]))):
        if word.startswith("${") and word.endswith("}"):
            if word == "${args}":
                words += list(extra)
            words += variables.get(word[2:-1]) or []
        elif not replaced_config and words and words[-1] == "--config":
            words.append(config_file)
            replaced_config = True
        else:
            words.append(word)
    if not replaced_config:
        raise SweepFileError("the sweep's command has no --config to replace")
    return words
