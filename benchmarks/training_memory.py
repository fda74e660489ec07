"""Benchmark: the training path's reads of a 10,000,000-row feature table, in bounded memory.

Builds a feature store of N rows (not timed): a base of generated rows through the real
ingestion (:func:`~mlplatform.core.generator.generate_ai4i` -> ``ingest_batch``), its
stored part tiled with fresh entity ids into batch versions of 1,048,576 rows each,
written by the store's own ``BatchWriter``; then the feature table as the
``feature_table`` asset stores it: a snapshot of those parts
(``FeatureStore.snapshot``), written by the IO manager. Then measures, each in a fresh
child process, its peak resident set (``VmHWM``):

* **ours**: the real ``train_test_split`` asset, materialized with Dagster on that
  snapshot (the target column, then the training columns of a stratified sample of
  ``max_rows`` rows, derived features computed for them; the split written as
  Parquet), then what ``candidate_model`` reads: the split, loaded by the IO manager,
  its training rows;
* **bare**: ``pyarrow`` reading the stored training columns of every part, every row,
  converted to pandas: the least a reader of the whole table's needed columns holds
  (derived features, computed from those, not even counted);
* **whole** (``--whole``): reading every stored column of every row, then the
  stratified split of all of it.

Each child reports its RSS after its imports and its peak; the figures compared are
the peaks above that baseline (Dagster, scikit-learn and MLflow imports are the same
whatever the table's size). Ends with one JSON line.

    .venv/bin/python benchmarks/training_memory.py [--rows N] [--max-rows N] [--whole]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _shared import fresh_state, peak_rss_mb, stage_peak_mb

DEFAULT_ROWS = 10_000_000
DEFAULT_BASE_ROWS = 100_000
ROW_GROUP_ROWS = 1 << 20
# the whole training read (imports included) of a 10M-row table stays under this
MEMORY_BUDGET_MB = 1536.0
# our growth above the imports at most this share of the bare read of the needed columns
TARGET_RATIO = 1.0
DATA_SEED = 7
TABLE_STEM = "feature_table"
_CHILD_KINDS = ("ours", "bare", "whole")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"feature-table rows ({DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--base-rows",
        type=int,
        default=DEFAULT_BASE_ROWS,
        help=f"generated rows tiled into the table ({DEFAULT_BASE_ROWS:,})",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=None,
        help="train_test_split's max_rows (default: the asset's default)",
    )
    parser.add_argument(
        "--whole",
        action="store_true",
        help="also measure the previous path (every column and row read); needs ~7 GB at 10M",
    )
    # internal: one measurement in a child process
    parser.add_argument("--child", choices=_CHILD_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--columns", type=json.loads, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- the table ------------------------------------------------------------------------


def write_table(rows: int, base_rows: int, root: Path, work: Path) -> dict[str, Any]:
    """A feature store of ``rows`` rows under ``root`` and its feature table snapshot.

    ``base_rows`` generated rows go through ingestion; their stored part is tiled with
    fresh entity ids into batch versions of at most ``ROW_GROUP_ROWS`` rows.
    """
    import numpy as np
    import pandas as pd

    from mlplatform.core.batches import BatchPlan
    from mlplatform.core.expectations import suite_fingerprint
    from mlplatform.core.generator import generate_ai4i
    from mlplatform.defs.common import DATASET
    from mlplatform.resources.asset_storage import SNAPSHOT_SUFFIX, write_snapshot
    from mlplatform.resources.ingestion import discover, ingest_batch

    state = work / "base"
    landing, base_store = fresh_state(state)
    generate_ai4i(min(rows, base_rows), seed=DATA_SEED).to_csv(
        state / "landing" / "base.csv", index=False
    )
    found = discover([landing], base_store)
    base_manifest = ingest_batch(found.new[0], landing, base_store, DATASET).manifest
    base = base_store.read_batch(base_manifest.key)
    store = type(base_store)(root=str(root))
    ids = base[DATASET.entity_id].to_numpy(dtype="int64")
    span = int(ids.max()) + 1
    copies_per_version = max(1, ROW_GROUP_ROWS // len(base))
    stamp = pd.Timestamp(datetime.now(UTC)).as_unit("us")
    written = positives = versions = 0
    copy = 0
    while written < rows:
        tiles = []
        for _ in range(copies_per_version):
            take = min(len(base), rows - written - sum(len(t) for t in tiles))
            if take <= 0:
                break
            tile = base.iloc[:take].copy()
            tile[DATASET.entity_id] = ids[:take] + copy * span
            tiles.append(tile)
            copy += 1
        frame = pd.concat(tiles, ignore_index=True)
        plan = BatchPlan(f"tile-{versions:05d}", "benchmark", f"tile {versions}", {})
        with store.writer(plan, stamp + pd.Timedelta(microseconds=versions)) as writer:
            writer.write_rows(frame, DATASET.event_time)
            writer.commit(
                rows_landed=len(frame),
                rows_quarantined=0,
                validation=dict(base_manifest.validation),
                suite=suite_fingerprint(DATASET),
                stored_check=dict(base_manifest.stored_check),
            )
        written += len(frame)
        positives += int(np.sum(frame[DATASET.target]))
        versions += 1
    snapshot = store.snapshot(DATASET)
    write_snapshot(snapshot, root / f"{TABLE_STEM}{SNAPSHOT_SUFFIX}")
    return {
        "rows": snapshot.num_rows,
        "positives": positives,
        "parts": len(snapshot.parts),
        "file_mb": sum((root / p.path).stat().st_size for p in snapshot.parts) / 1e6,
        "paths": [str(root / p.path) for p in snapshot.parts],
    }


# -- child processes ------------------------------------------------------------------


def _parts(root: Path) -> list[str]:
    from mlplatform.resources.asset_storage import SNAPSHOT_SUFFIX, read_snapshot

    snapshot = read_snapshot(root / f"{TABLE_STEM}{SNAPSHOT_SUFFIX}")
    return [str(root / p.path) for p in snapshot.parts]


def _bare(root: Path, columns: list[str]) -> dict[str, Any]:
    """The limit: the stored needed columns of every row, read whole (pyarrow and pandas)."""
    import pandas  # noqa: F401  (imported before the baseline, as the other children do)
    import pyarrow.dataset as ds

    paths = _parts(root)
    before = stage_peak_mb()
    started = time.perf_counter()
    frame = ds.dataset(paths, format="parquet").to_table(columns=columns).to_pandas()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(frame), "rss_before_mb": before}


def _whole(root: Path) -> dict[str, Any]:
    """What training read before: every column and row, then the split of all of it."""
    import pyarrow.dataset as ds

    from mlplatform.core.split import stratified_split
    from mlplatform.defs.common import DATASET

    paths = _parts(root)
    before = stage_peak_mb()
    started = time.perf_counter()
    frame = ds.dataset(paths, format="parquet").to_table().to_pandas()
    split, _ = stratified_split(frame, DATASET.target, test_size=0.3, seed=42)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(split), "rss_before_mb": before}


def _ours(root: Path, work: Path, max_rows: int | None) -> dict[str, Any]:
    """The train_test_split asset through Dagster, then candidate_model's read."""
    import dagster as dg
    import pandas as pd

    from mlplatform.core.split import SPLIT_COLUMN
    from mlplatform.defs.common import DATASET
    from mlplatform.defs.features import feature_table
    from mlplatform.defs.training import train_test_split, training_columns
    from mlplatform.resources.asset_storage import AssetStorage
    from mlplatform.resources.feature_store import FeatureStore

    storage = AssetStorage(base_dir=str(work / "assets"))
    resources = {
        "io_manager": storage,
        "feature_io_manager": AssetStorage(base_dir=str(root)),
        "feature_store": FeatureStore(root=str(root)),
    }
    config = {} if max_rows is None else {"max_rows": max_rows}
    instance = dg.DagsterInstance.ephemeral()
    before = stage_peak_mb()
    started = time.perf_counter()
    result = dg.materialize(
        [feature_table, train_test_split],
        selection=["train_test_split"],
        resources=resources,
        run_config={"ops": {"train_test_split": {"config": config}}},
        instance=instance,
    )
    split_s = time.perf_counter() - started
    split_peak = stage_peak_mb()
    [event] = result.asset_materializations_for_node("train_test_split")
    metadata = {k: v.value for k, v in event.metadata.items()}

    started = time.perf_counter()
    # as candidate_model receives it: the IO manager's read, then the training rows
    stored = storage.path_for(dg.AssetKey("train_test_split"))
    assert stored is not None
    split = pd.read_parquet(stored)
    train = split[split[SPLIT_COLUMN] == "train"]
    read_s = time.perf_counter() - started
    read_peak = stage_peak_mb()
    if list(split.columns) != [*training_columns(DATASET), SPLIT_COLUMN]:
        raise RuntimeError(f"train_test_split has columns {list(split.columns)}")
    if split[DATASET.entity_id].duplicated().any():
        raise RuntimeError("a sampled entity appears twice")
    return {
        "seconds": split_s + read_s,
        "stages_seconds": {"train_test_split": split_s, "candidate_read": read_s},
        "stage_peak_rss_mb": {"train_test_split": split_peak, "candidate_read": read_peak},
        "rows": len(split),
        "train_rows": len(train),
        "positives": int(split[DATASET.target].sum()),
        "feature_table_rows": metadata["feature_table_rows"],
        "sampled": metadata["sampled"],
        "rss_before_mb": before,
    }


def _child(args: argparse.Namespace) -> int:
    if args.child == "bare":
        out = _bare(args.table, args.columns)
    elif args.child == "whole":
        out = _whole(args.table)
    else:
        out = _ours(args.table, args.work, args.max_rows)
    out["peak_rss_mb"] = max([peak_rss_mb(), *out.get("stage_peak_rss_mb", {}).values()])
    args.result.write_text(json.dumps(out))
    return 0


# -- the parent -----------------------------------------------------------------------


def _run_child(
    kind: str, table: Path, work: Path, max_rows: int | None, columns: list[str] | None = None
) -> dict[str, Any]:
    """One measurement in a fresh process."""
    folder = work / kind
    folder.mkdir()
    result = folder / "result.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", kind]
    argv += ["--table", str(table), "--work", str(folder), "--result", str(result)]
    if max_rows is not None:
        argv += ["--max-rows", str(max_rows)]
    if columns is not None:
        argv += ["--columns", json.dumps(columns)]
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    subprocess.run(argv, check=True, env=env)
    out: dict[str, Any] = json.loads(result.read_text())
    out["growth_mb"] = out["peak_rss_mb"] - out["rss_before_mb"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    if args.rows < 100 or args.base_rows < 100:
        print("--rows and --base-rows must be at least 100", file=sys.stderr)
        return 2
    from mlplatform.defs.common import DATASET
    from mlplatform.defs.training import DEFAULT_MAX_SPLIT_ROWS, training_columns

    max_rows = args.max_rows or DEFAULT_MAX_SPLIT_ROWS
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="training-memory-") as tmp:
        work = Path(tmp)
        table = work / "feature_store"
        started = time.perf_counter()
        written = write_table(args.rows, args.base_rows, table, work)
        print(
            f"feature store: {written['rows']:,} rows in {written['parts']} parts, "
            f"{written['file_mb']:.0f} MB, and its snapshot, in "
            f"{time.perf_counter() - started:.1f} s (not timed)"
        )
        derived = {d.name for d in DATASET.derived}
        columns = [c for c in training_columns(DATASET) if c not in derived]
        runs = {"bare": _run_child("bare", table, work, None, columns)}
        runs["ours"] = _run_child("ours", table, work, max_rows)
        if args.whole:
            runs["whole"] = _run_child("whole", table, work, None)
        for kind, run in runs.items():
            print(
                f"{kind}: {run['rows']:,} rows in {run['seconds']:.2f} s, peak RSS "
                f"{run['peak_rss_mb']:.0f} MB ({run['growth_mb']:.0f} MB above its imports)"
            )

    ours, bare = runs["ours"], runs["bare"]
    expected = min(args.rows, max_rows)
    if ours["rows"] != expected or ours["feature_table_rows"] != args.rows:
        raise RuntimeError(f"split {ours['rows']} of {args.rows} rows; expected {expected}")
    if bare["rows"] != args.rows:
        raise RuntimeError(f"bare read {bare['rows']} of {args.rows} rows")
    # the sample keeps the table's share of positives (largest-remainder rounding)
    share = written["positives"] / args.rows
    if abs(ours["positives"] - share * expected) > 1:
        raise RuntimeError(f"{ours['positives']} positives in the sample; table share {share}")
    ratio = ours["growth_mb"] / bare["growth_mb"] if bare["growth_mb"] > 0 else float("inf")
    within_budget = ours["peak_rss_mb"] <= MEMORY_BUDGET_MB
    result = {
        "rows": args.rows,
        "file_mb": round(written["file_mb"], 1),
        "parts": written["parts"],
        "max_rows": max_rows,
        "sampled_rows": ours["rows"],
        "train_rows": ours["train_rows"],
        "peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "rss_after_imports_mb": round(ours["rss_before_mb"], 1),
        "growth_mb": round(ours["growth_mb"], 1),
        "stage_peak_rss_mb": {k: round(v, 1) for k, v in ours["stage_peak_rss_mb"].items()},
        "stages_seconds": {k: round(v, 3) for k, v in ours["stages_seconds"].items()},
        "seconds": round(ours["seconds"], 3),
        "bare_peak_rss_mb": round(bare["peak_rss_mb"], 1),
        "bare_growth_mb": round(bare["growth_mb"], 1),
        "bare_seconds": round(bare["seconds"], 3),
        **(
            {
                "whole_peak_rss_mb": round(runs["whole"]["peak_rss_mb"], 1),
                "whole_growth_mb": round(runs["whole"]["growth_mb"], 1),
                "whole_seconds": round(runs["whole"]["seconds"], 3),
            }
            if "whole" in runs
            else {}
        ),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "memory_budget_mb": MEMORY_BUDGET_MB,
        "meets_target": ratio <= TARGET_RATIO and within_budget,
        "meets_ratio_target": ratio <= TARGET_RATIO,
        "meets_memory_budget": within_budget,
        "cpu_count": os.cpu_count(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
