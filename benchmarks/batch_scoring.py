"""Benchmark: batch inference of 1M and 10M feature rows against the bare model.

Trains a champion-like pipeline (histogram gradient boosting with the candidate's
defaults, on 10,000 generated rows typed and validated as ingestion does), writes
the input feature rows as a Parquet dataset per size (a 1,000,000-row generated
table, built in chunks of 250,000 and tiled with distinct entity ids to reach larger
sizes), then measures per size, each in its own subprocess so peak RSS is per size:

- ``ours``: :func:`mlplatform.resources.batch_scoring.score_dataset` from the
  Parquet dataset to a published partition (schema checks of every file, streaming
  reads of the needed columns, scoring, out-of-range counts, Parquet parts, atomic
  publish): rows/s and peak RSS (``ru_maxrss`` of the child);
- ``bare``: in a separate child, the same rows loaded into pandas first (not
  timed), then ``pipeline.predict_proba`` on all of them at once, and again slice
  by slice of ``--batch-rows`` (histogram boosting predicts faster on slices that
  fit the caches); the faster of the two is the limit any batch scorer of this
  model can reach.

Both use the same native-thread limit (``--threads``, default 1, as
``score_dataset`` does); ``ratio`` is ours / bare at that limit. The bare model on
every core is reported too, for information only.

Training and data generation run in a child too: Linux carries a process's peak RSS
over ``fork`` and ``exec``, so the parent stays small for the children's
``ru_maxrss`` to be their own. Ends with one JSON line.

    .venv/bin/python benchmarks/batch_scoring.py                   # 1M and 10M rows
    .venv/bin/python benchmarks/batch_scoring.py --sizes 100000    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# Heavy imports (pandas, pyarrow, sklearn, mlplatform) happen inside the children only.

BASE_ROWS = 1_000_000
CHUNK_ROWS = 250_000
TRAIN_ROWS = 10_000
DEFAULT_SIZES = (1_000_000, 10_000_000)
RATIO_TARGET = 0.8
RSS_LIMIT_BYTES = 1 << 30
RSS_GROWTH_LIMIT = 1.2
EPOCH = "2024-01-01T00:00:00Z"
BYTES_PER_INPUT_ROW = 60  # Parquet input is ~45 bytes a row; for the disk check
MODEL_FILE = "model.pkl"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument(
        "--threads", type=int, default=1, help="native (OpenMP/BLAS) threads for the model"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    # internal: what a child process does
    parser.add_argument("--child", choices=["prepare", "ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _peak_rss() -> dict[str, int]:
    """Peak RSS of this process: ``ru_maxrss`` and, as a cross-check, ``VmHWM``."""
    out = {"max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vm_hwm_bytes"] = int(line.split()[1]) * 1024
    return out


# --- data and model (the "prepare" child) -------------------------------------------------


def _feature_rows(n_rows: int, seed: int, start_udi: int) -> pd.DataFrame:
    """Generated rows typed and validated as ingestion does, as a feature table."""
    import pandas as pd

    from mlplatform.core.features import build_feature_table
    from mlplatform.core.generator import generate_ai4i
    from mlplatform.core.ingest import type_and_validate
    from mlplatform.core.schema import AI4I

    raw = generate_ai4i(n_rows, seed=seed, start_udi=start_udi, burn_in=1_000)
    typed = type_and_validate(raw, AI4I, f"generated-{seed}")
    if typed.rows_quarantined:
        raise RuntimeError(f"generated chunk {seed}: {typed.rows_quarantined} rows quarantined")
    table = build_feature_table(typed.valid, AI4I)
    table["event_time"] = pd.Timestamp(EPOCH) + pd.to_timedelta(table[AI4I.entity_id], unit="s")
    return table


def _base_chunks() -> list[pa.Table]:
    """The 1,000,000 generated serving rows (no label), in chunks of 250,000 (ids from 1)."""
    import pyarrow as pa

    from mlplatform.core.schema import AI4I

    return [
        pa.Table.from_pandas(
            _feature_rows(CHUNK_ROWS, seed=100 + i, start_udi=1 + i * CHUNK_ROWS).drop(
                columns=[AI4I.target]
            ),
            preserve_index=False,
        )
        for i in range(BASE_ROWS // CHUNK_ROWS)
    ]


def _tiles(chunks: list[pa.Table], size: int) -> Iterator[pa.Table]:
    """``size`` rows: the base chunks repeated, ids (and times) shifted per repeat."""
    import pyarrow as pa
    import pyarrow.compute as pc

    written = 0
    tile = 0
    while written < size:
        for chunk in chunks:
            take = chunk.slice(0, min(chunk.num_rows, size - written))
            if take.num_rows == 0:
                return
            shift = tile * BASE_ROWS
            udi = pc.add(take.column("udi"), shift)
            stamps = pc.add(
                take.column("event_time"), pa.scalar(shift * 1_000_000, pa.duration("us"))
            )
            take = take.set_column(take.schema.get_field_index("udi"), "udi", udi)
            take = take.set_column(take.schema.get_field_index("event_time"), "event_time", stamps)
            yield take
            written += take.num_rows
        tile += 1


def _child_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Fit the pipeline and its training reference; write every input dataset."""
    import pyarrow.parquet as pq

    from mlplatform.core.models import train_candidate
    from mlplatform.core.schema import AI4I
    from mlplatform.core.serving import TrainingReference

    started = time.perf_counter()
    train = _feature_rows(TRAIN_ROWS, seed=7, start_udi=1)
    model = train_candidate(train, AI4I, model_name="hist_gradient_boosting")
    saved = {
        "pipeline": model.pipeline,
        "threshold": model.threshold,
        "reference": TrainingReference.from_frame(train, AI4I).to_dict(),
    }
    (args.workdir / MODEL_FILE).write_bytes(pickle.dumps(saved))
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    chunks = _base_chunks()
    inputs = {}
    for size in args.sizes:
        folder = args.workdir / f"input-{size}"
        folder.mkdir(parents=True)
        for i, part in enumerate(_tiles(chunks, size)):
            pq.write_table(part, folder / f"part-{i:05d}.parquet")
        inputs[str(size)] = sum(p.stat().st_size for p in folder.iterdir())
    return {
        "threshold": model.threshold,
        "params": model.params,
        "train_seconds": train_seconds,
        "data_seconds": time.perf_counter() - started,
        "input_bytes": inputs,
    }


# --- measurements (the "ours" and "bare" children) -----------------------------------------


def _child_ours(args: argparse.Namespace) -> dict[str, Any]:
    from mlplatform.core.schema import AI4I
    from mlplatform.core.serving import TrainingReference
    from mlplatform.resources.batch_scoring import score_dataset

    saved = pickle.loads((args.workdir / MODEL_FILE).read_bytes())
    reference = TrainingReference.from_dict(saved["reference"])
    before = _peak_rss()["max_rss_bytes"]
    started = time.perf_counter()
    summary = score_dataset(
        args.input,
        saved["pipeline"],
        AI4I,
        reference,
        out_dir=args.workdir / "predictions",
        partition=args.input.name,
        model_name="ai4i-failure",
        model_version="1",
        alias="champion",
        threshold=saved["threshold"],
        run_id="benchmark",
        scored_at=datetime.now(UTC),
        batch_rows=args.batch_rows,
        native_threads=args.threads,
    )
    seconds = time.perf_counter() - started
    written = sum(p.stat().st_size for p in (args.workdir / "predictions").rglob("*.parquet"))
    return {
        "rows": summary.rows,
        "seconds": seconds,
        "rows_per_s": summary.rows / seconds,
        "rss_before_scoring_bytes": before,
        **_peak_rss(),
        "positives": summary.positives,
        "batches": summary.batches,
        "output_bytes": written,
    }


def _child_bare(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.dataset as ds
    from threadpoolctl import threadpool_limits

    from mlplatform.core.features import model_inputs
    from mlplatform.core.schema import AI4I

    pipeline = pickle.loads((args.workdir / MODEL_FILE).read_bytes())["pipeline"]
    table = ds.dataset(args.input, format="parquet").to_table(columns=AI4I.model_features)
    x = model_inputs(table.to_pandas(), AI4I)
    del table
    rows = len(x)
    with threadpool_limits(limits=args.threads):
        started = time.perf_counter()
        pipeline.predict_proba(x)
        whole = time.perf_counter() - started
        # the same rows in slices of batch_rows: histogram boosting predicts faster on
        # slices that fit the caches, so this is a limit too
        started = time.perf_counter()
        for start in range(0, rows, args.batch_rows):
            pipeline.predict_proba(x.iloc[start : start + args.batch_rows])
        sliced = time.perf_counter() - started
    # For information: the model with every core (OpenMP's default), not the ratio's base.
    started = time.perf_counter()
    pipeline.predict_proba(x)
    all_cores = time.perf_counter() - started
    seconds = min(whole, sliced)
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "whole_rows_per_s": rows / whole,
        "sliced_rows_per_s": rows / sliced,
        "all_cores_rows_per_s": rows / all_cores,
        **_peak_rss(),
    }


def _run_child(kind: str, args: argparse.Namespace, data: Path | None = None) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--workdir",
        str(args.workdir),
        "--batch-rows",
        str(args.batch_rows),
        "--threads",
        str(args.threads),
        "--sizes",
        *[str(s) for s in args.sizes],
    ]
    if data is not None:
        command += ["--input", str(data)]
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average_before"] = round(load, 2)
    return result


# --- main ----------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _by_size(results: dict[int, dict[str, Any]], key: str, digits: int | None) -> dict[str, Any]:
    return {
        str(s): round(r[key], digits) if digits is not None else r[key] for s, r in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child is not None:
        run = {"prepare": _child_prepare, "ours": _child_ours, "bare": _child_bare}[args.child]
        print(json.dumps(run(args)))
        return 0
    args.sizes = sorted(set(args.sizes))
    own_workdir = args.workdir is None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="batch-scoring-bench-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    need = sum(args.sizes) * BYTES_PER_INPUT_ROW * 2
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        print(f"not enough disk in {args.workdir}: {_mib(free)} free, ~{_mib(need)} needed")
        return 2
    ours: dict[int, dict[str, Any]] = {}
    bare: dict[int, dict[str, Any]] = {}
    try:
        prepared = _run_child("prepare", args)
        print(
            f"trained hist_gradient_boosting on {TRAIN_ROWS:,} rows in "
            f"{prepared['train_seconds']:.1f} s (threshold {prepared['threshold']}); wrote "
            f"inputs {sorted(prepared['input_bytes'].items())} bytes in "
            f"{prepared['data_seconds']:.1f} s"
        )
        for size in args.sizes:
            data = args.workdir / f"input-{size}"
            ours[size] = _run_child("ours", args, data)
            if ours[size]["rows"] != size:
                raise RuntimeError(f"scored {ours[size]['rows']} rows of {size}")
            bare[size] = _run_child("bare", args, data)
            shutil.rmtree(data)
            shutil.rmtree(args.workdir / "predictions", ignore_errors=True)
            o, b = ours[size], bare[size]
            print(
                f"{size:>12,} rows: ours {o['rows_per_s']:>9,.0f} rows/s ({o['seconds']:.1f} s, "
                f"peak RSS {_mib(o['max_rss_bytes'])}); bare predict_proba "
                f"{b['rows_per_s']:>9,.0f} rows/s (all at once {b['whole_rows_per_s']:,.0f}, "
                f"in slices {b['sliced_rows_per_s']:,.0f}, every core "
                f"{b['all_cores_rows_per_s']:,.0f}; peak RSS {_mib(b['max_rss_bytes'])}); "
                f"ratio {o['rows_per_s'] / b['rows_per_s']:.3f}"
            )
    finally:
        if own_workdir and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    ratios = {s: ours[s]["rows_per_s"] / bare[s]["rows_per_s"] for s in args.sizes}
    worst_ratio = min(ratios.values())
    max_rss = max(o["max_rss_bytes"] for o in ours.values())
    small, large = args.sizes[0], args.sizes[-1]
    rss_growth = ours[large]["max_rss_bytes"] / ours[small]["max_rss_bytes"]
    meets = (
        worst_ratio >= RATIO_TARGET
        and max_rss < RSS_LIMIT_BYTES
        and (len(args.sizes) < 2 or rss_growth <= RSS_GROWTH_LIMIT)
    )
    print(
        f"ratio (worst size) {worst_ratio:.3f} (target >= {RATIO_TARGET}); largest peak RSS "
        f"{_mib(max_rss)} (target < 1 GiB); RSS {large:,} / {small:,} rows {rss_growth:.3f} "
        f"(target <= {RSS_GROWTH_LIMIT}): {'met' if meets else 'NOT met'}"
    )
    summary = {
        "sizes": args.sizes,
        "ours_rows_per_s": _by_size(ours, "rows_per_s", 0),
        "bare_rows_per_s": _by_size(bare, "rows_per_s", 0),
        "ratio_by_size": {str(s): round(r, 4) for s, r in ratios.items()},
        "ours_seconds": _by_size(ours, "seconds", 2),
        "bare_seconds": _by_size(bare, "seconds", 2),
        "peak_rss_bytes": _by_size(ours, "max_rss_bytes", None),
        "peak_rss_vm_hwm_bytes": _by_size(ours, "vm_hwm_bytes", None),
        "rss_before_scoring_bytes": _by_size(ours, "rss_before_scoring_bytes", None),
        "bare_whole_rows_per_s": _by_size(bare, "whole_rows_per_s", 0),
        "bare_sliced_rows_per_s": _by_size(bare, "sliced_rows_per_s", 0),
        "bare_all_cores_rows_per_s": _by_size(bare, "all_cores_rows_per_s", 0),
        "bare_peak_rss_bytes": _by_size(bare, "max_rss_bytes", None),
        "input_bytes": prepared["input_bytes"],
        "output_bytes": _by_size(ours, "output_bytes", None),
        "load_average_before": {
            str(s): [ours[s]["load_average_before"], bare[s]["load_average_before"]]
            for s in args.sizes
        },
        "rss_ratio_largest_smallest": round(rss_growth, 4),
        "ratio": round(worst_ratio, 4),
        "target": RATIO_TARGET,
        "rss_limit_bytes": RSS_LIMIT_BYTES,
        "rss_growth_limit": RSS_GROWTH_LIMIT,
        "meets_target": meets,
        "model": "hist_gradient_boosting",
        "model_params": prepared["params"],
        "threshold": prepared["threshold"],
        "train_rows": TRAIN_ROWS,
        "batch_rows": args.batch_rows,
        "native_threads": args.threads,
        "bare_measured": (
            "separate child: rows loaded into pandas first (not timed); with native_threads "
            "threads, one predict_proba on all rows and one per batch_rows slice; bare is "
            "the faster of the two (the ratio's base); then one on all rows with every core "
            "(information only)"
        ),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
