"""Unit tests of typing and validation of landed files (mlplatform.core.ingest)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlplatform.core.expectations import row_expectations
from mlplatform.core.generator import AI4I_COLUMNS, generate_ai4i
from mlplatform.core.ingest import (
    QUARANTINE_COLUMNS,
    TYPE_EXPECTATION,
    FileRejected,
    SeenIds,
    canonical_columns,
    type_and_validate,
    type_rows,
    validate_rows,
)
from mlplatform.core.schema import AI4I

from ._frames import raw_text

SOURCE = "landing/batch.csv"
N_ROWS = 20

NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_column_values_to_be_unique"
DUPLICATE = "duplicate entity id (an earlier row of this file has it; the first is kept)"
SEEN_EARLIER = DUPLICATE
TOO_LARGE = "integer too large (|value| >= 2**53)"

STRING = pd.StringDtype("pyarrow")
DECLARED_DTYPES: dict[str, Any] = {
    "udi": np.dtype("int64"),
    "product_id": STRING,
    "type": STRING,
    "air_temperature_k": np.dtype("float64"),
    "process_temperature_k": np.dtype("float64"),
    "rotational_speed_rpm": np.dtype("int64"),
    "torque_nm": np.dtype("float64"),
    "tool_wear_min": np.dtype("int64"),
    "machine_failure": np.dtype("int64"),
    # Optional (leakage) integer columns are nullable: a file may leave them empty.
    "twf": pd.Int64Dtype(),
    "hdf": pd.Int64Dtype(),
    "pwf": pd.Int64Dtype(),
    "osf": pd.Int64Dtype(),
    "rnf": pd.Int64Dtype(),
    "source_row": np.dtype("int64"),
}
WITH_EVENT_TIME = {
    "udi": DECLARED_DTYPES["udi"],
    "event_time": pd.DatetimeTZDtype("us", "UTC"),
    **{k: v for k, v in DECLARED_DTYPES.items() if k != "udi"},
}


def _read_csv_text(text: str) -> pd.DataFrame:
    """Read CSV text the way the landing step does: every column as text, no NA guessing."""
    return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)


def _stamps(n_rows: int) -> list[str]:
    """ISO-8601 text one minute apart from 2024-05-01 08:00 UTC, in mixed notations."""
    base = pd.Timestamp("2024-05-01T08:00:00Z")
    out = []
    for i in range(n_rows):
        t = base + pd.Timedelta(minutes=i)
        if i % 3 == 0:
            out.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif i % 3 == 1:  # the same instant at +02:00
            out.append((t + pd.Timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"))
        else:  # naive text means UTC
            out.append(t.strftime("%Y-%m-%d %H:%M:%S"))
    return out


def _raw_with_stamps(n_rows: int, seed: int) -> pd.DataFrame:
    """Landed text with a ``Timestamp`` column after ``UDI``."""
    raw = raw_text(n_rows, seed=seed)
    raw.insert(1, "Timestamp", _stamps(n_rows))
    return raw


def _dtypes(frame: pd.DataFrame) -> dict[str, Any]:
    return {str(name): dtype for name, dtype in frame.dtypes.items()}


def _entries(batch_quarantine: pd.DataFrame) -> list[dict[str, Any]]:
    cols = ["row_number", "column", "value", "expectation", "reason"]
    return [
        {str(k): (int(v) if k == "row_number" else v) for k, v in r.items()}
        for r in batch_quarantine[cols].to_dict("records")
    ]


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
    # dtype objects, not their names: "string" would also match python-backed strings
    assert _dtypes(batch.valid) == DECLARED_DTYPES
    assert batch.valid["source_row"].tolist() == list(range(1, N_ROWS + 1))
    # Values survive the text round trip.
    for col in AI4I.columns:
        if col.source not in generated.columns:
            continue
        expected = generated[col.source]
        got = batch.valid[col.name]
        if col.is_numeric:
            np.testing.assert_array_equal(got.to_numpy(dtype="float64"), expected.to_numpy())
        else:
            assert got.tolist() == expected.tolist()


def test_clean_batch_reports_every_row_expectation_passed() -> None:
    batch = type_and_validate(raw_text(N_ROWS, seed=3), AI4I, SOURCE)
    summary = batch.validation
    assert summary is not None
    assert summary.expectations_run == len(row_expectations(AI4I)) == 23
    assert summary.rows_checked == N_ROWS
    assert summary.failed == []
    assert summary.success


def test_validation_summary_counts_the_failed_expectations() -> None:
    raw = raw_text(N_ROWS, seed=3)
    raw.loc[[2, 5], "Type"] = "X"
    raw.loc[9, "Torque [Nm]"] = "250"
    batch = type_and_validate(raw, AI4I, SOURCE)
    summary = batch.validation
    assert summary is not None
    assert summary.rows_checked == N_ROWS
    counts = {(f.expectation, f.column): f.unexpected_count for f in summary.failed}
    assert counts == {(IN_SET, "type"): 2, (BETWEEN, "torque_nm"): 1}
    assert not summary.success


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


def test_canonical_headers_are_accepted_too() -> None:
    raw = raw_text(3, seed=1).rename(columns=AI4I.source_to_name)
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert _dtypes(batch.valid) == DECLARED_DTYPES


def test_extra_unknown_columns_are_dropped() -> None:
    raw = raw_text(4, seed=2)
    raw["Operator"] = "alice"
    raw["notes"] = "x"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert "Operator" not in batch.valid.columns
    assert "notes" not in batch.valid.columns
    declared_present = [c.name for c in AI4I.columns if c.name != "event_time"]
    assert list(batch.valid.columns) == [*declared_present, "source_row"]


def test_optional_leakage_columns_may_be_absent() -> None:
    raw = raw_text(4, seed=2).drop(columns=["TWF", "HDF", "PWF", "OSF", "RNF"])
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert len(batch.valid) == 4
    assert not {"twf", "hdf", "pwf", "osf", "rnf"} & set(batch.valid.columns)


def test_optional_columns_absent_still_validate_cleanly() -> None:
    raw = raw_text(4, seed=2).drop(columns=["TWF", "HDF", "PWF", "OSF", "RNF"])
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.validation is not None
    assert batch.validation.failed == []


def test_empty_optional_leakage_cell_is_not_quarantined() -> None:
    raw = raw_text(3, seed=2)
    raw.loc[1, "TWF"] = ""
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert batch.valid["twf"].isna().tolist() == [False, True, False]


# --- event time --------------------------------------------------------------------------------


def test_iso_timestamps_are_typed_as_utc_microseconds() -> None:
    raw = _raw_with_stamps(6, seed=4)
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert _dtypes(batch.valid) == WITH_EVENT_TIME
    expected = pd.date_range("2024-05-01T08:00:00Z", periods=6, freq="min", unit="us")
    assert batch.valid["event_time"].tolist() == expected.tolist()


def test_empty_timestamp_is_missing_not_quarantined() -> None:
    raw = _raw_with_stamps(4, seed=4)
    raw.loc[2, "Timestamp"] = ""
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert batch.valid["event_time"].isna().tolist() == [False, False, True, False]


@pytest.mark.parametrize("unit_tz", [("us", None), ("ms", "UTC"), ("s", "+02:00")])
def test_parquet_timestamps_are_converted_to_utc(unit_tz: tuple[str, str | None]) -> None:
    unit, tz = unit_tz
    table = pa.Table.from_pandas(generate_ai4i(3, seed=4), preserve_index=False)
    first, last = pd.Timestamp("2024-05-01T08:00:00Z"), pd.Timestamp("2024-05-01T09:30:00Z")
    per_unit = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}[unit]
    # a naive Parquet timestamp holds UTC wall time; an aware one holds UTC instants
    values = [first.value // per_unit, None, last.value // per_unit]
    table = table.append_column("Timestamp", pa.array(values, pa.timestamp(unit, tz=tz)))
    batch = type_and_validate(table, AI4I, "landing/batch.parquet")
    assert batch.rows_quarantined == 0
    assert batch.valid["event_time"].dtype == pd.DatetimeTZDtype("us", "UTC")
    got = batch.valid["event_time"].tolist()
    assert got[0] == first
    assert pd.isna(got[1])
    assert got[2] == last


# --- row-level problems: quarantined, the rest continues -------------------------------------


@pytest.mark.parametrize(
    ("source_column", "value", "expectation", "reason"),
    [
        ("Torque [Nm]", "abc", TYPE_EXPECTATION, "not a number"),
        ("Air temperature [K]", "warm", TYPE_EXPECTATION, "not a number"),
        ("Torque [Nm]", "", NOT_NULL, "missing value"),
        ("Torque [Nm]", "   ", NOT_NULL, "missing value"),
        ("Torque [Nm]", "nan", NOT_NULL, "missing value"),
        ("Product ID", "", NOT_NULL, "missing value"),
        ("Type", "", NOT_NULL, "missing value"),
        ("Torque [Nm]", "inf", TYPE_EXPECTATION, "not a finite number"),
        ("Torque [Nm]", "-inf", TYPE_EXPECTATION, "not a finite number"),
        ("Rotational speed [rpm]", "1e999", TYPE_EXPECTATION, "not a finite number"),
        ("Tool wear [min]", "1.5", TYPE_EXPECTATION, "not an integer"),
        ("Rotational speed [rpm]", "1500.2", TYPE_EXPECTATION, "not an integer"),
        ("UDI", "99999999999999999999", TYPE_EXPECTATION, TOO_LARGE),
        ("Timestamp", "yesterday", TYPE_EXPECTATION, "not an ISO-8601 timestamp"),
        ("Timestamp", "2024-13-01T00:00:00Z", TYPE_EXPECTATION, "not an ISO-8601 timestamp"),
        ("Torque [Nm]", "-0.1", BETWEEN, "outside [0, 200] Nm"),
        ("Torque [Nm]", "200.5", BETWEEN, "outside [0, 200] Nm"),
        ("Air temperature [K]", "249.9", BETWEEN, "outside [250, 350] K"),
        ("Process temperature [K]", "400.1", BETWEEN, "outside [250, 400] K"),
        ("Rotational speed [rpm]", "10001", BETWEEN, "outside [0, 10000] rpm"),
        ("Tool wear [min]", "-1", BETWEEN, "outside [0, 1000] min"),
        ("UDI", "-1", BETWEEN, "outside [0, inf]"),
        ("Type", "X", IN_SET, "not one of L, M, H"),
        ("Type", "l", IN_SET, "not one of L, M, H"),
        ("Machine failure", "2", IN_SET, "label not in {0, 1}"),
        ("Machine failure", "-1", IN_SET, "label not in {0, 1}"),
        ("TWF", "2", BETWEEN, "outside [0, 1]"),
        ("TWF", "yes", TYPE_EXPECTATION, "not a number"),
    ],
)
def test_row_problem_is_quarantined_and_other_rows_continue(
    source_column: str, value: str, expectation: str, reason: str
) -> None:
    raw = _raw_with_stamps(N_ROWS, seed=5)
    bad_index = 6  # 0-based position in the frame: data row 7 of the file
    raw.loc[bad_index, source_column] = value

    batch = type_and_validate(raw, AI4I, SOURCE)

    q = batch.quarantine
    assert list(q.columns) == QUARANTINE_COLUMNS
    assert len(q) == 1
    row = q.iloc[0]
    assert row["source_file"] == SOURCE
    assert row["row_number"] == bad_index + 1
    assert row["column"] == source_column
    assert row["value"] == (value.strip() or "<missing>")
    assert row["expectation"] == expectation
    assert row["reason"] == reason
    # the record is the raw row, keyed by the file's headers
    record = json.loads(row["record"])
    assert list(record) == list(raw.columns)
    if value.strip():
        assert record[source_column] == value
    else:
        assert pd.isna(record[source_column])
    assert record["UDI"] == (value if source_column == "UDI" else str(bad_index + 1))

    assert batch.rows_landed == N_ROWS
    assert batch.rows_quarantined == 1
    assert len(batch.valid) == N_ROWS - 1
    assert batch.valid["source_row"].tolist() == [r for r in range(1, N_ROWS + 1) if r != 7]
    assert batch.valid["udi"].tolist() == batch.valid["source_row"].tolist()
    assert _dtypes(batch.valid) == WITH_EVENT_TIME


def test_quarantine_record_is_strict_json_with_null_for_missing_cells() -> None:
    raw = raw_text(5, seed=5)
    raw.loc[2, "Torque [Nm]"] = ""

    def reject(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    batch = type_and_validate(raw, AI4I, SOURCE)
    record = json.loads(str(batch.quarantine.loc[0, "record"]), parse_constant=reject)
    assert record["Torque [Nm]"] is None


def test_duplicate_entity_id_keeps_the_first_copy_and_quarantines_the_rest() -> None:
    raw = raw_text(10, seed=5)
    raw.loc[7, "UDI"] = "3"  # data row 8 repeats UDI 3 of data row 3
    raw.loc[8, "UDI"] = "3"  # and so does data row 9
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert _entries(batch.quarantine) == [
        {"row_number": 8, "column": "UDI", "value": "3", "expectation": UNIQUE,
         "reason": DUPLICATE},
        {"row_number": 9, "column": "UDI", "value": "3", "expectation": UNIQUE,
         "reason": DUPLICATE},
    ]  # fmt: skip
    assert batch.valid["udi"].tolist() == [1, 2, 3, 4, 5, 6, 7, 10]
    assert batch.valid["source_row"].tolist() == [1, 2, 3, 4, 5, 6, 7, 10]
    assert batch.rows_quarantined == 2
    # GX's own summary still counts every copy it saw
    assert batch.validation is not None
    [failed] = [f for f in batch.validation.failed if f.expectation == UNIQUE]
    assert failed.unexpected_count == 3


def test_duplicate_entity_id_is_detected_numerically() -> None:
    raw = raw_text(5, seed=5)
    raw.loc[4, "UDI"] = "02"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.quarantine["expectation"].tolist() == [UNIQUE]
    assert batch.quarantine["reason"].tolist() == [DUPLICATE]
    assert batch.quarantine["row_number"].tolist() == [5]
    # the quarantine keeps what the file said
    assert batch.quarantine["value"].tolist() == ["02"]


def test_id_seen_in_an_earlier_chunk_is_quarantined_and_seen_ids_grow() -> None:
    raw = raw_text(8, seed=5)
    seen: set[int] = set()
    first = type_and_validate(raw.iloc[:4], AI4I, SOURCE, seen_ids=seen)
    assert first.rows_quarantined == 0
    assert seen == {1, 2, 3, 4}

    second_raw = raw.iloc[4:].reset_index(drop=True)
    second_raw.loc[1, "UDI"] = "2"  # file row 6 repeats UDI 2 of file row 2
    second_raw.loc[2, "Type"] = "X"  # file row 7: invalid, so its id is not "seen"
    second = type_and_validate(second_raw, AI4I, SOURCE, row_numbers=np.arange(5, 9), seen_ids=seen)
    assert _entries(second.quarantine) == [
        {"row_number": 6, "column": "UDI", "value": "2", "expectation": UNIQUE,
         "reason": SEEN_EARLIER},
        {"row_number": 7, "column": "Type", "value": "X", "expectation": IN_SET,
         "reason": "not one of L, M, H"},
    ]  # fmt: skip
    assert second.valid["source_row"].tolist() == [5, 8]
    assert seen == {1, 2, 3, 4, 5, 8}


def test_seen_ids_answer_as_a_set_of_the_same_ids_would() -> None:
    rng = np.random.default_rng(3)
    seen, as_set, added = SeenIds(), set(), 0
    for _ in range(5):  # ids arrive chunk by chunk, in any order
        ids = rng.integers(0, 5_000, size=300)
        probe = np.concatenate([rng.integers(0, 6_000, size=500).astype("float64"), [np.nan]])
        expected = np.array([v in as_set for v in probe])
        assert expected.any() or not as_set
        assert (seen.contains(probe) == expected).all()
        seen.add(ids)
        as_set.update(ids.tolist())
        added += len(ids)
        assert len(seen) == added


def test_seen_ids_and_a_set_quarantine_the_same_rows_across_chunks() -> None:
    raw = raw_text(12, seed=5)
    raw.loc[7, "UDI"] = "2"  # row 8 repeats the id of row 2, an earlier chunk
    raw.loc[9, "Type"] = "X"  # row 10 is invalid
    raw.loc[10, "UDI"] = "9"  # row 11 repeats the id of row 9, in its own chunk
    outcomes = []
    for seen in (set(), SeenIds()):
        chunks = [
            type_and_validate(
                raw.iloc[i : i + 4].reset_index(drop=True),
                AI4I,
                SOURCE,
                row_numbers=np.arange(i + 1, i + 5),
                seen_ids=seen,
            )
            for i in (0, 4, 8)
        ]
        outcomes.append(
            (
                [_entries(c.quarantine) for c in chunks],
                [c.valid["source_row"].tolist() for c in chunks],
            )
        )
    assert outcomes[0] == outcomes[1]
    assert [e["row_number"] for chunk in outcomes[0][0] for e in chunk] == [8, 10, 11]


def test_typing_then_validating_is_type_and_validate() -> None:
    raw = raw_text(30, seed=9)
    raw.loc[3, "Torque [Nm]"] = "forty"  # a typing failure
    raw.loc[5, "Air temperature [K]"] = "900"  # a GX failure
    raw.loc[8, "UDI"] = "1"  # a repeated id
    typed = type_rows(raw, AI4I, SOURCE)
    assert not typed.clean and typed.num_rows == 30
    split = validate_rows(typed, seen_ids=set())
    whole = type_and_validate(raw, AI4I, SOURCE, seen_ids=set())
    pd.testing.assert_frame_equal(split.valid, whole.valid)
    pd.testing.assert_frame_equal(split.quarantine, whole.quarantine)
    assert split.validation is not None and whole.validation is not None
    assert split.validation.as_metadata() == whole.validation.as_metadata()
    assert split.rows_quarantined == 3


def test_a_cleanly_typed_chunk_stored_whole_is_its_valid_rows() -> None:
    typed = type_rows(raw_text(40, seed=2), AI4I, SOURCE)
    assert typed.clean
    pd.testing.assert_frame_equal(typed.stored(), validate_rows(typed).valid)
    assert _dtypes(typed.stored()) == DECLARED_DTYPES


def test_a_missing_required_integer_cannot_be_stored_whole() -> None:
    raw = raw_text(6, seed=2)
    raw.loc[2, "Tool wear [min]"] = ""
    typed = type_rows(raw, AI4I, SOURCE)
    assert typed.clean  # an empty cell is missing, not a typing failure
    with pytest.raises((TypeError, ValueError)):
        typed.stored()
    batch = validate_rows(typed)
    assert batch.quarantine["row_number"].tolist() == [3]


def test_row_numbers_must_match_the_rows() -> None:
    with pytest.raises(ValueError, match="3 row numbers for 4 rows"):
        type_and_validate(raw_text(4, seed=1), AI4I, SOURCE, row_numbers=np.arange(1, 4))


def test_row_numbers_label_the_quarantine_and_valid_rows() -> None:
    raw = raw_text(4, seed=1)
    raw.loc[1, "Type"] = "X"
    batch = type_and_validate(raw, AI4I, SOURCE, row_numbers=np.array([101, 102, 103, 104]))
    assert batch.quarantine["row_number"].tolist() == [102]
    assert batch.valid["source_row"].tolist() == [101, 103, 104]


def test_missing_value_from_a_nan_cell_is_reported_as_missing() -> None:
    raw = raw_text(5, seed=5)
    raw.loc[2, "Torque [Nm]"] = None
    batch = type_and_validate(raw, AI4I, SOURCE)
    q = batch.quarantine
    assert q["reason"].tolist() == ["missing value"]
    assert q["expectation"].tolist() == [NOT_NULL]
    assert q["row_number"].tolist() == [3]
    assert q["value"].tolist() == ["<missing>"]


def test_a_typing_failure_is_reported_once_not_also_as_missing() -> None:
    raw = raw_text(5, seed=5)
    raw.loc[1, "Rotational speed [rpm]"] = "fast"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert _entries(batch.quarantine) == [
        {"row_number": 2, "column": "Rotational speed [rpm]", "value": "fast",
         "expectation": TYPE_EXPECTATION, "reason": "not a number"},
    ]  # fmt: skip


def test_one_row_with_several_problems_counts_once() -> None:
    raw = raw_text(8, seed=5)
    raw.loc[3, "Torque [Nm]"] = "abc"
    raw.loc[3, "Type"] = "Q"
    raw.loc[3, "Machine failure"] = "7"
    batch = type_and_validate(raw, AI4I, SOURCE)
    q = batch.quarantine
    assert q["row_number"].tolist() == [4, 4, 4]
    assert sorted(q["column"]) == ["Machine failure", "Torque [Nm]", "Type"]
    assert q["record"].nunique() == 1
    assert batch.rows_quarantined == 1
    assert len(batch.valid) == 7


def test_mixed_file_count_invariant_and_row_numbers() -> None:
    raw = raw_text(N_ROWS, seed=11)
    corruptions = {
        2: ("Torque [Nm]", "abc", TYPE_EXPECTATION, "not a number"),
        4: ("Torque [Nm]", "", NOT_NULL, "missing value"),
        5: ("Process temperature [K]", "inf", TYPE_EXPECTATION, "not a finite number"),
        8: ("Tool wear [min]", "3.5", TYPE_EXPECTATION, "not an integer"),
        11: ("Torque [Nm]", "-4.0", BETWEEN, "outside [0, 200] Nm"),
        13: ("Type", "X", IN_SET, "not one of L, M, H"),
        16: ("UDI", "1", UNIQUE, DUPLICATE),
        19: ("Machine failure", "2", IN_SET, "label not in {0, 1}"),
    }
    for index, (column, value, _, _) in corruptions.items():
        raw.loc[index, column] = value
    raw["Unexpected"] = "drop me"

    batch = type_and_validate(raw, AI4I, SOURCE)

    expected = [
        {"row_number": i + 1, "column": c, "value": v or "<missing>", "expectation": e,
         "reason": r}
        for i, (c, v, e, r) in sorted(corruptions.items())
    ]  # fmt: skip
    # the first copy of the duplicated id (data row 1) is kept
    assert _entries(batch.quarantine) == expected
    assert (batch.quarantine["source_file"] == SOURCE).all()
    assert batch.rows_landed == N_ROWS
    assert batch.rows_quarantined == len(corruptions)
    assert batch.rows_landed == len(batch.valid) + batch.rows_quarantined
    bad_rows = {i + 1 for i in corruptions}
    assert batch.valid["source_row"].tolist() == [
        r for r in range(1, N_ROWS + 1) if r not in bad_rows
    ]
    assert _dtypes(batch.valid) == DECLARED_DTYPES


def test_all_rows_quarantined_leaves_an_empty_typed_frame() -> None:
    raw = raw_text(3, seed=1)
    raw["Type"] = "Z"
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.valid.empty
    assert batch.rows_quarantined == 3
    assert list(batch.valid.columns) == list(DECLARED_DTYPES)
    assert _dtypes(batch.valid) == DECLARED_DTYPES


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
    name = AI4I.source_to_name[source_column]
    # the reason names both headers the file could have used
    assert err.reason == f"missing required column (header {source_column!r} or {name!r})"
    assert err.column == source_column
    assert source_column in str(err)
    assert SOURCE in str(err)


@pytest.mark.parametrize(
    "header",
    [
        ["UDI", "udi"],  # the source header and the canonical name of one column
        ["Type", " Type "],
        ["Timestamp", "event_time"],
    ],
)
def test_a_column_named_twice_rejects_the_file(header: list[str]) -> None:
    others = [c for c in AI4I_COLUMNS if c not in {h.strip() for h in header}]
    with pytest.raises(FileRejected) as info:
        canonical_columns([*header, *others], AI4I, SOURCE)
    err = info.value
    assert err.reason == "the column appears twice in the header"
    assert err.column == header[1].strip()
    assert SOURCE in str(err)


def test_a_table_with_a_repeated_header_is_rejected() -> None:
    table = pa.Table.from_pandas(generate_ai4i(3, seed=1), preserve_index=False)
    table = table.append_column("Torque [Nm]", pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(FileRejected, match="appears twice") as info:
        type_and_validate(table, AI4I, SOURCE)
    assert info.value.column == "Torque [Nm]"


def test_canonical_columns_maps_headers_and_drops_unknown_ones() -> None:
    mapping = canonical_columns(["\ufeffUDI", *AI4I_COLUMNS[1:], "Operator"], AI4I, SOURCE)
    assert mapping == {
        "\ufeffUDI": "udi",
        **{h: AI4I.source_to_name[h] for h in AI4I_COLUMNS[1:]},
    }


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
    assert batch.quarantine["reason"].tolist() == [TOO_LARGE]
    assert batch.valid["udi"].tolist() == [1, 2, 4]


@pytest.mark.parametrize(
    ("text", "kept"),
    [("9007199254740991", True), ("9007199254740992", False), ("9007199254740993", False)],
)
def test_integers_are_kept_exactly_below_2_to_the_53(text: str, kept: bool) -> None:
    raw = raw_text(4, seed=1)
    raw.loc[2, "UDI"] = text
    batch = type_and_validate(raw, AI4I, SOURCE)
    landed = batch.valid.loc[batch.valid["source_row"] == 3, "udi"].tolist()
    if kept:
        assert landed == [int(text)]
        assert batch.quarantine.empty
    else:
        assert landed == []
        assert _entries(batch.quarantine) == [
            {"row_number": 3, "column": "UDI", "value": text, "expectation": TYPE_EXPECTATION,
             "reason": TOO_LARGE},
        ]  # fmt: skip


def test_typed_integer_beyond_2_to_the_53_is_quarantined() -> None:
    table = pa.Table.from_pandas(generate_ai4i(4, seed=1), preserve_index=False)
    table = table.set_column(0, "UDI", pa.array([1, 2, 2**53 + 1, 4], pa.int64()))
    batch = type_and_validate(table, AI4I, "landing/batch.parquet")
    assert batch.quarantine["reason"].tolist() == [TOO_LARGE]
    assert batch.valid["udi"].tolist() == [1, 2, 4]


# --- typed input (Parquet, SQL) --------------------------------------------------------------


def test_already_typed_input_is_accepted_too() -> None:
    generated = generate_ai4i(10, seed=2)
    batch = type_and_validate(generated, AI4I, SOURCE)
    assert batch.rows_quarantined == 0
    assert _dtypes(batch.valid) == DECLARED_DTYPES
    assert batch.valid["torque_nm"].tolist() == generated["Torque [Nm]"].tolist()


def test_arrow_table_input_is_typed_and_validated() -> None:
    generated = generate_ai4i(10, seed=2)
    table = pa.Table.from_pandas(generated, preserve_index=False)
    torque = generated["Torque [Nm]"].to_numpy().copy()
    torque[4] = -1.0
    table = table.set_column(6, "Torque [Nm]", pa.array(torque))
    batch = type_and_validate(table, AI4I, "landing/batch.parquet")
    assert _entries(batch.quarantine) == [
        {"row_number": 5, "column": "Torque [Nm]", "value": "-1", "expectation": BETWEEN,
         "reason": "outside [0, 200] Nm"},
    ]  # fmt: skip
    assert _dtypes(batch.valid) == DECLARED_DTYPES
    assert batch.valid["product_id"].tolist() == generated["Product ID"].drop(index=4).tolist()


def test_validation_summary_reports_typing_failures_once() -> None:
    raw = raw_text(50, seed=9)
    raw.loc[3, "Rotational speed [rpm]"] = "fast"
    raw.loc[5, "Torque [Nm]"] = "-5"
    raw.loc[6, "Torque [Nm]"] = ""
    batch = type_and_validate(raw, AI4I, SOURCE)
    assert batch.validation is not None
    failed = {(f.expectation, f.column): f.unexpected_count for f in batch.validation.failed}
    assert failed == {
        (TYPE_EXPECTATION, "rotational_speed_rpm"): 1,  # "fast": not a number
        ("expect_column_values_to_not_be_null", "torque_nm"): 1,  # the empty cell
        (BETWEEN, "torque_nm"): 1,  # -5 Nm
    }


def test_the_stored_rows_check_names_a_failing_row_as_the_file_does() -> None:
    from mlplatform.core.ingest import check_stored_rows, type_rows

    raw = pa.Table.from_pandas(generate_ai4i(30, seed=4).astype(str), preserve_index=False)
    typed = type_rows(raw, AI4I, "f.csv", row_numbers=np.arange(101, 131))
    stored = typed.stored()
    clean = check_stored_rows(stored, AI4I, rows_quarantined=0)
    assert clean.success and clean.rows_checked == 30
    stored.loc[4, "torque_nm"] = -1.0  # a value no stored row may have: file row 105
    summary = check_stored_rows(stored, AI4I, rows_quarantined=1)
    [failure] = summary.failed
    assert (failure.expectation, failure.column) == (
        "expect_column_values_to_be_between",
        "torque_nm",
    )
    assert summary.unexpected["row_number"].tolist() == [105]
