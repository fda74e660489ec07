"""Score one file (CSV or Parquet, raw readings) with a registered model: ``mlplatform score``.

The file is read in chunks, typed and validated exactly as ingestion types a
landed file (:func:`~mlplatform.core.ingest.type_and_validate`, the label and
leakage columns optional), and its valid rows are streamed into a staging
Parquet file. That file is scored by
:func:`~mlplatform.resources.batch_scoring.score_dataset` (train/serve checks,
derived features computed as for training, one batch at a time) and the
predictions are published atomically at ``out`` (Parquet, or CSV when ``out``
ends in ``.csv``). Rows that fail validation are
not scored; they are written beside ``out`` with row, column, value and reason,
so nothing is lost (text that a spreadsheet would run as a formula gets a leading
``'``). Memory is bounded by the chunk size, not by the file.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.pipeline import Pipeline

from mlplatform.core.formulas import neutralize_formulas
from mlplatform.core.ingest import FileRejected, type_and_validate
from mlplatform.core.schema import DatasetSpec
from mlplatform.core.serving import ScoringSummary, TrainingReference
from mlplatform.resources.batch_scoring import DEFAULT_BATCH_ROWS, score_dataset
from mlplatform.resources.files import TMP_PREFIX

__all__ = ["FileScoring", "score_file"]

SUPPORTED_SUFFIXES = (".csv", ".parquet")
DEFAULT_CHUNK_ROWS = 100_000
_ONE_PART = 1 << 62  # every prediction row in one part file: the output is one file


@dataclass(frozen=True)
class FileScoring:
    """What ``score_file`` did: rows read, scored and rejected, and where they went."""

    source: Path
    out: Path
    rows_read: int
    rows_invalid: int
    invalid_rows_file: Path | None
    summary: ScoringSummary


def _chunks(path: Path, chunk_rows: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """``(table, 1-based row numbers)`` per chunk; CSV columns as text, Parquet as stored."""
    label = path.name
    start = 1
    if path.suffix.lower() == ".parquet":
        try:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                table = pa.Table.from_batches([batch])
                yield table, np.arange(start, start + table.num_rows, dtype="int64")
                start += table.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise FileRejected(label, f"unreadable Parquet file: {str(exc)[:300]}") from exc
        return
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), [])
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22, use_threads=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield table, np.arange(start, start + table.num_rows, dtype="int64")
                start += table.num_rows
                pending, rows = [], 0
        if pending:
            table = pa.Table.from_batches(pending)
            yield table, np.arange(start, start + table.num_rows, dtype="int64")
    except UnicodeDecodeError as exc:
        raise FileRejected(label, f"not UTF-8 text (byte {exc.start})") from exc
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRejected(label, f"unparseable CSV: {str(exc)[:300]}") from exc


def _write_csv(parquet_path: Path, target: Path) -> None:
    parquet = pq.ParquetFile(parquet_path)
    with pacsv.CSVWriter(target, parquet.schema_arrow) as writer:
        for batch in parquet.iter_batches():
            writer.write_batch(batch)


def score_file(
    path: Path,
    out: Path,
    pipeline: Pipeline,
    spec: DatasetSpec,
    reference: TrainingReference,
    *,
    model_name: str,
    model_version: str,
    alias: str,
    threshold: float,
    run_id: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> FileScoring:
    """Score every valid row of ``path`` with ``pipeline``; predictions to ``out``.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist or ``out``'s folder does not.
    FileRejected
        When the file cannot be read or lacks a required column (named).
    ServingInputError
        When the rows cannot be scored by this model (columns named).
    ValueError
        For an unsupported file type, or a file without a single valid row.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type; score a .csv or .parquet file")
    if out.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(f"{out}: write predictions to a .parquet or .csv file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of {out} does not exist")
    scoring_spec = spec.for_scoring()
    invalid_file = out.with_name(f"{out.stem}.invalid-rows.csv")
    work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}score-", dir=out.parent))
    try:
        staged = work / "input" / "part-00000.parquet"
        staged.parent.mkdir()
        rows_read = rows_invalid = 0
        invalid_tmp = work / invalid_file.name
        writer: pq.ParquetWriter | None = None
        seen: set[int] = set()
        try:
            for table, numbers in _chunks(path, chunk_rows):
                if table.num_rows == 0:
                    continue
                typed = type_and_validate(
                    table, scoring_spec, path.name, row_numbers=numbers, seen_ids=seen
                )
                rows_read += typed.rows_landed
                rows_invalid += typed.rows_quarantined
                if not typed.quarantine.empty:  # streamed out: never held whole
                    # the file's own text, opened in a spreadsheet: no formula may run
                    neutralize_formulas(typed.quarantine.drop(columns=["record"])).to_csv(
                        invalid_tmp, mode="a", header=not invalid_tmp.exists(), index=False
                    )
                if typed.valid.empty:
                    continue
                # derived features are computed when the rows are scored (score_dataset)
                frame = pa.Table.from_pandas(typed.valid, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(staged, frame.schema)
                writer.write_table(frame.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()
        if invalid_tmp.exists():
            os.replace(invalid_tmp, invalid_file)
        else:
            invalid_file.unlink(missing_ok=True)  # from an earlier run of the same file
        if writer is None:
            raise ValueError(
                f"{path}: no row could be scored ({rows_read:,} read, {rows_invalid:,} invalid"
                + (f"; see {invalid_file}" if rows_invalid else "")
                + ")"
            )
        summary = score_dataset(
            staged,
            pipeline,
            spec,
            reference,
            out_dir=work / "predictions",
            partition="scored",
            model_name=model_name,
            model_version=model_version,
            alias=alias,
            threshold=threshold,
            run_id=run_id,
            scored_at=datetime.now(UTC),
            batch_rows=batch_rows,
            rows_per_part=_ONE_PART,
        )
        [part] = sorted((work / "predictions" / "scored").glob("part-*.parquet"))
        tmp_out = out.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{out.name}")
        if out.suffix.lower() == ".csv":
            _write_csv(part, tmp_out)
        else:
            shutil.move(part, tmp_out)
        os.replace(tmp_out, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FileScoring(
        source=path,
        out=out,
        rows_read=rows_read,
        rows_invalid=rows_invalid,
        invalid_rows_file=invalid_file if rows_invalid else None,
        summary=summary,
    )
