"""Benchmark: ingesting one large CSV file, against the bare read-and-write limit.

Generates N rows (:func:`~mlplatform.core.generator.generate_ai4i`, not timed) into
one CSV file and measures, each path in its own child process:

* **ours**: the path the ``raw_observations`` and ``feature_table`` assets run, with
  the resources ``build_resources`` configures: landing ->
  :func:`~mlplatform.resources.ingestion.discover` (sha256 + plan) ->
  :func:`~mlplatform.resources.ingestion.ingest_batch` (read, type, validate every
  row with Great Expectations, store the valid rows with their lineage as a new batch
  version, with GX's verdict on the rows as stored, which the ingestion asset's
  blocking check reports) -> the ``feature_table`` asset's own work:
  :func:`~mlplatform.defs.features.table_version` (the snapshot, its blocking check:
  every part hashed against its digest, footers, recorded verdicts; its metadata),
  then the snapshot file as the IO manager writes it;
* **bare**: ``pyarrow.csv.read_csv`` + ``pyarrow.parquet.write_table`` of the same file,
  on each of two allocators for Arrow's memory: pyarrow's default (mimalloc) and the
  system allocator, which ``mlplatform`` makes Arrow's default (see its ``__init__``).
  The faster of the two medians is the limit.

Each repetition runs bare (on both allocators) then ours, each in a fresh process and
a fresh state folder; the median run of each path is reported (the best too). The
children import Great Expectations and run one tiny validation before timing
(reported separately).
Each child also reports the CPU time it used (all its threads), which a busy machine
inflates less than wall time. Ends with one JSON line.

    .venv/bin/python benchmarks/ingestion.py [--rows N] [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _shared import fresh_state, peak_rss_mb, stage_peak_mb

DEFAULT_ROWS = 1_000_000
TARGET_RATIO = 0.5  # our throughput at least half the bare read-and-write limit
MEMORY_TARGET_MB = 2048.0
DATA_SEED = 7
CSV_NAME = "machines.csv"
FEATURE_TABLE = "feature_table"
WARMUP_ROWS = 50
PROFILE_TOP = 25
_CHILD_KINDS = ("ours", "bare")
_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
# the bare path is measured on both allocators; the faster median is the limit
_BARE_ALLOCATORS = (None, "system")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows to generate ({DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of each path; the median is reported"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per chunk of ingest_batch (default: the asset's default)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"also run our path once under cProfile; print the top {PROFILE_TOP} by "
        "cumulative time (not part of the timings)",
    )
    # internal: one measurement in a child process
    parser.add_argument("--child", choices=_CHILD_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- child processes ------------------------------------------------------------------


def _bare(csv: Path, state: Path) -> dict[str, Any]:
    """The limit: read the whole file with pyarrow, write it as one Parquet file."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    state.mkdir(parents=True, exist_ok=True)
    rss_before = stage_peak_mb()
    cpu = time.process_time()
    started = time.perf_counter()
    table = pacsv.read_csv(csv)
    read_s = time.perf_counter() - started
    pq.write_table(table, state / "bare.parquet")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "stages": {"read_csv": read_s, "write_parquet": seconds - read_s},
        "rows": table.num_rows,
        "rss_before_mb": rss_before,
        "stage_peak_rss_mb": {"before": rss_before, "read_write": stage_peak_mb()},
    }


def _warm_up() -> tuple[float, float]:
    """Import GX and validate a tiny chunk as ingestion does; (import s, validation s)."""
    import pyarrow as pa

    from mlplatform.core.generator import generate_ai4i
    from mlplatform.core.ingest import type_and_validate
    from mlplatform.defs.common import DATASET

    started = time.perf_counter()
    import great_expectations  # noqa: F401  (the import is what is timed)

    imported = time.perf_counter()
    tiny = pa.Table.from_pandas(generate_ai4i(WARMUP_ROWS, seed=1).astype(str))
    # the same suite and name as ingest_batch, so its validation definition is cached
    type_and_validate(tiny, DATASET, "warm-up.csv")
    return imported - started, time.perf_counter() - imported


def _ours(
    csv: Path, state: Path, chunk_rows: int | None, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    """The assets' path, stage by stage, on a fresh state folder."""
    from mlplatform.core.batches import parse_time
    from mlplatform.core.features import table_columns
    from mlplatform.defs.common import DATASET
    from mlplatform.defs.features import table_version
    from mlplatform.resources.asset_storage import SNAPSHOT_SUFFIX, write_snapshot
    from mlplatform.resources.feature_tables import read_features
    from mlplatform.resources.ingestion import DEFAULT_CHUNK_ROWS, discover, ingest_batch

    gx_import_s, warmup_s = _warm_up()
    landing, store = fresh_state(state)
    dropped = state / "landing" / csv.name
    try:  # the same bytes without a copy; landing moves the file to its archive
        os.link(csv, dropped)
    except OSError:
        shutil.copyfile(csv, dropped)

    chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS
    peaks = {"imports_and_warmup": stage_peak_mb()}
    if profiler is not None:
        profiler.enable()
    cpu = time.process_time()
    # each stage is timed on its own; reading the memory peaks between them is not timed
    started = time.perf_counter()
    found = discover([landing], store)
    hash_plan_s = time.perf_counter() - started
    peaks["hash_plan"] = stage_peak_mb()
    if len(found.new) != 1:
        raise RuntimeError(f"expected one new batch, discovered {found}")

    started = time.perf_counter()
    # as the raw_observations asset: read, type, validate (GX on every landed row), store,
    # and GX's verdict on the stored rows, recorded in the manifest its check reports
    report = ingest_batch(found.new[0], landing, store, DATASET, chunk_rows=chunk_rows)
    ingest_s = time.perf_counter() - started
    peaks["read_type_validate_store"] = stage_peak_mb()
    stored_check = report.manifest.stored_check
    if not stored_check or stored_check.get("failures"):
        raise RuntimeError(f"the stored batch failed its check: {stored_check}")

    started = time.perf_counter()
    # as the feature_table asset: the snapshot as of now, its blocking check (every part
    # hashed whole, footers, recorded GX verdicts) and its metadata; then the IO manager
    # writes the snapshot file
    version = table_version(store, parse_time(datetime.now(UTC)))
    if not version.check.success:
        raise RuntimeError(f"the feature table failed its check: {version.check.as_metadata()}")
    write_snapshot(version.snapshot, Path(store.root) / f"{FEATURE_TABLE}{SNAPSHOT_SUFFIX}")
    table_s = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu
    if profiler is not None:
        profiler.disable()
    peaks["feature_table"] = stage_peak_mb()

    # not timed: what a consumer reading the whole table back pays (train_test_split reads
    # only its columns of a sample), reported beside the figures
    started = time.perf_counter()
    table = store.table(version.snapshot)
    frame = read_features(table, DATASET, table_columns(DATASET, table.columns))
    read_back_s = time.perf_counter() - started
    peaks["read_back_untimed"] = stage_peak_mb()

    m = report.manifest
    return {
        "seconds": hash_plan_s + ingest_s + table_s,
        "cpu_seconds": cpu_seconds,
        "stages": {
            "hash_plan": hash_plan_s,
            "read_type_validate_store": ingest_s,
            "feature_table": table_s,
        },
        "table_read_back_seconds": read_back_s,
        "rows_landed": m.rows_landed,
        "rows_stored": m.rows_stored,
        "rows_quarantined": m.rows_quarantined,
        "feature_table_rows": len(frame),
        "feature_table_snapshot_rows": version.snapshot.num_rows,
        "parts": len(m.parts),
        "stored_mb": sum((Path(store.root) / p.path).stat().st_size for p in version.snapshot.parts)
        / 1e6,
        "chunk_rows": chunk_rows,
        "gx_import_seconds": gx_import_s,
        "warmup_seconds": warmup_s,
        "rss_before_mb": peaks["imports_and_warmup"],
        "stage_peak_rss_mb": peaks,
    }


def _child(args: argparse.Namespace) -> int:
    if args.child == "bare":
        out = _bare(args.csv, args.state)
    elif args.profile:
        profiler = cProfile.Profile()
        out = _ours(args.csv, args.state, args.chunk_rows, profiler)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(PROFILE_TOP)
        out["profile"] = text.getvalue()
    else:
        out = _ours(args.csv, args.state, args.chunk_rows)
    # stage peaks were reset as they were read: the process's peak is the largest of them
    out["peak_rss_mb"] = max(peak_rss_mb(), *out["stage_peak_rss_mb"].values())
    import pyarrow as pa

    out["allocator"] = pa.default_memory_pool().backend_name
    args.result.write_text(json.dumps(out))
    return 0


# -- the parent -----------------------------------------------------------------------


def _run_child(
    kind: str,
    csv: Path,
    state: Path,
    chunk_rows: int | None,
    *,
    profile: bool = False,
    allocator: str | None = None,
) -> dict[str, Any]:
    """One measurement in a fresh process; its own numbers plus its RSS high-water mark.

    ``allocator`` sets Arrow's memory pool (``ARROW_DEFAULT_MEMORY_POOL``); None leaves
    the child its default: pyarrow's own (mimalloc) for the bare path, the one the
    ``mlplatform`` package sets (the system allocator) for ours.
    """
    result = state.with_suffix(".json")
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--csv",
        str(csv),
        "--state",
        str(state),
        "--result",
        str(result),
    ]
    if chunk_rows is not None:
        argv += ["--chunk-rows", str(chunk_rows)]
    if profile:
        argv.append("--profile")
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    # this process imported mlplatform, which set the variable: a child gets only the
    # allocator asked for (none: the default of what it imports)
    env.pop(_POOL_VARIABLE, None)
    if allocator is not None:
        env[_POOL_VARIABLE] = allocator
    subprocess.run(argv, check=True, env=env)
    out: dict[str, Any] = json.loads(result.read_text())
    shutil.rmtree(state, ignore_errors=True)  # keep at most one state folder on disk
    return out


def _check_counts(run: dict[str, Any], rows: int) -> None:
    """The count invariant, and every generated row accounted for (exactly once)."""
    landed, stored, quarantined = run["rows_landed"], run["rows_stored"], run["rows_quarantined"]
    if landed != stored + quarantined:
        raise RuntimeError(f"count invariant broken: {landed} != {stored} + {quarantined}")
    if landed != rows:
        raise RuntimeError(f"{rows} rows generated but {landed} landed")
    for key in ("feature_table_rows", "feature_table_snapshot_rows"):
        if run[key] != stored:
            raise RuntimeError(f"{stored} rows stored but the feature table has {run[key]}")


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return ordered[(len(ordered) - 1) // 2]


def _rate(rows: int, seconds: float) -> float:
    return rows / seconds if seconds > 0 else float("inf")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    if args.rows < 1:
        print("--rows must be at least 1", file=sys.stderr)
        return 2
    from mlplatform.core.generator import generate_ai4i

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ingestion-bench-") as tmp:
        work = Path(tmp)
        csv = work / CSV_NAME
        started = time.perf_counter()
        generate_ai4i(args.rows, seed=DATA_SEED).to_csv(csv, index=False)
        print(
            f"generated {args.rows:,} rows -> {csv.stat().st_size / 1e6:.1f} MB "
            f"in {time.perf_counter() - started:.1f} s (not timed)"
        )
        file_mb = csv.stat().st_size / 1e6
        bare_by_allocator: dict[str, list[dict[str, Any]]] = {
            str(a or "default"): [] for a in _BARE_ALLOCATORS
        }
        our_runs: list[dict[str, Any]] = []
        for i in range(max(1, args.repeat)):
            for allocator in _BARE_ALLOCATORS:
                run = _run_child(
                    "bare", csv, work / f"bare-{i}", args.chunk_rows, allocator=allocator
                )
                if run["rows"] != args.rows:
                    raise RuntimeError(f"bare read {run['rows']} of {args.rows} rows")
                bare_by_allocator[str(allocator or "default")].append(run)
            our_runs.append(_run_child("ours", csv, work / f"ours-{i}", args.chunk_rows))
            _check_counts(our_runs[-1], args.rows)
            bare_now = ", ".join(
                f"{name} {runs[-1]['seconds']:.2f} s" for name, runs in bare_by_allocator.items()
            )
            print(
                f"repetition {i + 1}: bare ({bare_now}), "
                f"ours {our_runs[-1]['seconds']:.2f} s "
                f"(peak RSS {our_runs[-1]['peak_rss_mb']:.0f} MB)"
            )
        if args.profile:
            profiled = _run_child("ours", csv, work / "profile", args.chunk_rows, profile=True)
            _check_counts(profiled, args.rows)
            print(profiled["profile"])

    bare_runs = min(bare_by_allocator.values(), key=lambda runs: _median_run(runs)["seconds"])
    median_bare = _median_run(bare_runs)
    median = _median_run(our_runs)
    ours_rate = _rate(args.rows, median["seconds"])
    bare_rate = _rate(args.rows, median_bare["seconds"])
    ratio = ours_rate / bare_rate
    ingest_seconds = statistics.median(
        r["stages"]["hash_plan"] + r["stages"]["read_type_validate_store"] for r in our_runs
    )
    # the fastest bare run on either allocator against our fastest
    fastest_bare = min(r["seconds"] for runs in bare_by_allocator.values() for r in runs)
    best_ratio = fastest_bare / min(r["seconds"] for r in our_runs)
    peak_mb = max(r["peak_rss_mb"] for r in our_runs)
    fast_enough = ratio >= TARGET_RATIO
    small_enough = peak_mb <= MEMORY_TARGET_MB
    result = {
        "rows": args.rows,
        "file_mb": round(file_mb, 1),
        "rows_stored": median["rows_stored"],
        "rows_quarantined": median["rows_quarantined"],
        "statistic": f"median of {len(our_runs)}",
        "our_seconds": round(median["seconds"], 3),
        "our_rows_per_s": round(ours_rate),
        "bare_seconds": round(median_bare["seconds"], 3),
        "bare_rows_per_s": round(bare_rate),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "ratio_of_best_runs": round(best_ratio, 3),
        "ingest_seconds": round(ingest_seconds, 3),
        "ingest_ratio": round(median_bare["seconds"] / ingest_seconds, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "rss_after_warmup_mb": round(median["rss_before_mb"], 1),
        "stage_peak_rss_mb": {k: round(v, 1) for k, v in median["stage_peak_rss_mb"].items()},
        "memory_target_mb": MEMORY_TARGET_MB,
        "meets_target": fast_enough and small_enough,
        "meets_ratio_target": fast_enough,
        "meets_memory_target": small_enough,
        "stages_seconds": {k: round(v, 3) for k, v in median["stages"].items()},
        "bare_stages_seconds": {k: round(v, 3) for k, v in median_bare["stages"].items()},
        "our_seconds_runs": [round(r["seconds"], 3) for r in our_runs],
        "bare_seconds_runs": [round(r["seconds"], 3) for r in bare_runs],
        "our_cpu_seconds_runs": [round(r["cpu_seconds"], 3) for r in our_runs],
        "bare_cpu_seconds_runs": [round(r["cpu_seconds"], 3) for r in bare_runs],
        "bare_peak_rss_mb": round(max(r["peak_rss_mb"] for r in bare_runs), 1),
        "bare_allocator": bare_runs[0]["allocator"],
        "bare_seconds_by_allocator": {
            name: round(_median_run(runs)["seconds"], 3) for name, runs in bare_by_allocator.items()
        },
        "our_allocator": median["allocator"],
        "gx_import_seconds": round(min(r["gx_import_seconds"] for r in our_runs), 3),
        "warmup_validation_seconds": round(min(r["warmup_seconds"] for r in our_runs), 3),
        "table_read_back_seconds": round(median["table_read_back_seconds"], 3),
        "stored_mb": round(median["stored_mb"], 1),
        "chunk_rows": median["chunk_rows"],
        "parts": median["parts"],
        "repeat": len(our_runs),
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
