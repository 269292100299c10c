"""benchmarks/train_step.py --against: two versions of the package timed in alternating subprocesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "train_step.py"


def test_without_drops_the_options_and_keeps_the_overrides():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from train_step import without
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    argv = ["--model", "lpd", "--against", "/x", "--steps=4", "--rounds", "2", "--", "--steps", "--a=1"]
    assert without(argv, ("--against", "--rounds", "--steps")) == ["--model", "lpd", "--", "--steps", "--a=1"]


def test_against_times_both_versions_and_passes_the_overrides(tmp_path):
    # The checkout itself stands in for an installed older version (its talkinghead/ is importable from REPO).
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "lpd", "--batch", "2", "--steps", "2", "--rounds", "2", "--warmup",
         "0", "--against", str(REPO), "--", "--model.init_args.discriminator_steps=2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.strip().startswith(f"before  {REPO / 'talkinghead'}: median step") for line in lines), lines
    assert any(line.strip().startswith("after ") and "median step" in line for line in lines), lines
    assert any("speed-up of after over before" in line for line in lines)


def test_against_a_folder_without_the_package_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--against", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "no installed talkinghead package there" in result.stderr
