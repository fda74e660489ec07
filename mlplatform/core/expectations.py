"""Great Expectations suites derived from the declared schema, and their results.

The suite is never written by hand: every expectation comes from a
:class:`~mlplatform.core.schema.ColumnSpec` (type, not-null, range from physical
meaning, allowed set) or from the dataset (unique entity ids, label in {0, 1}).
Two suites are derived:

* the **row suite** (:func:`row_expectations`) judges typed rows one by one; its
  unexpected rows become quarantine entries naming the row, the column and the
  failed expectation;
* the **table suite** (:func:`table_expectations`) adds column presence and
  storage types, and is what the asset checks run on stored batches and on the
  feature table.

Great Expectations 1.x is called directly, with an ephemeral context per process.
It takes seconds to import, so it is imported on first use only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.core.schema import DatasetSpec

__all__ = [
    "ROW_ID",
    "UNEXPECTED_COLUMNS",
    "ExpectationDef",
    "FailedExpectation",
    "ValidationSummary",
    "evaluate",
    "row_expectations",
    "storage_type_expectations",
    "suite_fingerprint",
    "table_expectations",
    "unexpected_counts",
    "validate",
]

_log = logging.getLogger(__name__)
ROW_ID = "source_row"
UNIQUE_EXPECTATION = "expect_column_values_to_be_unique"
DUPLICATE_REASON = "duplicate entity id (an earlier row of this file has it; the first is kept)"
UNEXPECTED_COLUMNS = ["row_number", "column", "value", "expectation", "reason"]
_SAMPLE = 5
# rows of each failed expectation GX lists in its summary, checked against evaluate()
_PARTIAL_ROWS = 20

# GX's names for the storage types the schema declares (pandas engine).
_GX_TYPES = {"int64": "int64", "float64": "float64", "string": "str", "timestamp": "Timestamp"}


@dataclass(frozen=True)
class ExpectationDef:
    """One expectation, as plain data: GX's snake_case type and its keyword arguments."""

    type: str
    kwargs: dict[str, Any]
    reason: str

    @property
    def column(self) -> str | None:
        """The column the expectation is about, if any."""
        col = self.kwargs.get("column")
        return str(col) if col is not None else None


def _unit(unit: str | None) -> str:
    return f" {unit}" if unit else ""


def row_expectations(spec: DatasetSpec) -> list[ExpectationDef]:
    """Expectations each typed row must meet, derived from ``spec``.

    Not-null for required columns; ``between`` from the declared physical range;
    ``in_set`` for categorical columns and for the label ({0, 1}); unique entity ids.
    """
    out: list[ExpectationDef] = []
    for col in spec.columns:
        if col.required:
            out.append(
                ExpectationDef(
                    "expect_column_values_to_not_be_null", {"column": col.name}, "missing value"
                )
            )
        if col.name == spec.target:
            out.append(
                ExpectationDef(
                    "expect_column_values_to_be_in_set",
                    {"column": col.name, "value_set": [0, 1]},
                    "label not in {0, 1}",
                )
            )
            continue
        if col.is_numeric and (col.min_value is not None or col.max_value is not None):
            lo = "-inf" if col.min_value is None else f"{col.min_value:g}"
            hi = "inf" if col.max_value is None else f"{col.max_value:g}"
            out.append(
                ExpectationDef(
                    "expect_column_values_to_be_between",
                    {"column": col.name, "min_value": col.min_value, "max_value": col.max_value},
                    f"outside [{lo}, {hi}]{_unit(col.unit)}",
                )
            )
        if col.allowed is not None:
            out.append(
                ExpectationDef(
                    "expect_column_values_to_be_in_set",
                    {"column": col.name, "value_set": list(col.allowed)},
                    f"not one of {', '.join(col.allowed)}",
                )
            )
    out.append(
        ExpectationDef(
            UNIQUE_EXPECTATION,
            {"column": spec.entity_id},
            DUPLICATE_REASON,
        )
    )
    return out


def table_expectations(
    spec: DatasetSpec, columns: list[str] | None = None, *, required: list[str] | None = None
) -> list[ExpectationDef]:
    """The row suite plus column presence and storage types, for stored tables.

    ``columns`` limits the type and value checks to columns present (optional
    columns may be absent from a table); ``required`` are the columns the table
    must have (default: the schema's required columns).
    """
    present = set(columns) if columns is not None else {c.name for c in spec.columns}
    out = [
        ExpectationDef(
            "expect_table_columns_to_match_set",
            {
                "column_set": list(spec.required_columns if required is None else required),
                "exact_match": False,
            },
            "required column missing",
        )
    ]
    for col in spec.columns:
        if col.name not in present:
            continue
        if col.dtype == "int64" and not col.required:
            # an optional integer column is nullable (Int64) unless a batch has no gaps
            out.append(
                ExpectationDef(
                    "expect_column_values_to_be_in_type_list",
                    {"column": col.name, "type_list": ["int64", "Int64Dtype"]},
                    f"not stored as {col.dtype}",
                )
            )
            continue
        out.append(
            ExpectationDef(
                "expect_column_values_to_be_of_type",
                {"column": col.name, "type_": _GX_TYPES[col.dtype]},
                f"not stored as {col.dtype}",
            )
        )
    return out + [e for e in row_expectations(spec) if e.column is None or e.column in present]


def suite_fingerprint(spec: DatasetSpec) -> str:
    """A short digest of the full suite (:func:`table_expectations`) ``spec`` derives.

    Recorded with every stored batch version: rows validated under another
    fingerprint (an older range, a new column) are validated again before a
    feature table serves them.
    """
    described = [(e.type, sorted(e.kwargs.items())) for e in table_expectations(spec)]
    return hashlib.sha256(repr((spec.name, described)).encode()).hexdigest()[:16]


def storage_type_expectations(
    spec: DatasetSpec, columns: list[str], *, required: list[str] | None = None
) -> list[ExpectationDef]:
    """The table suite's expectations about columns and storage types, not about values.

    What :func:`table_expectations` adds to the row suite: a check that costs no
    pass over the rows (GX reads the column's dtype).
    """
    return [
        e
        for e in table_expectations(spec, columns, required=required)
        if e.type in _DTYPE_EXPECTATIONS
    ]


@dataclass(frozen=True)
class FailedExpectation:
    """A failed expectation: what, where, how often, and a few failing values."""

    expectation: str
    column: str | None
    unexpected_count: int
    sample: list[str]
    observed: str | None = None

    def describe(self) -> str:
        """One line for logs and check metadata."""
        where = f" on {self.column!r}" if self.column else ""
        seen = f"; observed {self.observed}" if self.observed else ""
        sample = f"; e.g. {', '.join(self.sample)}" if self.sample else ""
        return f"{self.expectation}{where}: {self.unexpected_count} unexpected{sample}{seen}"


@dataclass
class ValidationSummary:
    """What GX said about one frame.

    ``unexpected`` has one row per (row, column, expectation) that failed, with
    the row's number (``source_row``) when the frame carries one.
    """

    expectations_run: int = 0
    failed: list[FailedExpectation] = field(default_factory=list)
    rows_checked: int = 0
    unexpected: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {
                c: pd.Series(dtype="int64" if c == "row_number" else "object")
                for c in UNEXPECTED_COLUMNS
            }
        )
    )

    @property
    def success(self) -> bool:
        """Whether every expectation passed."""
        return not self.failed

    def merge(self, other: ValidationSummary) -> ValidationSummary:
        """Combine the summaries of two chunks of the same batch."""
        by_key: dict[tuple[str, str | None], FailedExpectation] = {
            (f.expectation, f.column): f for f in self.failed
        }
        for f in other.failed:
            key = (f.expectation, f.column)
            if key in by_key:
                old = by_key[key]
                by_key[key] = FailedExpectation(
                    f.expectation,
                    f.column,
                    old.unexpected_count + f.unexpected_count,
                    (old.sample + f.sample)[:_SAMPLE],
                    old.observed or f.observed,
                )
            else:
                by_key[key] = f
        # the unexpected rows themselves are in the quarantine; the merge keeps counts
        return ValidationSummary(
            expectations_run=max(self.expectations_run, other.expectations_run),
            failed=list(by_key.values()),
            rows_checked=self.rows_checked + other.rows_checked,
        )

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for asset-check metadata and batch manifests."""
        return {
            "expectations_run": self.expectations_run,
            "expectations_failed": len(self.failed),
            "rows_checked": self.rows_checked,
            "failures": [f.describe() for f in self.failed],
        }


_CONTEXT: Any = None
_SUITE_RUNS: dict[tuple[str, tuple[tuple[str, str], ...]], _SuiteRun] = {}


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        # GX logs its own set-up at INFO (hundreds of lines); keep its warnings only
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every in-memory frame below this size by hashing all of its
        # values (~0.6 s per million rows), only to label the batch. Our batches are
        # labelled by their file's sha256 and row numbers, so the fingerprint is skipped.
        pandas_execution_engine.HASH_THRESHOLD = 0
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT = ctx
    return _CONTEXT


class _SuiteRun:
    """A suite Great Expectations validates in-memory frames against (one per suite).

    :meth:`run` is ``ValidationDefinition.run`` without its last step, storing the
    result in the context's results store (serialized, ~10 % of a run; this
    ephemeral context's store is never read). ``run`` is GX's own V1 validator on
    the suite's batch definition, with :func:`_memoized_configurations`.
    """

    def __init__(self, batch_definition: Any, suite: Any) -> None:
        self.batch_definition = batch_definition
        self.suite = suite

    def run(self, *, batch_parameters: dict[str, Any], result_format: dict[str, Any]) -> Any:
        """GX's validation result of the suite on the batch ``batch_parameters`` names."""
        from great_expectations.validator.v1_validator import Validator

        validator = Validator(
            batch_definition=self.batch_definition,
            batch_parameters=batch_parameters,
            result_format=result_format,
        )
        with _memoized_configurations():
            return validator.validate_expectation_suite(self.suite)


def _suite_run(name: str, expectations: list[ExpectationDef]) -> _SuiteRun:
    """The GX suite of ``expectations`` under ``name``, built once per process."""
    key = (name, tuple((e.type, repr(sorted(e.kwargs.items()))) for e in expectations))
    found = _SUITE_RUNS.get(key)
    if found is not None:
        return found
    import great_expectations as gx
    from great_expectations.expectations.registry import get_expectation_impl

    ctx = _context()
    tag = f"{name}-{len(_SUITE_RUNS)}"
    source = ctx.data_sources.add_pandas(f"frames-{tag}")
    batch = source.add_dataframe_asset(f"frame-{tag}").add_batch_definition_whole_dataframe("whole")
    # the suite is built whole, not by suite.add_expectation(), which re-serializes the
    # stored suite on every call (a 39-expectation suite: 0.26 s against 0.01 s); it is
    # not stored in the context: nothing reads it there
    suite = gx.ExpectationSuite(
        name=f"suite-{tag}",
        expectations=[get_expectation_impl(e.type)(**e.kwargs) for e in expectations],
    )
    found = _SUITE_RUNS[key] = _SuiteRun(batch, suite)
    return found


# Configurations GX has built during the validation run of this thread, by expectation.
_RUN_MEMO = threading.local()


@contextlib.contextmanager
def _memoized_configurations() -> Iterator[None]:
    """Within the block, GX builds each expectation's configuration once, not per use.

    GX's ``Expectation.configuration`` is a property that serializes the whole
    expectation (pydantic's ``dict()``) and builds a new ``ExpectationConfiguration``
    on every access, and one validation run reads it about 80 times per
    expectation, once for every keyword argument it looks up: 30-40 % of the CPU
    of a run on a small frame, a fixed cost per chunk and expectation. Within one run
    nothing changes an expectation, so the first configuration built serves the
    rest. Outside the block (and on other threads) the property is GX's own.
    """
    _install_configuration_memo()
    outer = getattr(_RUN_MEMO, "configurations", None)
    _RUN_MEMO.configurations = {} if outer is None else outer
    try:
        yield
    finally:
        # the memo holds the expectations themselves, so no id is reused while it lives
        _RUN_MEMO.configurations = outer


_MEMO_INSTALLED = False
_MEMO_LOCK = threading.Lock()


def _install_configuration_memo() -> None:
    """Wrap GX's ``Expectation.configuration`` once, per process, with the run memo."""
    global _MEMO_INSTALLED
    with _MEMO_LOCK:
        if _MEMO_INSTALLED:
            return
        from great_expectations.expectations.expectation import Expectation

        prop = vars(Expectation).get("configuration")
        _MEMO_INSTALLED = True
        if not isinstance(prop, property) or prop.fget is None:
            # another GX than the one this was written for (1.x): its own code, unmemoized
            _log.warning("GX's Expectation.configuration is no property: not memoized")
            return
        build = prop.fget

        def configuration(self: Any) -> Any:
            memo: dict[int, tuple[Any, Any]] | None = getattr(_RUN_MEMO, "configurations", None)
            if memo is None:
                return build(self)
            hit = memo.get(id(self))
            if hit is None or hit[0] is not self:
                hit = memo[id(self)] = (self, build(self))
            return hit[1]

        configuration.__doc__ = build.__doc__
        Expectation.configuration = property(configuration)  # type: ignore[method-assign, assignment]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<missing>"
    if value is pd.NA or value is pd.NaT:
        return "<missing>"
    return str(value)


# expectations about a column's type or the table's columns, not about its values
_DTYPE_EXPECTATIONS = frozenset(
    {
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_in_type_list",
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_column_to_exist",
    }
)


def _masked_numeric(frame: pd.DataFrame) -> list[str]:
    """Columns of pandas' nullable numeric types (``Int64``, ``Float64``, ...)."""
    return [
        str(c)
        for c, dtype in frame.dtypes.items()
        if pd.api.types.is_extension_array_dtype(dtype)
        and pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
    ]


def validate(
    frame: pd.DataFrame,
    expectations: list[ExpectationDef],
    *,
    name: str = "frame",
    every_row: bool = True,
    verdict_first: bool = True,
) -> ValidationSummary:
    """Run ``expectations`` on ``frame`` with Great Expectations.

    When ``frame`` has a ``source_row`` column, ``unexpected`` lists every failing
    row by that number (GX's ``unexpected_index_list``); otherwise by position
    (1-based). With ``every_row=False`` GX returns its summary only (counts and the
    first failing rows, ``partial_unexpected_index_list``), and ``unexpected``
    lists just those first rows: enough to confirm :func:`evaluate`, at less cost.
    GX then gives its verdict alone first and summarizes only when an expectation
    fails, unless ``verdict_first`` is False (the caller knows some rows fail).

    GX checks the values of pandas' nullable integer columns (``Int64``) ten times
    slower than those of NumPy ones (a million rows: 0.4-0.7 s per range check,
    against 0.05 s). Their value expectations therefore run on the same values as
    ``float64`` (missing as NaN, which GX treats as missing too; exact, as stored
    integers are below 2**53), and their type expectations on the column as it is:
    the same verdicts, counts and failing rows.
    """
    data = frame
    if ROW_ID not in data.columns:
        data = data.assign(**{ROW_ID: np.arange(1, len(data) + 1, dtype="int64")})
    masked = set(_masked_numeric(data))
    on_values = [
        e for e in expectations if e.column in masked and e.type not in _DTYPE_EXPECTATIONS
    ]
    if not on_values:
        return _validate(
            data, expectations, name=name, every_row=every_row, verdict_first=verdict_first
        )
    rest = [e for e in expectations if e not in on_values]
    as_float = data.assign(
        **{
            c: data[c].to_numpy(dtype="float64", na_value=np.nan)
            for c in {e.column for e in on_values if e.column is not None}
        }
    )
    first = _validate(data, rest, name=name, every_row=every_row, verdict_first=verdict_first)
    second = _validate(
        as_float,
        on_values,
        name=f"{name}-values",
        every_row=every_row,
        verdict_first=verdict_first,
    )
    combined = ValidationSummary(
        expectations_run=first.expectations_run + second.expectations_run,
        failed=[*first.failed, *second.failed],
        rows_checked=len(frame),
    )
    parts = [u for u in (first.unexpected, second.unexpected) if not u.empty]
    if parts:
        combined.unexpected = pd.concat(parts, ignore_index=True)[UNEXPECTED_COLUMNS]
    return combined


def _validate(
    data: pd.DataFrame,
    expectations: list[ExpectationDef],
    *,
    name: str,
    every_row: bool,
    verdict_first: bool = True,
) -> ValidationSummary:
    """One Great Expectations run of ``expectations`` on ``data`` (which has ``source_row``).

    Without ``every_row``, GX first gives its verdict alone (``BOOLEAN_ONLY``: no
    failing rows or values gathered, about half the cost of ``SUMMARY`` on a million
    clean rows); only when an expectation fails does it run again for the summary.
    A caller that already knows rows fail passes ``verdict_first=False``.
    """
    if not expectations:
        return ValidationSummary(rows_checked=len(data))
    suite_run = _suite_run(name, expectations)
    if not every_row and verdict_first:
        verdict = suite_run.run(
            batch_parameters={"dataframe": data}, result_format={"result_format": "BOOLEAN_ONLY"}
        )
        if all(r.success for r in verdict.results):
            return ValidationSummary(expectations_run=len(verdict.results), rows_checked=len(data))
    result = suite_run.run(
        batch_parameters={"dataframe": data},
        result_format={
            "result_format": "COMPLETE" if every_row else "SUMMARY",
            "unexpected_index_column_names": [ROW_ID],
            "partial_unexpected_count": _SAMPLE if every_row else _PARTIAL_ROWS,
            "return_unexpected_index_query": False,
        },
    )
    by_type = {(e.type, e.column): e for e in expectations}
    failed: list[FailedExpectation] = []
    rows: list[pd.DataFrame] = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        res = r.result or {}
        if r.exception_info and r.exception_info.get("raised_exception"):
            failed.append(
                FailedExpectation(
                    cfg.type,
                    column,
                    0,
                    [],
                    f"error: {str(r.exception_info.get('exception_message'))[:200]}",
                )
            )
            continue
        index = res.get("unexpected_index_list" if every_row else "partial_unexpected_index_list")
        index = index or []
        count = int(res.get("unexpected_count") or len(index))
        observed = res.get("observed_value")
        sample = [_text(v) for v in (res.get("partial_unexpected_list") or [])[:_SAMPLE]]
        failed.append(
            FailedExpectation(
                cfg.type,
                column,
                count,
                sample,
                None if observed is None else str(observed)[:200],
            )
        )
        if column is not None and index:
            spec = by_type.get((cfg.type, column))
            rows.append(
                pd.DataFrame(
                    {
                        "row_number": np.fromiter(
                            (int(i[ROW_ID]) for i in index), dtype="int64", count=len(index)
                        ),
                        "column": column,
                        "value": [_text(i.get(column)) for i in index],
                        "expectation": cfg.type,
                        "reason": spec.reason if spec is not None else cfg.type,
                    }
                )
            )
    summary = ValidationSummary(
        expectations_run=len(result.results), failed=failed, rows_checked=len(data)
    )
    if rows:
        summary.unexpected = pd.concat(rows, ignore_index=True)[UNEXPECTED_COLUMNS]
    return summary


# -- the same expectations, evaluated row by row without Great Expectations ---------------


def _failing(series: pd.Series, e: ExpectationDef) -> np.ndarray:
    """Which values of ``series`` fail ``e``, with GX's semantics (nulls fail only not-null)."""
    missing = series.isna().to_numpy()
    if e.type == "expect_column_values_to_not_be_null":
        return missing
    present = ~missing
    if e.type == "expect_column_values_to_be_between":
        if series.dtype.kind in "iuf":  # NumPy numbers: compared as they are, no copy
            values = series.to_numpy()
        else:
            values = series.to_numpy(dtype="float64", na_value=np.nan)
        bad = np.zeros(len(values), dtype=bool)
        low, high = e.kwargs.get("min_value"), e.kwargs.get("max_value")
        with np.errstate(invalid="ignore"):
            if low is not None:
                bad |= values < low
            if high is not None:
                bad |= values > high
        return present & bad
    if e.type == "expect_column_values_to_be_in_set":
        return present & ~series.isin(list(e.kwargs["value_set"])).to_numpy(dtype=bool)
    if e.type == UNIQUE_EXPECTATION:
        if series.dtype.kind in "iuf" and not missing.any():
            values = series.to_numpy()
            if len(values) < 2 or bool(np.all(values[1:] > values[:-1])):
                return np.zeros(len(values), dtype=bool)  # increasing: no value repeats
        return present & series.duplicated(keep=False).to_numpy(dtype=bool)
    raise NotImplementedError(f"no row-by-row evaluation of {e.type}")


def evaluate(frame: pd.DataFrame, expectations: list[ExpectationDef]) -> ValidationSummary:
    """Evaluate row expectations with pandas and NumPy, as Great Expectations would.

    The fast path of ingestion: it lists every failing (row, column, expectation) in
    ``unexpected``, like :func:`validate` does, in a few vectorized operations per
    expectation. Great Expectations stays the authority: ingestion confirms these
    counts against its summary (:func:`unexpected_counts`) before a batch is
    committed, and uses its rows if the two ever disagree.

    Raises
    ------
    NotImplementedError
        For an expectation type without a row-by-row evaluation (use :func:`validate`).
    """
    rows = (
        frame[ROW_ID].to_numpy(dtype="int64")
        if ROW_ID in frame.columns
        else np.arange(1, len(frame) + 1, dtype="int64")
    )
    failed: list[FailedExpectation] = []
    found: list[pd.DataFrame] = []
    for e in expectations:
        column = e.column
        if column is None or column not in frame.columns:
            raise NotImplementedError(f"{e.type}: only column expectations are evaluated here")
        series = frame[column]
        bad = _failing(series, e)
        count = int(bad.sum())
        if not count:
            continue
        values = series[bad]
        failed.append(
            FailedExpectation(
                e.type, column, count, [_text(v) for v in values.head(_SAMPLE).tolist()]
            )
        )
        found.append(
            pd.DataFrame(
                {
                    "row_number": rows[bad],
                    "column": column,
                    "value": [_text(v) for v in values.tolist()],
                    "expectation": e.type,
                    "reason": e.reason,
                }
            )
        )
    summary = ValidationSummary(
        expectations_run=len(expectations), failed=failed, rows_checked=len(frame)
    )
    if found:
        summary.unexpected = pd.concat(found, ignore_index=True)[UNEXPECTED_COLUMNS]
    return summary


def unexpected_counts(summary: ValidationSummary) -> dict[tuple[str, str | None], int]:
    """Failing rows per (expectation, column); ``-1`` where the expectation raised an error."""
    return {
        (f.expectation, f.column): (
            -1 if f.observed is not None and f.observed.startswith("error:") else f.unexpected_count
        )
        for f in summary.failed
    }
