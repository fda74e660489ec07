"""Unit tests of candidate models (mlplatform.core.models)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    FixedThresholdClassifier,
    StratifiedKFold,
    cross_val_predict,
)

from mlplatform.core.evaluation import evaluate
from mlplatform.core.features import build_feature_table, model_inputs
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.models import (
    CANDIDATES,
    Candidate,
    TrainedModel,
    build_pipeline,
    threshold_for_recall,
    train_candidate,
)
from mlplatform.core.schema import AI4I
from mlplatform.core.split import SPLIT_COLUMN, stratified_split

from ._frames import feature_table, read_real_ai4i_as_text, train_test

N_ROWS = 600
LEAKAGE_AND_IDS = ["udi", "product_id", "twf", "hdf", "pwf", "osf", "rnf"]
# Default hyperparameters; the Gaussian process (cubic in rows) gets a small row cap.
FAST: dict[str, dict[str, Any]] = {
    "gaussian_process": {"max_fit_rows": 80},
    "logistic_regression": {},
    "random_forest": {},
    "hist_gradient_boosting": {},
}


@pytest.fixture(scope="module")
def parts() -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test(N_ROWS, seed=3, test_size=0.2, split_seed=0)
    assert train[AI4I.target].sum() >= 10
    return train, test


@pytest.fixture(scope="module")
def logistic(parts: tuple[pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    return train_candidate(parts[0], AI4I, model_name="logistic_regression", seed=0)


# --- fitting on training rows only -----------------------------------------------------------


def test_scaler_is_fitted_on_training_rows_only(
    parts: tuple[pd.DataFrame, pd.DataFrame], logistic: TrainedModel
) -> None:
    train, test = parts
    scaler = logistic.pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    numeric = AI4I.numeric_features
    assert list(scaler.feature_names_in_) == numeric

    train_x = train[numeric].astype("float64")
    np.testing.assert_allclose(scaler.mean_, train_x.mean().to_numpy())
    np.testing.assert_allclose(scaler.scale_, train_x.std(ddof=0).to_numpy())

    all_x = pd.concat([train, test])[numeric].astype("float64")
    assert not np.allclose(scaler.mean_, all_x.mean().to_numpy())
    assert not np.allclose(scaler.scale_, all_x.std(ddof=0).to_numpy())


def test_scaler_is_fitted_on_training_rows_only_when_threshold_is_tuned(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    model = train_candidate(train, AI4I, model_name="logistic_regression", threshold="tune")
    scaler = model.pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    train_x = train[AI4I.numeric_features].astype("float64")
    np.testing.assert_allclose(scaler.mean_, train_x.mean().to_numpy())
    np.testing.assert_allclose(scaler.scale_, train_x.std(ddof=0).to_numpy())


def test_trained_model_records_its_fit(
    parts: tuple[pd.DataFrame, pd.DataFrame], logistic: TrainedModel
) -> None:
    train, _ = parts
    assert logistic.model_name == "logistic_regression"
    assert logistic.n_train_rows == len(train)
    assert logistic.n_fit_rows == len(train)
    assert logistic.threshold == 0.5
    assert logistic.threshold_source == "candidate default"
    assert logistic.seed == 0
    assert logistic.fit_seconds >= 0.0
    assert logistic.params == dict(CANDIDATES["logistic_regression"].defaults)


def test_pipeline_sees_no_identifier_leakage_or_target(logistic: TrainedModel) -> None:
    names = list(logistic.pipeline.feature_names_in_)
    assert names == AI4I.model_features
    assert not set(names) & {*LEAKAGE_AND_IDS, AI4I.target}


def test_pipeline_ignores_extra_columns_at_prediction(
    parts: tuple[pd.DataFrame, pd.DataFrame], logistic: TrainedModel
) -> None:
    _, test = parts
    x = model_inputs(test, AI4I)
    polluted = x.assign(twf=1, osf=1, udi=test["udi"].to_numpy())[[*x.columns, "twf"]]
    np.testing.assert_allclose(
        logistic.pipeline.predict_proba(polluted)[:, 1], logistic.pipeline.predict_proba(x)[:, 1]
    )


# --- every candidate -------------------------------------------------------------------------


def test_candidate_registry_names() -> None:
    assert set(CANDIDATES) == set(FAST)
    for name, candidate in CANDIDATES.items():
        assert candidate.name == name
        assert candidate.description
    assert CANDIDATES["gaussian_process"].max_fit_rows is not None


@pytest.mark.parametrize("name", sorted(FAST))
def test_every_candidate_trains_and_predicts_probabilities(
    name: str, parts: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = parts
    options = FAST[name]
    model = train_candidate(train, AI4I, model_name=name, seed=1, **options)
    assert model.model_name == name
    cap = options.get("max_fit_rows")
    assert model.n_fit_rows == (cap if cap is not None else len(train))

    x = model_inputs(test, AI4I)
    proba = model.pipeline.predict_proba(x)
    assert proba.shape == (len(test), 2)
    assert np.all((proba >= 0.0) & (proba <= 1.0))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    labels = model.pipeline.predict(x)
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (proba[:, 1] >= model.threshold).astype(int))


def test_candidate_params_override_defaults(parts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    model = train_candidate(
        parts[0], AI4I, model_name="random_forest", params={"n_estimators": 7}, seed=3
    )
    forest = model.pipeline.named_steps["classifier"].estimator_
    assert forest.n_estimators == 7
    assert forest.random_state == 3
    assert model.params["n_estimators"] == 7
    assert model.params["class_weight"] == "balanced_subsample"


@pytest.mark.parametrize("cap", [40, 100])
def test_row_cap_fits_a_stratified_subsample(
    parts: tuple[pd.DataFrame, pd.DataFrame], cap: int
) -> None:
    train, _ = parts
    model = train_candidate(train, AI4I, model_name="logistic_regression", max_fit_rows=cap, seed=0)
    assert model.n_fit_rows == cap
    assert model.n_train_rows == len(train)
    classifier = model.pipeline.named_steps["classifier"]
    assert list(classifier.classes_) == [0, 1]
    scaler = model.pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    assert scaler.n_samples_seen_ == cap


def test_row_cap_above_the_row_count_fits_every_row(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    model = train_candidate(
        train, AI4I, model_name="logistic_regression", max_fit_rows=len(train) + 10
    )
    assert model.n_fit_rows == len(train)


def test_unknown_candidate_raises_naming_it(parts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="unknown candidate 'xgboost'") as info:
        train_candidate(parts[0], AI4I, model_name="xgboost")
    assert "logistic_regression" in str(info.value)


def test_unknown_hyperparameter_raises_naming_it(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    with pytest.raises(ValueError, match="n_trees") as info:
        train_candidate(parts[0], AI4I, model_name="random_forest", params={"n_trees": 10})
    assert "random_forest" in str(info.value)
    assert "n_estimators" in str(info.value)  # the known parameters are listed


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_threshold_outside_the_open_unit_interval_raises(
    parts: tuple[pd.DataFrame, pd.DataFrame], threshold: float
) -> None:
    with pytest.raises(ValueError, match="threshold"):
        train_candidate(parts[0], AI4I, model_name="logistic_regression", threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        build_pipeline(AI4I, LogisticRegression(), threshold)


# --- the decision threshold ------------------------------------------------------------------


def test_pipeline_predicts_with_its_configured_threshold(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = parts
    x = model_inputs(pd.concat([train, test]), AI4I)
    positives = {}
    for threshold in (0.01, 0.999):
        model = train_candidate(
            train, AI4I, model_name="logistic_regression", threshold=threshold, seed=0
        )
        classifier = model.pipeline.named_steps["classifier"]
        assert isinstance(classifier, FixedThresholdClassifier)
        assert classifier.threshold == threshold
        proba = model.pipeline.predict_proba(x)[:, 1]
        labels = model.pipeline.predict(x)
        np.testing.assert_array_equal(labels, (proba >= threshold).astype(int))
        positives[threshold] = int(labels.sum())
    assert positives[0.01] > len(x) / 2
    assert positives[0.999] * 5 < positives[0.01]


def test_threshold_none_is_tuned_on_out_of_fold_predictions(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    model = train_candidate(
        train, AI4I, model_name="logistic_regression", threshold="tune", target_recall=0.9,
        cv_folds=4,
    )  # fmt: skip
    assert 0.0 < model.threshold < 1.0
    assert model.threshold != 0.5
    assert "4-fold out-of-fold" in model.threshold_source
    assert "0.9" in model.threshold_source
    assert model.pipeline.named_steps["classifier"].threshold == model.threshold
    # The tuned threshold reaches the target recall on the training rows' out-of-fold
    # scores, hence (for a model that fits the training rows at least as well) on them too.
    x, y = model_inputs(train, AI4I), train[AI4I.target].to_numpy()
    predicted = model.pipeline.predict(x)
    assert predicted[y == 1].mean() >= 0.9


def test_tuned_threshold_comes_from_out_of_fold_scores_of_the_training_rows(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    model = train_candidate(
        train, AI4I, model_name="logistic_regression", threshold="tune", target_recall=0.8,
        cv_folds=3, seed=7,
    )  # fmt: skip
    x, y = model_inputs(train, AI4I), train[AI4I.target].to_numpy()
    probe = build_pipeline(AI4I, CANDIDATES["logistic_regression"].make({}, 7), 0.5)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=7)
    oof = cross_val_predict(probe, x, y, cv=folds, method="predict_proba")[:, 1]
    assert model.threshold == pytest.approx(threshold_for_recall(y, oof, 0.8))
    assert ((oof >= model.threshold) & (y == 1)).sum() / y.sum() >= 0.8


def test_tuned_threshold_is_deterministic(parts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = parts
    a = train_candidate(train, AI4I, model_name="logistic_regression", threshold="tune", seed=5)
    b = train_candidate(train, AI4I, model_name="logistic_regression", threshold="tune", seed=5)
    assert a.threshold == b.threshold


# Scores sorted ascending; positives at 0.35, 0.6, 0.8 and 0.9.
Y_TRUE = np.array([0, 0, 1, 0, 1, 0, 1, 1])
Y_SCORE = np.array([0.1, 0.2, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (1.0, 0.35),  # every positive: down to the lowest positive's score
        (0.75, 0.6),  # three of four positives
        (0.5, 0.8),  # two of four
        (0.25, 0.9),  # one of four
        (0.3, 0.8),  # more than one of four needs two
        (0.74, 0.6),
    ],
)
def test_threshold_for_recall_is_the_highest_meeting_the_target(
    target: float, expected: float
) -> None:
    truth, scores = Y_TRUE.copy(), Y_SCORE.copy()
    chosen = threshold_for_recall(truth, scores, target)
    assert chosen == pytest.approx(expected)
    assert ((scores >= chosen) & (truth == 1)).sum() / truth.sum() >= target
    higher = scores[scores > chosen]
    if higher.size:  # the next higher score no longer meets the target
        next_up = higher.min()
        assert ((scores >= next_up) & (truth == 1)).sum() / truth.sum() < target


def test_threshold_for_recall_is_clipped_into_the_open_interval() -> None:
    assert threshold_for_recall(np.array([0, 1]), np.array([0.0, 1.0]), 1.0) == 1.0 - 1e-6
    low = threshold_for_recall(np.array([1, 0, 1]), np.array([0.0, 0.5, 1.0]), 1.0)
    assert low == 1e-6


@pytest.mark.parametrize("target", [0.0, -0.5, 1.01])
def test_threshold_for_recall_rejects_an_invalid_target(target: float) -> None:
    with pytest.raises(ValueError, match="target_recall"):
        threshold_for_recall(Y_TRUE, Y_SCORE, target)


# --- the real file ---------------------------------------------------------------------------


def test_real_file_model_sees_no_leakage_and_reaches_recall() -> None:
    raw = read_real_ai4i_as_text()
    batch = type_and_validate(raw, AI4I, "ai4i2020.csv")
    assert batch.rows_landed == 10_000
    assert batch.rows_landed == len(batch.valid) + batch.rows_quarantined
    table = build_feature_table(batch.valid, AI4I)
    for column in LEAKAGE_AND_IDS:
        if column != "udi":
            assert column not in table.columns
    split, _ = stratified_split(table, AI4I.target, test_size=0.3, seed=42)
    train = split.loc[split[SPLIT_COLUMN] == "train"]
    test = split.loc[split[SPLIT_COLUMN] == "test"]

    model = train_candidate(train, AI4I, model_name="hist_gradient_boosting", seed=42)

    seen = set(model.pipeline.feature_names_in_)
    assert seen == set(AI4I.model_features)
    assert not seen & {*LEAKAGE_AND_IDS, AI4I.target}
    report = evaluate(model.pipeline, test, AI4I)
    assert report.recall > 0.6


def test_feature_table_helper_is_leak_free() -> None:
    # Guard on the shared builder used above: generated rows carry leakage in the raw file.
    table = feature_table(30, seed=1)
    assert not set(LEAKAGE_AND_IDS[1:]) & set(table.columns)


# --- search spaces ---------------------------------------------------------------------------


def test_every_candidate_declares_a_search_space_over_known_parameters() -> None:
    for candidate in CANDIDATES.values():
        assert candidate.search_space, f"{candidate.name} has nothing to search"
        assert set(candidate.search_space) <= set(candidate.defaults)
    # imbalance: class weighting is searched wherever the classifier supports it
    for name in ("logistic_regression", "random_forest", "hist_gradient_boosting"):
        assert len(CANDIDATES[name].search_space["class_weight"]) >= 2


@pytest.mark.parametrize(
    ("space", "message"),
    [({"n_trees": [10]}, "unknown parameters \\['n_trees'\\]"), ({"C": []}, "no values")],
)
def test_search_space_must_name_known_parameters_with_values(
    space: dict[str, list[Any]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Candidate("toy", "toy", LogisticRegression, {"C": 1.0}, search_space=space)


def test_gaussian_process_with_a_fixed_kernel_is_not_optimised(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    params = {"optimize_kernel": False, "amplitude": 10.0, "length_scale": 2.0}
    model = train_candidate(
        parts[0], AI4I, model_name="gaussian_process", params=params, threshold=0.1,
        max_fit_rows=100,
    )  # fmt: skip
    gp = model.pipeline.named_steps["classifier"].estimator_
    assert gp.kernel_.k1.constant_value == 10.0
    assert gp.kernel_.k2.length_scale == 2.0
    assert model.n_fit_rows == 100
