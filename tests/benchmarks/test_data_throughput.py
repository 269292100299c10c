"""benchmarks/data_throughput.py: synthetic mp4 shards written, every configuration streamed and reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_throughput.py"


def test_reports_each_module_transfer_and_worker_count(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--size", "32", "--clips", "2", "--frames", "6",
         "--modules", "pairs,few_shot", "--references", "2", "--transfer", "float32,uint8", "--workers", "0,1",
         "--items-per-clip", "2", "--batch", "2", "--batches", "2", "--skip", "1", "--step-ms", "100"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(("pairs", "few_shot"))]
    assert sorted((row[0], row[1], row[3]) for row in rows) == sorted(
        (module, transfer, workers) for module in ("pairs", "few_shot") for transfer in ("float32", "uint8")
        for workers in ("0", "1"))
    for row in rows:
        assert float(row[4]) > 0 and float(row[5]) > 0 and int(row[8]) >= 1
    assert any((tmp_path / "shards").glob("*.tar"))
