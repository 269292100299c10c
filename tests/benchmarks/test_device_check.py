"""benchmarks/device_check.py: the CPU smoke run writes a full summary; a GPU run without CUDA refuses in one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "device_check.py"


def run_check(*args: str, env: dict[str, str] | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


def assert_row(row: dict, columns: tuple[str, ...] = ("PSNR", "L1")) -> None:
    assert row["n"] > 0
    for column in columns:
        assert row[column] is not None and math.isfinite(row[column]), (column, row)


@pytest.mark.slow
def test_cpu_smoke_writes_the_summary(tmp_path):
    result = run_check("--cpu-smoke", "--out", str(tmp_path), "--threads", "1", env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "device_check.json").read_text())
    assert json.loads(result.stdout) == summary  # stdout is the summary alone
    assert summary["cpu_smoke"] is True and "NOT GPU figures" in summary["kind"]
    errors = {name: part["error"] for name, part in [("learning", summary["learning"]), *summary["step"].items()]}
    assert summary["environment"]["torch"] and summary["parts_failed"] == 0, errors

    learning = summary["learning"]
    assert learning["error"] is None and learning["generator_steps"] > 0
    assert "benchmarks/osfv_learning.py" in learning["command"] and "accelerator=gpu" not in learning["command"]
    for row in ("model", "copy source frame"):
        assert_row(learning["reconstruction"]["all pairs"][row], ("PSNR", "L1", "PSNR fg", "L1 fg"))
    assert set(learning["free_view"]) == {"yaw -20", "yaw +20", "all yaws"}
    for row in ("model", "no turn"):
        assert_row(learning["free_view"]["all yaws"][row], ("PSNR fg", "L1 fg"))

    assert set(summary["step"]) == {"osfv 32-true", "fsth 32-true", "lpd 32-true"}  # all three models' steps
    for name, step in summary["step"].items():
        assert step["error"] is None and "benchmarks/train_step.py" in step["command"]
        assert f"--model {step['model']}" in step["command"] and f"{step['model']}/tiny" in step["command"], name
        assert step["timed_steps"] > 0 and step["ms_per_step"] > 0 and step["samples_per_s"] > 0
        assert step["peak_memory_gib"] > 0


def test_learning_curve_extrapolation_survives_a_run_too_short_for_a_line():
    """A loaded machine may validate once (or at step 0) in the smoke run: no fit, no crash (was LinAlgError)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from osfv_learning import extrapolate
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    assert extrapolate([0], [0.2], 0.01, log_values=True) is None
    assert extrapolate([3], [14.0], 30.0, log_values=False) is None
    assert extrapolate([0, 3, 3], [0.3, 0.2, 0.2], 0.01, log_values=True) is None
    assert extrapolate([1, 10, 100], [10.0, 12.0, 14.0], 16.0, log_values=False) > 100  # the trend goes on
    assert extrapolate([1, 10, 100], [0.4, 0.2, 0.1], 0.2, log_values=True) == 100  # already there


def test_gpu_check_without_cuda_exits_2_in_one_line(tmp_path):
    result = run_check("--out", str(tmp_path / "check"), env={"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and "--cpu-smoke" in lines[0], result.stderr
    assert result.stdout == "" and not (tmp_path / "check").exists()
