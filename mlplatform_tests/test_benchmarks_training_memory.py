"""The training-memory benchmark runs end to end on a small table and samples as configured.

The full run (10,000,000 rows) is ``benchmarks/training_memory.py`` with no arguments;
here a 50,000-row table, sampled to 5,000 rows, checks that the script still measures
the real asset and reports every figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "training_memory.py"
ROWS = 50_000
MAX_ROWS = 5_000
KEYS = {
    "rows",
    "max_rows",
    "sampled_rows",
    "train_rows",
    "peak_rss_mb",
    "growth_mb",
    "bare_peak_rss_mb",
    "bare_growth_mb",
    "ratio",
    "target",
    "memory_budget_mb",
    "meets_target",
    "stage_peak_rss_mb",
}


@pytest.mark.slow
def test_training_memory_benchmark_reports_a_sampled_split(tmp_path: Path) -> None:
    argv = [sys.executable, str(SCRIPT), "--rows", str(ROWS), "--max-rows", str(MAX_ROWS)]
    done = subprocess.run(
        [*argv, "--base-rows", str(MAX_ROWS)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not KEYS - result.keys(), "keys missing from the JSON line"
    assert not {"train_test_split", "candidate_read"} - result["stage_peak_rss_mb"].keys()
    assert result["rows"] == ROWS and result["max_rows"] == MAX_ROWS
    # the asset split a sample of max_rows rows, 70 % of them for training
    assert result["sampled_rows"] == MAX_ROWS
    assert result["train_rows"] == int(MAX_ROWS * 0.7)
    assert result["target"] == 1.0 and result["memory_budget_mb"] == 1536
    assert result["peak_rss_mb"] > 0 and result["bare_peak_rss_mb"] > 0
    assert result["meets_target"] == (
        result["ratio"] <= result["target"] and result["peak_rss_mb"] <= result["memory_budget_mb"]
    )
