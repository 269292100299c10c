"""One-command GPU check (<= 8 min on one H100/H200): the paper-scale steps of all three models and a short GPU
learning run.

Parts, each a subprocess with its own timeout inside one time budget (``--budget-minutes``, default 8):

1. the environment (torch and CUDA versions, device name and memory, bf16 support);
2. the paper-scale OSFV training step (lightning_configs/osfv/vox256.yaml, 256 px, batch 4, bf16-mixed) timed by
   ``benchmarks/train_step.py``: median ms/step, samples/s, peak GPU memory;
3. the tiny OSFV CPU recipe trained on the GPU for ``--learning-minutes`` (default 2) by
   ``benchmarks/osfv_learning.py`` and scored on held-out synthetic people: reconstruction against copying the
   source frame, and free view against the exact re-rendered truth against "no turn";
4. the paper-scale FSTH and LPD meta-learning steps (fsth/meta_vox256.yaml, lpd/meta_vox256.yaml; 256 px, batch 4,
   bf16-mixed);

then, if the budget still allows, the OSFV step with torch.compile (compile: true; key "osfv bf16-mixed compiled")
and in fp32 (32-true). Step parts are keyed "<model> <precision>[ compiled]". A
part that fails or runs out of time is recorded with its error and the log's last lines; the rest still runs.
Usage::

    python benchmarks/device_check.py --out /tmp/device_check                # on the GPU machine, <= 8 min
    python benchmarks/device_check.py --cpu-smoke --out /tmp/device_smoke    # the same pipeline on a CPU, ~2 min

Progress goes to stderr; the JSON summary (environment, learning figures, step figures, the exact commands and
their logs) is printed alone on stdout and written to OUT/device_check.json. ``--cpu-smoke`` runs tiny versions of
both parts on the CPU to test the pipeline; its figures are not GPU figures and the summary says so.

A fresh ``--out`` keeps runs apart: osfv_learning.py reuses the synthetic shards it finds in OUT/learning.

Exit status: 0 when at least one part produced figures, 1 when none did, 2 without CUDA (unless ``--cpu-smoke``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # commands run here, so their paths are the README's
LEARNING_SCRIPT = "benchmarks/osfv_learning.py"
STEP_SCRIPT = "benchmarks/train_step.py"
PAPER_CONFIGS = {"osfv": "lightning_configs/osfv/vox256.yaml", "fsth": "lightning_configs/fsth/meta_vox256.yaml",
                 "lpd": "lightning_configs/lpd/meta_vox256.yaml"}
TINY_CONFIGS = {"osfv": "lightning_configs/osfv/tiny.yaml", "fsth": "lightning_configs/fsth/tiny_meta.yaml",
                "lpd": "lightning_configs/lpd/tiny_meta.yaml"}
# Seconds the learning run needs on top of its training minutes: start-up, writing the synthetic shards (~4k frames
# at 64 px), and scoring the held-out people (reconstruction pairs, free view re-rendered at six yaws).
LEARNING_OVERHEAD_S = 90.0
# Longest a step measurement may take: building the paper-scale module, CUDA start-up, warm-up and timed steps.
STEP_TIMEOUT_S = 150.0
COMPILE_TIMEOUT_S = 240.0  # the same with torch.compile (compiling OSFV's five networks and the VGG is in the warm-up)
# The learning figures the summary keeps (osfv_learning.py's JSON keeps all of them).
FREE_VIEW_GROUPS = ("yaw -20", "yaw +20", "all yaws")
LOG_TAIL_LINES = 15


class Budget:
    """Wall-clock seconds left of the whole check."""

    def __init__(self, minutes: float) -> None:
        self.start, self.total = time.monotonic(), minutes * 60

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()


def say(message: str) -> None:
    """Progress for the person watching (stderr, so stdout stays the JSON summary)."""
    print(f"[device_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    """Versions and the device: what the figures were measured with."""
    import platform

    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(), "device": "cpu",
        "device_count": 0, "memory_gib": None, "compute_capability": None, "bf16_supported": None,
    }
    try:
        from importlib.metadata import version

        info["talkinghead"] = version("talkinghead")
    except Exception:  # not installed: the check still runs from the repository
        info["talkinghead"] = None
    if info["cuda_available"]:
        properties = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                    memory_gib=round(properties.total_memory / 2**30, 2),
                    compute_capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def run_part(name: str, command: list[str], timeout: float, out: Path) -> dict[str, Any]:
    """Runs one part in its own process group (so a timeout also ends its data-loader workers), output to a log.

    Returns:
        {"command", "cwd", "log", "seconds", "returncode", "error"}; error is None on success, else the reason and
        the log's last lines.
    """
    log = out / f"{name}.log"
    record: dict[str, Any] = {"command": shlex.join(command), "cwd": str(REPO), "log": str(log),
                              "timeout_s": round(timeout), "seconds": None, "returncode": None, "error": None}
    say(f"{name}: {record['command']}  (timeout {timeout:.0f} s, log {log})")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    start = time.monotonic()
    with log.open("w") as stream:
        process = subprocess.Popen(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        try:
            record["returncode"] = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            record["error"] = f"timed out after {timeout:.0f} s"
        except BaseException:  # Ctrl-C: leave no GPU process behind
            stop(process)
            raise
    record["seconds"] = round(time.monotonic() - start, 1)
    if record["error"] is None and record["returncode"] != 0:
        record["error"] = f"exit status {record['returncode']}"
    if record["error"] is not None:
        record["error"] += ": " + log_tail(log)
    say(f"{name}: {'ok' if record['error'] is None else 'FAILED'} in {record['seconds']} s")
    return record


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the part's process group, SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:]) or "(empty log)"


def finite(value: Any) -> Any:
    """NaN and infinities as null, so the summary is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def learning_part(args: argparse.Namespace, out: Path, budget: Budget) -> dict[str, Any]:
    """Trains the tiny OSFV recipe (osfv_learning.py: its config, shards and scoring) and keeps the headline rows."""
    figures_path = out / "learning.json"
    figures_path.unlink(missing_ok=True)  # never report an earlier run's figures
    command = [sys.executable, LEARNING_SCRIPT]
    if args.cpu_smoke:
        # A budget in steps, not minutes: a loaded machine must still train (and validate) something.
        minutes, timeout = None, 240.0
        command += ["--steps", "3", "--identities", "4", "--val-identities", "2", "--frames", "8"]
    else:
        minutes = min(args.learning_minutes, (budget.left() - LEARNING_OVERHEAD_S) / 60)
        if minutes < 0.5:
            return {"error": f"skipped: {budget.left():.0f} s of the budget left, too little to train"}
        timeout = budget.left() - 5
        command += ["--minutes", f"{minutes:.2f}"]
    command += ["--out", str(out / "learning"), "--json", str(figures_path), "--threads", str(args.threads)]
    if not args.cpu_smoke:
        command += ["--trainer.accelerator=gpu", "--trainer.devices=1", "--data.init_args.num_workers=4"]
    record = {"planned_minutes": None if minutes is None else round(minutes, 2), **run_part("learning", command, timeout, out)}
    if not figures_path.exists():
        record["error"] = record["error"] or f"no figures written to {figures_path}"
        return record
    figures = json.loads(figures_path.read_text())
    large = [group for group in figures["reconstruction"] if group.startswith("large motion")]
    record.update(
        figures=str(figures_path), generator_steps=figures["generator_steps"], train_minutes=figures["train_minutes"],
        reconstruction={group: figures["reconstruction"][group] for group in ["all pairs", *large[:1]]},
        free_view={group: figures["free_view"][group] for group in FREE_VIEW_GROUPS if group in figures["free_view"]},
    )
    return record


STEP_LINE = re.compile(r"current\s+median step\s+(?P<median>[\d.]+) ms\s+\(min (?P<min>[\d.]+), max (?P<max>[\d.]+)\)"
                       r"\s+(?P<rate>[\d.]+) samples/s(?:\s+peak GPU memory (?P<gpu>[\d.]+) GiB)?")
RSS_LINE = re.compile(r"peak RSS of the process: (?P<rss>[\d.]+) GiB")


def step_part(args: argparse.Namespace, out: Path, model: str, precision: str, timeout: float,
              compile: bool = False) -> dict[str, Any]:
    """Times one model's training step with train_step.py (``compile``: its networks torch.compiled) and parses
    its summary line."""
    command = [sys.executable, STEP_SCRIPT, "--model", model, "--precision", precision, "--threads", str(args.threads)]
    if compile:
        command.append("--compile")
    if args.cpu_smoke:
        config, size, batch, steps, device = TINY_CONFIGS[model], 64, 2, 2, "cpu"
    else:
        config, size, batch, steps, device = PAPER_CONFIGS[model], 256, 4, args.steps, "cuda"
    command += ["--config", config, "--size", str(size), "--batch", str(batch), "--steps", str(steps),
                "--device", device]
    if not args.cpu_smoke:
        command += ["--warmup", "3"]  # CUDA start-up and allocator growth stay out of the timed steps
    record = {"model": model, "precision": precision, "size": size, "batch": batch, "compiled": compile,
              **run_part(f"step_{model}_{precision}{'_compiled' if compile else ''}", command, timeout, out)}
    text = Path(record["log"]).read_text(errors="replace")
    match = STEP_LINE.search(text)
    if match is None:
        record["error"] = record["error"] or "no 'median step' line in the log: " + log_tail(Path(record["log"]))
        return record
    rss = RSS_LINE.search(text)
    peak, kind = ((float(match["gpu"]), "torch.cuda.max_memory_allocated over the timed steps") if match["gpu"]
                  else (float(rss["rss"]) if rss else None, "peak RSS of the CPU process"))
    record.update(timed_steps=steps, ms_per_step=float(match["median"]),
                  ms_min=float(match["min"]), ms_max=float(match["max"]), samples_per_s=float(match["rate"]),
                  peak_memory_gib=peak, peak_memory_kind=kind)
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/device_check", help="folder for logs, the learning run and the JSON")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="wall clock for the whole check")
    parser.add_argument("--learning-minutes", type=float, default=2.0,
                        help="training minutes of the learning run (less if the budget runs short)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per precision (GPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of each part (default: 4 on the GPU, 2 with --cpu-smoke)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny versions of both parts on the CPU (a pipeline test, not GPU figures)")
    args = parser.parse_args()
    args.threads = args.threads or (2 if args.cpu_smoke else 4)
    budget = Budget(args.budget_minutes)

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"device_check: CUDA is not available to torch {torch.__version__} (built for CUDA "
              f"{torch.version.cuda}); run it on a GPU machine, or pass --cpu-smoke to test the pipeline on the CPU",
              file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    say(f"torch {env['torch']} (CUDA {env['torch_cuda']}), CUDA available: {env['cuda_available']}, device: "
        f"{env['device']}" + (f" ({env['memory_gib']} GiB, sm {env['compute_capability']}), bf16 supported: "
                              f"{env['bf16_supported']}" if env["cuda_available"] else ""))

    kind = ("CPU smoke run: tests the pipeline on tiny inputs; these are NOT GPU figures" if args.cpu_smoke
            else f"GPU check on {env['device']}")
    summary: dict[str, Any] = {"kind": kind, "cpu_smoke": args.cpu_smoke, "budget_minutes": args.budget_minutes,
                               "environment": env, "learning": None, "step": {}}
    main_precision = "32-true" if args.cpu_smoke else "bf16-mixed"
    steps = summary["step"]

    def step(model: str, precision: str, needed: float, compile: bool = False) -> None:
        """One step part, if the budget still holds the ``needed`` seconds."""
        key = f"{model} {precision}{' compiled' if compile else ''}"
        limit = COMPILE_TIMEOUT_S if compile else STEP_TIMEOUT_S
        if budget.left() - 5 >= needed:
            steps[key] = step_part(args, out, model, precision, min(limit, budget.left() - 5), compile)
        else:
            steps[key] = {"model": model, "precision": precision, "compiled": compile,
                          "error": f"skipped: {budget.left():.0f} s of the budget left, ~{needed:.0f} s needed"}

    # The paper-scale OSFV step first: quick, and it must not be squeezed out by the learning run; then the learning
    # run, then the other models' steps, then fp32 (slower than bf16) with what is left.
    step("osfv", main_precision, 0.0)
    summary["learning"] = learning_part(args, out, budget)
    first = steps[f"osfv {main_precision}"].get("seconds") or STEP_TIMEOUT_S
    for model in ("fsth", "lpd"):
        step(model, main_precision, 0.0 if args.cpu_smoke else min(first, STEP_TIMEOUT_S))
    if not args.cpu_smoke:  # compiling takes minutes on a CPU: the smoke run leaves it out
        step("osfv", main_precision, min(2 * first, COMPILE_TIMEOUT_S), compile=True)
        step("osfv", "32-true", min(1.5 * first, STEP_TIMEOUT_S))

    parts = [summary["learning"], *summary["step"].values()]
    summary["parts_ok"] = sum(part.get("error") is None for part in parts)
    summary["parts_failed"] = len(parts) - summary["parts_ok"]
    summary["elapsed_minutes"] = round(budget.elapsed() / 60, 2)
    text = json.dumps(finite(summary), indent=1)
    (out / "device_check.json").write_text(text + "\n")
    say(f"{summary['parts_ok']} of {len(parts)} parts ok in {summary['elapsed_minutes']} min; "
        f"summary: {out / 'device_check.json'}")
    print(text)
    produced = summary["learning"].get("generator_steps") is not None or any(
        part.get("ms_per_step") is not None for part in summary["step"].values())
    return 0 if produced else 1


if __name__ == "__main__":
    sys.exit(main())
