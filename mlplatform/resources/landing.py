"""The landing area: an inbox of CSV and Parquet files, an archive and a rejected area.

Every landed file is identified by the sha256 of its bytes. After ingestion it
moves to the archive, byte for byte; a file that cannot be ingested moves to the
rejected area beside a ``.reason.txt``. Nothing is deleted.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlplatform.core.batches import BatchPlan, file_batch_key
from mlplatform.core.ingest import FileRejected
from mlplatform.resources.files import TMP_PREFIX, write_bytes_atomic, write_with_atomic
from mlplatform.resources.sources import RawChunk, RejectedRow

__all__ = ["LANDING_SOURCE", "LandedFile", "LandingArea"]

LANDING_SOURCE = "landing"
SUPPORTED_SUFFIXES = (".csv", ".parquet")
REASON_SUFFIX = ".reason.txt"
_MIN_BLOCK = 1 << 16
_MAX_BLOCK = 1 << 28


def _header(path: Path, label: str) -> list[str]:
    """The CSV header, read with Python's csv module (BOM allowed)."""
    try:
        with open(path, encoding="utf-8-sig", errors="strict", newline="") as fh:
            first = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise FileRejected(label, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except csv.Error as exc:
        raise FileRejected(label, f"unparseable CSV header: {exc}") from exc
    if not first or all(not c.strip() for c in first):
        raise FileRejected(label, "no header: the first line is empty")
    numeric = sum(_is_number(c) for c in first)
    if numeric > len(first) // 2:
        raise FileRejected(
            label,
            f"no header: the first line looks like data ({numeric} of {len(first)} fields "
            "are numbers); the first line must name the columns",
        )
    return first


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _row_numbers(start: int, count: int, skipped: set[int]) -> tuple[np.ndarray, int]:
    """``count`` data-row numbers from ``start`` on, jumping over ``skipped``; and the next."""
    out = np.empty(count, dtype="int64")
    if not skipped or max(skipped) < start:
        out[:] = np.arange(start, start + count)
        return out, start + count
    i, n = 0, start
    while i < count:
        if n not in skipped:
            out[i] = n
            i += 1
        n += 1
    return out, n


def _read_csv(path: Path, label: str, chunk_rows: int) -> Iterator[RawChunk]:
    header = _header(path, label)
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        raise FileRejected(
            label,
            "wrong delimiter: the header is one column; expected comma-separated values",
            column=header[0][:80],
        )
    if len(set(header)) != len(header):
        twice = next(c for c in header if header.count(c) > 1)
        raise FileRejected(label, "the column appears twice in the header", column=twice)
    with open(path, "rb") as fh:
        sample = fh.read(1 << 16)
    bytes_per_row = max(1.0, len(sample) / max(1, sample.count(b"\n")))
    block = int(min(_MAX_BLOCK, max(_MIN_BLOCK, chunk_rows * bytes_per_row)))
    rejected: dict[int, RejectedRow] = {}
    unterminated: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # single-threaded reading: pyarrow knows the line of every invalid row
        number = int(row.number) - 1 if row.number is not None else -(len(rejected) + 1)
        if "\n" in row.text:
            # a quote opened and never closed swallowed the following lines
            unterminated.append(number)
            return "error"
        rejected[number] = RejectedRow(
            number,
            f"expected {row.expected_columns} fields, found {row.actual_columns}",
            row.text[:500],
        )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        next_row, emitted = 1, 0
        pending: list[pa.RecordBatch] = []
        pending_rows = 0

        def flush() -> RawChunk:
            nonlocal next_row, emitted, pending, pending_rows
            table = pa.Table.from_batches(pending, schema=reader.schema)
            numbers, next_row = _row_numbers(next_row, table.num_rows, set(rejected))
            due = sorted(n for n in rejected if n < next_row and n >= emitted)
            emitted = next_row
            pending, pending_rows = [], 0
            return RawChunk(table, numbers, tuple(rejected[n] for n in due))

        for record_batch in reader:
            pending.append(record_batch)
            pending_rows += record_batch.num_rows
            if pending_rows >= chunk_rows:
                yield flush()
        if pending or not emitted:
            yield flush()
        late = sorted(n for n in rejected if n >= emitted or n < 0)
        if late:
            yield RawChunk(
                pa.Table.from_batches([], schema=reader.schema),
                np.empty(0, dtype="int64"),
                tuple(rejected[n] for n in late),
            )
    except pa.ArrowInvalid as exc:
        if unterminated:
            raise FileRejected(
                label,
                f"unterminated quote in data row {unterminated[0]}: the rest of the file "
                "would be read as one field",
            ) from exc
        message = str(exc)
        if "UTF8" in message or "utf8" in message.lower():
            raise FileRejected(label, f"not UTF-8 text ({message[:200]})") from exc
        raise FileRejected(label, f"unparseable CSV: {message[:300]}") from exc
    except OSError as exc:
        raise FileRejected(label, f"unreadable csv file: {exc}") from exc


def _read_parquet(path: Path, label: str, chunk_rows: int) -> Iterator[RawChunk]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRejected(label, f"unreadable parquet file: {str(exc)[:300]}") from exc
    next_row = 1
    try:
        for record_batch in parquet.iter_batches(batch_size=chunk_rows):
            table = pa.Table.from_batches([record_batch])
            numbers = np.arange(next_row, next_row + table.num_rows, dtype="int64")
            next_row += table.num_rows
            yield RawChunk(table, numbers)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRejected(label, f"unreadable parquet file: {str(exc)[:300]}") from exc
    if next_row == 1:
        yield RawChunk(parquet.schema_arrow.empty_table(), np.empty(0, dtype="int64"))


@dataclass(frozen=True)
class LandedFile:
    """A file waiting in the landing folder."""

    path: Path
    sha256: str
    size_bytes: int

    @property
    def name(self) -> str:
        """The file's name as landed."""
        return self.path.name

    @property
    def stored_name(self) -> str:
        """Name in the archive or rejected area: hash prefix, then the landed name."""
        return f"{self.sha256[:16]}__{self.path.name}"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of the file's bytes, remembered per (path, size, mtime) within a process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    found = _DIGESTS.get(key)
    if found is None:
        with open(path, "rb") as fh:
            found = hashlib.file_digest(fh, "sha256").hexdigest()
        _DIGESTS[key] = found
    return found


class LandingArea(dg.ConfigurableResource):
    """Reads landed files and moves them to the archive or the rejected area."""

    landing_dir: str
    archive_dir: str
    rejected_dir: str

    def pending(self) -> list[LandedFile]:
        """Files waiting in the landing folder, oldest name first; hidden files are ignored."""
        root = Path(self.landing_dir)
        if not root.is_dir():
            return []
        found = []
        for p in sorted(root.iterdir()):
            if not p.is_file() or p.name.startswith((".", TMP_PREFIX)):
                continue
            found.append(LandedFile(p, _sha256(p), p.stat().st_size))
        return found

    # -- the BatchSource protocol -----------------------------------------------------

    @property
    def source_name(self) -> str:
        """Landed files are the ``landing`` source."""
        return LANDING_SOURCE

    def plan_new(self, planned: list[BatchPlan]) -> list[BatchPlan]:
        """A plan per pending file whose content was never planned (by sha256)."""
        known = {p.key for p in planned}
        plans: dict[str, BatchPlan] = {}
        for landed in self.pending():
            key = file_batch_key(landed.sha256)
            if key in known or key in plans:
                continue
            plans[key] = BatchPlan(
                key, LANDING_SOURCE, landed.name, {"sha256": landed.sha256, "name": landed.name}
            )
        return list(plans.values())

    def archive_duplicates(self, committed: set[str]) -> list[LandedFile]:
        """Archive pending files whose content is already stored; they add no rows."""
        moved = []
        for landed in self.pending():
            if file_batch_key(landed.sha256) in committed:
                self.archive(landed)
                moved.append(landed)
        return moved

    def locate(self, plan: BatchPlan) -> Path:
        """Where the planned file is now: landing, else archive, else rejected area.

        Raises
        ------
        FileRejected
            When the file is in none of them.
        """
        sha = plan.ref["sha256"]
        for landed in self.pending():
            if landed.sha256 == sha:
                return landed.path
        for folder in (Path(self.archive_dir), Path(self.rejected_dir)):
            if folder.is_dir():
                for p in sorted(folder.glob(f"{sha[:16]}__*")):
                    if not p.name.endswith(REASON_SUFFIX) and _sha256(p) == sha:
                        return p
        raise FileRejected(
            plan.label, f"no file with sha256 {sha[:16]}... in landing, archive or rejected area"
        )

    def read(self, plan: BatchPlan, chunk_rows: int) -> Iterator[RawChunk]:
        """The planned file's rows in chunks, every CSV column as text, never all at once.

        Raises
        ------
        FileRejected
            Naming the file, when it is of an unsupported kind, empty, not UTF-8
            text or not parseable.
        """
        path = self.locate(plan)
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise FileRejected(
                plan.label,
                f"unsupported file type {suffix or '(none)'!r}; "
                f"expected one of {', '.join(SUPPORTED_SUFFIXES)}",
            )
        if path.stat().st_size == 0:
            raise FileRejected(plan.label, "the file is empty (0 bytes)")
        if suffix == ".csv":
            yield from _read_csv(path, plan.label, chunk_rows)
        else:
            yield from _read_parquet(path, plan.label, chunk_rows)

    def finish(self, plan: BatchPlan, error: str | None) -> None:
        """Archive the file once stored; move it to the rejected area with the reason if not."""
        sha = plan.ref["sha256"]
        for landed in self.pending():
            if landed.sha256 == sha:
                if error is None:
                    self.archive(landed)
                else:
                    self.reject(landed, error)

    # -- files -------------------------------------------------------------------------

    def archive(self, landed: LandedFile) -> Path:
        """Move ``landed`` to the archive (kept byte for byte); returns its new path."""
        return self._move(landed, Path(self.archive_dir))

    def reject(self, landed: LandedFile, reason: str) -> Path:
        """Move ``landed`` to the rejected area with a reason file; returns its new path."""
        target = self._move(landed, Path(self.rejected_dir))
        write_bytes_atomic(reason.encode(), target.with_name(target.name + REASON_SUFFIX))
        return target

    def drop(self, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` into the landing folder as CSV (atomically), e.g. sample data."""
        target = Path(self.landing_dir) / name
        return write_with_atomic(lambda tmp: frame.to_csv(tmp, index=False), target)

    def _move(self, landed: LandedFile, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / landed.stored_name
        shutil.move(landed.path, target)
        return target
