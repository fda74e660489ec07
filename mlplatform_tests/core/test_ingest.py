"""Unit tests of typing and validation of landed files (mlplatform.core.ingest)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.generator import AI4I_COLUMNS, generate_ai4i
from mlplatform.core.ingest import QUARANTINE_COLUMNS, FileRejected, type_and_validate
from mlplatform.core.schema import AI4I

from ._frames import raw_text

SOURCE = "landing/batch.csv"
N_ROWS = 20

DECLARED_DTYPES = {
    "udi": "int64",
    "product_id": "string",
    "type": "string",
    "air_temperature_k": "float64",
    "process_temperature_k": "float64",
    "rotational_speed_rpm": "int64",
    "torque_nm": "float64",
    "tool_wear_min": "int64",
    "machine_failure": "int64",
    # Optional (leakage) integer columns are nullable: a file may leave them empty.
    "twf": "Int64",
    "hdf": "Int64",
    "pwf": "Int64",
    "osf": "Int64",
    "rnf": "Int64",
    "source_row": "int64",
}


def _read_csv_text(text: str) -> pd.DataFrame:
    """Read CSV text the way the landing step does: every column as text, no NA guessing."""
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


# --- clean files -----------------------------------------------------------------------------


def test_clean_generated_rows_are_all_valid_with_declared_dtypes() -> None:
    generated = generate_ai4i(N_ROWS, seed=3)
    batch = type_and_validate(generated.astype(str), AI4I, SOURCE)

    assert batch.source_file == SOURCE
    assert batch.rows_landed == N_ROWS
    assert batch.rows_quarantined == 0
    assert batch.quarantine.empty
    assert list(batch.quarantine.columns) == QUARANTINE_COLUMNS
    assert len(batch.valid) == N_ROWS
    assert {c: str(t) for c, t in batch.valid.dtypes.items()} == DECLARED_DTYPES
    assert batch.valid["source_row"].tolist() == list(range(1, N_ROWS + 1))
    # Values survive the text round trip.
    for col in AI4I.columns:
        expected = generated[col.source]
        got = batch.valid[col.name]
        if col.is_numeric:
            np.testing.assert_array_equal(got.to_numpy(dtype="float64"), expected.to_numpy())
        else:
            assert got.tolist() == expected.tolist()


def test_clean_csv_text_round_trip() -> None:
    generated = generate_ai4i(5, seed=1)
    raw = _read_csv_text(generated.to_csv(index=False))
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert batch.valid["udi"].tolist() == [1, 2, 3, 4, 5]
    assert batch.valid["torque_nm"].tolist() == generated["Torque [Nm]"].tolist()


def test_surrounding_whitespace_in_headers_and_cells_is_tolerated() -> None:
    raw = raw_text(3, seed=1)
    raw = raw.rename(columns={"Torque [Nm]": "  Torque [Nm] ", "Type": "Type "})
    raw.loc[0, "  Torque [Nm] "] = " 12.5 "
    raw.loc[1, "Type "] = " H "
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert batch.valid.loc[0, "torque_nm"] == 12.5
    assert batch.valid.loc[1, "type"] == "H"


def test_extra_unknown_columns_are_dropped() -> None:
    raw = raw_text(4, seed=2)
    raw["Operator"] = "alice"
    raw["notes"] = "x"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert "Operator" not in batch.valid.columns
    assert "notes" not in batch.valid.columns
    assert list(batch.valid.columns) == [c.name for c in AI4I.columns] + ["source_row"]


def test_optional_leakage_columns_may_be_absent() -> None:
    raw = raw_text(4, seed=2).drop(columns=["TWF", "HDF", "PWF", "OSF", "RNF"])
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert len(batch.valid) == 4
    assert not {"twf", "hdf", "pwf", "osf", "rnf"} & set(batch.valid.columns)


def test_empty_optional_leakage_cell_is_not_quarantined() -> None:
    raw = raw_text(3, seed=2)
    raw.loc[1, "TWF"] = ""
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert batch.valid["twf"].isna().tolist() == [False, True, False]


# --- row-level problems: quarantined, the rest continues -------------------------------------


@pytest.mark.parametrize(
    ("source_column", "value", "reason"),
    [
        ("Torque [Nm]", "abc", "not a number"),
        ("Air temperature [K]", "warm", "not a number"),
        ("Torque [Nm]", "", "missing value"),
        ("Torque [Nm]", "   ", "missing value"),
        ("Product ID", "", "missing value"),
        ("Type", "", "missing value"),
        ("Torque [Nm]", "inf", "not a finite number"),
        ("Torque [Nm]", "-inf", "not a finite number"),
        ("Rotational speed [rpm]", "1e999", "not a finite number"),
        ("Tool wear [min]", "1.5", "not an integer"),
        ("Rotational speed [rpm]", "1500.2", "not an integer"),
        ("Torque [Nm]", "-0.1", "below the minimum 0 Nm"),
        ("Torque [Nm]", "200.5", "above the maximum 200 Nm"),
        ("Air temperature [K]", "249.9", "below the minimum 250 K"),
        ("Tool wear [min]", "-1", "below the minimum 0 min"),
        ("Type", "X", "not one of L, M, H"),
        ("Type", "l", "not one of L, M, H"),
        ("Machine failure", "2", "above the maximum 1"),
        ("Machine failure", "-1", "below the minimum 0"),
        ("TWF", "2", "above the maximum 1"),
        ("TWF", "yes", "not a number"),
    ],
)
def test_row_problem_is_quarantined_and_other_rows_continue(
    source_column: str, value: str, reason: str
) -> None:
    raw = raw_text(N_ROWS, seed=5)
    bad_index = 6  # 0-based position in the frame: data row 7 of the file
    raw.loc[bad_index, source_column] = value

    batch = type_and_validate(raw, AI4I, SOURCE)

    q = batch.quarantine
    assert len(q) == 1
    row = q.iloc[0]
    assert row["source_file"] == SOURCE
    assert row["row_number"] == bad_index + 1
    assert row["column"] == source_column
    assert row["value"] == value
    assert row["reason"] == reason
    record = json.loads(row["record"])
    assert record[AI4I.source_to_name[source_column]] == value
    assert record["udi"] == str(bad_index + 1)

    assert batch.rows_landed == N_ROWS
    assert batch.rows_quarantined == 1
    assert len(batch.valid) == N_ROWS - 1
    assert bad_index + 1 not in batch.valid["source_row"].tolist()
    assert batch.valid["source_row"].tolist() == [r for r in range(1, N_ROWS + 1) if r != 7]
    assert batch.valid["udi"].tolist() == batch.valid["source_row"].tolist()
    assert batch.valid["machine_failure"].dtype == "int64"


def test_duplicate_entity_id_quarantines_the_later_row() -> None:
    raw = raw_text(10, seed=5)
    raw.loc[7, "UDI"] = "3"  # data row 8 repeats UDI 3 of data row 3
    batch = type_and_validate(raw, AI4I, SOURCE)
    q = batch.quarantine
    assert q[["row_number", "column", "value", "reason"]].to_dict("records") == [
        {"row_number": 8, "column": "UDI", "value": "3",
         "reason": "duplicate entity id in this file"},
    ]  # fmt: skip
    assert 3 in batch.valid["udi"].tolist()
    assert batch.valid["udi"].is_unique
    assert len(batch.valid) == 9


def test_duplicate_entity_id_is_detected_numerically() -> None:
    raw = raw_text(5, seed=5)
    raw.loc[4, "UDI"] = "02"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.quarantine["reason"].tolist() == ["duplicate entity id in this file"]
    assert batch.quarantine["row_number"].tolist() == [5]


def test_missing_value_from_a_nan_cell_is_reported_as_missing() -> None:
    raw = raw_text(5, seed=5)
    raw.loc[2, "Torque [Nm]"] = None
    batch = type_and_validate(raw, AI4I, SOURCE)
    q = batch.quarantine
    assert q["reason"].tolist() == ["missing value"]
    assert q["row_number"].tolist() == [3]
    assert q["value"].tolist() == ["<missing>"]


def test_one_row_with_several_problems_counts_once() -> None:
    raw = raw_text(8, seed=5)
    raw.loc[3, "Torque [Nm]"] = "abc"
    raw.loc[3, "Type"] = "Q"
    raw.loc[3, "Machine failure"] = "7"
    batch = type_and_validate(raw, AI4I, SOURCE)
    q = batch.quarantine
    assert q["row_number"].tolist() == [4, 4, 4]
    assert sorted(q["column"]) == ["Machine failure", "Torque [Nm]", "Type"]
    assert batch.rows_quarantined == 1
    assert len(batch.valid) == 7


def test_mixed_file_count_invariant_and_row_numbers() -> None:
    raw = raw_text(N_ROWS, seed=11)
    corruptions = {
        2: ("Torque [Nm]", "abc", "not a number"),
        4: ("Torque [Nm]", "", "missing value"),
        5: ("Process temperature [K]", "inf", "not a finite number"),
        8: ("Tool wear [min]", "3.5", "not an integer"),
        11: ("Torque [Nm]", "-4.0", "below the minimum 0 Nm"),
        13: ("Type", "X", "not one of L, M, H"),
        16: ("UDI", "1", "duplicate entity id in this file"),
        19: ("Machine failure", "2", "above the maximum 1"),
    }
    for index, (column, value, _) in corruptions.items():
        raw.loc[index, column] = value
    raw["Unexpected"] = "drop me"

    batch = type_and_validate(raw, AI4I, SOURCE)

    got = batch.quarantine[["row_number", "column", "value", "reason"]]
    expected = [
        {"row_number": i + 1, "column": c, "value": v, "reason": r}
        for i, (c, v, r) in sorted(corruptions.items())
    ]
    assert got.to_dict("records") == expected
    assert (batch.quarantine["source_file"] == SOURCE).all()
    assert batch.rows_landed == N_ROWS
    assert batch.rows_quarantined == len(corruptions)
    assert batch.rows_landed == len(batch.valid) + batch.rows_quarantined
    bad_rows = {i + 1 for i in corruptions}
    assert batch.valid["source_row"].tolist() == [
        r for r in range(1, N_ROWS + 1) if r not in bad_rows
    ]
    assert {c: str(t) for c, t in batch.valid.dtypes.items()} == DECLARED_DTYPES


def test_all_rows_quarantined_leaves_an_empty_typed_frame() -> None:
    raw = raw_text(3, seed=1)
    raw["Type"] = "Z"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.valid.empty
    assert batch.rows_quarantined == 3
    assert list(batch.valid.columns) == list(DECLARED_DTYPES)


# --- whole-file problems ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source_column",
    [c.source for c in AI4I.columns if c.required],
)
def test_missing_required_column_rejects_the_file(source_column: str) -> None:
    raw = raw_text(5, seed=1).drop(columns=[source_column])
    with pytest.raises(FileRejected) as info:
        type_and_validate(raw, AI4I, SOURCE)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.source_file == SOURCE
    assert err.reason == "missing required column"
    assert err.column == source_column
    assert source_column in str(err)
    assert SOURCE in str(err)


def test_header_only_file_rejects_the_file() -> None:
    header = ",".join(AI4I_COLUMNS) + "\n"
    raw = _read_csv_text(header)
    assert raw.shape == (0, 14)
    with pytest.raises(FileRejected) as info:
        type_and_validate(raw, AI4I, SOURCE)
    err = info.value
    assert err.source_file == SOURCE
    assert "no data rows" in err.reason
    assert err.column is None
    assert SOURCE in str(err)


def test_wrong_delimiter_rejects_the_file() -> None:
    text = generate_ai4i(5, seed=1).to_csv(index=False, sep=";")
    raw = _read_csv_text(text)
    assert raw.shape[1] == 1
    with pytest.raises(FileRejected) as info:
        type_and_validate(raw, AI4I, SOURCE)
    err = info.value
    assert err.source_file == SOURCE
    assert "wrong delimiter" in err.reason
    assert err.column is not None
    assert err.column.startswith("UDI;Product ID;Type")
    assert len(err.column) <= 80
    assert "wrong delimiter" in str(err)


def test_tab_delimited_file_rejects_the_file() -> None:
    raw = _read_csv_text(generate_ai4i(3, seed=1).to_csv(index=False, sep="\t"))
    with pytest.raises(FileRejected, match="wrong delimiter"):
        type_and_validate(raw, AI4I, SOURCE)


def test_file_rejected_message_without_column() -> None:
    err = FileRejected("a.csv", "broken")
    assert str(err) == "a.csv: broken"
    assert err.column is None
    assert str(FileRejected("a.csv", "broken", column="X")) == "a.csv: broken (column 'X')"


# --- integers beyond float64 precision -------------------------------------------------------


def test_integer_overflowing_int64_is_quarantined_not_wrapped() -> None:
    raw = raw_text(4, seed=1)
    raw.loc[2, "UDI"] = "99999999999999999999"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.quarantine["row_number"].tolist() == [3]
    assert batch.quarantine["column"].tolist() == ["UDI"]
    assert batch.valid["udi"].tolist() == [1, 2, 4]


def test_large_integer_is_kept_exactly_or_quarantined() -> None:
    raw = raw_text(4, seed=1)
    raw.loc[2, "UDI"] = "9007199254740993"
    batch = type_and_validate(raw, AI4I, SOURCE)
    landed = batch.valid.loc[batch.valid["source_row"] == 3, "udi"].tolist()
    assert landed in ([9007199254740993], [])
    assert landed or batch.quarantine["row_number"].tolist() == [3]


def test_already_typed_input_is_accepted_too() -> None:
    generated = generate_ai4i(10, seed=2)
    batch = type_and_validate(generated, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert {c: str(t) for c, t in batch.valid.dtypes.items()} == DECLARED_DTYPES
    assert batch.valid["torque_nm"].tolist() == generated["Torque [Nm]"].tolist()
