"""`talkinghead sweep`: run points of a wandb sweep file on this machine, without a W&B server.

    talkinghead sweep lightning_configs/sweeps/osfv.yaml --count 8 --out sweeps/osfv
    talkinghead sweep lightning_configs/sweeps/osfv.yaml --count 3 --out /tmp/trial \\
        --config lightning_configs/osfv/tiny.yaml -- --data.init_args.shards=data/synthetic --trainer.max_steps=40

Each point is chosen by the ``sweeps`` library (W&B's sampler: random, grid, or bayes on the metrics of the runs
already in OUT), its command line is the one ``wandb agent`` would run, and the run logs to wandb offline
(``wandb sync`` uploads it later; an existing WANDB_MODE is kept). The runner adds a MetricsSummary callback to
read the sweep's metric back, writes OUT/runs.jsonl (one line per run: point, command, exit status, metric) and
OUT/run-N/log.txt, and ends with the runs ranked by the metric. Running again with the same OUT continues the sweep.
Not done here: early termination (``early_terminate`` needs the W&B controller); each run goes to the end.
With a W&B server use ``wandb sweep FILE`` and ``wandb agent SWEEP_ID`` instead (README, "Sweeps").
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="talkinghead sweep", description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to every run, before the point's own arguments "
                                            "(a swept value wins over them).")
    parser.add_argument("sweep", help="a W&B sweep file (e.g. lightning_configs/sweeps/osfv.yaml)")
    parser.add_argument("--out", required=True, help="folder for runs.jsonl and the runs' logs and checkpoints; "
                        "runs already recorded there count as finished points of this sweep")
    parser.add_argument("--count", type=int, default=1, help="runs to start now (a grid may end sooner)")
    parser.add_argument("--config", help="replace the config the sweep's command names (e.g. a tiny config to try a "
                        "paper sweep on a CPU); the swept keys must exist in it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the point sampler (plus the run's number)")
    parser.add_argument("--dry-run", action="store_true", help="print the command lines of the points; run nothing")
    return parser


def read_runs(path: Path) -> list[dict[str, Any]]:
    """The runs recorded in runs.jsonl (none when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metric(summary: Path, name: str) -> float | None:
    """The metric's last value in a MetricsSummary file, or None if the run never logged it."""
    try:
        return json.loads(summary.read_text())["metrics"].get(name)
    except (OSError, ValueError, KeyError):
        return None


def run_point(command: list[str], log: Path) -> tuple[int, float]:
    """Runs one command with its output in ``log``; returns the exit status and the seconds it took."""
    environ = dict(os.environ)
    environ.setdefault("WANDB_MODE", "offline")
    # `talkinghead` in the command is this installation's, also when its environment is not activated
    environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    start = time.perf_counter()
    with log.open("w") as stream:
        returncode = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=environ).returncode
    return returncode, time.perf_counter() - start


def short_key(key: str) -> str:
    """A dotted CLI key without its class-path words: ``model.init_args.generator_optimizer.init_args.lr`` ->
    ``generator_optimizer.lr``."""
    return ".".join(part for part in key.split(".") if part not in ("model", "data", "trainer", "init_args")) or key


def describe(point: dict[str, Any]) -> str:
    return " ".join(f"{short_key(key)}={value}" for key, value in point.items())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    from talkinghead.sweeps import SUMMARY_CALLBACK, SweepFileError, command_line, load_sweep, next_point

    if args.count < 1:
        parser.exit(2, f"talkinghead sweep: --count {args.count}: give at least 1\n")
    if args.config is not None and not Path(args.config).is_file():
        parser.exit(2, f"talkinghead sweep: --config {args.config}: no such file\n")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.exit(2, f"talkinghead sweep: --out {out}: is a file; name a folder\n")
    try:
        config = load_sweep(args.sweep)
        if args.config is not None:
            command_line(config, {}, config_file=args.config)  # refuses a command without --config, before any run
    except SweepFileError as error:
        parser.exit(2, f"talkinghead sweep: {error}\n")

    metric, goal = config["metric"]["name"], config["metric"].get("goal", "minimize")
    records = out / "runs.jsonl"
    finished = read_runs(records)
    if not args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
    for number in range(len(finished), len(finished) + args.count):
        point = next_point(config, finished, seed=args.seed + number)
        if point is None:
            print(f"the {config['method']} sweep has no points left after {number} runs")
            break
        run_dir = out / f"run-{number}"
        summary = run_dir / "metrics.json"
        runner = [f"--trainer.default_root_dir={run_dir}", f"--trainer.callbacks+={SUMMARY_CALLBACK}",
                  f"--trainer.callbacks.init_args.path={summary}"]
        command = command_line(config, point, extra=[*extra, *runner], config_file=args.config)
        if args.dry_run:
            print(shlex.join(command))
            finished.append({"point": point, "metric": None})
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        returncode, seconds = run_point(command, run_dir / "log.txt")
        value = read_metric(summary, metric) if returncode == 0 else None
        record = {"run": number, "point": point, "command": command, "returncode": returncode, "metric": value,
                  "metric_name": metric, "seconds": round(seconds, 1)}
        with records.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        finished.append(record)
        if returncode != 0:
            tail = (run_dir / "log.txt").read_text(errors="replace").strip().splitlines()[-LOG_TAIL_LINES:]
            print(f"run {number}: FAILED (exit {returncode}, {seconds:.0f} s), {describe(point)}; "
                  f"log {run_dir / 'log.txt'}:\n    " + "\n    ".join(tail))
        else:
            shown = "not logged" if value is None else f"{value:.4g}"
            print(f"run {number}: {metric} {shown} ({seconds:.0f} s), {describe(point)}")
    if args.dry_run:
        return 0
    scored = [run for run in finished if run.get("metric") is not None]
    if not scored:
        print(f"no run of {records} logged {metric}", file=sys.stderr)
        return 1
    scored.sort(key=lambda run: run["metric"], reverse=goal == "maximize")
    print(f"{len(scored)} of {len(finished)} runs logged {metric} ({goal}); best first:")
    for run in scored[:5]:
        print(f"  run {run['run']}: {run['metric']:.4g}  {describe(run['point'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
