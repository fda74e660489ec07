"""Neutralizing spreadsheet formulas in text the platform writes as CSV (CSV injection).

A CSV file opened in Excel, LibreOffice or Google Sheets runs a cell that starts
with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return before one) as a
formula: ``=HYPERLINK("http://x", "y")`` or ``+cmd|' /C calc'!A0``. Text that came
from a landed file and is written back out as CSV gets a leading single quote
(OWASP's advice), which spreadsheets show as text; a plain number such as ``-2.5``
is left alone, so numbers stay numbers.
"""

from __future__ import annotations

import re

import pandas as pd

__all__ = ["FORMULA_PREFIXES", "neutralize_cell", "neutralize_formulas"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula."""

_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def neutralize_cell(value: object) -> object:
    """``value`` with a leading ``'`` if it is text a spreadsheet would run as a formula.

    Anything else (numbers, missing values, text without a formula prefix, a plain
    signed number written as text) is returned unchanged.
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    if _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot run as spreadsheet formulas.

    Only text (object or string) columns are touched; numeric columns stay numeric.
    """
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            out[column] = series.map(neutralize_cell).astype(series.dtype)
    return out
