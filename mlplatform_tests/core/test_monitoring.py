"""Unit tests of continuous evaluation (mlplatform.core.monitoring).

Drift tests use one pool of generated AI4I rows split at random into training rows
(the champion's reference) and held-out rows: windows drawn at random from the
held-out rows share the training distribution exactly, so any drift verdict on
them is a false positive; shifted windows are made by changing the observations
and rebuilding the derived features from them, as the feature store does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from mlplatform.core.features import build_feature_table
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import FileRejected
from mlplatform.core.monitoring import (
    DRIFT_COLUMNS,
    LIVE_METRIC_COLUMNS,
    OUTCOME_PROBLEM_COLUMNS,
    DriftState,
    OutcomeParser,
    decide_decay,
    decide_drift,
    feature_drift,
    join_outcomes,
    ks_pvalue,
    ks_statistic,
    live_metrics,
    parse_outcomes,
    psi,
    window_start,
)
from mlplatform.core.schema import AI4I
from mlplatform.core.serving import (
    NumericReference,
    TrainingReference,
    feature_bin_counts,
    reference_shares,
)

SKETCH_LEVELS = np.linspace(0.0, 1.0, 1001)
TEMPERATURES = ["air_temperature_k", "process_temperature_k"]
TORQUE_DERIVED = ["torque_nm", "power_w", "strain_min_nm", "overstrain_ratio", "power_margin_w"]


def _sketch(values: np.ndarray) -> tuple[float, ...]:
    """The quantile sketch exactly as TrainingReference.from_frame builds it."""
    return tuple(float(v) for v in np.quantile(values, SKETCH_LEVELS, method="inverted_cdf"))


# --- a pool of generated rows: training part and held-out part --------------------------


@dataclass(frozen=True)
class Pool:
    observations: pd.DataFrame  # typed observations, canonical names
    train: pd.DataFrame  # feature rows the reference is built from
    held_out: np.ndarray  # positions in ``observations`` never trained on
    reference: TrainingReference

    def window(
        self,
        rows: int,
        seed: int,
        change: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
        positions: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """Feature rows of ``rows`` held-out observations drawn at random (after ``change``)."""
        rng = np.random.default_rng(seed)
        chosen = rng.choice(self.held_out if positions is None else positions, rows, replace=False)
        observed = self.observations.iloc[chosen].reset_index(drop=True)
        if change is not None:
            observed = change(observed.copy())
        return build_feature_table(observed, AI4I)


@pytest.fixture(scope="module")
def pool() -> Pool:
    observations = generate_ai4i(30_000, seed=2024, burn_in=500).rename(columns=AI4I.source_to_name)
    order = np.random.default_rng(0).permutation(len(observations))
    train = build_feature_table(observations.iloc[order[:10_000]], AI4I)
    reference = TrainingReference.from_frame(train, AI4I)
    return Pool(observations, train, order[10_000:], reference)


def _warmer(kelvin: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(observed: pd.DataFrame) -> pd.DataFrame:
        observed["air_temperature_k"] += kelvin
        observed["process_temperature_k"] += kelvin
        return observed

    return change


def _torque(scale: float = 1.0, add: float = 0.0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(observed: pd.DataFrame) -> pd.DataFrame:
        observed["torque_nm"] = observed["torque_nm"] * scale + add
        return observed

    return change


def _added(column: str, amount: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(observed: pd.DataFrame) -> pd.DataFrame:
        observed[column] = observed[column] + amount  # stays a whole number
        return observed

    return change


def _by_feature(report: pd.DataFrame) -> pd.DataFrame:
    return report.set_index("feature")


# --- the Kolmogorov-Smirnov statistic of a quantile sketch --------------------------------


def test_ks_statistic_by_hand() -> None:
    # sample CDF reaches 1 at 3 while the sketch's is 3/4 there
    assert ks_statistic(np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.25)
    # ties: every sample value is 2, the sketch puts 1/3 below 2 and 1/3 above
    assert ks_statistic(np.array([2.0, 2.0, 2.0]), [1.0, 2.0, 3.0]) == pytest.approx(1 / 3)
    assert ks_statistic(np.array([5.0, 6.0]), [1.0, 2.0]) == pytest.approx(1.0)
    assert ks_statistic(np.array([1.0, 2.0]), [2.0, 1.0]) == 0.0  # order does not matter
    assert math.isnan(ks_statistic(np.array([]), [1.0, 2.0]))
    assert math.isnan(ks_statistic(np.array([1.0]), []))


@pytest.mark.parametrize(
    "feature",
    # continuous (power), 0.1-resolution (torque, temperatures), whole numbers with ties
    ["power_w", "torque_nm", "air_temperature_k", "rotational_speed_rpm", "tool_wear_min"],
)
@pytest.mark.parametrize("change", ["none", "shift"])
def test_sketch_statistic_matches_ks_2samp_on_generated_features(
    pool: Pool, feature: str, change: str
) -> None:
    shifts: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
        "air_temperature_k": _warmer(0.5),
        "rotational_speed_rpm": _added("rotational_speed_rpm", 15),
        "tool_wear_min": _added("tool_wear_min", 6),
    }
    shift = shifts.get(feature, _torque(scale=1.05))
    window = pool.window(2_000, seed=7, change=None if change == "none" else shift)
    train = pool.train[feature].to_numpy("float64")
    recent = window[feature].to_numpy("float64")
    exact = stats.ks_2samp(recent, train)
    sketched = ks_statistic(recent, _sketch(train))
    assert abs(sketched - exact.statistic) <= 0.002
    p = ks_pvalue(sketched, recent.size, train.size)
    # the same order of magnitude (a factor of 3) as scipy's p-value
    assert abs(math.log10(max(p, 1e-300)) - math.log10(max(exact.pvalue, 1e-300))) < 0.5


@pytest.mark.parametrize("seed", range(6))
def test_sketch_statistic_matches_ks_2samp_on_heavily_tied_integers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    train = rng.poisson(3.0, 8_000).astype("float64")  # a dozen distinct values
    recent = rng.poisson(3.0 + 0.1 * seed, 1_500).astype("float64")
    exact = stats.ks_2samp(recent, train)
    sketched = ks_statistic(recent, _sketch(train))
    assert abs(sketched - exact.statistic) <= 0.002
    p = ks_pvalue(sketched, recent.size, train.size)
    assert abs(math.log10(max(p, 1e-300)) - math.log10(max(exact.pvalue, 1e-300))) < 0.5


def test_sketch_of_the_training_rows_themselves_has_a_statistic_within_one_step(
    pool: Pool,
) -> None:
    for name in ("tool_wear_min", "power_w"):
        values = pool.train[name].to_numpy("float64")
        assert ks_statistic(values, pool.reference.numeric[name].quantiles) <= 1 / 1000 + 1e-12


def test_ks_pvalue_is_scipys_asymptotic_two_sample_pvalue() -> None:
    rng = np.random.default_rng(3)
    train, recent = rng.normal(0, 1, 12_000), rng.normal(0.04, 1, 900)
    asymptotic = stats.ks_2samp(recent, train, method="asymp")
    assert ks_pvalue(asymptotic.statistic, 900, 12_000) == pytest.approx(
        asymptotic.pvalue, rel=1e-9
    )


def test_ks_pvalue_edges_and_monotonicity() -> None:
    assert ks_pvalue(0.0, 500, 10_000) == pytest.approx(1.0)
    assert ks_pvalue(1.0, 500, 10_000) < 1e-100
    pvalues = [ks_pvalue(d, 500, 10_000) for d in (0.01, 0.05, 0.1, 0.2)]
    assert pvalues == sorted(pvalues, reverse=True)
    assert pvalues[0] > 0.5 > 1e-3 > pvalues[2]
    assert math.isnan(ks_pvalue(math.nan, 500, 10_000))
    assert math.isnan(ks_pvalue(0.1, 0, 10_000))
    assert math.isnan(ks_pvalue(0.1, 500, 0))


def test_psi_by_hand() -> None:
    assert psi([25, 25, 25, 25], [0.25] * 4) == pytest.approx(0.0)
    expected = (0.4 - 0.25) * math.log(0.4 / 0.25) + (0.1 - 0.25) * math.log(0.1 / 0.25)
    assert psi([40, 10, 25, 25], [0.25] * 4) == pytest.approx(expected)
    assert math.isnan(psi([0, 0], [0.5, 0.5]))


# --- feature drift ------------------------------------------------------------------------


def test_same_distribution_windows_never_drift(pool: Pool) -> None:
    windows = 50
    reports = [feature_drift(pool.window(500, seed), pool.reference) for seed in range(windows)]
    every = pd.concat(reports, ignore_index=True)
    assert len(every) == windows * len(AI4I.model_features)
    assert int(every["drifted"].sum()) == 0  # no false positive in 50 windows
    # the p-values are calibrated: at 5 % about 5 % of the tests reject (ties make KS
    # conservative; features of a window are correlated, hence the wide band)
    expected = 0.05 * len(every)
    rejected = int((every["p_value"] < 0.05).sum())
    assert expected / 3 <= rejected <= 2 * expected
    # Bonferroni: below alpha / 12 about once in 12 / alpha windows
    assert int((every["p_value"] < every["p_threshold"]).sum()) <= 3


def test_report_columns_and_bonferroni_threshold(pool: Pool) -> None:
    report = feature_drift(pool.window(500, seed=1), pool.reference, alpha=0.05)
    assert list(report.columns) == DRIFT_COLUMNS
    assert report["feature"].tolist() == AI4I.model_features
    assert (report["p_threshold"] == 0.05 / len(AI4I.model_features)).all()
    assert (report["rows"] == 500).all()
    kinds = _by_feature(report)
    assert kinds.loc["type", "kind"] == "categorical"
    assert kinds.loc["type", "test"] == "chi2"
    assert (kinds.drop(index="type")["test"] == "ks").all()
    assert (kinds.drop(index="type")["kind"] == "numeric").all()
    # only the features present are tested, and the correction counts only them
    some = feature_drift(
        pool.window(500, seed=1)[["torque_nm", "type", "udi"]], pool.reference, alpha=0.05
    )
    assert some["feature"].tolist() == ["torque_nm", "type"]
    assert (some["p_threshold"] == 0.025).all()


def test_warmer_hall_drifts_the_temperatures_only(pool: Pool) -> None:
    report = _by_feature(
        feature_drift(pool.window(500, seed=2, change=_warmer(4.0)), pool.reference)
    )
    drifted = set(report.index[report["drifted"]])
    assert set(TEMPERATURES) <= drifted
    # both temperatures move together: their difference, torque and type do not drift
    assert drifted.isdisjoint({"temp_diff_k", "torque_nm", "power_w", "type"})
    assert (report.loc[TEMPERATURES, "p_value"] < 1e-20).all()
    assert (report.loc[TEMPERATURES, "psi"] > 1.0).all()


def test_scaled_torque_drifts_torque_and_what_derives_from_it(pool: Pool) -> None:
    report = _by_feature(
        feature_drift(pool.window(500, seed=3, change=_torque(scale=1.5)), pool.reference)
    )
    drifted = set(report.index[report["drifted"]])
    assert {"torque_nm", "power_w"} <= drifted <= set(TORQUE_DERIVED) | {"rotational_speed_rpm"}
    assert not report.loc[[*TEMPERATURES, "type"], "drifted"].any()


def test_changed_type_shares_drift_type_by_chi_squared(pool: Pool) -> None:
    types = pool.observations["type"].astype(str).to_numpy()[pool.held_out]
    mostly_high = np.concatenate(
        [pool.held_out[types == "H"][:250], pool.held_out[types != "H"][:250]]
    )
    report = _by_feature(
        feature_drift(pool.window(500, seed=4, positions=mostly_high), pool.reference)
    )
    assert report.loc["type", "test"] == "chi2"
    assert report.loc["type", "drifted"]
    assert report.loc["type", "p_value"] < 1e-20
    observed = feature_bin_counts(pool.window(500, seed=4, positions=mostly_high), pool.reference)
    total = sum(observed["type"])
    shares = reference_shares(pool.reference, "type")
    expected = np.clip(np.asarray(shares), 1e-4, None)
    chi2 = stats.chisquare(observed["type"], expected / expected.sum() * total).statistic
    assert report.loc["type", "statistic"] == pytest.approx(chi2)
    assert not report.loc[TEMPERATURES, "drifted"].any()


def test_unseen_category_counts_against_training(pool: Pool) -> None:
    def unseen(observed: pd.DataFrame) -> pd.DataFrame:
        observed["type"] = pd.array(["X"] * len(observed), dtype="str")
        return observed

    report = _by_feature(feature_drift(pool.window(200, seed=5, change=unseen), pool.reference))
    assert report.loc["type", "drifted"]
    assert report.loc["type", "psi"] > 5


def test_significant_but_small_shift_is_not_drift(pool: Pool) -> None:
    # 20,000 rows make +1 Nm (a tenth of its spread) significant; the PSI says it is small
    report = _by_feature(
        feature_drift(pool.window(20_000, seed=6, change=_torque(add=1.0)), pool.reference)
    )
    torque = report.loc["torque_nm"]
    assert torque["p_value"] < torque["p_threshold"]
    assert torque["psi"] < 0.2
    assert not torque["drifted"]
    # with no effect-size requirement (no PSI floor, no natural wandering) it drifts
    bare = _by_feature(
        feature_drift(
            pool.window(20_000, seed=6, change=_torque(add=1.0)),
            replace(pool.reference, natural_psi={}),
            psi_threshold=0,
        )
    )
    assert bare.loc["torque_nm", "drifted"]


def test_large_psi_of_a_tiny_window_is_not_drift(pool: Pool) -> None:
    report = feature_drift(pool.window(30, seed=0), pool.reference)
    noisy = report.loc[report["psi"] >= 0.2]
    assert len(noisy) >= 3  # 30 rows in 10 bins: PSI is noise
    assert (noisy["p_value"] >= noisy["p_threshold"]).all()
    assert not report["drifted"].any()


def test_drift_is_p_below_threshold_and_psi_at_least_threshold(pool: Pool) -> None:
    for seed, change in ((2, _warmer(4.0)), (6, _torque(add=1.0)), (0, None)):
        rows = 30 if change is None else 2_000
        report = feature_drift(
            pool.window(rows, seed=seed, change=change), pool.reference, psi_threshold=0.2
        )
        rule = (report["p_value"] < report["p_threshold"]) & (report["psi"] >= 0.2)
        assert report["drifted"].tolist() == rule.tolist()


def _without_quantiles(reference: TrainingReference) -> TrainingReference:
    return replace(
        reference,
        numeric={k: replace(v, quantiles=()) for k, v in reference.numeric.items()},
    )


def test_reference_without_quantiles_falls_back_to_chi_squared_on_deciles(pool: Pool) -> None:
    older = _without_quantiles(pool.reference)
    window = pool.window(500, seed=8)
    report = _by_feature(feature_drift(window, older))
    assert (report["test"] == "chi2").all()
    assert not report["drifted"].any()
    bins = feature_bin_counts(window, older)["torque_nm"]
    chi2 = stats.chisquare(bins, [len(window) / 10] * 10)
    assert report.loc["torque_nm", "statistic"] == pytest.approx(chi2.statistic)
    assert report.loc["torque_nm", "p_value"] == pytest.approx(chi2.pvalue)
    warm = _by_feature(feature_drift(pool.window(500, seed=8, change=_warmer(4.0)), older))
    assert warm.loc[TEMPERATURES, "drifted"].all()
    assert not warm.loc[["torque_nm", "type"], "drifted"].any()


def test_feature_without_values_in_the_window_is_not_tested(pool: Pool) -> None:
    window = pool.window(100, seed=9)
    window["torque_nm"] = np.nan
    report = _by_feature(feature_drift(window, pool.reference))
    torque = report.loc["torque_nm"]
    assert torque["test"] == "none"
    assert torque["rows"] == 0
    assert math.isnan(torque["statistic"]) and math.isnan(torque["p_value"])
    assert not torque["drifted"]
    assert report.loc["power_w", "rows"] == 100


def test_missing_values_are_left_out_of_the_ks_test(pool: Pool) -> None:
    window = pool.window(400, seed=10)
    full = _by_feature(feature_drift(window.iloc[:300], pool.reference))
    window.loc[300:, "torque_nm"] = np.nan
    gappy = _by_feature(feature_drift(window, pool.reference))
    assert gappy.loc["torque_nm", "rows"] == 300
    assert gappy.loc["torque_nm", "statistic"] == pytest.approx(full.loc["torque_nm", "statistic"])


def test_tied_feature_has_no_psi_against_its_own_training_rows(pool: Pool) -> None:
    # fresh tools: most rows at 0 minutes, so several deciles coincide
    train = pool.train.copy()
    train.loc[train.index[: int(0.6 * len(train))], "tool_wear_min"] = 0
    reference = TrainingReference.from_frame(train, AI4I)
    assert reference.numeric["tool_wear_min"].deciles[:5] == (0.0,) * 5
    shares = reference_shares(reference, "tool_wear_min")
    actual = np.asarray(feature_bin_counts(train, reference)["tool_wear_min"]) / len(train)
    assert sum(shares) == pytest.approx(1.0)
    assert np.abs(np.asarray(shares) - actual).max() <= 0.002
    report = _by_feature(feature_drift(train, reference))
    assert report.loc["tool_wear_min", "psi"] < 0.01
    assert not report["drifted"].any()


# --- the training reference's quantile sketch --------------------------------------------


def test_reference_keeps_the_quantile_sketch_of_every_numeric_feature(pool: Pool) -> None:
    for name, numeric in pool.reference.numeric.items():
        values = pool.train[name].to_numpy("float64")
        assert numeric.quantiles == _sketch(values)
        assert len(numeric.quantiles) == 1001
        assert numeric.quantiles[0] == numeric.min and numeric.quantiles[-1] == numeric.max


def test_numeric_reference_round_trip_keeps_quantiles() -> None:
    numeric = NumericReference(1.0, 9.0, (2.0, 3.0), (1.0, 2.5, 9.0))
    data = numeric.to_dict()
    assert data["quantiles"] == [1.0, 2.5, 9.0]
    assert NumericReference.from_dict(data) == numeric


def test_older_reference_without_quantiles_loads_and_is_tested_by_chi_squared(
    pool: Pool,
) -> None:
    document = pool.reference.to_dict()
    for entry in document["numeric"].values():
        del entry["quantiles"]
    older = TrainingReference.from_dict(document)
    assert all(v.quantiles == () for v in older.numeric.values())
    assert older.numeric["torque_nm"].deciles == pool.reference.numeric["torque_nm"].deciles
    assert TrainingReference.from_dict(pool.reference.to_dict()) == pool.reference
    report = feature_drift(pool.window(300, seed=11), older)
    assert set(report["test"]) == {"chi2"}


# --- the drift verdict over windows -------------------------------------------------------

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
COOLDOWN = timedelta(hours=6)


def _drift(state: DriftState, drifted: bool, **overrides: object) -> tuple[DriftState, bool]:
    arguments: dict[str, object] = {
        "now": NOW,
        "last_retrain": None,
        "training_active": False,
        "windows_needed": 3,
        "cooldown": COOLDOWN,
    }
    arguments.update(overrides)
    decision = decide_drift(state, drifted, **arguments)  # type: ignore[arg-type]
    return decision.state, decision.retrain


def test_retrain_at_exactly_n_consecutive_windows_then_the_count_resets() -> None:
    state = DriftState(after="2024-03-01T00:00:00+00:00")
    seen = []
    for _ in range(7):
        state, retrain = _drift(state, True)
        seen.append((state.consecutive, retrain))
    assert seen == [
        (1, False),
        (2, False),
        (0, True),
        (1, False),
        (2, False),
        (0, True),
        (1, False),
    ]
    assert state.windows == 7
    assert state.after == "2024-03-01T00:00:00+00:00"  # the caller's field is kept


def test_a_clean_window_resets_the_count() -> None:
    state = DriftState()
    for drifted in (True, True, False, True, True):
        state, retrain = _drift(state, drifted)
        assert not retrain
    assert state.consecutive == 2
    state, retrain = _drift(state, True)
    assert retrain


def test_one_window_needed_retrains_on_the_first_drifted_window() -> None:
    _, retrain = _drift(DriftState(), True, windows_needed=1)
    assert retrain
    _, retrain = _drift(DriftState(), False, windows_needed=1)
    assert not retrain


@pytest.mark.parametrize(
    ("since_retrain", "retrain"),
    [
        (COOLDOWN - timedelta(seconds=1), False),
        (COOLDOWN, True),
        (COOLDOWN + timedelta(seconds=1), True),
        (timedelta(0), False),
    ],
    ids=["just-before", "at", "just-after", "same-moment"],
)
def test_cooldown_boundaries(since_retrain: timedelta, retrain: bool) -> None:
    decision = decide_drift(
        DriftState(consecutive=2),
        True,
        now=NOW,
        last_retrain=NOW - since_retrain,
        training_active=False,
        windows_needed=3,
        cooldown=COOLDOWN,
    )
    assert decision.retrain is retrain
    assert decision.state.consecutive == (0 if retrain else 3)
    if not retrain:
        assert "cooling down" in decision.reason
        assert (NOW - since_retrain + COOLDOWN).strftime("%Y-%m-%d %H:%M") in decision.reason


def test_confirmed_drift_during_cooldown_retrains_on_the_next_drifted_window_after_it() -> None:
    last = NOW - timedelta(hours=5)
    state, retrain = _drift(DriftState(consecutive=2), True, last_retrain=last)
    assert not retrain and state.consecutive == 3
    later = NOW + timedelta(hours=1)
    state, retrain = _drift(state, True, last_retrain=last, now=later)
    assert retrain and state.consecutive == 0


def test_no_retrain_while_training_is_active() -> None:
    decision = decide_drift(
        DriftState(consecutive=5),
        True,
        now=NOW,
        last_retrain=None,
        training_active=True,
        windows_needed=3,
        cooldown=COOLDOWN,
    )
    assert not decision.retrain
    assert decision.state.consecutive == 6
    assert "training run is active" in decision.reason


def test_windows_needed_below_one_is_an_error() -> None:
    with pytest.raises(ValueError, match="windows_needed must be at least 1, got 0"):
        _drift(DriftState(), True, windows_needed=0)


def test_drift_state_round_trip() -> None:
    state = DriftState(consecutive=2, after="2024-03-01T10:00:00+00:00", windows=9)
    assert DriftState.from_dict(state.to_dict()) == state
    assert DriftState.from_dict(None) == DriftState()
    assert DriftState.from_dict({}) == DriftState()


# --- outcomes -----------------------------------------------------------------------------


def test_outcomes_by_source_headers_and_by_declared_names() -> None:
    generated = generate_ai4i(20, seed=1)
    # a CSV as it lands: the source headers, every other column ignored
    frame = generated[["UDI", "Product ID", "Machine failure"]].astype(str)
    valid, refused = parse_outcomes(frame, AI4I, "labels.csv")
    assert refused.empty and list(refused.columns) == OUTCOME_PROBLEM_COLUMNS
    assert valid["entity_id"].tolist() == generated["UDI"].tolist()
    assert valid["outcome"].tolist() == generated["Machine failure"].tolist()
    assert valid.dtypes.astype(str).tolist() == ["int64", "int64"]
    canonical = pd.DataFrame({"udi": [3, 4], "machine_failure": [1.0, 0.0]})
    valid, refused = parse_outcomes(canonical, AI4I, "labels.parquet")
    assert refused.empty
    assert valid.to_dict("list") == {"entity_id": [3, 4], "outcome": [1, 0]}


def test_outcomes_from_a_csv_file_read_as_landed(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("UDI,Machine failure,note\n1,0,ok\n2,1,\n2.0,0,fixed\nabc,1,\n")
    valid, refused = parse_outcomes(pd.read_csv(path), AI4I, path.name)
    assert valid.to_dict("list") == {"entity_id": [1, 2], "outcome": [0, 0]}
    # row 2 is corrected by row 3 (the same entity): refused as superseded, naming row 3
    assert refused[["row_number", "column", "value"]].to_dict("list") == {
        "row_number": [2, 4],
        "column": ["udi", "udi"],
        "value": ["2", "abc"],
    }
    assert refused["reason"].iloc[0] == "superseded by row 3, the last line for this entity id"


@pytest.mark.parametrize(
    ("columns", "missing"),
    [
        ({"UDI": ["1"]}, ["'machine_failure' (or 'Machine failure')"]),
        ({"machine_failure": ["1"]}, ["'udi' (or 'UDI')"]),
        ({"other": ["1"]}, ["'udi' (or 'UDI')", "'machine_failure' (or 'Machine failure')"]),
    ],
)
def test_missing_column_error_names_the_file_and_column(
    columns: dict[str, list[str]], missing: list[str]
) -> None:
    with pytest.raises(ValueError) as error:
        parse_outcomes(pd.DataFrame(columns), AI4I, "labels-0301.csv")
    message = str(error.value)
    assert message.startswith("labels-0301.csv: ")
    for name in missing:
        assert name in message


def test_bad_ids_and_outcomes_are_refused_with_row_column_and_reason() -> None:
    frame = pd.DataFrame(
        {
            "UDI": ["1", "x", "3.5", "4", "inf", "", "7", "8", "1e30", "10"],
            "Machine failure": ["0", "1", "1", "2", "1", "0", "", "yes", "1", "1"],
        },
        dtype="str",
    )
    valid, refused = parse_outcomes(frame, AI4I, "labels.csv")
    assert valid.to_dict("list") == {"entity_id": [1, 10], "outcome": [0, 1]}
    assert list(refused.columns) == OUTCOME_PROBLEM_COLUMNS
    assert (refused["source_file"] == "labels.csv").all()
    got = {
        (int(r.row_number), r.column, r.value, r.reason) for r in refused.itertuples(index=False)
    }
    id_reason, outcome_reason = "entity id is not a whole number", "outcome is not 0 or 1"
    assert got == {
        (2, "udi", "x", id_reason),
        (3, "udi", "3.5", id_reason),
        (5, "udi", "inf", id_reason),
        (6, "udi", "", id_reason),
        (9, "udi", "1e30", id_reason),
        (4, "machine_failure", "2", outcome_reason),
        (7, "machine_failure", "", outcome_reason),
        (8, "machine_failure", "yes", outcome_reason),
    }
    # nothing lost: every row is either kept or refused (once, even when both are bad)
    assert len(valid) + len(refused) == len(frame)


def test_a_row_with_both_bad_id_and_bad_outcome_is_refused_once_for_its_id() -> None:
    frame = pd.DataFrame({"UDI": ["x"], "Machine failure": ["7"]}, dtype="str")
    valid, refused = parse_outcomes(frame, AI4I, "labels.csv")
    assert valid.empty
    assert refused[["row_number", "column"]].values.tolist() == [[1, "udi"]]


def test_duplicate_entities_keep_the_last_line_and_refuse_the_earlier_naming_it() -> None:
    frame = pd.DataFrame({"UDI": [5, 6, 5, 7, 5], "Machine failure": [0, 0, 1, 1, 1]})
    valid, refused = parse_outcomes(frame, AI4I, "labels.csv")
    assert dict(zip(valid["entity_id"], valid["outcome"], strict=True)) == {5: 1, 6: 0, 7: 1}
    assert valid["entity_id"].is_unique
    assert refused[["row_number", "column", "value", "reason"]].values.tolist() == [
        [r, "udi", "5", "superseded by row 5, the last line for this entity id"] for r in (1, 3)
    ]
    assert len(valid) + len(refused) == len(frame)  # every line accounted for


def test_an_empty_labels_file_gives_no_outcomes() -> None:
    frame = pd.DataFrame({"UDI": pd.Series(dtype="str"), "Machine failure": pd.Series(dtype="str")})
    valid, refused = parse_outcomes(frame, AI4I, "labels.csv")
    assert valid.empty and list(valid.columns) == ["entity_id", "outcome"]
    assert refused.empty and list(refused.columns) == OUTCOME_PROBLEM_COLUMNS


def _chunks(frame: pd.DataFrame, size: int) -> list[tuple[pa.Table, np.ndarray]]:
    """``frame`` as the landing reader hands it out: text tables and their row numbers."""
    table = pa.Table.from_pandas(frame.astype(str), preserve_index=False)
    return [
        (table.slice(start, size), np.arange(start + 1, min(start + size, len(frame)) + 1))
        for start in range(0, len(frame), size)
    ]


def test_chunks_give_what_one_frame_gives_duplicates_across_chunks_included() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "UDI": rng.integers(1, 400, 1000).astype(str),
            "note": "x",
            "Machine failure": rng.integers(0, 2, 1000).astype(str),
        }
    )
    frame.loc[[7, 500, 999], "UDI"] = ["=1+1", "nan", ""]
    frame.loc[[8, 501], "Machine failure"] = ["2", "+cmd|' /C calc'!A0"]
    whole_valid, whole_refused = parse_outcomes(frame.astype(str), AI4I, "labels.csv")
    parser = OutcomeParser(AI4I, "labels.csv")
    for table, rows in _chunks(frame, 64):
        parser.add(table, rows)
    parsed = parser.result()

    pd.testing.assert_frame_equal(parsed.valid, whole_valid)
    pd.testing.assert_frame_equal(parsed.refused, whole_refused)
    assert parsed.rows == 1000 == len(parsed.valid) + parsed.rows_refused
    assert parsed.refused["row_number"].is_monotonic_increasing
    assert parsed.valid["entity_id"].is_unique
    # the refused rows name the later line wherever it was, across chunk boundaries
    superseded = parsed.refused[parsed.refused["reason"].str.startswith("superseded by row ")]
    later = superseded["reason"].str.extract(r"row (\d+)")[0].astype(int)
    assert (later > superseded["row_number"]).all() and later.max() > 64
    formulas = parsed.refused.set_index("row_number")["value"]
    assert formulas[8] == "=1+1" and formulas[502] == "+cmd|' /C calc'!A0"  # stored literally


def test_refused_rows_beyond_the_cap_are_counted_not_kept() -> None:
    frame = pd.DataFrame({"UDI": ["x"] * 50 + ["1"], "Machine failure": ["1"] * 51})
    parser = OutcomeParser(AI4I, "labels.csv", max_refused_kept=10)
    parser.add(frame)
    parser.add_unparsed(52, "expected 2 fields, found 3", "1,0,9")
    parsed = parser.result()
    assert (parsed.rows, parsed.rows_refused, len(parsed.valid)) == (52, 51, 1)
    assert parsed.refused["row_number"].tolist() == list(range(1, 11))


def test_an_unparsed_line_is_refused_as_a_whole_row_clipped() -> None:
    parser = OutcomeParser(AI4I, "labels.csv")
    parser.add(pd.DataFrame({"UDI": ["1"], "Machine failure": ["0"]}))
    parser.add_unparsed(2, "expected 2 fields, found 3", "2,1," + "z" * 5000)
    parsed = parser.result()
    [row] = parsed.refused.to_dict("records")
    assert (row["row_number"], row["column"], row["reason"]) == (
        2,
        "<row>",
        "expected 2 fields, found 3",
    )
    assert row["value"].endswith("... (5,004 characters)") and len(row["value"]) < 1100


@pytest.mark.parametrize(
    ("columns", "reason", "column"),
    [
        (
            {"UDI": [1], "udi": [1], "Machine failure": [0]},
            "the column is given 2 times ('UDI' and 'udi')",
            "udi",
        ),
        ({"UDI": [[1, 2]], "Machine failure": [0]}, "column 'UDI' holds list<item: int64>", "udi"),
        (
            {"UDI": [1], "Machine failure": [pd.Timestamp("2024-01-01")]},
            "column 'Machine failure' holds timestamp",
            "machine_failure",
        ),
        ({"UDI": [b"\x01"], "Machine failure": [0]}, "column 'UDI' holds binary", "udi"),
    ],
    ids=["both-names", "lists", "dates", "bytes"],
)
def test_an_ambiguous_or_mistyped_column_rejects_the_file_naming_it(
    columns: dict[str, list[object]], reason: str, column: str
) -> None:
    parser = OutcomeParser(AI4I, "labels.parquet")
    with pytest.raises(FileRejected) as error:
        parser.add(pa.table(columns))
    assert error.value.source_file == "labels.parquet"
    assert error.value.reason.startswith(reason), error.value.reason
    assert error.value.column == column


def test_typed_columns_as_parquet_holds_them() -> None:
    table = pa.table(
        {
            "udi": pa.array([1, 2, None, 4, 5], pa.int64()),
            "machine_failure": pa.array([True, False, True, None, True]),
        }
    )
    parser = OutcomeParser(AI4I, "labels.parquet")
    parser.add(table, np.arange(1, 6))
    parsed = parser.result()
    assert parsed.valid.to_dict("list") == {"entity_id": [1, 2, 5], "outcome": [1, 0, 1]}
    assert parsed.refused[["row_number", "column", "value"]].values.tolist() == [
        [3, "udi", "<missing>"],
        [4, "machine_failure", "<missing>"],
    ]


# --- joining outcomes with predictions ----------------------------------------------------


def _stamp(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _predictions(rows: list[tuple[int, str, int, str, str]]) -> pd.DataFrame:
    """(entity id, event time, predicted label, model version, scored at) per row."""
    return pd.DataFrame(
        {
            "entity_id": np.array([r[0] for r in rows], dtype="int64"),
            "event_time": [_stamp(r[1]) for r in rows],
            "failure_probability": [0.9 if r[2] else 0.1 for r in rows],
            "predicted_failure": np.array([r[2] for r in rows], dtype="int64"),
            "model_version": [r[3] for r in rows],
            "scored_at": [_stamp(r[4]) for r in rows],
        }
    )


def test_join_uses_the_latest_prediction_and_drops_entities_without_one() -> None:
    outcomes = pd.DataFrame({"entity_id": [1, 2, 3], "outcome": [1, 0, 1]})
    predictions = _predictions(
        [
            (1, "2024-03-01 01:00", 1, "4", "2024-03-01 13:00"),  # the re-score, listed first
            (1, "2024-03-01 01:00", 0, "3", "2024-03-01 02:00"),
            (2, "2024-03-01 02:00", 0, "3", "2024-03-01 02:00"),
            (9, "2024-03-01 03:00", 1, "3", "2024-03-01 03:00"),  # no outcome yet
        ]
    )
    joined = join_outcomes(outcomes, predictions).set_index("entity_id")
    assert sorted(joined.index) == [1, 2]  # 3 was never scored, 9 has no outcome
    assert joined.loc[1, "predicted_failure"] == 1
    assert joined.loc[1, "model_version"] == "4"
    assert joined.loc[1, "outcome"] == 1
    assert joined.loc[2, "predicted_failure"] == 0
    assert {"event_time", "failure_probability", "scored_at"} <= set(joined.columns)


def test_join_with_no_predictions_is_empty() -> None:
    outcomes = pd.DataFrame({"entity_id": [1], "outcome": [1]})
    assert join_outcomes(outcomes, _predictions([])).empty


# --- live metrics per window --------------------------------------------------------------


def _joined(rows: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    """(event time, outcome, predicted label, model version) per row."""
    return pd.DataFrame(
        {
            "entity_id": np.arange(len(rows), dtype="int64"),
            "outcome": [r[1] for r in rows],
            "event_time": [pd.Timestamp(r[0]) for r in rows],
            "predicted_failure": [r[2] for r in rows],
            "model_version": [r[3] for r in rows],
        }
    )


def test_live_recall_and_precision_per_twelve_hour_window() -> None:
    joined = _joined(
        [
            # window 2024-03-01 00:00-12:00: 3 positives, 2 caught; 4 predicted positives
            ("2024-03-01T00:00:00+00:00", 1, 1, "3"),
            ("2024-03-01T05:00:00+00:00", 1, 1, "3"),
            ("2024-03-01T06:00:00+00:00", 1, 0, "3"),
            ("2024-03-01T07:00:00+00:00", 0, 1, "10"),
            ("2024-03-01T11:59:59+00:00", 0, 1, "3"),
            ("2024-03-01T13:30:00+02:00", 0, 0, "3"),  # 11:30 UTC
            # window 12:00-24:00: no positive outcome, one false alarm
            ("2024-03-01T12:00:00+00:00", 0, 1, "4"),
            ("2024-03-01T23:59:59+00:00", 0, 0, "4"),
            # window 2024-03-02 00:00-12:00: positives, nothing predicted
            ("2024-03-02T00:00:00+00:00", 1, 0, "4"),
        ]
    )
    metrics = live_metrics(joined.sample(frac=1.0, random_state=1))  # order does not matter
    assert list(metrics.columns) == LIVE_METRIC_COLUMNS
    assert metrics["window_start"].tolist() == [
        _stamp("2024-03-01 00:00"),
        _stamp("2024-03-01 12:00"),
        _stamp("2024-03-02 00:00"),
    ]
    assert (metrics["window_end"] - metrics["window_start"] == pd.Timedelta(hours=12)).all()
    first, second, third = (metrics.iloc[i] for i in range(3))
    assert (first["rows"], first["positives"], first["predicted_positives"]) == (6, 3, 4)
    assert first["true_positives"] == 2
    assert first["recall"] == pytest.approx(2 / 3)
    assert first["precision"] == pytest.approx(2 / 4)
    assert first["model_versions"] == "3,10"
    assert (second["rows"], second["positives"], second["true_positives"]) == (2, 0, 0)
    assert math.isnan(second["recall"])  # no positive outcome: recall undefined
    assert second["precision"] == 0.0  # a predicted positive, none right
    assert third["recall"] == 0.0
    assert math.isnan(third["precision"])  # nothing predicted positive
    assert metrics["rows"].dtype == "int64"


def test_window_start_floors_to_midnight_and_noon_utc() -> None:
    stamps = pd.Series(
        [
            pd.Timestamp("2024-03-01T11:59:59.999+00:00"),
            pd.Timestamp("2024-03-01T12:00:00+00:00"),
            pd.Timestamp("2024-03-01T01:00:00-05:00"),  # 06:00 UTC
        ]
    )
    assert window_start(stamps).tolist() == [
        _stamp("2024-03-01 00:00"),
        _stamp("2024-03-01 12:00"),
        _stamp("2024-03-01 00:00"),
    ]


def test_no_joined_rows_give_no_windows() -> None:
    metrics = live_metrics(_joined([]))
    assert metrics.empty and list(metrics.columns) == LIVE_METRIC_COLUMNS


# --- decay --------------------------------------------------------------------------------


def _metrics(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    """(window start, positives, recall) per window."""
    frame = pd.DataFrame(
        {
            "window_start": [_stamp(r[0]) for r in rows],
            "positives": np.array([r[1] for r in rows], dtype="int64"),
            "recall": [r[2] for r in rows],
        }
    )
    frame["window_end"] = frame["window_start"] + pd.Timedelta(hours=12)
    return frame


def _decay(metrics: pd.DataFrame, **overrides: object) -> tuple[bool, str | None, str]:
    arguments: dict[str, object] = {
        "recall_floor": 0.6,
        "min_positives": 10,
        "judged_through": None,
        "now": NOW,
        "last_retrain": None,
        "training_active": False,
        "cooldown": COOLDOWN,
    }
    arguments.update(overrides)
    decision = decide_decay(metrics, **arguments)  # type: ignore[arg-type]
    return decision.retrain, decision.window, decision.reason


def test_low_recall_on_enough_positives_requests_a_retrain() -> None:
    retrain, window, reason = _decay(_metrics([("2024-03-01 00:00", 12, 0.5)]))
    assert retrain
    assert window == "2024-03-01T00:00:00+00:00"
    assert "0.500 < 0.6" in reason and "12 positives" in reason


@pytest.mark.parametrize(
    ("positives", "judged"), [(9, False), (10, True), (11, True)], ids=["9", "10", "11"]
)
def test_minimum_positives(positives: int, judged: bool) -> None:
    retrain, window, _ = _decay(_metrics([("2024-03-01 00:00", positives, 0.1)]))
    assert retrain is judged
    assert (window is not None) is judged


@pytest.mark.parametrize(
    ("recall", "retrain"),
    [(0.6, False), (0.6 + 1e-9, False), (0.6 - 1e-9, True), (0.0, True)],
    ids=["at-floor", "above", "just-below", "zero"],
)
def test_recall_floor_boundary(recall: float, retrain: bool) -> None:
    decided, window, _ = _decay(_metrics([("2024-03-01 12:00", 20, recall)]))
    assert decided is retrain
    assert window == "2024-03-01T12:00:00+00:00"  # judged either way


def test_only_the_newest_judgeable_window_is_judged() -> None:
    metrics = _metrics(
        [
            ("2024-03-02 00:00", 3, 0.0),  # too few positives to judge
            ("2024-03-01 12:00", 15, 0.9),  # newest judgeable: fine
            ("2024-03-01 00:00", 15, 0.2),  # older and bad
        ]
    )
    retrain, window, _ = _decay(metrics)
    assert not retrain
    assert window == "2024-03-01T12:00:00+00:00"


def test_a_window_is_judged_once() -> None:
    metrics = _metrics([("2024-03-01 00:00", 15, 0.2), ("2024-03-01 12:00", 15, 0.3)])
    retrain, window, _ = _decay(metrics)
    assert retrain and window == "2024-03-01T12:00:00+00:00"
    retrain, again, reason = _decay(metrics, judged_through=window)
    assert not retrain and again is None
    assert "no new window" in reason
    newer = pd.concat([metrics, _metrics([("2024-03-02 00:00", 11, 0.1)])], ignore_index=True)
    retrain, window, _ = _decay(newer, judged_through=window)
    assert retrain and window == "2024-03-02T00:00:00+00:00"


@pytest.mark.parametrize(
    ("since_retrain", "retrain"),
    [(COOLDOWN - timedelta(seconds=1), False), (COOLDOWN, True), (COOLDOWN * 2, True)],
    ids=["just-before", "at", "after"],
)
def test_decay_cooldown_boundaries(since_retrain: timedelta, retrain: bool) -> None:
    decided, window, reason = _decay(
        _metrics([("2024-03-01 00:00", 15, 0.2)]), last_retrain=NOW - since_retrain
    )
    assert decided is retrain
    assert window == "2024-03-01T00:00:00+00:00"  # remembered: judged, answered by that retrain
    assert ("cooling down" in reason) is not retrain


def test_decay_waits_while_training_is_active() -> None:
    retrain, window, reason = _decay(
        _metrics([("2024-03-01 00:00", 15, 0.2)]), training_active=True
    )
    assert not retrain and window is not None
    assert "training run is active" in reason


def test_a_window_without_positives_is_never_judged() -> None:
    # recall is NaN there; even with min_positives 0 it must not count as decayed
    retrain, window, _ = _decay(_metrics([("2024-03-01 00:00", 0, math.nan)]), min_positives=0)
    assert not retrain and window is None


def test_decay_on_metrics_computed_and_stored_as_parquet(tmp_path: Path) -> None:
    rows = [("2024-03-01T02:00:00+00:00", 1, 1, "3")] * 4 + [
        ("2024-03-01T03:00:00+00:00", 1, 0, "3")
    ] * 8
    path = tmp_path / "live_metrics.parquet"
    live_metrics(_joined(rows)).to_parquet(path)
    retrain, window, reason = _decay(pd.read_parquet(path))
    assert retrain
    assert window == "2024-03-01T00:00:00+00:00"
    assert "0.333" in reason


def test_no_metrics_judge_nothing() -> None:
    empty = pd.DataFrame(columns=LIVE_METRIC_COLUMNS)
    assert _decay(empty)[:2] == (False, None)
    assert _decay(empty, judged_through="2024-03-01T00:00:00+00:00")[:2] == (False, None)


# --- slowly wandering features (the real file's temperatures are random walks) -----------


def _real_rows(path: Any) -> pd.DataFrame:
    frame = pd.read_csv(path).rename(columns=AI4I.source_to_name)
    for derived in AI4I.derived:
        frame[derived.name] = derived.compute(frame)
    return frame


def test_windows_of_the_real_file_are_not_drift_but_shifted_ones_are(real_ai4i: Any) -> None:
    rows = _real_rows(real_ai4i)
    rng = np.random.default_rng(0)
    # training rows: a random 70 % in their original (time) order, as a split keeps them
    train = rows.iloc[np.sort(rng.permutation(len(rows))[:7000])]
    reference = TrainingReference.from_frame(train, AI4I)
    assert reference.natural_window == 500
    # the temperatures wander far by themselves; torque does not
    assert reference.natural_psi["air_temperature_k"] > 2.0
    assert reference.natural_psi["torque_nm"] < 0.2
    flagged = []
    for start in range(0, len(rows) - 499, 500):
        report = feature_drift(rows.iloc[start : start + 500], reference)
        # every window differs significantly (a random walk), none strays farther than
        # the training rows' own windows did
        flagged += report.loc[report["drifted"], "feature"].tolist()
    assert flagged == []
    # a random 500 rows, 4 K warmer: inside the natural wandering by PSI, but a large
    # share of values beyond anything training saw
    shifted = rows.iloc[rng.choice(len(rows), 500, replace=False)].copy()
    for column in ("air_temperature_k", "process_temperature_k"):
        shifted[column] += 4.0
    report = feature_drift(shifted, reference).set_index("feature")
    assert report.loc["air_temperature_k", "psi"] < report.loc["air_temperature_k", "psi_threshold"]
    assert report.loc["air_temperature_k", "out_of_range_share"] > 0.2
    assert set(report.index[report["drifted"]]) == {"air_temperature_k", "process_temperature_k"}


def test_natural_psi_needs_two_windows_and_survives_storage() -> None:
    frame = generate_ai4i(999, seed=3, burn_in=5_000).rename(columns=AI4I.source_to_name)
    for derived in AI4I.derived:
        frame[derived.name] = derived.compute(frame)
    few = TrainingReference.from_frame(frame, AI4I)
    assert few.natural_psi == {} and few.natural_window == 0
    more = TrainingReference.from_frame(frame, AI4I, natural_window=300)
    assert more.natural_window == 300 and set(more.natural_psi) == set(more.features)
    assert all(v >= 0 for v in more.natural_psi.values())
    assert TrainingReference.from_dict(more.to_dict()) == more
    older = more.to_dict()
    del older["natural_psi"], older["natural_window"]
    assert TrainingReference.from_dict(older).natural_psi == {}
