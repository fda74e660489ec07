"""Typing and validation of landed rows against the declared schema.

A landed chunk goes through two steps, each reporting row by row:

1. **Typing** (here): text or Parquet values become the declared storage types.
   A value that cannot be a number, an integer or a timestamp is a typing
   failure (``expect_column_values_to_be_of_type``).
2. **Validation** (:mod:`mlplatform.core.expectations`, Great Expectations):
   not-null, physical ranges, allowed sets, label in {0, 1}, unique entity ids.

A row with any failure goes to the quarantine, one entry per failed (column,
expectation), with its file, row number, raw value, reason and the whole raw
record; the valid rows continue. Whole-file problems (no rows, missing required
columns, a wrong delimiter) raise :class:`FileRejected`, naming the file and the
column.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.extensions import ExtensionArray

from mlplatform.core.expectations import (
    DUPLICATE_REASON,
    ROW_ID,
    UNIQUE_EXPECTATION,
    ExpectationDef,
    FailedExpectation,
    ValidationSummary,
    evaluate,
    row_expectations,
    storage_type_expectations,
    table_expectations,
    unexpected_counts,
    validate,
)
from mlplatform.core.schema import ColumnSpec, DatasetSpec

__all__ = [
    "QUARANTINE_COLUMNS",
    "TYPE_EXPECTATION",
    "FileRejected",
    "SeenIds",
    "TypedBatch",
    "TypedRows",
    "ValidationMismatch",
    "canonical_columns",
    "check_stored_rows",
    "clip_texts",
    "empty_quarantine",
    "type_and_validate",
    "type_rows",
    "validate_rows",
]

_log = logging.getLogger(__name__)
_MAX_EXACT_INT = float(2**53)
# The longest text cell stored: a longer one fails typing. Quarantined values and
# record fields are clipped to it, so one giant cell cannot bloat the quarantine.
MAX_TEXT_CHARS = 1_000
_TYPING_THREADS = min(4, os.cpu_count() or 1)
# Arrow-backed text: no Python object per value, and Parquet round trips without copies.
STRING_DTYPE = pd.StringDtype("pyarrow")
TYPE_EXPECTATION = "expect_column_values_to_be_of_type"
PARSE_EXPECTATION = "expect_row_to_have_the_header_field_count"

QUARANTINE_COLUMNS = [
    "source_file",
    "row_number",
    "column",
    "value",
    "expectation",
    "reason",
    "record",
]


class FileRejected(ValueError):
    """A landed file that cannot be ingested at all."""

    def __init__(self, source_file: str, reason: str, column: str | None = None) -> None:
        self.source_file = source_file
        self.reason = reason
        self.column = column
        where = f" (column {column!r})" if column else ""
        super().__init__(f"{source_file}: {reason}{where}")


def empty_quarantine() -> pd.DataFrame:
    """A quarantine frame with no rows and the standard columns."""
    return pd.DataFrame(
        {c: pd.Series(dtype="int64" if c == "row_number" else "object") for c in QUARANTINE_COLUMNS}
    )


@dataclass(frozen=True)
class TypedBatch:
    """The outcome of typing and validating one chunk of a landed file.

    ``valid`` has canonical column names, declared dtypes and ``source_row``;
    ``quarantine`` has one row per failed (row, column, expectation).
    """

    source_file: str
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    rows_landed: int
    validation: ValidationSummary | None = None
    confirm: Callable[[], ValidationSummary] | None = field(default=None, repr=False, compare=False)
    launch: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def start_confirmation(self) -> None:
        """Start Great Expectations' run of the chunk, if it waits to be started.

        A caller that writes the valid rows starts it once they are on their way to
        disk, so that the two overlap; :meth:`confirmed` starts it otherwise.
        """
        if self.launch is not None:
            self.launch()

    def confirmed(self) -> ValidationSummary:
        """The GX summary of the chunk, waiting for a confirmation still running.

        Raises
        ------
        ValidationMismatch
            When Great Expectations disagrees with the rows this batch quarantined.
        """
        if self.confirm is not None:
            return self.confirm()
        return self.validation if self.validation is not None else ValidationSummary()

    @property
    def rows_quarantined(self) -> int:
        """Number of distinct landed rows that were quarantined."""
        if self.quarantine.empty:
            return 0
        return int(self.quarantine["row_number"].nunique())


def canonical_columns(
    columns: Sequence[str], spec: DatasetSpec, source_file: str
) -> dict[str, str]:
    """Map a landed header to canonical names, or reject the file.

    Headers may be the declared source names (``Air temperature [K]``) or the
    canonical ones (``air_temperature_k``); surrounding spaces are ignored, other
    columns are dropped.

    Raises
    ------
    FileRejected
        On a one-column header holding another delimiter, or a missing required column.
    """
    stripped = [str(c).strip().lstrip("\ufeff") for c in columns]
    if len(stripped) == 1 and any(sep in stripped[0] for sep in (";", "\t", "|")):
        raise FileRejected(
            source_file,
            "wrong delimiter: the header is one column; expected comma-separated values",
            column=stripped[0][:80],
        )
    by_source = spec.source_to_name
    canonical = {c.name for c in spec.columns}
    mapping: dict[str, str] = {}
    for raw, name in zip(columns, stripped, strict=True):
        target = by_source.get(name) or (name if name in canonical else None)
        if target is None:
            continue
        if target in mapping.values():
            raise FileRejected(source_file, "the column appears twice in the header", column=name)
        mapping[str(raw)] = target
    for col in spec.columns:
        if col.required and col.name not in mapping.values():
            raise FileRejected(
                source_file,
                f"missing required column (header {col.source!r} or {col.name!r})",
                column=col.source,
            )
    return mapping


def _as_text(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Trimmed text with empty strings as nulls."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    text = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _to_float(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN for null/bad, mask of non-null values that are not numbers)."""
    if (
        pa.types.is_integer(arr.type)
        or pa.types.is_floating(arr.type)
        or pa.types.is_boolean(arr.type)
    ):
        # unsafe: an int64 beyond 2**53 rounds, and is then flagged as too large
        values = pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype="float64"), np.zeros(len(arr), dtype=bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:  # fast path: clean numeric text (CSV empties are already null)
            values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
            return np.asarray(values, dtype="float64"), np.zeros(len(arr), dtype=bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    text = _as_text(arr)
    try:
        values = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype="float64"), np.zeros(len(arr), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        series = pd.Series(text.to_pandas(), dtype="object")
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
        bad = series.notna().to_numpy() & np.isnan(numbers)
        # "nan" as text is a number to pandas; it is a missing value here
        return numbers, bad


def _to_timestamp(arr: pa.Array) -> tuple[pd.Series, np.ndarray]:
    if pa.types.is_timestamp(arr.type):
        series = pd.Series(arr.to_pandas())
        if series.dt.tz is None:
            series = series.dt.tz_localize("UTC")
        return series.dt.tz_convert("UTC").astype("datetime64[us, UTC]"), np.zeros(len(arr), bool)
    text = pd.Series(_as_text(arr).to_pandas(), dtype="object")
    stamps = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = text.notna().to_numpy() & stamps.isna().to_numpy()
    return stamps.astype("datetime64[us, UTC]"), bad


def _type_column(
    col: ColumnSpec, arr: pa.ChunkedArray
) -> tuple[np.ndarray | ExtensionArray, list[tuple[np.ndarray, str]]]:
    """Typed values (NaN/NA where missing or bad) and (mask, reason) typing failures."""
    problems: list[tuple[np.ndarray, str]] = []
    flat = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if col.dtype == "int64" and pa.types.is_int64(flat.type) and flat.null_count == 0:
        # integers as read (a CSV file's integer literals, a Parquet or SQL int64
        # column): kept as they are, no copy; only a value past 2**53 fails, as in text
        values = flat.to_numpy(zero_copy_only=False)
        huge = (values >= _MAX_EXACT_INT) | (values <= -_MAX_EXACT_INT)
        if not huge.any():
            return values, problems
        numbers = np.where(huge, np.nan, values.astype("float64"))
        return numbers, [(huge, "integer too large (|value| >= 2**53)")]
    if col.is_numeric:
        numbers, not_number = _to_float(flat)
        problems.append((not_number, "not a number"))
        infinite = np.isinf(numbers)
        problems.append((infinite, "not a finite number"))
        if infinite.any():
            numbers = np.where(infinite, np.nan, numbers)
        if col.dtype == "int64":
            with np.errstate(invalid="ignore"):
                # numbers are finite or NaN here; floor(x) != x is x mod 1 != 0, faster
                fractional = ~np.isnan(numbers) & (np.floor(numbers) != numbers)
                huge = ~fractional & (np.abs(numbers) >= _MAX_EXACT_INT)
            problems.append((fractional, "not an integer"))
            problems.append((huge, "integer too large (|value| >= 2**53)"))
            not_int = fractional | huge
            if not_int.any():
                numbers = np.where(not_int, np.nan, numbers)
        return numbers, problems
    if col.dtype == "timestamp":
        stamps, bad = _to_timestamp(flat)
        problems.append((bad, "not an ISO-8601 timestamp"))
        return stamps.array, problems
    text = _as_text(flat)
    too_long = pc.greater(pc.utf8_length(text), MAX_TEXT_CHARS)
    if pc.any(too_long).as_py():
        long_mask = pc.fill_null(too_long, False).to_numpy(zero_copy_only=False)
        problems.append((long_mask, f"text longer than {MAX_TEXT_CHARS:,} characters"))
        text = pc.if_else(too_long, pa.scalar(None, pa.string()), text)
    return pd.array(text, dtype=STRING_DTYPE), problems


def _clip_text(value: str) -> str:
    """``value``, cut to :data:`MAX_TEXT_CHARS` characters with its length if longer."""
    if len(value) <= MAX_TEXT_CHARS:
        return value
    return f"{value[:MAX_TEXT_CHARS]}... ({len(value):,} characters)"


def clip_texts(values: pd.Series) -> pd.Series:
    """Object ``values`` with every text longer than :data:`MAX_TEXT_CHARS` clipped."""
    long = (values.str.len() > MAX_TEXT_CHARS).to_numpy(dtype=bool, na_value=False)
    if not long.any():
        return values
    out = values.copy()
    out[long] = [_clip_text(v) for v in values[long]]
    return out


def _raw_text(table: pa.Table) -> pd.DataFrame:
    return pd.DataFrame(
        {
            name: clip_texts(pd.Series(_as_text(table.column(name)).to_pandas(), dtype="object"))
            for name in table.column_names
        }
    )


class SeenIds:
    """Entity ids of the chunks of one file read so far, as one sorted int64 array.

    Eight bytes an id (a Python ``set`` of ints takes about ten times that), and a
    membership test is a binary search; :func:`validate_rows` and
    :func:`type_and_validate` accept it where they accept a ``set``.

    The bound: it grows with the file, 8 bytes a row for the whole file (10 million
    rows: 80 MB; the 54.5-million-row, 3 GB test file: 436 MB). Adding a chunk holds
    the old and the new array at once (twice that, briefly); ids out of file order are
    merged by a sort that needs a third copy. A bitmap or run-length set would be
    smaller for dense ids but larger for sparse ones: not clearly better, so not used.
    """

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype="int64")

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, ids: np.ndarray) -> None:
        """Remember ``ids`` (integers)."""
        new = np.sort(np.asarray(ids, dtype="int64"), kind="stable")
        if not len(new):
            return
        if not len(self._sorted) or new[0] > self._sorted[-1]:
            # ids in file order (the usual case): appended, never re-sorted, so a file of
            # N rows peaks at two copies of its ids, not three and a half
            self._sorted = np.concatenate([self._sorted, new])
            return
        merged = np.concatenate([self._sorted, new])
        # a stable sort of int64 is timsort: two sorted runs merge in linear time
        self._sorted = np.sort(merged, kind="stable")

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Mask of ``ids`` (float64, NaN for missing) seen before; NaN never matches."""
        values = np.asarray(ids, dtype="float64")
        out = np.zeros(len(values), dtype=bool)
        if not len(self._sorted):
            return out
        known = ~np.isnan(values)
        # ids below 2**53 only reach here (larger ones fail typing): exact as int64
        wanted = values[known].astype("int64")
        at = np.searchsorted(self._sorted, wanted)
        at[at == len(self._sorted)] = 0
        out[known] = self._sorted[at] == wanted
        return out


@dataclass(frozen=True)
class TypedRows:
    """One chunk typed by the schema, not yet validated (the first half of type_and_validate).

    ``values`` holds each present column in schema order: numbers as float64 (NaN
    where missing or not typeable; an integer column too, unless it was read as
    integers with none missing or too large: then as those int64 values), text as
    Arrow-backed strings, timestamps in UTC; ``problems`` are the typing failures, as quarantine
    rows (without file and record).
    """

    source_file: str
    spec: DatasetSpec
    table: pa.Table
    row_numbers: np.ndarray
    values: Mapping[str, np.ndarray | ExtensionArray]
    problems: tuple[pd.DataFrame, ...]
    _all_stored: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _validation: list[Future[ValidationSummary]] = field(
        default_factory=list, repr=False, compare=False
    )

    @property
    def num_rows(self) -> int:
        """Rows in the chunk."""
        return len(self.row_numbers)

    @property
    def clean(self) -> bool:
        """Whether every value could be typed (Great Expectations may still fail rows)."""
        return not self.problems

    def frame(self) -> pd.DataFrame:
        """A new frame of the typed values and ``source_row``, as Great Expectations sees them."""
        # copy=False: no consolidation of a million-row chunk into 2-D blocks
        return pd.DataFrame({**self.values, ROW_ID: self.row_numbers}, copy=False)

    def row_suite(self) -> list[ExpectationDef]:
        """The schema's row expectations about the columns the chunk has."""
        present = set(self.values) | {ROW_ID}
        return [e for e in row_expectations(self.spec) if e.column is None or e.column in present]

    def start_validation(
        self, executor: Executor, *, failing: bool = False
    ) -> Future[ValidationSummary]:
        """Great Expectations' run of the row suite on the chunk (its summary), on ``executor``.

        Started once: later calls return the same run. :func:`validate_rows` confirms
        its evaluation with it; a caller may start it early, so that it overlaps other
        work (writing the rows, say). ``failing`` (rows are known to fail) skips GX's
        verdict-only first run.
        """
        if not self._validation:
            name = f"{self.spec.name}-rows"
            self._validation.append(
                executor.submit(
                    validate,
                    self.frame(),
                    self.row_suite(),
                    name=name,
                    every_row=False,
                    verdict_first=not failing,
                )
            )
        return self._validation[0]

    def stored(self, keep: np.ndarray | None = None) -> pd.DataFrame:
        """A new frame of the rows ``keep`` selects (default all) in their declared storage types.

        Integer columns become ``int64`` (``Int64`` when optional) and fail on a
        missing required integer, which only rows that failed validation have.
        Every row's values are converted once (frames of all rows share them).

        Raises
        ------
        ValueError
            On a missing value in a required integer column.
        """
        if keep is None and self._all_stored:
            return pd.DataFrame(self._all_stored, copy=False)
        columns: dict[str, Any] = {}
        for name, values in self.values.items():
            kept = values if keep is None else values[keep]
            col = self.spec.column(name)
            if col.dtype == "int64":
                kept = _stored_integers(np.asarray(kept), col)
            columns[name] = kept
        columns[ROW_ID] = self.row_numbers if keep is None else self.row_numbers[keep]
        if keep is None:
            self._all_stored.update(columns)
        return pd.DataFrame(columns, copy=False)


def _stored_integers(values: np.ndarray, col: ColumnSpec) -> np.ndarray | ExtensionArray:
    """Typed integers (int64, or float64 exact below 2**53 with NaN if missing) as ``int64``
    or ``Int64``.

    Raises
    ------
    ValueError
        On a missing value in a required column (only a row that failed validation has one).
    """
    if values.dtype.kind == "i":  # integers as read: none missing
        ints = values.astype("int64", copy=False)
        return ints if col.required else pd.arrays.IntegerArray(ints, np.zeros(len(ints), bool))
    missing = np.isnan(values)
    if col.required:
        if missing.any():
            raise ValueError(f"column {col.name!r}: cannot store a missing value as int64")
        return values.astype("int64")
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype("int64"), missing)


def _problem_rows(
    typed_table: pa.Table,
    raw_values: dict[str, pa.Array],
    column: ColumnSpec,
    mask: np.ndarray,
    numbers: np.ndarray,
    reason: str,
    expectation: str,
) -> pd.DataFrame | None:
    """Quarantine rows (without file and record) for the cells ``mask`` flags in ``column``."""
    if not mask.any():
        return None
    if column.name not in raw_values:
        raw_values[column.name] = _as_text(typed_table.column(column.name))
    values = pd.Series(raw_values[column.name].to_pandas(), dtype="object")[mask]
    return pd.DataFrame(
        {
            "row_number": numbers[mask],
            "column": column.source,
            "value": clip_texts(values.fillna("<missing>").astype(str)).to_numpy(),
            "expectation": expectation,
            "reason": reason,
        }
    )


def type_rows(
    raw: pd.DataFrame | pa.Table,
    spec: DatasetSpec,
    source_file: str,
    *,
    row_numbers: np.ndarray | None = None,
) -> TypedRows:
    """Type ``raw`` by ``spec`` (the first half of :func:`type_and_validate`).

    Raises
    ------
    FileRejected
        When the chunk as a whole cannot be used (see :func:`canonical_columns`).
    """
    table = raw if isinstance(raw, pa.Table) else pa.Table.from_pandas(raw, preserve_index=False)
    mapping = canonical_columns(table.column_names, spec, source_file)
    n = table.num_rows
    if n == 0:
        raise FileRejected(source_file, "no data rows (a header only, or an empty pull)")
    numbers = (
        np.arange(1, n + 1, dtype="int64")
        if row_numbers is None
        else np.asarray(row_numbers, dtype="int64")
    )
    if len(numbers) != n:
        raise ValueError(f"{len(numbers)} row numbers for {n} rows")
    renamed = table.select(list(mapping)).rename_columns(list(mapping.values()))
    values: dict[str, np.ndarray | ExtensionArray] = {}
    problems: list[pd.DataFrame] = []
    raw_values: dict[str, pa.Array] = {}
    present = [col for col in spec.columns if col.name in renamed.column_names]
    # casts and checks run in Arrow and NumPy, which release the GIL: columns in parallel
    with ThreadPoolExecutor(max_workers=_TYPING_THREADS, thread_name_prefix="typing") as pool:
        outcomes = list(pool.map(lambda col: _type_column(col, renamed.column(col.name)), present))
    for col, (typed, failures) in zip(present, outcomes, strict=True):
        values[col.name] = typed
        for mask, reason in failures:
            rows = _problem_rows(
                renamed,
                raw_values,
                col,
                np.asarray(mask, dtype=bool),
                numbers,
                reason,
                TYPE_EXPECTATION,
            )
            if rows is not None:
                problems.append(rows)
    return TypedRows(source_file, spec, renamed, numbers, values, tuple(problems))


def type_and_validate(
    raw: pd.DataFrame | pa.Table,
    spec: DatasetSpec,
    source_file: str,
    *,
    row_numbers: np.ndarray | None = None,
    seen_ids: set[int] | SeenIds | None = None,
    confirm_on: Executor | None = None,
    exact: bool = False,
) -> TypedBatch:
    """Type ``raw`` by ``spec``, validate it with GX, and split valid rows from bad ones.

    Parameters
    ----------
    raw : DataFrame or pyarrow Table
        One chunk of a landed file, ideally with every column as text (CSV) or
        as stored (Parquet, SQL).
    spec : DatasetSpec
        The declared schema.
    source_file : str
        Name of the landed file, used in every error and quarantine row.
    row_numbers : array of int, optional
        The rows' 1-based numbers in the file (default ``1..len(raw)``).
    seen_ids : set of int or SeenIds, optional
        Entity ids of earlier chunks of the same file; a row repeating one is
        quarantined as a duplicate, and this chunk's valid ids are added.
    confirm_on, exact
        See :func:`validate_rows`.

    Raises
    ------
    FileRejected
        When the chunk as a whole cannot be used (see :func:`canonical_columns`).
    """
    typed = type_rows(raw, spec, source_file, row_numbers=row_numbers)
    return validate_rows(typed, seen_ids=seen_ids, confirm_on=confirm_on, exact=exact)


class ValidationMismatch(RuntimeError):
    """Great Expectations and the row-by-row evaluation disagree about a chunk."""


def _confirm(fast: ValidationSummary, gx: ValidationSummary, source_file: str) -> ValidationSummary:
    """``gx`` if it agrees with ``fast`` (counts, and its first failing rows); else raise."""
    expected, told = unexpected_counts(fast), unexpected_counts(gx)
    if expected != told:
        raise ValidationMismatch(
            f"{source_file}: Great Expectations counts {told} failing rows, the row-by-row "
            f"evaluation {expected}"
        )
    if not gx.unexpected.empty:
        found = set(
            zip(
                fast.unexpected["row_number"].tolist(),
                fast.unexpected["column"].tolist(),
                fast.unexpected["expectation"].tolist(),
                strict=True,
            )
        )
        listed = zip(
            gx.unexpected["row_number"].tolist(),
            gx.unexpected["column"].tolist(),
            gx.unexpected["expectation"].tolist(),
            strict=True,
        )
        missed = [row for row in listed if row not in found]
        if missed:
            raise ValidationMismatch(
                f"{source_file}: Great Expectations fails rows the row-by-row evaluation "
                f"passed: {missed[:5]}"
            )
    return gx


def validate_rows(
    typed: TypedRows,
    *,
    seen_ids: set[int] | SeenIds | None = None,
    confirm_on: Executor | None = None,
    exact: bool = False,
) -> TypedBatch:
    """Validate typed rows with GX and split valid rows from bad ones (the second half).

    Every row goes through the schema's row suite. By default the rows that fail
    are found by :func:`~mlplatform.core.expectations.evaluate` (vectorized), and
    Great Expectations runs the same suite for its summary, which must agree: the
    same failing-row count for every expectation, and its first failing rows among
    those found. Nothing is stored on the evaluation's word alone: a caller that
    passes ``confirm_on`` (an executor) gets the GX run there
    (:meth:`TypedRows.start_validation`: already started by the caller, or started by
    :meth:`TypedBatch.start_confirmation`, or by :meth:`TypedBatch.confirmed`, which
    waits for it and raises :class:`ValidationMismatch` on a disagreement), so that it
    can overlap writing the rows; without ``confirm_on`` GX runs here, and a
    disagreement falls back to ``exact``. ``exact=True`` takes the failing rows from
    Great Expectations itself (``COMPLETE`` results).
    """
    spec = typed.spec
    frame = typed.frame()
    suite = typed.row_suite()
    name = f"{spec.name}-rows"
    if exact:
        summary = validate(frame, suite, name=name)
        return _split(typed, summary.unexpected, seen_ids, summary=summary)
    if confirm_on is None:
        fast = evaluate(frame, suite)
        try:
            gx = validate(
                frame, suite, name=name, every_row=False, verdict_first=fast.unexpected.empty
            )
            summary = _confirm(fast, gx, typed.source_file)
        except ValidationMismatch as exc:
            _log.warning(f"{exc}; using Great Expectations' rows")
            return validate_rows(typed, seen_ids=seen_ids, exact=True)
        return _split(typed, fast.unexpected, seen_ids, summary=summary)
    executor = confirm_on
    fast = evaluate(frame, suite)
    # rows the evaluation fails will fail GX too: its verdict alone would be a wasted run
    failing = not fast.unexpected.empty

    def launch() -> None:
        typed.start_validation(executor, failing=failing)

    def confirm() -> ValidationSummary:
        run = typed.start_validation(executor, failing=failing)
        return _confirm(fast, run.result(), typed.source_file)

    return _split(typed, fast.unexpected, seen_ids, confirm=confirm, launch=launch)


def _split(
    typed: TypedRows,
    unexpected: pd.DataFrame,
    seen_ids: set[int] | SeenIds | None,
    *,
    summary: ValidationSummary | None = None,
    confirm: Callable[[], ValidationSummary] | None = None,
    launch: Callable[[], None] | None = None,
) -> TypedBatch:
    """Quarantine the rows ``unexpected`` (and typing) names; keep the others.

    The batch's validation summary is built from GX's ``summary``, now or, with
    ``confirm``, once that returns it (``launch`` starts that run).
    """
    spec, numbers, n = typed.spec, typed.row_numbers, typed.num_rows
    renamed = typed.table
    problem_frames: list[pd.DataFrame] = list(typed.problems)
    raw_values: dict[str, pa.Array] = {}

    def add_problems(column: ColumnSpec, mask: np.ndarray, reason: str, expectation: str) -> None:
        rows = _problem_rows(renamed, raw_values, column, mask, numbers, reason, expectation)
        if rows is not None:
            problem_frames.append(rows)

    type_bad = {
        (int(r), c)
        for f in problem_frames
        for r, c in zip(f["row_number"], f["column"], strict=True)
    }
    if not unexpected.empty:
        gx_rows = unexpected.copy()
        sources = {c.name: c.source for c in spec.columns}
        gx_rows["column"] = gx_rows["column"].map(sources).fillna(gx_rows["column"])
        if type_bad:
            # a value that failed typing is null to GX: report it once, as a typing failure
            keep = [
                not (exp == "expect_column_values_to_not_be_null" and (int(r), c) in type_bad)
                for r, c, exp in zip(
                    gx_rows["row_number"], gx_rows["column"], gx_rows["expectation"], strict=True
                )
            ]
            gx_rows = gx_rows.loc[keep]
        # GX flags every copy of a repeated id; as across chunks, the first copy is kept
        unique = gx_rows["expectation"] == UNIQUE_EXPECTATION
        if unique.any():
            ids = pd.Series(typed.values[spec.entity_id])
            first_rows = set(
                numbers[~ids.duplicated(keep="first").to_numpy() & ids.notna().to_numpy()]
            )
            first = unique & gx_rows["row_number"].isin(first_rows)
            gx_rows = gx_rows.loc[~first]
        if not gx_rows.empty:
            # GX sees typed values; the quarantine keeps what the file said
            position = pd.Series(np.arange(n), index=numbers)
            idx = position.loc[gx_rows["row_number"].to_numpy()].to_numpy()
            for column in gx_rows["column"].unique():
                name = spec.source_to_name.get(str(column), str(column))
                if name not in raw_values and name in renamed.column_names:
                    raw_values[name] = _as_text(renamed.column(name))
            gx_rows["value"] = [
                _value_at(raw_values, spec.source_to_name.get(str(c), str(c)), int(i))
                for c, i in zip(gx_rows["column"], idx, strict=True)
            ]
            problem_frames.append(gx_rows)

    if seen_ids:
        id_values = np.asarray(typed.values[spec.entity_id], dtype="float64")
        if isinstance(seen_ids, SeenIds):
            repeat = seen_ids.contains(id_values)
        else:
            seen = np.fromiter(seen_ids, dtype="float64", count=len(seen_ids))
            repeat = np.isin(id_values, seen)
        add_problems(
            spec.column(spec.entity_id),
            repeat,
            DUPLICATE_REASON,
            UNIQUE_EXPECTATION,
        )

    bad_rows = np.zeros(n, dtype=bool)
    if problem_frames:
        quarantine = pd.concat(problem_frames, ignore_index=True)
        quarantine = quarantine.sort_values(["row_number", "column", "expectation"], kind="stable")
        position = pd.Series(np.arange(n), index=numbers)
        bad_positions = position.loc[quarantine["row_number"].unique()].to_numpy()
        bad_rows[bad_positions] = True
        records_frame = _raw_text(renamed.take(pa.array(np.flatnonzero(bad_rows))))
        records_frame.columns = [spec.column(c).source for c in records_frame.columns]
        by_row = dict(
            zip(
                numbers[bad_rows].tolist(),
                (
                    json.dumps(r, default=str, allow_nan=False)
                    for r in records_frame.astype(object)
                    .where(records_frame.notna(), None)
                    .to_dict(orient="records")
                ),
                strict=True,
            )
        )
        quarantine.insert(0, "source_file", typed.source_file)
        quarantine["record"] = quarantine["row_number"].map(by_row)
        quarantine = quarantine.reset_index(drop=True)[QUARANTINE_COLUMNS]
    else:
        quarantine = empty_quarantine()

    valid = typed.stored(~bad_rows if bad_rows.any() else None)
    if seen_ids is not None:
        valid_ids = valid[spec.entity_id].to_numpy(dtype="int64")
        if isinstance(seen_ids, SeenIds):
            seen_ids.add(valid_ids)
        else:
            seen_ids.update(valid_ids.tolist())

    def summarize(gx: ValidationSummary) -> ValidationSummary:
        return ValidationSummary(
            expectations_run=gx.expectations_run,
            failed=_typing_failures(problem_frames, spec)
            + _without_typed_nulls(gx, type_bad, spec),
            rows_checked=gx.rows_checked,
        )

    return TypedBatch(
        source_file=typed.source_file,
        valid=valid,
        quarantine=quarantine,
        rows_landed=n,
        validation=None if summary is None else summarize(summary),
        confirm=None if confirm is None else (lambda: summarize(confirm())),
        launch=launch,
    )


def _typing_failures(frames: list[pd.DataFrame], spec: DatasetSpec) -> list[FailedExpectation]:
    """Typing failures as failed type expectations, one per column (GX never saw them)."""
    typing = [f[f["expectation"] == TYPE_EXPECTATION] for f in frames]
    typing = [f for f in typing if not f.empty]
    if not typing:
        return []
    rows = pd.concat(typing, ignore_index=True)
    names = spec.source_to_name
    return [
        FailedExpectation(
            TYPE_EXPECTATION,
            names.get(str(column), str(column)),
            len(group),
            group["value"].astype(str).head(5).tolist(),
            ", ".join(sorted(group["reason"].unique())),
        )
        for column, group in rows.groupby("column", sort=True)
    ]


def _without_typed_nulls(
    summary: ValidationSummary, type_bad: set[tuple[int, str]], spec: DatasetSpec
) -> list[FailedExpectation]:
    """GX's failures, minus not-null counts that are only values typing already rejected."""
    if not type_bad:
        return list(summary.failed)
    names = spec.source_to_name
    bad_by_column: dict[str, int] = {}
    for _, column in type_bad:
        name = names.get(column, column)
        bad_by_column[name] = bad_by_column.get(name, 0) + 1
    out = []
    for f in summary.failed:
        if f.expectation == "expect_column_values_to_not_be_null" and f.column is not None:
            remaining = f.unexpected_count - bad_by_column.get(f.column, 0)
            if remaining <= 0:
                continue
            f = FailedExpectation(f.expectation, f.column, remaining, f.sample, f.observed)
        out.append(f)
    return out


def _value_at(raw_values: dict[str, pa.Array], name: str, i: int) -> str:
    arr = raw_values.get(name)
    if arr is None:
        return "<missing>"
    value = arr[i].as_py()
    return "<missing>" if value is None else _clip_text(str(value))


def check_stored_rows(
    stored: pd.DataFrame, spec: DatasetSpec, *, rows_quarantined: int
) -> ValidationSummary:
    """Great Expectations' verdict on one chunk's valid rows, as they are stored.

    The full suite of :func:`~mlplatform.core.expectations.table_expectations`, in
    two halves. Columns and storage types: GX checks them on ``stored`` itself, the
    frame written (they cost no pass over the rows). The row expectations: GX ran
    them on these very rows when they landed (:func:`validate_rows`, every row), and
    when the chunk quarantined no row, GX found no row failing any of them, so that
    verdict is theirs and they are not run a second time; when rows were
    quarantined, GX runs the whole suite again on the rows kept.

    ``rows_quarantined`` counts the chunk's quarantined rows once Great Expectations
    has confirmed them (a chunk it disagrees with is never stored).
    """
    declared = [c for c in stored.columns if c in {col.name for col in spec.columns}]
    # with the row numbers, so that GX names a failing row as the file does
    frame = stored[[*declared, ROW_ID]] if ROW_ID in stored.columns else stored[declared]
    if rows_quarantined:
        return validate(frame, table_expectations(spec, declared), name=f"{spec.name}-stored")
    types = validate(
        frame, storage_type_expectations(spec, declared), name=f"{spec.name}-types", every_row=False
    )
    landed = [e for e in row_expectations(spec) if e.column is None or e.column in declared]
    return ValidationSummary(
        expectations_run=types.expectations_run + len(landed),
        failed=types.failed,
        rows_checked=len(stored),
    )
