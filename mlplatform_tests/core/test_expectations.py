"""Unit tests of the schema-derived Great Expectations suites (mlplatform.core.expectations).

GX runs for real on small generated frames; nothing of it is mocked.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlplatform.core import expectations as expectations_module
from mlplatform.core.expectations import (
    UNEXPECTED_COLUMNS,
    ExpectationDef,
    FailedExpectation,
    ValidationSummary,
    evaluate,
    row_expectations,
    table_expectations,
    unexpected_counts,
    validate,
)
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import ValidationMismatch, type_and_validate, type_rows, validate_rows
from mlplatform.core.schema import AI4I, ColumnSpec, DatasetSpec, Role

from ._frames import raw_text

NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
UNIQUE = "expect_column_values_to_be_unique"
OF_TYPE = "expect_column_values_to_be_of_type"
TYPE_CHECKS = {OF_TYPE, "expect_column_values_to_be_in_type_list"}
COLUMNS_PRESENT = "expect_table_columns_to_match_set"

N_ROWS = 60
LEAKAGE = ["twf", "hdf", "pwf", "osf", "rnf"]


def _typed(n_rows: int = N_ROWS, seed: int = 7) -> pd.DataFrame:
    """Generated rows with canonical names and the storage types ingestion gives."""
    frame = generate_ai4i(n_rows, seed=seed).rename(columns=AI4I.source_to_name)
    return frame.astype({"product_id": pd.StringDtype("pyarrow"), "type": "string[pyarrow]"})


def _stored(n_rows: int = 30, seed: int = 7) -> pd.DataFrame:
    """The valid rows of a landed text file with a timestamp, as ingestion stores them."""
    raw = raw_text(n_rows, seed=seed)
    raw.insert(1, "Timestamp", pd.date_range("2024-05-01", periods=n_rows, freq="h").astype(str))
    batch = type_and_validate(raw, AI4I, "landing/stored.csv")
    assert batch.rows_quarantined == 0
    return batch.valid


def _by_key(suite: list[ExpectationDef]) -> dict[tuple[str, str | None], dict[str, Any]]:
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    for e in suite:
        key = (e.type, e.column)
        assert key not in out, f"expectation {key} derived twice"
        out[key] = {k: v for k, v in e.kwargs.items() if k != "column"}
    return out


def _failed(summary: ValidationSummary) -> dict[tuple[str, str | None], int]:
    return {(f.expectation, f.column): f.unexpected_count for f in summary.failed}


# --- the suite derived from the AI4I schema ---------------------------------------------------


def test_row_suite_is_derived_from_the_ai4i_schema() -> None:
    suite = _by_key(row_expectations(AI4I))

    ranged = [c for c in AI4I.columns if c.min_value is not None or c.max_value is not None]
    numeric_ranged = [c for c in ranged if c.is_numeric and c.name != AI4I.target]
    expected: dict[tuple[str, str | None], dict[str, Any]] = {
        **{(NOT_NULL, c.name): {} for c in AI4I.columns if c.required},
        **{
            (BETWEEN, c.name): {"min_value": c.min_value, "max_value": c.max_value}
            for c in numeric_ranged
        },
        (IN_SET, "type"): {"value_set": ["L", "M", "H"]},
        (IN_SET, "machine_failure"): {"value_set": [0, 1]},
        (UNIQUE, "udi"): {},
    }
    assert suite == expected
    assert len(suite) == 23
    # spelled out, so a change of the declared ranges is a visible change here too
    assert suite[(BETWEEN, "torque_nm")] == {"min_value": 0.0, "max_value": 200.0}
    assert suite[(BETWEEN, "air_temperature_k")] == {"min_value": 250.0, "max_value": 350.0}
    assert suite[(BETWEEN, "udi")] == {"min_value": 0, "max_value": None}
    assert {c for t, c in suite if t == BETWEEN} == {
        "udi", "air_temperature_k", "process_temperature_k", "rotational_speed_rpm",
        "torque_nm", "tool_wear_min", *LEAKAGE,
    }  # fmt: skip
    # optional columns are never required to be present or filled
    assert not {(NOT_NULL, c) for c in ["event_time", *LEAKAGE]} & set(suite)
    # the label is checked as a set, not as a range
    assert (BETWEEN, "machine_failure") not in suite
    assert not [c for t, c in suite if c == "event_time"]


def test_row_suite_reasons_name_the_rule() -> None:
    reasons = {(e.type, e.column): e.reason for e in row_expectations(AI4I)}
    assert reasons[(NOT_NULL, "torque_nm")] == "missing value"
    assert reasons[(BETWEEN, "torque_nm")] == "outside [0, 200] Nm"
    assert reasons[(BETWEEN, "udi")] == "outside [0, inf]"
    assert reasons[(IN_SET, "type")] == "not one of L, M, H"
    assert reasons[(IN_SET, "machine_failure")] == "label not in {0, 1}"
    assert reasons[(UNIQUE, "udi")].startswith("duplicate entity id")


def test_a_one_sided_range_is_open_on_the_other_side() -> None:
    spec = DatasetSpec(
        "toy",
        (
            ColumnSpec("id", "ID", "int64", Role.IDENTIFIER),
            ColumnSpec("x", "X", "float64", Role.FEATURE, unit="bar", max_value=5.0),
            ColumnSpec("y", "Y", "int64", Role.TARGET),
        ),
        entity_id="id",
        target="y",
    )
    suite = {(e.type, e.column): e for e in row_expectations(spec)}
    assert suite[(BETWEEN, "x")].kwargs == {"column": "x", "min_value": None, "max_value": 5.0}
    assert suite[(BETWEEN, "x")].reason == "outside [-inf, 5] bar"
    assert (BETWEEN, "id") not in suite  # no declared range, no range check


def test_expectation_column_property() -> None:
    assert ExpectationDef(NOT_NULL, {"column": "udi"}, "r").column == "udi"
    assert ExpectationDef(COLUMNS_PRESENT, {"column_set": ["a"]}, "r").column is None


# --- validate() on generated frames -------------------------------------------------------------


def test_a_clean_generated_frame_passes_every_expectation() -> None:
    frame = _typed()
    suite = row_expectations(AI4I)
    summary = validate(frame, suite, name="clean")
    assert summary.success
    assert summary.failed == []
    assert summary.expectations_run == len(suite)
    assert summary.rows_checked == N_ROWS
    assert summary.unexpected.empty
    assert list(summary.unexpected.columns) == UNEXPECTED_COLUMNS
    assert "source_row" not in frame.columns  # the caller's frame is left alone


def test_planted_problems_are_reported_by_source_row_exactly() -> None:
    frame = _typed()
    # file row numbers that are not positions: every second line of a file from line 101
    frame["source_row"] = np.arange(101, 101 + 2 * N_ROWS, 2, dtype="int64")
    row = frame["source_row"].to_numpy()
    planted: dict[int, tuple[str, Any, str]] = {
        3: ("torque_nm", -5.0, BETWEEN),
        10: ("type", "X", IN_SET),
        17: ("machine_failure", 2, IN_SET),
        20: ("product_id", None, NOT_NULL),
        30: ("air_temperature_k", np.nan, NOT_NULL),
        33: ("twf", 5, BETWEEN),
        50: ("rotational_speed_rpm", 20_000, BETWEEN),
    }
    for pos, (column, value, _) in planted.items():
        frame.loc[pos, column] = value
    frame.loc[40, "udi"] = int(frame["udi"].iloc[25])

    summary = validate(frame, row_expectations(AI4I), name="planted")

    got = summary.unexpected
    assert list(got.columns) == UNEXPECTED_COLUMNS
    expected = {(int(row[pos]), column, exp) for pos, (column, _, exp) in planted.items()}
    expected |= {(int(row[25]), "udi", UNIQUE), (int(row[40]), "udi", UNIQUE)}
    found = list(zip(got["row_number"].tolist(), got["column"], got["expectation"], strict=True))
    assert len(found) == len(expected)
    assert set(found) == expected
    values = {
        (r, c): v for r, c, v in zip(got["row_number"], got["column"], got["value"], strict=True)
    }
    assert values[(int(row[3]), "torque_nm")] == "-5.0"
    assert values[(int(row[10]), "type")] == "X"
    assert values[(int(row[20]), "product_id")] == "<missing>"
    reasons = dict(zip(got["column"], got["reason"], strict=False))
    assert reasons["rotational_speed_rpm"] == "outside [0, 10000] rpm"
    assert _failed(summary) == {
        (BETWEEN, "torque_nm"): 1,
        (IN_SET, "type"): 1,
        (IN_SET, "machine_failure"): 1,
        (NOT_NULL, "product_id"): 1,
        (NOT_NULL, "air_temperature_k"): 1,
        (BETWEEN, "twf"): 1,
        (BETWEEN, "rotational_speed_rpm"): 1,
        (UNIQUE, "udi"): 2,
    }
    assert summary.expectations_run == 23
    assert not summary.success


def test_without_source_row_failures_are_numbered_by_position_from_one() -> None:
    frame = _typed(10)
    frame.loc[0, "type"] = "Z"
    frame.loc[9, "torque_nm"] = 999.0
    summary = validate(frame, row_expectations(AI4I), name="positions")
    got = summary.unexpected.sort_values("row_number")
    assert got[["row_number", "column"]].values.tolist() == [[1, "type"], [10, "torque_nm"]]


# --- the table suite ------------------------------------------------------------------------


def test_table_suite_adds_presence_and_one_type_check_per_present_column() -> None:
    suite = table_expectations(AI4I)
    assert suite[0].type == COLUMNS_PRESENT
    assert suite[0].kwargs == {"column_set": AI4I.required_columns, "exact_match": False}
    typed = [e.column for e in suite if e.type in TYPE_CHECKS]
    assert typed == [c.name for c in AI4I.columns]
    assert suite[1 + len(typed) :] == row_expectations(AI4I)

    present = [c for c in AI4I.required_columns if c != "udi"] + ["twf"]
    partial = table_expectations(AI4I, present, required=["torque_nm"])
    assert partial[0].kwargs["column_set"] == ["torque_nm"]
    assert [e.column for e in partial if e.type in TYPE_CHECKS] == present
    # value checks on absent columns are dropped; the unique check names an absent column too
    assert {e.column for e in partial[1:]} <= set(present)


def test_table_suite_passes_on_stored_rows() -> None:
    stored = _stored()
    suite = table_expectations(AI4I, list(stored.columns))
    summary = validate(stored, suite, name="stored")
    assert [f.describe() for f in summary.failed] == []
    assert summary.expectations_run == len(suite)


@pytest.mark.parametrize(
    ("column", "stored_as"),
    [
        ("torque_nm", "str"),  # a float column written as text
        ("tool_wear_min", "float64"),  # an int column that went through float
        ("udi", "float64"),
        ("type", "category"),
    ],
)
def test_table_suite_type_checks_catch_a_wrong_storage_type(column: str, stored_as: str) -> None:
    stored = _stored()
    stored = stored.astype({column: stored_as})
    summary = validate(stored, table_expectations(AI4I, list(stored.columns)), name="types")
    assert {f.column for f in summary.failed if f.expectation in TYPE_CHECKS} == {column}


def test_required_presence_check_fails_when_a_column_is_missing() -> None:
    stored = _stored()
    without_type = stored.drop(columns=["type"])
    summary = validate(
        without_type,
        table_expectations(AI4I, list(without_type.columns), required=AI4I.required_columns),
        name="presence",
    )
    assert (COLUMNS_PRESENT, None) in _failed(summary)

    # a stored batch must also carry its event time once ingestion has stamped it
    must_have_time = [*AI4I.required_columns, "event_time"]
    no_time = stored.drop(columns=["event_time"])
    summary = validate(
        no_time, table_expectations(AI4I, list(no_time.columns), required=must_have_time)
    )
    assert list(_failed(summary)) == [(COLUMNS_PRESENT, None)]
    summary = validate(
        stored, table_expectations(AI4I, list(stored.columns), required=must_have_time)
    )
    assert summary.success


# --- summaries ----------------------------------------------------------------------------------


def test_merge_sums_counts_per_expectation_and_column() -> None:
    a = ValidationSummary(
        expectations_run=23,
        failed=[
            FailedExpectation(BETWEEN, "torque_nm", 2, ["-1.0", "250.0"]),
            FailedExpectation(IN_SET, "type", 1, ["X"]),
        ],
        rows_checked=100,
    )
    b = ValidationSummary(
        expectations_run=23,
        failed=[
            FailedExpectation(BETWEEN, "torque_nm", 5, ["a", "b", "c", "d", "e"], "seen"),
            FailedExpectation(NOT_NULL, "udi", 3, ["<missing>"]),
        ],
        rows_checked=50,
    )
    merged = a.merge(b)
    assert merged.rows_checked == 150
    assert merged.expectations_run == 23
    by_key = {(f.expectation, f.column): f for f in merged.failed}
    assert {k: f.unexpected_count for k, f in by_key.items()} == {
        (BETWEEN, "torque_nm"): 7,
        (IN_SET, "type"): 1,
        (NOT_NULL, "udi"): 3,
    }
    assert by_key[(BETWEEN, "torque_nm")].sample == ["-1.0", "250.0", "a", "b", "c"]
    assert by_key[(BETWEEN, "torque_nm")].observed == "seen"
    assert not merged.success
    assert ValidationSummary().merge(ValidationSummary()).success
    # merging leaves both inputs as they were
    assert [f.unexpected_count for f in a.failed] == [2, 1]


def test_merged_chunks_count_what_the_whole_frame_counts() -> None:
    frame = _typed()
    frame.loc[[2, 40, 41], "torque_nm"] = -1.0
    frame.loc[[5, 50], "type"] = "X"
    suite = row_expectations(AI4I)
    whole = validate(frame, suite, name="chunks")
    first = validate(frame.iloc[:30], suite, name="chunks")
    second = validate(frame.iloc[30:], suite, name="chunks")
    merged = first.merge(second)
    assert merged.rows_checked == whole.rows_checked == N_ROWS
    assert _failed(merged) == _failed(whole) == {(BETWEEN, "torque_nm"): 3, (IN_SET, "type"): 2}


def test_describe_and_metadata_are_plain_values() -> None:
    failure = FailedExpectation(BETWEEN, "torque_nm", 2, ["-1.0", "250.0"])
    assert failure.describe() == (
        "expect_column_values_to_be_between on 'torque_nm': 2 unexpected; e.g. -1.0, 250.0"
    )
    table = FailedExpectation(COLUMNS_PRESENT, None, 0, [], "['udi']")
    assert table.describe() == "expect_table_columns_to_match_set: 0 unexpected; observed ['udi']"
    summary = ValidationSummary(expectations_run=4, failed=[failure], rows_checked=9)
    assert summary.as_metadata() == {
        "expectations_run": 4,
        "expectations_failed": 1,
        "rows_checked": 9,
        "failures": [failure.describe()],
    }


# -- the row-by-row evaluation, against Great Expectations itself --------------------------


def _dirty_typed_frame(n_rows: int = 400, seed: int = 5) -> pd.DataFrame:
    """Typed rows with every kind of row failure GX can report, scattered."""
    raw = raw_text(n_rows, seed=seed)
    rng = np.random.default_rng(seed)

    def some(k: int) -> np.ndarray:
        return rng.choice(n_rows, size=k, replace=False)

    raw.loc[some(9), "Air temperature [K]"] = ""  # missing
    raw.loc[some(7), "Torque [Nm]"] = "-3.5"  # below the physical range
    raw.loc[some(5), "Rotational speed [rpm]"] = "99999"  # above it
    raw.loc[some(6), "Type"] = "X"  # not in {L, M, H}
    raw.loc[some(4), "Machine failure"] = "2"  # label not in {0, 1}
    raw.loc[some(3), "Type"] = ""  # missing category
    dup = some(6)
    raw.loc[dup[3:], "UDI"] = raw.loc[dup[:3], "UDI"].to_numpy()  # repeated ids
    raw.loc[some(2), "UDI"] = ""  # missing id
    typed = type_and_validate(raw, AI4I, "dirty.csv", exact=True)
    assert not typed.quarantine.empty
    # the frame GX saw: typed values, bad ones included
    return type_rows(raw, AI4I, "dirty.csv").frame()


def _rows(summary: ValidationSummary) -> list[tuple[int, str, str]]:
    u = summary.unexpected
    return sorted(
        zip(u["row_number"].tolist(), u["column"].tolist(), u["expectation"].tolist(), strict=True)
    )


def test_evaluate_finds_exactly_the_rows_great_expectations_finds() -> None:
    frame = _dirty_typed_frame()
    suite = row_expectations(AI4I)
    by_gx = validate(frame, suite, name="agreement")
    by_numpy = evaluate(frame, suite)
    assert len(by_gx.failed) >= 6  # every kind of failure above is present
    assert _rows(by_numpy) == _rows(by_gx)
    assert unexpected_counts(by_numpy) == unexpected_counts(by_gx)
    # the summary GX gives without listing every row has the same counts
    assert unexpected_counts(validate(frame, suite, name="agreement", every_row=False)) == (
        unexpected_counts(by_gx)
    )


def test_the_summary_run_asks_gx_for_its_verdict_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without every row, GX gives its verdict alone; only a failure costs the summary run."""
    suite = row_expectations(AI4I)
    clean = _typed(200)
    dirty = _dirty_typed_frame()
    formats: list[str] = []
    original = expectations_module._suite_run

    class Recording:
        def __init__(self, definition: Any) -> None:
            self.definition = definition

        def run(self, **kwargs: Any) -> Any:
            formats.append(kwargs["result_format"]["result_format"])
            return self.definition.run(**kwargs)

    monkeypatch.setattr(
        expectations_module,
        "_suite_run",
        lambda name, suite: Recording(original(name, suite)),
    )

    passed = validate(clean, suite, name="verdict", every_row=False)
    assert formats == ["BOOLEAN_ONLY"]
    assert passed.success and passed.expectations_run == len(suite)
    assert passed.rows_checked == 200 and passed.unexpected.empty

    formats.clear()
    failed = validate(dirty, suite, name="verdict", every_row=False)
    assert formats == ["BOOLEAN_ONLY", "SUMMARY"]
    # the summary is GX's whole one: the counts every row would give, and first rows
    assert unexpected_counts(failed) == unexpected_counts(validate(dirty, suite, name="all"))
    assert not failed.unexpected.empty

    # a caller that knows rows fail skips the verdict-only run, for the same summary
    formats.clear()
    known = validate(dirty, suite, name="verdict", every_row=False, verdict_first=False)
    assert formats == ["SUMMARY"]
    assert unexpected_counts(known) == unexpected_counts(failed)

    # ingestion's confirmation: a chunk the evaluation fails costs GX one run, one that
    # passes costs its verdict alone
    formats.clear()
    with ThreadPoolExecutor(max_workers=1) as gx:
        dirty_chunk = validate_rows(type_rows(raw_text(60, seed=3).assign(Type="X"), AI4I, "d"))
        assert dirty_chunk.rows_quarantined == 60
        assert formats == ["SUMMARY"]
        formats.clear()
        confirmed = validate_rows(type_rows(raw_text(60, seed=3), AI4I, "c"), confirm_on=gx)
        assert confirmed.confirmed().success
        assert formats == ["BOOLEAN_ONLY"]


def _gx_results(frame: pd.DataFrame, suite: list[ExpectationDef], name: str) -> list[Any]:
    """GX's own COMPLETE results of ``suite`` on ``frame``: its V1 validator, no memo."""
    from great_expectations.validator.v1_validator import Validator

    run = expectations_module._suite_run(name, suite)
    validator = Validator(
        batch_definition=run.batch_definition,
        batch_parameters={"dataframe": frame},
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": ["source_row"],
        },
    )
    return list(validator.validate_expectation_suite(run.suite).results)


def test_a_run_builds_each_configuration_once_and_gx_is_unchanged_outside() -> None:
    """GX's configuration property is memoized within our runs, on their thread only."""
    suite = row_expectations(AI4I)
    validate(_typed(), suite, name="memo")  # installs the memo
    expectation = expectations_module._suite_run("memo", suite).suite.expectations[0]
    # outside a run: GX's own property, a new configuration on every access
    assert expectation.configuration is not expectation.configuration
    assert expectation.configuration == expectation.configuration
    with expectations_module._memoized_configurations():
        first = expectation.configuration
        assert expectation.configuration is first
        # another thread, meanwhile: GX's own property
        with ThreadPoolExecutor(max_workers=1) as pool:
            other = pool.submit(lambda: expectation.configuration).result()
        assert other is not first and other == first
    assert expectation.configuration is not first
    assert expectation.configuration == first


def test_the_memo_builds_far_fewer_configurations_for_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same GX results, with and without the memo; the memo builds a fraction of the objects."""
    from great_expectations.expectations import expectation as gx_expectation

    suite = row_expectations(AI4I)
    dirty = _dirty_typed_frame()
    built = 0
    real = gx_expectation.ExpectationConfiguration

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            nonlocal built
            built += 1
            super().__init__(*args, **kwargs)

    validate(dirty, suite, name="memo-count")  # the suite and the memo exist
    monkeypatch.setattr(gx_expectation, "ExpectationConfiguration", Counting)
    without = _gx_results(dirty, suite, "memo-count")
    built_without, built = built, 0
    with expectations_module._memoized_configurations():
        memoized = _gx_results(dirty, suite, "memo-count")
    built_with = built

    assert built_with * 5 < built_without, (built_with, built_without)
    assert len(memoized) == len(without) == len(suite)

    def outcome(r: Any) -> tuple[Any, ...]:
        res = r.result or {}
        return (
            r.expectation_config.type,
            r.expectation_config.kwargs.get("column"),
            r.success,
            res.get("unexpected_count"),
            sorted(i["source_row"] for i in res.get("unexpected_index_list") or []),
        )

    assert [outcome(r) for r in memoized] == [outcome(r) for r in without]
    assert any(not r.success for r in memoized)
    # and our validate() reports exactly GX's failing rows
    summary = validate(dirty, suite, name="memo-count")
    found = zip(summary.unexpected["row_number"], summary.unexpected["expectation"], strict=True)
    assert sorted(found) == (
        sorted(
            (i["source_row"], r.expectation_config.type)
            for r in without
            for i in (r.result or {}).get("unexpected_index_list") or []
        )
    )


def test_evaluate_on_clean_rows_finds_nothing() -> None:
    frame = _dirty_typed_frame().dropna()
    frame = frame[~frame["udi"].duplicated(keep=False)]
    clean = frame[
        frame["type"].isin(["L", "M", "H"])
        & frame["machine_failure"].isin([0, 1])
        & (frame["torque_nm"] >= 0)
        & (frame["rotational_speed_rpm"] <= 5000)
    ]
    summary = evaluate(clean, row_expectations(AI4I))
    assert summary.success and summary.unexpected.empty
    assert not validate(clean, row_expectations(AI4I), name="clean").failed


def test_an_expectation_without_a_row_evaluation_is_refused() -> None:
    frame = _dirty_typed_frame()
    columns = ExpectationDef("expect_table_columns_to_match_set", {"column_set": ["udi"]}, "x")
    with pytest.raises(NotImplementedError, match="only column expectations"):
        evaluate(frame, [columns])
    of_type = ExpectationDef(OF_TYPE, {"column": "udi", "type_": "int64"}, "x")
    with pytest.raises(NotImplementedError, match=OF_TYPE):
        evaluate(frame, [of_type])


def _break_the_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """An evaluation that misses the out-of-range check, as a bug in it would."""
    real = expectations_module._failing

    def missing_ranges(series: pd.Series, e: ExpectationDef) -> np.ndarray:
        if e.type == BETWEEN:
            return np.zeros(len(series), dtype=bool)
        return real(series, e)

    monkeypatch.setattr(expectations_module, "_failing", missing_ranges)


def test_a_wrong_evaluation_is_caught_and_great_expectations_rows_are_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    raw = raw_text(200, seed=8)
    raw.loc[[3, 70], "Torque [Nm]"] = "-1"
    exact = type_and_validate(raw, AI4I, "ranges.csv", exact=True)
    _break_the_evaluation(monkeypatch)
    with caplog.at_level("WARNING", logger="mlplatform.core.ingest"):
        checked = type_and_validate(raw, AI4I, "ranges.csv")
    assert "Great Expectations counts" in caplog.text
    # GX's verdict wins: the same quarantine as GX's own rows give
    pd.testing.assert_frame_equal(checked.quarantine, exact.quarantine)
    assert sorted(checked.quarantine["row_number"].unique().tolist()) == [4, 71]
    assert len(checked.valid) == 198


def test_a_deferred_confirmation_raises_on_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = raw_text(120, seed=9)
    raw.loc[[10], "Torque [Nm]"] = "-1"
    with ThreadPoolExecutor(max_workers=1) as gx:
        agreed = type_and_validate(raw, AI4I, "ok.csv", confirm_on=gx)
        assert agreed.validation is None  # GX still running, or not yet asked for
        assert agreed.confirmed().failed[0].expectation == BETWEEN
        _break_the_evaluation(monkeypatch)
        wrong = type_and_validate(raw, AI4I, "wrong.csv", confirm_on=gx)
        with pytest.raises(ValidationMismatch, match=r"wrong\.csv"):
            wrong.confirmed()


def test_nullable_integer_columns_get_the_verdicts_of_their_values_and_their_type() -> None:
    """Value checks of an ``Int64`` column run on its values as floats (GX is ten times
    slower on ``Int64``), its type check on the column as it is: the same verdicts,
    counts and failing rows as GX on the column itself, and a wrong type still fails."""
    n = 3000
    twf = pd.array([0, 1, None, 5, 1, 0] * (n // 6), dtype="Int64")
    frame = pd.DataFrame({"udi": np.arange(1, n + 1, dtype="int64"), "twf": twf})
    suite = [
        e
        for e in table_expectations(AI4I, ["udi", "twf"])
        if e.type != "expect_table_columns_to_match_set"
    ]
    got = validate(frame, suite, name="nullable-split")
    # GX on the Int64 column itself (no split): the reference
    between = next(e for e in suite if e.column == "twf" and "between" in e.type)
    direct = expectations_module._validate(
        frame.assign(source_row=np.arange(1, n + 1)), [between], name="direct", every_row=True
    )
    assert got.expectations_run == len(suite)
    failed = {(f.expectation, f.column): f.unexpected_count for f in got.failed}
    assert failed == {("expect_column_values_to_be_between", "twf"): n // 6}
    rows = got.unexpected[got.unexpected["column"] == "twf"]["row_number"].tolist()
    assert rows == list(range(4, n + 1, 6))  # the 5s, not the missing values
    assert direct.unexpected["row_number"].tolist() == rows
    assert [f.unexpected_count for f in direct.failed] == [n // 6]
    # the type is still checked on the column as stored: float64 is not int64
    wrong = validate(frame.astype({"twf": "float64"}), suite, name="nullable-wrong-type")
    assert ("expect_column_values_to_be_in_type_list", "twf") in {
        (f.expectation, f.column) for f in wrong.failed
    }
