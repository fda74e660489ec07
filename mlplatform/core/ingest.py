"""Typing and row-level validation of landed files against the declared schema.

Whole-file problems (no rows, missing required columns, a wrong delimiter) raise
:class:`FileRejected`, naming the file and the column. Row-level problems never
raise: the row goes to the quarantine with its file, row number, column, value
and reason, and the valid rows continue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlplatform.core.schema import DatasetSpec

__all__ = [
    "QUARANTINE_COLUMNS",
    "FileRejected",
    "TypedBatch",
    "type_and_validate",
]

_MAX_EXACT_INT = float(2**53)

QUARANTINE_COLUMNS = ["source_file", "row_number", "column", "value", "reason", "record"]


class FileRejected(ValueError):
    """A landed file that cannot be ingested at all."""

    def __init__(self, source_file: str, reason: str, column: str | None = None) -> None:
        self.source_file = source_file
        self.reason = reason
        self.column = column
        where = f" (column {column!r})" if column else ""
        super().__init__(f"{source_file}: {reason}{where}")


@dataclass(frozen=True)
class TypedBatch:
    """The outcome of typing one landed file.

    ``valid`` has canonical column names and declared dtypes; ``quarantine`` has
    one row per failed (row, column) with the raw value and the reason.
    """

    source_file: str
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    rows_landed: int

    @property
    def rows_quarantined(self) -> int:
        """Number of distinct landed rows that were quarantined."""
        if self.quarantine.empty:
            return 0
        return int(self.quarantine["row_number"].nunique())


def _check_file_shape(raw: pd.DataFrame, spec: DatasetSpec, source_file: str) -> pd.DataFrame:
    raw = raw.rename(columns=lambda c: str(c).strip())
    if raw.shape[1] == 1 and any(sep in str(raw.columns[0]) for sep in (";", "\t", "|")):
        raise FileRejected(
            source_file,
            "wrong delimiter: the header is one column; expected comma-separated values",
            column=str(raw.columns[0])[:80],
        )
    lookup = spec.source_to_name
    canonical = {c.name for c in spec.columns}
    renamed = raw.rename(columns={s: n for s, n in lookup.items() if s in raw.columns})
    for col in spec.columns:
        if col.required and col.name not in renamed.columns:
            raise FileRejected(source_file, "missing required column", column=col.source)
    if len(renamed) == 0:
        raise FileRejected(source_file, "the file has a header but no data rows")
    keep = [c for c in renamed.columns if c in canonical]
    return renamed[keep]


def type_and_validate(raw: pd.DataFrame, spec: DatasetSpec, source_file: str) -> TypedBatch:
    """Type ``raw`` by ``spec`` and split it into valid rows and quarantined cells.

    Parameters
    ----------
    raw : DataFrame
        The file as read, ideally with every column as text so that typing is
        done here, in one place.
    spec : DatasetSpec
        The declared schema.
    source_file : str
        Name of the landed file, used in every error and quarantine row.

    Returns
    -------
    TypedBatch

    Raises
    ------
    FileRejected
        When the file as a whole cannot be used.
    """
    frame = _check_file_shape(raw, spec, source_file).reset_index(drop=True)
    n = len(frame)
    row_numbers = np.arange(1, n + 1)
    typed: dict[str, pd.Series] = {}
    problems: list[pd.DataFrame] = []

    def flag(mask: pd.Series | np.ndarray, column: str, values: pd.Series, reason: str) -> None:
        mask_arr = np.asarray(mask, dtype=bool)
        if mask_arr.any():
            problems.append(
                pd.DataFrame(
                    {
                        "row_number": row_numbers[mask_arr],
                        "column": column,
                        "value": values[mask_arr].astype("string").fillna("<missing>").to_numpy(),
                        "reason": reason,
                    }
                )
            )

    for col in spec.columns:
        if col.name not in frame.columns:
            continue
        original = frame[col.name]
        as_text = original.astype("string").str.strip()
        missing = original.isna().to_numpy() | (as_text == "").fillna(True).to_numpy()
        if col.is_numeric:
            numbers = pd.to_numeric(as_text.where(~missing), errors="coerce").astype("float64")
            not_number = ~missing & numbers.isna().to_numpy()
            flag(not_number, col.source, original, "not a number")
            not_finite = np.isinf(numbers.to_numpy())
            flag(not_finite, col.source, original, "not a finite number")
            numbers = numbers.where(~not_finite)
            if col.dtype == "int64":
                fractional = numbers.notna().to_numpy() & (numbers % 1 != 0).to_numpy()
                flag(fractional, col.source, original, "not an integer")
                # integers travel as float64 here: beyond 2**53 they are no longer exact
                huge = ~fractional & (numbers.abs() >= _MAX_EXACT_INT).to_numpy()
                flag(huge, col.source, original, "integer too large (|value| >= 2**53)")
                numbers = numbers.where(~fractional & ~huge)
            if col.min_value is not None:
                flag(
                    numbers < col.min_value,
                    col.source,
                    original,
                    f"below the minimum {col.min_value:g}{' ' + col.unit if col.unit else ''}",
                )
            if col.max_value is not None:
                flag(
                    numbers > col.max_value,
                    col.source,
                    original,
                    f"above the maximum {col.max_value:g}{' ' + col.unit if col.unit else ''}",
                )
            typed[col.name] = numbers
        else:
            typed[col.name] = as_text
            if col.allowed is not None:
                bad = ~missing & ~as_text.isin(col.allowed).fillna(False).to_numpy()
                flag(bad, col.source, original, f"not one of {', '.join(col.allowed)}")
        if col.required:
            flag(missing, col.source, original, "missing value")

    ids = typed[spec.entity_id]
    dup = ids.notna().to_numpy() & ids.duplicated(keep="first").to_numpy()
    flag(
        dup,
        spec.column(spec.entity_id).source,
        frame[spec.entity_id],
        "duplicate entity id in this file",
    )

    if problems:
        quarantine = pd.concat(problems, ignore_index=True)
        quarantine = quarantine.sort_values(["row_number", "column"], kind="stable")
        bad_rows = np.zeros(n, dtype=bool)
        bad_rows[quarantine["row_number"].to_numpy() - 1] = True
        records = frame.astype("string").to_dict(orient="records")
        quarantine.insert(0, "source_file", source_file)
        quarantine["record"] = [
            json.dumps(records[i - 1], default=str) for i in quarantine["row_number"]
        ]
        quarantine = quarantine.reset_index(drop=True)[QUARANTINE_COLUMNS]
    else:
        quarantine = pd.DataFrame(
            {
                c: pd.Series(dtype="int64" if c == "row_number" else "string")
                for c in QUARANTINE_COLUMNS
            }
        )
        bad_rows = np.zeros(n, dtype=bool)

    valid = pd.DataFrame(typed).loc[~bad_rows]
    for col in spec.columns:
        if col.name in valid.columns and col.dtype == "int64":
            if col.required:
                valid[col.name] = valid[col.name].astype("int64")
            else:
                valid[col.name] = valid[col.name].astype("Int64")
        elif col.name in valid.columns and col.dtype == "string":
            valid[col.name] = valid[col.name].astype("string")
    valid.insert(len(valid.columns), "source_row", row_numbers[~bad_rows])
    return TypedBatch(
        source_file=source_file,
        valid=valid.reset_index(drop=True),
        quarantine=quarantine,
        rows_landed=n,
    )
