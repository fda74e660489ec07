"""Batch inference at any size: stream feature rows, score per batch, publish a partition.

Layout under ``out_dir``::

    <partition>/part-00000.parquet, part-00001.parquet, ...   the published predictions
    .tmp-<partition>-<hex>/                                   a run still writing (hidden)
    .old-<partition>-<hex>/                                   the previous version, being dropped

The input is found with :mod:`pyarrow.dataset` and streamed file by file, only the
columns scoring needs, one batch at a time; each batch is scored
(:func:`~mlplatform.core.serving.score_batch`) and appended to the current part, so
memory is bounded by the batch size and never grows with the input. The schema of
the dataset and of every file in it is checked before any row is read: a missing or
mistyped column writes nothing.

A run writes into a hidden temporary folder and publishes it with two renames
(previous partition out of the way, new one in), then deletes the previous one. A
crash while scoring leaves the previous partition as it was. Readers of ``out_dir``
(``pyarrow.dataset``, ``pandas.read_parquet``) skip names starting with ``.`` or
``_``, so they never see a temporary folder. Runs of the same partition must not
overlap (one Dagster run per partition).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlplatform.core.features import add_derived
from mlplatform.core.schema import DatasetSpec
from mlplatform.core.serving import (
    BATCH_PREDICTION_SCHEMA,
    ScoringSummary,
    ServingInputError,
    TrainingReference,
    check_serving_input,
    feature_bin_counts,
    missing_value_counts,
    out_of_range_counts,
    score_batch,
)
from mlplatform.resources.files import TMP_PREFIX, errors_naming

__all__ = ["DEFAULT_BATCH_ROWS", "DEFAULT_ROWS_PER_PART", "open_source", "score_dataset"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 65_536
DEFAULT_ROWS_PER_PART = 1_048_576
OLD_PREFIX = ".old-"
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")
_STALE_TMP_SECONDS = 3600.0
# Read buffer per column chunk when streaming a Parquet file (see _batches).
_READ_BUFFER_BYTES = 1 << 20

Source: TypeAlias = str | Path | Sequence[str | Path] | ds.Dataset


def open_source(source: Source) -> ds.Dataset:
    """``source`` as a Parquet :class:`pyarrow.dataset.Dataset`.

    Parameters
    ----------
    source : path, sequence of paths or Dataset
        A Parquet file, a folder of them (names starting with ``.`` or ``_`` are
        skipped), a list of files, or a dataset as is.
    """
    if isinstance(source, ds.Dataset):
        return source
    if isinstance(source, str | Path):
        return ds.dataset(str(source), format="parquet")
    return ds.dataset([str(p) for p in source], format="parquet")


def _check_schemas(
    dataset: ds.Dataset, spec: DatasetSpec, reference: TrainingReference
) -> tuple[str, ...]:
    """Columns to read; raises naming every faulty column (and file) before any row is read."""
    check = check_serving_input(dataset.schema, spec, reference)
    check.raise_if_errors()
    # The dataset's schema is the first file's; a later file lacking a column would
    # be read as nulls, so each file's own schema is checked too (footers only).
    problems = []
    columns = dict.fromkeys(check.columns)
    for fragment in dataset.get_fragments():
        file_check = check_serving_input(fragment.physical_schema, spec, reference)
        if file_check.errors:
            where = getattr(fragment, "path", repr(fragment))
            problems.append(f"{where}: " + "; ".join(file_check.errors))
        columns.update(dict.fromkeys(file_check.columns))  # an event time in some files only
    if problems:
        raise ServingInputError(
            f"serving input cannot be scored for dataset {spec.name!r}: " + " | ".join(problems)
        )
    if check.extra:
        log.debug("not read (not model inputs): %s", list(check.extra))
    return tuple(columns)


def _batches(
    dataset: ds.Dataset,
    columns: list[str],
    batch_rows: int,
    row_filter: pc.Expression | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of ``dataset`` in batches of at most ``batch_rows``, only ``columns``.

    With ``row_filter``, only the rows it keeps (applied batch by batch, so memory
    stays bounded; the filter's columns must be among ``columns``).
    """
    if row_filter is None:
        yield from _all_batches(dataset, columns, batch_rows)
        return
    for batch in _all_batches(dataset, columns, batch_rows):
        kept = pa.Table.from_batches([batch]).filter(row_filter)
        yield from kept.to_batches()


def _all_batches(
    dataset: ds.Dataset, columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """The rows of ``dataset`` in batches of at most ``batch_rows``, only ``columns``.

    Parquet files are streamed one at a time without pre-buffering, so memory is
    bounded by the batch, not by the file's row groups. ``Dataset.to_batches``
    decodes whole row groups and reads files ahead whatever its readahead options
    say: on 4 million rows it held 240-440 MiB of Arrow memory (more with larger
    row groups or more files), against 35-40 MiB streamed here, at the same speed.
    """
    if not isinstance(dataset, ds.FileSystemDataset) or not isinstance(
        dataset.format, ds.ParquetFileFormat
    ):
        yield from dataset.to_batches(columns=columns, batch_size=batch_rows)
        return
    for path in dataset.files:
        with dataset.filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=_READ_BUFFER_BYTES)
            present = set(parquet.schema_arrow.names)  # the optional event time may be absent
            yield from parquet.iter_batches(
                batch_size=batch_rows, columns=[c for c in columns if c in present]
            )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _PartWriter:
    """Appends prediction batches to ``part-NNNNN.parquet`` files, a new one every N rows."""

    def __init__(self, folder: Path, rows_per_part: int) -> None:
        self.folder = folder
        self.rows_per_part = rows_per_part
        self.parts: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_part = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (one row group) to the current part."""
        if self._writer is None:
            path = self.folder / f"part-{len(self.parts):05d}.parquet"
            with errors_naming(path):
                self._writer = pq.ParquetWriter(path, BATCH_PREDICTION_SCHEMA, compression="zstd")
            self.parts.append(path)
        with errors_naming(self.parts[-1]):
            self._writer.write_table(table)
        self._rows_in_part += table.num_rows
        if self._rows_in_part >= self.rows_per_part:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is not None:
            with errors_naming(self.parts[-1]):
                self._writer.close()
                _fsync(self.parts[-1])
        self._writer = None
        self._rows_in_part = 0

    def close(self) -> None:
        """Finish the last part; with no rows at all, write one empty part (the schema)."""
        if not self.parts:
            self.write(BATCH_PREDICTION_SCHEMA.empty_table())
        self._close_part()

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None and self._writer is not None:
            self._writer.close()
            self._writer = None


def _leftovers(out_dir: Path, prefix: str, partition: str) -> list[Path]:
    """Folders ``<prefix><partition>-<8 hex>``, not those of a partition ``<partition>-x``."""
    pattern = re.compile(re.escape(f"{prefix}{partition}-") + r"[0-9a-f]{8}")
    return [p for p in out_dir.iterdir() if pattern.fullmatch(p.name)]


def _restore_or_sweep(out_dir: Path, partition: str) -> None:
    """Recover from a crash between the two renames of a publish; drop stale leftovers."""
    final = out_dir / partition
    olds = sorted(
        _leftovers(out_dir, OLD_PREFIX, partition),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if olds and not final.exists():
        os.rename(olds[0], final)
        log.warning("restored partition %s from %s (a publish was interrupted)", final, olds[0])
        olds = olds[1:]
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)
    now = time.time()
    for tmp in _leftovers(out_dir, TMP_PREFIX, partition):
        if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path) -> None:
    """Make ``tmp`` the partition ``final``: old one out of the way, new one in, old deleted."""
    old = final.parent / f"{OLD_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _temporary_partition(out_dir: Path, partition: str) -> Iterator[Path]:
    tmp = out_dir / f"{TMP_PREFIX}{partition}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def score_dataset(
    source: Source,
    pipeline: Pipeline,
    spec: DatasetSpec,
    reference: TrainingReference,
    *,
    out_dir: Path,
    partition: str,
    model_name: str,
    model_version: str,
    alias: str,
    threshold: float,
    run_id: str,
    scored_at: datetime,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
    native_threads: int | None = 1,
    row_filter: pc.Expression | None = None,
) -> ScoringSummary:
    """Score every row of ``source`` and publish the predictions as ``out_dir/partition``.

    Parameters
    ----------
    source : path, sequence of paths or pyarrow Dataset
        Parquet feature rows (see :func:`open_source`): the entity id and every model
        feature; the event time is carried when present; other columns are not read.
    pipeline : Pipeline
        The fitted, registered pipeline (never refitted).
    spec : DatasetSpec
        Declares the entity id, event time and model features.
    reference : TrainingReference
        The training rows' reference: out-of-range values are counted against it.
    out_dir : Path
        Folder holding one sub-folder per partition.
    partition : str
        Name of the partition to (re)write; letters, digits, ``_ . = -``.
    model_name, model_version, alias, threshold, run_id, scored_at
        Lineage written on every row (see :func:`~mlplatform.core.serving.score_batch`).
    batch_rows : int
        Rows read and scored at a time: the memory bound.
    rows_per_part : int
        Rows per Parquet part (each batch is one row group).
    native_threads : int or None
        BLAS/OpenMP threads of the model while scoring (None: leave as is). One is
        the default: on a shared machine, extra OpenMP threads of histogram boosting
        wait on each other more than they help (see ``benchmarks/batch_scoring.py``).
    row_filter : pyarrow.compute.Expression or None
        Score only the rows it keeps, e.g. an event-time window; its columns must
        be read anyway (entity id, event time, model features).

    Returns
    -------
    ScoringSummary
        Rows, positives, probability histogram, out-of-range and missing counts.

    Raises
    ------
    ServingInputError
        Naming every missing or mistyped column (and the file), before anything is
        written.
    ValueError
        For an invalid ``partition``, ``batch_rows`` or ``rows_per_part``.
    """
    if not _PARTITION.match(partition):
        raise ValueError(
            f"invalid partition {partition!r}: use letters, digits, '_', '.', '=', '-' "
            "(not starting with '.' or '_'; at most 128 characters)"
        )
    if batch_rows < 1 or rows_per_part < 1:
        raise ValueError(
            f"batch_rows and rows_per_part must be positive, got {batch_rows}, {rows_per_part}"
        )
    dataset = open_source(source)
    columns = _check_schemas(dataset, spec, reference)
    out_dir.mkdir(parents=True, exist_ok=True)
    _restore_or_sweep(out_dir, partition)
    summary = ScoringSummary()
    limits = (
        threadpool_limits(limits=native_threads) if native_threads is not None else nullcontext()
    )
    with limits, _temporary_partition(out_dir, partition) as tmp:
        with _PartWriter(tmp, rows_per_part) as writer:
            for batch in _batches(dataset, list(columns), batch_rows, row_filter):
                if batch.num_rows == 0:
                    continue
                # derived features from the raw ones, as training computed them
                frame = add_derived(batch.to_pandas(), spec)
                predictions = score_batch(
                    pipeline,
                    frame,
                    spec,
                    model_name=model_name,
                    model_version=model_version,
                    alias=alias,
                    threshold=threshold,
                    run_id=run_id,
                    scored_at=scored_at,
                )
                writer.write(
                    pa.Table.from_pandas(
                        predictions, schema=BATCH_PREDICTION_SCHEMA, preserve_index=False
                    )
                )
                summary = summary.merge(
                    ScoringSummary.of_batch(
                        predictions,
                        out_of_range_counts(frame, reference),
                        missing_value_counts(frame, reference.features),
                        feature_bin_counts(frame, reference),
                    )
                )
            writer.close()
        _publish(tmp, out_dir / partition)
    log.info(
        "scored %d rows in %d batches into %s (%d positive)",
        summary.rows,
        summary.batches,
        out_dir / partition,
        summary.positives,
    )
    return summary
