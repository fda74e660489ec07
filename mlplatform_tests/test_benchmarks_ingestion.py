"""The ingestion benchmark runs end to end on a small file and accounts for every row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ingestion.py"
ROWS = 20_000
KEYS = {
    "rows",
    "file_mb",
    "rows_stored",
    "rows_quarantined",
    "our_seconds",
    "our_rows_per_s",
    "bare_seconds",
    "bare_rows_per_s",
    "ratio",
    "target",
    "peak_rss_mb",
    "memory_target_mb",
    "meets_target",
    "stages_seconds",
    "gx_import_seconds",
}
STAGES = {"hash_plan", "read_type_validate_store", "feature_table"}


@pytest.mark.slow
def test_ingestion_benchmark_reports_every_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", str(ROWS), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert not KEYS - result.keys(), "keys missing from the JSON line"
    assert not STAGES - result["stages_seconds"].keys()
    assert result["rows"] == ROWS
    # generated rows are all valid: every one is stored, none quarantined
    assert result["rows_stored"] == ROWS
    assert result["rows_quarantined"] == 0
    assert result["target"] == 0.5
    assert result["memory_target_mb"] == 2048
    assert result["ratio"] > 0
    assert result["peak_rss_mb"] > 0
    assert isinstance(result["meets_target"], bool)
    assert result["meets_target"] == (
        result["ratio"] >= result["target"] and result["peak_rss_mb"] <= result["memory_target_mb"]
    )
    # the bare limit is the faster of pyarrow's default allocator and the system one;
    # ours runs on the allocator the package sets
    by_allocator = result["bare_seconds_by_allocator"]
    assert set(by_allocator) == {"default", "system"}
    assert result["bare_seconds"] == min(by_allocator.values())
    assert result["our_allocator"] == "system"
    assert result["bare_allocator"] in {"mimalloc", "jemalloc", "system"}
