"""CSV injection: text the platform writes as CSV never runs as a spreadsheet formula."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.formulas import FORMULA_PREFIXES, neutralize_cell, neutralize_formulas

FORMULAS = [
    '=HYPERLINK("http://x.example","y")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1)",
    "\t=1+1",
    "\r=1+1",
    "=",
    "-",
    "-inf",
    "+-1",
]


@pytest.mark.parametrize("cell", FORMULAS)
def test_a_formula_gets_a_leading_quote(cell: str) -> None:
    assert neutralize_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-2.5", "+3", "-1e5", "-.5", "-5.", "42", "L", "M14860", ""])
def test_numbers_and_plain_text_are_unchanged(cell: str) -> None:
    assert neutralize_cell(cell) == cell


@pytest.mark.parametrize("value", [None, np.nan, -2.5, 7])
def test_non_text_is_unchanged(value: object) -> None:
    out = neutralize_cell(value)
    assert out is value


def test_a_frame_written_as_csv_has_no_cell_a_spreadsheet_would_run() -> None:
    frame = pd.DataFrame(
        {
            "row_number": [1, 2, 3, 4, 5],
            "value": [FORMULAS[0], FORMULAS[1], "-2.5", "-2+3", None],
            "score": [-2.5, -1.0, 0.0, 3.0, np.nan],
            "source_file": ["=x.csv", "ok.csv", "ok.csv", "@a.csv", "ok.csv"],
        }
    )
    safe = neutralize_formulas(frame)
    assert frame["value"].iloc[0] == FORMULAS[0]  # the input is not modified
    text = safe.to_csv(index=False)
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    for column in ("value", "source_file"):
        cells = [str(c) for c in back[column]]
        assert not [c for c in cells if c.startswith(FORMULA_PREFIXES) and c != "-2.5"], cells
    assert back["value"].tolist()[:4] == ["'" + FORMULAS[0], "'" + FORMULAS[1], "-2.5", "'-2+3"]
    # numeric columns stay numeric, negative numbers included
    assert safe["score"].dtype == frame["score"].dtype
    assert safe["row_number"].tolist() == [1, 2, 3, 4, 5]
    assert back["score"].tolist()[:4] == ["-2.5", "-1.0", "0.0", "3.0"]  # written bare
