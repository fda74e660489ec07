"""The landing area: an inbox of CSV and Parquet files, an archive and a rejected area.

Every landed file is identified by the sha256 of its bytes. After ingestion it
moves to the archive, byte for byte; a file that cannot be ingested moves to the
rejected area beside a ``.reason.txt``. Nothing is deleted.

Hostile entries are refused, never followed: a symbolic link is rejected without
being read (the link itself moves, its target is untouched), as is a file whose
name is not UTF-8. Names are kept in the archive and rejected area (shortened to
fit the file system's 255 bytes), and a landed name can never overwrite a reason
file. Parquet is compressed input: a file whose rows decode to more than
``_MAX_EXPANSION`` times its size is rejected as a decompression bomb before the
rows are expanded.

The same guarantees serve every inbox of landed files (the labels inbox of
:mod:`mlplatform.resources.monitoring` too): :func:`inbox_entries` lists an inbox
without following anything, :meth:`LandedFile.at` identifies an entry,
:func:`read_landed_file` reads one in chunks, and :func:`move_aside` moves one,
with its reason, never overwriting a reason file.

A planned file is found under its landed name first (one file hashed to confirm
it): locating and finishing a batch hash one file however many wait.

A CSV value holding a line break is trusted only from the careful (one-thread)
reader, which splits blocks where quotes close; a quote opened in a row's last field
and never closed would swallow every line after it, so it rejects the file.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from mlplatform.core.batches import BatchPlan, file_batch_key
from mlplatform.core.ingest import FileRejected
from mlplatform.resources.files import TMP_PREFIX, write_bytes_atomic, write_with_atomic
from mlplatform.resources.sources import RawChunk, RejectedRow

__all__ = [
    "LANDING_SOURCE",
    "REASON_SUFFIX",
    "SUPPORTED_SUFFIXES",
    "InboxEntries",
    "LandedFile",
    "LandingArea",
    "file_label",
    "inbox_entries",
    "move_aside",
    "read_landed_file",
]

LANDING_SOURCE = "landing"
SUPPORTED_SUFFIXES = (".csv", ".parquet")
REASON_SUFFIX = ".reason.txt"
# blocks of the multi-threaded reader: small enough that both cores parse a file
_FAST_BLOCK = 1 << 21
# bytes of a file the multi-threaded reader parses at once (whole lines): its memory bound
_RANGE_BYTES = 1 << 24
# pyarrow reads a line that spans at most two blocks: the careful reader's blocks are at
# least twice the fast reader's, so a long line the fast reader reads it reads too
_MIN_BLOCK = 2 * _FAST_BLOCK
_MAX_BLOCK = 1 << 28
# a Parquet file may decode to this many times its size (plus the floor), no more: a
# legitimate file decodes to a few times its size, a decompression bomb to thousands
_MAX_EXPANSION = 100
_EXPANSION_FLOOR = 1 << 28
# the longest name a file system takes (bytes); a stored name is cut to fit with its reason
_NAME_MAX = 255
_SHORTENED = "~"


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


def _check_header(path: Path, label: str) -> list[str]:
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
    return header


def _open(path: Path, header: list[str], block: int, on_invalid: Any) -> pacsv.CSVStreamingReader:
    """The careful reader's stream: one thread, every column as text.

    One thread splits blocks where quotes close, so a quoted line break stays in its
    value (several split at every line break: :func:`_parse_range`).
    """
    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header},
            strings_can_be_null=True,
            null_values=[""],
        ),
    )


def _header_name(raw: str) -> str:
    """A header field as it is matched against declared names (spaces and BOM dropped)."""
    return raw.strip().lstrip("\ufeff")


class _Chunker:
    """Cuts a stream of numbered record batches into chunks of exactly ``chunk_rows`` rows.

    Chunk boundaries depend only on the parsed rows, never on how the file was
    read, so the fast and the careful reader cut a file identically.
    """

    def __init__(self, schema: pa.Schema, chunk_rows: int) -> None:
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.batches: list[pa.RecordBatch] = []
        self.numbers: list[np.ndarray] = []
        self.rows = 0

    def add(
        self, batch: pa.RecordBatch, numbers: np.ndarray
    ) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """Take ``batch`` and its row numbers; yield (table, row numbers) of every full chunk."""
        while batch.num_rows:
            take = min(batch.num_rows, self.chunk_rows - self.rows)
            self.batches.append(batch.slice(0, take))
            self.numbers.append(numbers[:take])
            self.rows += take
            batch, numbers = batch.slice(take), numbers[take:]
            if self.rows == self.chunk_rows:
                yield from self.flush()

    def flush(self) -> Iterator[tuple[pa.Table, np.ndarray]]:
        """Yield the rows held (possibly none) as one chunk: (table, row numbers)."""
        table = pa.Table.from_batches(self.batches, schema=self.schema)
        numbers = np.concatenate(self.numbers) if self.numbers else np.empty(0, dtype="int64")
        self.batches, self.numbers, self.rows = [], [], 0
        yield table, numbers


def _has_line_break(batch: pa.RecordBatch) -> bool:
    """Whether any value of ``batch`` holds a line break.

    Each column's value bytes are searched at once, in place (as one binary value over
    the same buffer): no copy, no per-row work.
    """
    for column in batch.columns:
        buffers = column.buffers()
        if not pa.types.is_string(column.type) or len(buffers) < 3 or buffers[2] is None:
            continue
        data = buffers[2]
        offsets = pa.py_buffer(np.array([0, data.size], dtype="int64").tobytes())
        whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, data])
        if any(pc.match_substring(whole, newline)[0].as_py() for newline in ("\n", "\r")):
            return True
    return False


def _open_quote_at_end(path: Path, batch: pa.RecordBatch) -> int:
    """Lines the file's last field swallowed, when it is a quote never closed (else 0).

    A quote opened in a row's last field and never closed parses as one field holding
    every line after it (a quote opened earlier in the row leaves it ragged, which
    the reader reports): lines vanish while the count invariant holds. A quoted value
    with a line break that closes ends with its quote.
    """
    if not batch.num_rows:
        return 0
    value = batch.column(batch.num_columns - 1)[batch.num_rows - 1].as_py()
    if not (isinstance(value, str) and ("\n" in value or "\r" in value)):
        return 0
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 4096))
        if fh.read().rstrip().endswith(b'"'):
            return 0  # closed: a value with a line break
    return len(value.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")) - 1


class _NotFast(Exception):
    """The fast reader met a row it cannot number (or any error): read carefully instead."""


def _ranges(path: Path) -> Iterator[tuple[int, int]]:
    """The file cut into byte ranges of about ``_RANGE_BYTES``, each ending after a line break.

    The last range ends at the end of the file. A line longer than a range stays whole
    in one range. (A line break inside a quoted value may cut it: the fast reader then
    sees an unterminated quote or a value with a line break, and stops.)
    """
    size = path.stat().st_size
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            end = start + _RANGE_BYTES
            if end >= size:
                yield start, size
                return
            fh.seek(end)
            while True:
                block = fh.read(1 << 20)
                if not block:
                    end = size
                    break
                # after the first line break, "\n" or "\r" (a "\r\n" cut in two leaves
                # an empty line, which the parser skips)
                found = [i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0]
                if found:
                    end += min(found) + 1
                    break
                end += len(block)
            yield start, end
            start = end


def _parse_range(
    data: pa.Buffer,
    header: list[str],
    types: dict[str, pa.DataType],
    *,
    first: bool,
    quoted: bool,
    on_invalid: Any,
) -> Iterator[pa.RecordBatch]:
    """One byte range of a CSV file (whole lines), parsed on all cores into record batches.

    Blocks are split at every line break, which only a quoted value could hold. A
    range without a quote character (``quoted`` False) cannot: ``pyarrow.csv.read_csv``
    parses it whole (twice as fast as the streaming reader). A range with one is
    streamed, so that a quote opened and never closed shows as a value holding a line
    break (which the caller checks) instead of lines silently gone (``read_csv``
    drops them).
    """
    source = pa.BufferReader(data)
    read_options = pacsv.ReadOptions(
        column_names=header, skip_rows=1 if first else 0, use_threads=True, block_size=_FAST_BLOCK
    )
    parse_options = pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False)
    convert_options = pacsv.ConvertOptions(
        column_types=types, strings_can_be_null=True, null_values=[""]
    )
    if quoted:
        yield from pacsv.open_csv(
            source,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    else:
        table = pacsv.read_csv(
            source,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
        yield from table.to_batches()


def _read_csv_fast(
    path: Path,
    header: list[str],
    chunk_rows: int,
    *,
    numbers: frozenset[str] = frozenset(),
    integers: frozenset[str] = frozenset(),
    skip: int = 0,
) -> Iterator[RawChunk]:
    """Parse the file on all cores; only for files without invalid rows (raises _NotFast).

    The file is parsed a byte range at a time (``_RANGE_BYTES``, cut after a line
    break: the memory bound), each on all cores (:func:`_parse_range`).
    With several threads pyarrow cannot say which line an invalid row was on, so
    the first one (or any parse error) stops this reader; the caller continues
    with another reader after the rows already handed out. Columns of ``numbers``
    are parsed as float64 as they are read, those of ``integers`` as int64: a value
    that is no number (no integer literal) stops this reader too, and the caller
    reads on another way. The first ``skip`` rows (handed out by an earlier reader:
    rows ``1..skip``) are dropped.
    """

    def on_invalid(row: pacsv.InvalidRow) -> str:
        return "error"

    if any("\n" in c or "\r" in c for c in header):
        raise _NotFast  # a quoted line break in the header: only the careful reader
    types = {
        c: pa.int64() if c in integers else pa.float64() if c in numbers else pa.string()
        for c in header
    }
    try:
        schema = pa.schema([(c, types[c]) for c in header])
        chunker = _Chunker(schema, chunk_rows)
        next_row, to_skip = 1, skip
        for start, end in _ranges(path):
            # read, not mapped: a mapped file's pages would stay in the process's memory
            with open(path, "rb") as fh:
                fh.seek(start)
                raw = fh.read(end - start)
            quoted = b'"' in raw
            batches = _parse_range(
                pa.py_buffer(raw),
                header,
                types,
                first=start == 0,
                quoted=quoted,
                on_invalid=on_invalid,
            )
            del raw
            for batch in batches:
                if quoted and _has_line_break(batch):
                    # an open quote may have swallowed lines (blocks are split at line
                    # breaks, quotes or not): the careful reader tells a closed one
                    raise _NotFast
                numbered = np.arange(next_row, next_row + batch.num_rows, dtype="int64")
                next_row += batch.num_rows
                if to_skip:
                    dropped = min(to_skip, batch.num_rows)
                    batch, numbered = batch.slice(dropped), numbered[dropped:]
                    to_skip -= dropped
                for rows_table, rows in chunker.add(batch, numbered):
                    yield RawChunk(rows_table, rows, parsed=numbers)
        if to_skip:
            raise RuntimeError(f"{path.name}: {skip} rows handed out, {skip - to_skip} read")
        if chunker.rows or next_row == 1:
            for rows_table, rows in chunker.flush():
                yield RawChunk(rows_table, rows, parsed=numbers)
    except Exception as exc:
        raise _NotFast from exc


def _read_csv_careful(
    path: Path, label: str, header: list[str], chunk_rows: int, *, skip: int = 0
) -> Iterator[RawChunk]:
    """One thread, so pyarrow numbers every invalid row; the first ``skip`` rows are dropped.

    ``skip`` rows were already handed out by the fast reader, which only hands
    out rows of a stretch without invalid rows: they are rows ``1..skip``.
    """
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
        reader = _open(path, header, block, on_invalid)
        chunker = _Chunker(reader.schema, chunk_rows)
        next_row, emitted, to_skip = 1, 0, skip

        def chunk(table: pa.Table, numbers: np.ndarray) -> RawChunk:
            # rejected rows numbered before the row after this chunk's last belong to it
            nonlocal emitted
            end = int(numbers[-1]) + 1 if len(numbers) else max(emitted, 1)
            due = sorted(n for n in rejected if emitted <= n < end)
            emitted = end
            return RawChunk(table, numbers, tuple(rejected[n] for n in due))

        last: tuple[pa.RecordBatch, np.ndarray] | None = None
        for batch in reader:
            numbers, next_row = _row_numbers(next_row, batch.num_rows, set(rejected))
            if batch.num_rows:
                last = (batch, numbers)
            if to_skip:
                if any(0 <= n <= skip for n in rejected):
                    raise RuntimeError(f"{label}: an invalid row among rows already handed out")
                dropped = min(to_skip, batch.num_rows)
                batch, numbers = batch.slice(dropped), numbers[dropped:]
                to_skip -= dropped
                if not to_skip:
                    emitted = skip + 1  # as if the careful reader had handed rows 1..skip out
            for table, rows in chunker.add(batch, numbers):
                yield chunk(table, rows)
        swallowed = _open_quote_at_end(path, last[0]) if last is not None else 0
        if swallowed and last is not None:
            raise FileRejected(
                label,
                f"unterminated quote in data row {int(last[1][-1]):,}: its last field runs to "
                f"the end of the file, so the {swallowed:,} line(s) after it would not be "
                "counted",
            )
        if to_skip:
            raise RuntimeError(f"{label}: {skip} rows handed out but only {skip - to_skip} read")
        if chunker.rows or not emitted:
            for table, rows in chunker.flush():
                yield chunk(table, rows)
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
        if "straddl" in message:
            raise FileRejected(
                label,
                f"a line longer than {block:,} bytes after data row {next_row - 1:,} "
                "(a giant field, or a quote that never closes): cannot be read in chunks "
                f"of {chunk_rows:,} rows",
            ) from exc
        raise FileRejected(label, f"unparseable CSV: {message[:300]}") from exc
    except OSError as exc:
        raise FileRejected(label, f"unreadable csv file: {exc}") from exc


def _read_csv(
    path: Path,
    label: str,
    chunk_rows: int,
    *,
    fast: bool = True,
    numeric: frozenset[str] = frozenset(),
    integers: frozenset[str] = frozenset(),
) -> Iterator[RawChunk]:
    """The file's rows in chunks of exactly ``chunk_rows`` parsed rows (the last may be short).

    First on all cores (``fast``), with the columns ``numeric`` names (header names,
    matched without surrounding spaces) parsed as numbers while they are read, those
    ``integers`` names as int64; at the first value of an integer column that is no
    integer literal, they are read as float64 from there on, and at the first value
    that is no number, every column as text; at the first invalid row or parse
    error, the rest is read on one thread, which numbers and quarantines invalid rows
    and names the line of a fatal error. All readers cut and number rows identically,
    and each continues after the rows handed out.
    """
    header = _check_header(path, label)
    handed_out = 0
    if fast:
        as_numbers = frozenset(c for c in header if _header_name(c) in numeric)
        as_integers = frozenset(c for c in as_numbers if _header_name(c) in integers)
        attempts: list[tuple[frozenset[str], frozenset[str]]] = [(frozenset(), frozenset())]
        if as_numbers:
            attempts.insert(0, (as_numbers, frozenset()))
        if as_integers:
            attempts.insert(0, (as_numbers, as_integers))
        for numbers, ints in attempts:
            try:
                for chunk in _read_csv_fast(
                    path, header, chunk_rows, numbers=numbers, integers=ints, skip=handed_out
                ):
                    handed_out += chunk.table.num_rows
                    yield chunk
                return
            except _NotFast:
                continue
    yield from _read_csv_careful(path, label, header, chunk_rows, skip=handed_out)


def _is_text(type_: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_binary(type_)
        or pa.types.is_large_binary(type_)
    )


def _fixed_bytes(type_: pa.DataType) -> int:
    """Bytes a value of ``type_`` takes decoded, at least (a text's offset: 4)."""
    if pa.types.is_dictionary(type_):
        return 4
    try:
        return max(0, type_.bit_width // 8)
    except ValueError:  # variable width: text, lists
        return 4


def _decoded_bytes(batch: pa.RecordBatch) -> int:
    """Bytes ``batch`` takes once its dictionary-encoded text is decoded (not decoding it)."""
    total = 0
    for column in batch.columns:
        if isinstance(column, pa.DictionaryArray):
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
            total += int(pc.sum(lengths).as_py() or 0) + 4 * len(column)
        else:
            total += column.nbytes
    return total


def _read_parquet(path: Path, label: str, chunk_rows: int) -> Iterator[RawChunk]:
    """Record batches of at most ``chunk_rows`` rows, text decoded only once it is known safe.

    Text columns are read as dictionaries, so a value repeated a million times is
    held once; what the batch would take decoded is counted first, and the file is
    rejected as a decompression bomb once its rows decode to more than
    ``_MAX_EXPANSION`` times its size (plus ``_EXPANSION_FLOOR``).
    """
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        text = [f.name for f in schema if _is_text(f.type)]
        if text:
            parquet = pq.ParquetFile(path, read_dictionary=text)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileRejected(label, f"unreadable parquet file: {str(exc)[:300]}") from exc
    size = path.stat().st_size
    budget = _MAX_EXPANSION * size + _EXPANSION_FLOOR
    # fixed-width values (and the offsets of text) take a known size per row: a file
    # of millions of run-length-encoded zeros is refused before any row is decoded
    at_least = parquet.metadata.num_rows * sum(_fixed_bytes(f.type) for f in schema)
    if at_least > budget:
        raise FileRejected(
            label,
            f"a decompression bomb: its {parquet.metadata.num_rows:,} rows decode to at "
            f"least {at_least:,} bytes, more than {_MAX_EXPANSION} times the file's "
            f"{size:,} bytes",
        )
    decoded = 0
    next_row = 1
    try:
        for record_batch in parquet.iter_batches(batch_size=chunk_rows):
            decoded += _decoded_bytes(record_batch)
            if decoded > budget:
                raise FileRejected(
                    label,
                    f"a decompression bomb: its first {next_row + record_batch.num_rows - 1:,} "
                    f"rows decode to {decoded:,} bytes, more than {_MAX_EXPANSION} times "
                    f"the file's {size:,} bytes",
                )
            columns = [
                column.cast(field.type) if isinstance(column, pa.DictionaryArray) else column
                for column, field in zip(record_batch.columns, schema, strict=True)
            ]
            table = pa.Table.from_arrays(columns, schema=schema)
            numbers = np.arange(next_row, next_row + table.num_rows, dtype="int64")
            next_row += table.num_rows
            yield RawChunk(table, numbers)
    except (pa.ArrowInvalid, pa.ArrowMemoryError, MemoryError, OSError) as exc:
        raise FileRejected(label, f"unreadable parquet file: {str(exc)[:300]}") from exc
    if next_row == 1:
        yield RawChunk(schema.empty_table(), np.empty(0, dtype="int64"))


@dataclass(frozen=True)
class LandedFile:
    """A file waiting in the landing folder."""

    path: Path
    sha256: str
    size_bytes: int

    @classmethod
    def at(cls, path: Path) -> LandedFile:
        """The entry at ``path``, identified without following it (a link: by its target)."""
        return cls(path, _sha256(path), path.lstat().st_size)

    @property
    def name(self) -> str:
        """The file's name as landed (bytes that are not UTF-8 escaped, as ``\\xe9``)."""
        return file_label(self.path.name)

    @property
    def stored_name(self) -> str:
        """Name in the archive or rejected area: hash prefix, then the landed name.

        A name too long for the file system with the prefix and a reason suffix keeps
        its start and its extension; one ending like a reason file gets a ``_``, so
        that it can never take a reason file's place (nor a reason file its place).
        """
        return _stored_name(self.sha256[:16], self.path.name)


def _stored_name(prefix: str, name: str) -> str:
    if name.lower().endswith(REASON_SUFFIX):
        name += "_"
    room = _NAME_MAX - len(prefix) - len("__") - len(REASON_SUFFIX)
    if len(os.fsencode(name)) > room:
        ext = Path(name).suffix if len(os.fsencode(Path(name).suffix)) <= 16 else ""
        head = name[: len(name) - len(ext)]
        while head and len(os.fsencode(head + _SHORTENED + ext)) > room:
            head = head[:-1]
        name = head + _SHORTENED + ext
    return f"{prefix}__{name}"


def _name_problem(name: str) -> str | None:
    """Why a landed ``name`` cannot be used as a label, or None."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not UTF-8 (its other bytes are shown as \\xNN); rename the file"
    return None


def file_label(name: str) -> str:
    """``name`` as text any log, database or Parquet file takes (undecodable bytes escaped)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of the file's bytes, remembered per (path, size, mtime) within a process.

    A symbolic link is never followed: its identity is the digest of where it points.
    """
    stat = path.lstat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    found = _DIGESTS.get(key)
    if found is None:
        if path.is_symlink():
            found = hashlib.sha256(b"symlink\0" + os.fsencode(os.readlink(path))).hexdigest()
        else:
            with open(path, "rb") as fh:
                found = hashlib.file_digest(fh, "sha256").hexdigest()
        _DIGESTS[key] = found
    return found


@dataclass(frozen=True)
class InboxEntries:
    """What an inbox folder holds: entries to take in, and entries left alone with why."""

    files: list[Path]
    """Regular files and symbolic links (a link is to be rejected, never followed)."""
    left_alone: list[tuple[Path, str]]
    """Folders, FIFOs, sockets and devices: never opened (a FIFO would block a read)."""


def _special_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def inbox_entries(folder: Path) -> InboxEntries:
    """The entries of ``folder`` by name, read with ``lstat`` only (nothing is followed).

    Hidden names and the platform's temporary files are not listed at all: a writer
    may still be filling them.
    """
    files: list[Path] = []
    left_alone: list[tuple[Path, str]] = []
    if not folder.is_dir():
        return InboxEntries(files, left_alone)
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", TMP_PREFIX)):
            continue
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # gone since the listing
            continue
        if stat.S_ISLNK(mode) or stat.S_ISREG(mode):
            files.append(path)
        else:
            left_alone.append((path, f"{_special_kind(mode)}, not a file: left alone unread"))
    return InboxEntries(files, left_alone)


def read_landed_file(
    path: Path,
    label: str,
    chunk_rows: int,
    *,
    numeric: frozenset[str] = frozenset(),
    integers: frozenset[str] = frozenset(),
) -> Iterator[RawChunk]:
    """A landed file's rows in chunks, CSV columns as text, never all at once.

    A CSV chunk holds exactly ``chunk_rows`` parsed rows (the last one fewer), with
    the invalid rows of its stretch; a Parquet chunk is one record batch of at most
    ``chunk_rows`` rows. ``label`` names the file in every error. CSV columns whose
    header ``numeric`` names come as float64 while every value of the file parses as
    a number, those ``integers`` names as int64 while every value is an integer
    literal (:func:`_read_csv`); typing then gives what it gives for their text.

    Raises
    ------
    FileRejected
        Naming the file, when it is a symbolic link (never followed), its name is not
        UTF-8, it is of an unsupported kind, empty, not UTF-8 text or not parseable.
    """
    if path.is_symlink():
        raise FileRejected(
            label,
            f"a symbolic link (to {file_label(os.readlink(path))!r}), not a file: landed "
            "files must be regular files; the link was not followed",
        )
    problem = _name_problem(path.name)
    if problem is not None:
        raise FileRejected(label, problem)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileRejected(
            label,
            f"unsupported file type {suffix or '(none)'!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)}",
        )
    if path.stat().st_size == 0:
        raise FileRejected(label, "the file is empty (0 bytes)")
    if suffix == ".csv":
        yield from _read_csv(path, label, chunk_rows, numeric=numeric, integers=integers)
    else:
        yield from _read_parquet(path, label, chunk_rows)


def move_aside(landed: LandedFile, folder: Path, reason: str | None = None) -> Path:
    """Move ``landed`` into ``folder`` under its stored name, with ``reason`` beside it.

    A link moves as a link (its target untouched); the reason file is
    ``<stored name>.reason.txt``, which no stored name can take. Returns the new path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / landed.stored_name
    try:
        # rename(2) replaces a link at the target itself: never moves into what it points at
        os.replace(landed.path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(landed.path, target)  # another file system: copied, then removed
    if reason is not None:
        text = reason.encode("utf-8", "backslashreplace")
        write_bytes_atomic(text, target.with_name(target.name + REASON_SUFFIX))
    return target


class LandingArea(dg.ConfigurableResource):
    """Reads landed files and moves them to the archive or the rejected area."""

    landing_dir: str
    archive_dir: str
    rejected_dir: str
    numeric_columns: list[str] = Field(
        default_factory=list,
        description="Headers of the columns the dataset declares numeric (source or "
        "canonical names): a CSV file's values in them are parsed as numbers while it is "
        "read, on all cores. A file holding any value that is no number there is read on "
        "as text; typing then judges every value, as for any other column.",
    )
    integer_columns: list[str] = Field(
        default_factory=list,
        description="Those of numeric_columns the dataset declares integers: parsed as "
        "int64 while every value is an integer literal (no copy into floats and back), "
        "else as float64.",
    )

    def pending(self) -> list[LandedFile]:
        """Files waiting in the landing folder, oldest name first; hidden files are ignored.

        Symbolic links are listed (whatever they point at, if anything) so that they
        are rejected; folders and other special files are not files to ingest.
        """
        return [LandedFile.at(p) for p in inbox_entries(Path(self.landing_dir)).files]

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

    def _named(self, plan: BatchPlan) -> LandedFile | None:
        """The plan's file under its landed name, if that still holds the planned content.

        One file is hashed (none when its digest is remembered). A name that is not
        the landed one (not UTF-8, hence escaped in the plan) or changed content
        gives None, and the caller scans.
        """
        name = plan.ref.get("name")
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            return None
        path = Path(self.landing_dir) / name
        try:
            mode = path.lstat().st_mode
        except (OSError, ValueError):  # gone, or a name the file system cannot take
            return None
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            return None
        landed = LandedFile.at(path)
        return landed if landed.sha256 == plan.ref["sha256"] else None

    def _waiting_with(self, sha: str, size: int | None = None) -> list[LandedFile]:
        """Pending files holding content ``sha``, by name; only files of ``size`` are hashed."""
        found = []
        for path in inbox_entries(Path(self.landing_dir)).files:
            try:
                if size is not None and path.lstat().st_size != size:
                    continue
            except FileNotFoundError:
                continue
            landed = LandedFile.at(path)
            if landed.sha256 == sha:
                found.append(landed)
        return found

    def locate(self, plan: BatchPlan) -> Path:
        """Where the planned file is now: landing, else archive, else rejected area.

        The landed name is looked at first (one file hashed); only when it is gone or
        holds other content are all pending files hashed.

        Raises
        ------
        FileRejected
            When the file is in none of them.
        """
        named = self._named(plan)
        if named is not None:
            return named.path
        sha = plan.ref["sha256"]
        for landed in self._waiting_with(sha):
            return landed.path
        for folder in (Path(self.archive_dir), Path(self.rejected_dir)):
            if folder.is_dir():
                for p in sorted(folder.glob(f"{sha[:16]}__*")):
                    if not p.name.endswith(REASON_SUFFIX) and _sha256(p) == sha:
                        return p
        raise FileRejected(
            plan.label, f"no file with sha256 {sha[:16]}... in landing, archive or rejected area"
        )

    def read(
        self, plan: BatchPlan, chunk_rows: int, *, parse_numbers: bool = True
    ) -> Iterator[RawChunk]:
        """The planned file's rows in chunks (see :func:`read_landed_file`).

        ``parse_numbers=False`` reads every CSV column as text (``numeric_columns``
        ignored): what ingestion asks for when a chunk read with numbers parsed has
        rows to quarantine, whose text it keeps.

        Raises
        ------
        FileRejected
            Naming the file, when it is of an unsupported kind, empty, not UTF-8
            text or not parseable.
        """
        numeric = frozenset(self.numeric_columns) if parse_numbers else frozenset()
        integers = frozenset(self.integer_columns) if parse_numbers else frozenset()
        yield from read_landed_file(
            self.locate(plan), plan.label, chunk_rows, numeric=numeric, integers=integers
        )

    def finish(self, plan: BatchPlan, error: str | None) -> None:
        """Archive the file once stored; move it to the rejected area with the reason if not.

        Every pending copy of the content goes (the same bytes under two names are one
        batch). Only files of the landed file's size are hashed to find the copies;
        all are when the landed name is gone.
        """
        named = self._named(plan)
        size = named.size_bytes if named is not None else None
        for landed in self._waiting_with(plan.ref["sha256"], size):
            if error is None:
                self.archive(landed)
            else:
                self.reject(landed, error)

    # -- files -------------------------------------------------------------------------

    def archive(self, landed: LandedFile) -> Path:
        """Move ``landed`` to the archive (kept byte for byte); returns its new path."""
        return move_aside(landed, Path(self.archive_dir))

    def reject(self, landed: LandedFile, reason: str) -> Path:
        """Move ``landed`` to the rejected area with a reason file; returns its new path."""
        return move_aside(landed, Path(self.rejected_dir), reason)

    def drop(self, frame: pd.DataFrame, name: str) -> Path:
        """Write ``frame`` into the landing folder as CSV (atomically), e.g. sample data."""
        target = Path(self.landing_dir) / name
        return write_with_atomic(lambda tmp: frame.to_csv(tmp, index=False), target)
