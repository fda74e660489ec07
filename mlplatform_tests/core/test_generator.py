"""Tests of the synthetic AI4I 2020 generator."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.generator import AI4I_COLUMNS, generate_ai4i
from mlplatform_tests.real_data import require_real_ai4i

NUMERIC_COLUMNS = (
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
)
MODES = ("TWF", "HDF", "PWF", "OSF", "RNF")
LABELS = ("Machine failure", *MODES)
WEAR_PER_PROCESS = {"L": 2, "M": 3, "H": 5}
OSF_LIMIT = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}

# Generated-vs-real tolerances on 20,000 rows: (mean, std).
MOMENT_TOLERANCES = {
    "Air temperature [K]": (0.2, 0.1),
    "Process temperature [K]": (0.2, 0.1),
    "Rotational speed [rpm]": (10.0, 10.0),
    "Torque [Nm]": (0.4, 0.4),
    "Tool wear [min]": (4.0, 3.0),
}


def read_real_ai4i() -> pd.DataFrame:
    """Read the real AI4I 2020 file, or skip the calling test when it is absent."""
    return pd.read_csv(require_real_ai4i())


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    return read_real_ai4i()


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    return generate_ai4i(20_000, seed=2020)


@pytest.fixture(scope="module")
def large() -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    frame = generate_ai4i(200_000, seed=7)
    return frame, time.perf_counter() - start


# --- schema -----------------------------------------------------------------------------------


def test_columns_are_the_fourteen_ai4i_columns_in_order() -> None:
    assert AI4I_COLUMNS == (
        "UDI",
        "Product ID",
        "Type",
        "Air temperature [K]",
        "Process temperature [K]",
        "Rotational speed [rpm]",
        "Torque [Nm]",
        "Tool wear [min]",
        "Machine failure",
        "TWF",
        "HDF",
        "PWF",
        "OSF",
        "RNF",
    )
    assert tuple(generate_ai4i(10).columns) == AI4I_COLUMNS


def test_columns_and_dtypes_equal_the_real_file(real: pd.DataFrame) -> None:
    frame = generate_ai4i(100, seed=1)
    assert tuple(real.columns) == AI4I_COLUMNS
    pd.testing.assert_series_equal(frame.dtypes, real.dtypes)


def test_dtypes_are_those_read_csv_gives(generated: pd.DataFrame) -> None:
    int_columns = ("UDI", "Rotational speed [rpm]", "Tool wear [min]", *LABELS)
    for column in int_columns:
        assert generated[column].dtype == np.int64, column
    for column in ("Air temperature [K]", "Process temperature [K]", "Torque [Nm]"):
        assert generated[column].dtype == np.float64, column
    for column in ("Product ID", "Type"):
        assert pd.api.types.is_string_dtype(generated[column].dtype), column
        assert all(isinstance(value, str) for value in generated[column]), column


def test_round_trip_through_csv_keeps_dtypes_and_values(tmp_path: Path) -> None:
    frame = generate_ai4i(300, seed=5)
    path = tmp_path / "sample.csv"
    frame.to_csv(path, index=False)
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)


def test_temperatures_and_torque_are_rounded_to_a_tenth(generated: pd.DataFrame) -> None:
    for column in ("Air temperature [K]", "Process temperature [K]", "Torque [Nm]"):
        tenths = generated[column].to_numpy() * 10
        np.testing.assert_allclose(tenths, np.round(tenths), atol=1e-6, err_msg=column)


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_the_same_frame() -> None:
    pd.testing.assert_frame_equal(generate_ai4i(2_000, seed=11), generate_ai4i(2_000, seed=11))


def test_different_seeds_give_different_frames() -> None:
    first, second = generate_ai4i(2_000, seed=11), generate_ai4i(2_000, seed=12)
    for column in ("Type", *NUMERIC_COLUMNS):
        assert not first[column].equals(second[column]), column


def test_default_seed_is_deterministic() -> None:
    pd.testing.assert_frame_equal(generate_ai4i(500), generate_ai4i(500, seed=0))


# --- failure rules ----------------------------------------------------------------------------


def test_failure_rules_hold_on_every_row(generated: pd.DataFrame) -> None:
    air = generated["Air temperature [K]"]
    process = generated["Process temperature [K]"]
    speed = generated["Rotational speed [rpm]"]
    torque = generated["Torque [Nm]"]
    wear = generated["Tool wear [min]"]

    hdf = ((process - air) < 8.6) & (speed < 1380)
    power = torque * speed * 2 * np.pi / 60
    pwf = (power < 3500) | (power > 9000)
    osf = wear * torque > generated["Type"].map(OSF_LIMIT)

    np.testing.assert_array_equal(generated["HDF"].to_numpy(), hdf.astype(int).to_numpy())
    np.testing.assert_array_equal(generated["PWF"].to_numpy(), pwf.astype(int).to_numpy())
    np.testing.assert_array_equal(generated["OSF"].to_numpy(), osf.astype(int).to_numpy())
    any_mode = generated[list(MODES)].max(axis=1)
    np.testing.assert_array_equal(generated["Machine failure"].to_numpy(), any_mode.to_numpy())
    for column in LABELS:
        assert set(generated[column].unique()) == {0, 1}, column


def test_power_failures_come_from_both_ends(generated: pd.DataFrame) -> None:
    power = generated["Torque [Nm]"] * generated["Rotational speed [rpm]"] * 2 * np.pi / 60
    failed = power[generated["PWF"] == 1]
    assert (failed < 3500).sum() > 0
    assert (failed > 9000).sum() > 0


def test_tool_wear_accumulates_by_type_and_resets(generated: pd.DataFrame) -> None:
    wear = generated["Tool wear [min]"].to_numpy()
    added = generated["Type"].map(WEAR_PER_PROCESS).to_numpy()
    twf = generated["TWF"].to_numpy()
    assert wear[0] == 0
    step = np.diff(wear)
    reset = wear[1:] == 0
    # Between replacements each row adds the previous process's wear.
    np.testing.assert_array_equal(step[~reset], added[:-1][~reset])
    # A tool is retired by the process that takes it to a life of 200-240 min.
    retired_wear = wear[:-1][reset] + added[:-1][reset]
    assert retired_wear.min() >= 200
    assert wear[:-1][reset].max() < 240
    assert wear.max() < 240
    # Roughly 84 rows per tool with the 60/30/10 type mix.
    assert 200 <= reset.sum() <= 280
    # Tool-wear failures happen only on a tool's last row.
    last_of_tool = np.append(reset, False)
    assert twf[~last_of_tool].sum() == 0
    assert 0.3 <= twf[last_of_tool].mean() <= 0.5


def test_modes_per_10k_rows_are_in_the_real_ballpark(large: tuple[pd.DataFrame, float]) -> None:
    frame, _ = large
    per_10k = frame[list(LABELS)].mean() * 10_000
    # Real file: Machine failure 339, TWF 46, HDF 115, PWF 95, OSF 98, RNF 19.
    bounds = {
        "Machine failure": (290, 420),
        "TWF": (35, 60),
        "HDF": (70, 160),
        "PWF": (75, 125),
        "OSF": (75, 135),
        # The documented process: 0.1 % of processes, i.e. 10 per 10k (+- ~3 on 200k rows).
        "RNF": (7, 13),
    }
    for column, (low, high) in bounds.items():
        assert low <= per_10k[column] <= high, (column, per_10k[column])


# --- distribution vs the real file ------------------------------------------------------------


def test_failure_rate_matches_real(generated: pd.DataFrame, real: pd.DataFrame) -> None:
    gap = generated["Machine failure"].mean() - real["Machine failure"].mean()
    assert abs(gap) <= 0.008


def test_numeric_means_and_stds_match_real(generated: pd.DataFrame, real: pd.DataFrame) -> None:
    for column, (mean_tol, std_tol) in MOMENT_TOLERANCES.items():
        assert generated[column].mean() == pytest.approx(real[column].mean(), abs=mean_tol), column
        assert generated[column].std() == pytest.approx(real[column].std(), abs=std_tol), column


def test_type_shares_match_real(generated: pd.DataFrame, real: pd.DataFrame) -> None:
    generated_shares = generated["Type"].value_counts(normalize=True)
    real_shares = real["Type"].value_counts(normalize=True)
    for letter in ("L", "M", "H"):
        assert generated_shares[letter] == pytest.approx(real_shares[letter], abs=0.02), letter


def test_speed_torque_correlation_matches_real(generated: pd.DataFrame, real: pd.DataFrame) -> None:
    def corr(frame: pd.DataFrame) -> float:
        return float(frame["Rotational speed [rpm]"].corr(frame["Torque [Nm]"]))

    assert corr(generated) == pytest.approx(corr(real), abs=0.1)


def test_speed_range_and_skew_resemble_real(generated: pd.DataFrame, real: pd.DataFrame) -> None:
    speed, real_speed = generated["Rotational speed [rpm]"], real["Rotational speed [rpm]"]
    for q in (0.01, 0.5, 0.99):
        assert float(speed.quantile(q)) == pytest.approx(float(real_speed.quantile(q)), rel=0.05), q
    values = speed.to_numpy(dtype=float)
    skewness = np.mean(((values - values.mean()) / values.std()) ** 3)
    assert skewness > 1.0


# --- distribution without the real file -------------------------------------------------------


def test_temperatures_follow_the_documented_process(generated: pd.DataFrame) -> None:
    air = generated["Air temperature [K]"]
    difference = generated["Process temperature [K]"] - air
    assert air.mean() == pytest.approx(300.0, abs=0.05)
    assert air.std() == pytest.approx(2.0, abs=0.05)
    assert difference.mean() == pytest.approx(10.0, abs=0.05)
    assert difference.std() == pytest.approx(1.0, abs=0.05)
    # A slow random walk: consecutive rows move by at most a few tenths of a kelvin.
    assert air.diff().abs().max() <= 0.4
    assert air.autocorr(lag=100) > 0.8


def test_torque_and_speed_follow_the_documented_process(generated: pd.DataFrame) -> None:
    torque, speed = generated["Torque [Nm]"], generated["Rotational speed [rpm]"]
    assert torque.min() >= 0
    assert torque.mean() == pytest.approx(40.0, abs=0.3)
    assert torque.std() == pytest.approx(10.0, abs=0.3)
    assert speed.min() > 0
    assert speed.corr(torque) < -0.8


def test_type_shares_are_60_30_10(large: tuple[pd.DataFrame, float]) -> None:
    shares = large[0]["Type"].value_counts(normalize=True)
    assert shares["L"] == pytest.approx(0.6, abs=0.01)
    assert shares["M"] == pytest.approx(0.3, abs=0.01)
    assert shares["H"] == pytest.approx(0.1, abs=0.01)


# --- identifiers and edge cases ---------------------------------------------------------------


def test_udi_counts_from_start_udi() -> None:
    frame = generate_ai4i(50, seed=3, start_udi=1_001)
    assert frame["UDI"].tolist() == list(range(1_001, 1_051))


def test_product_ids_are_type_letter_and_serial(generated: pd.DataFrame) -> None:
    ids = generated["Product ID"]
    assert ids.is_unique
    assert ids.str.fullmatch(r"[LMH]\d{5}").all()
    assert (ids.str[0] == generated["Type"]).all()


def test_product_ids_follow_the_udi() -> None:
    frame = generate_ai4i(20, seed=4, start_udi=1)
    serial = frame["Product ID"].str[1:].astype(int) - frame["UDI"]
    # One serial base per type, as in the real file (e.g. UDI 1 of type M is M14860).
    assert serial.groupby(frame["Type"]).nunique().eq(1).all()
    bases = {"L": 47_179, "M": 14_859, "H": 29_413}
    assert (serial == frame["Type"].map(bases)).all()


def test_product_ids_stay_unique_past_five_digits() -> None:
    frame = generate_ai4i(2_000, seed=5, start_udi=99_000)
    ids = frame["Product ID"]
    assert ids.is_unique
    assert ids.str.fullmatch(r"[LMH]\d{5,}").all()
    assert (ids.str.len() > 6).any()


def test_consecutive_udi_ranges_give_disjoint_ids() -> None:
    first = generate_ai4i(500, seed=1, start_udi=1)
    second = generate_ai4i(500, seed=2, start_udi=501)
    assert set(first["Product ID"]).isdisjoint(second["Product ID"])


def test_zero_rows_gives_an_empty_frame_with_the_schema() -> None:
    empty = generate_ai4i(0, seed=1)
    assert len(empty) == 0
    assert tuple(empty.columns) == AI4I_COLUMNS
    pd.testing.assert_series_equal(empty.dtypes, generate_ai4i(5, seed=1).dtypes)


def test_one_row() -> None:
    frame = generate_ai4i(1, seed=1, start_udi=42)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["UDI"] == 42
    assert row["Air temperature [K]"] == 300.0
    assert row["Process temperature [K]"] == 310.0
    assert row["Tool wear [min]"] == 0
    assert re.fullmatch(r"[LMH]\d{5}", row["Product ID"])
    assert row["Machine failure"] == frame[list(MODES)].to_numpy().max()
    pd.testing.assert_series_equal(frame.dtypes, generate_ai4i(5, seed=1).dtypes)


@pytest.mark.parametrize("n_rows", [-1, -100])
def test_negative_n_rows_raises(n_rows: int) -> None:
    with pytest.raises(ValueError, match=rf"n_rows.*{n_rows}"):
        generate_ai4i(n_rows)


def test_negative_start_udi_raises() -> None:
    with pytest.raises(ValueError, match=r"start_udi.*-5"):
        generate_ai4i(10, start_udi=-5)


@pytest.mark.parametrize("n_rows", [2.5, "10", True])
def test_non_integer_n_rows_raises(n_rows: object) -> None:
    with pytest.raises(TypeError, match="n_rows"):
        generate_ai4i(n_rows)  # type: ignore[arg-type]


def test_numpy_integer_n_rows_is_accepted() -> None:
    assert len(generate_ai4i(np.int64(7))) == 7  # type: ignore[arg-type]
