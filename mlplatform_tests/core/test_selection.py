"""Unit tests of the candidate search and champion selection (mlplatform.core.selection)."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline

from mlplatform.core import models
from mlplatform.core.evaluation import evaluate
from mlplatform.core.features import build_feature_table, model_inputs
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.models import CANDIDATES, Candidate
from mlplatform.core.schema import AI4I
from mlplatform.core.selection import (
    DEFAULT_CANDIDATES,
    SearchResult,
    SelectionRule,
    Trial,
    search_and_fit,
    search_candidate,
    search_configurations,
    select_champion,
)
from mlplatform.core.split import SPLIT_COLUMN, stratified_split

from ._frames import read_real_ai4i_as_text

N_ROWS = 2_000
FAST = ["logistic_regression", "hist_gradient_boosting"]


@pytest.fixture(scope="module")
def parts() -> tuple[pd.DataFrame, pd.DataFrame]:
    raw = generate_ai4i(N_ROWS, seed=21, burn_in=5_000).astype(str)
    batch = type_and_validate(raw, AI4I, "generated.csv")
    table = build_feature_table(batch.valid, AI4I)
    split, _ = stratified_split(table, AI4I.target, test_size=0.3, seed=0)
    train = split.loc[split[SPLIT_COLUMN] == "train"]
    test = split.loc[split[SPLIT_COLUMN] == "test"]
    assert train[AI4I.target].sum() >= 30
    return train, test


# --- configurations --------------------------------------------------------------------------


def test_configurations_cover_a_small_grid_and_sample_a_large_one() -> None:
    forest = CANDIDATES["random_forest"]
    grid_size = int(np.prod([len(v) for v in forest.search_space.values()]))
    everything = search_configurations(forest, grid_size + 5, seed=0)
    assert len(everything) == grid_size
    assert len({tuple(sorted(map(str, c.items()))) for c in everything}) == grid_size

    sample = search_configurations(forest, 3, seed=0)
    assert len(sample) == 3
    for config in sample:
        assert set(config) == set(forest.defaults)  # complete: defaults under searched values
        for name, values in forest.search_space.items():
            assert config[name] in values
    assert search_configurations(forest, 3, seed=0) == sample
    assert any(search_configurations(forest, 3, seed=s) != sample for s in range(1, 5))


def test_no_search_is_the_defaults_alone() -> None:
    for candidate in CANDIDATES.values():
        assert search_configurations(candidate, 0, seed=0) == [dict(candidate.defaults)]
    with pytest.raises(ValueError, match="n_iter"):
        search_configurations(CANDIDATES["random_forest"], -1, seed=0)


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_every_configuration_of_every_search_space_builds(name: str) -> None:
    candidate = CANDIDATES[name]
    for config in search_configurations(candidate, 10_000, seed=0):
        candidate.make(config, seed=0)  # no unknown or invalid parameter


# --- the search sees training rows only ------------------------------------------------------


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, pd.Index]]:
    """Records the index of every frame a pipeline is fitted on or scores."""
    calls: list[tuple[str, pd.Index]] = []
    fit, predict_proba = Pipeline.fit, Pipeline.predict_proba

    def spy_fit(self: Pipeline, X: pd.DataFrame, y: Any = None, **kw: Any) -> Pipeline:
        calls.append(("fit", X.index.copy()))
        return fit(self, X, y, **kw)

    def spy_predict_proba(self: Pipeline, X: pd.DataFrame, **kw: Any) -> np.ndarray:
        calls.append(("predict_proba", X.index.copy()))
        return predict_proba(self, X, **kw)

    monkeypatch.setattr(Pipeline, "fit", spy_fit)
    monkeypatch.setattr(Pipeline, "predict_proba", spy_predict_proba)
    return calls


def test_search_fits_and_scores_training_rows_only_out_of_fold(
    parts: tuple[pd.DataFrame, pd.DataFrame], spy: list[tuple[str, pd.Index]]
) -> None:
    train, test = parts
    result = search_candidate(train, AI4I, "logistic_regression", n_iter=2, cv_folds=3, seed=0)
    assert len(result.trials) == 2
    assert [kind for kind, _ in spy] == ["fit", "predict_proba"] * 6
    scored: list[pd.Index] = []
    for (_, fitted), (_, predicted) in zip(spy[0::2], spy[1::2], strict=True):
        assert fitted.isin(train.index).all() and predicted.isin(train.index).all()
        assert not fitted.isin(test.index).any() and not predicted.isin(test.index).any()
        assert not fitted.intersection(predicted).size  # scored only by a model that never saw it
        scored.append(predicted)
    for first in (0, 3):  # each configuration scores every training row exactly once
        rows = scored[first].append(scored[first + 1]).append(scored[first + 2])
        assert rows.sort_values().equals(train.index.sort_values())


def test_champion_is_refitted_on_every_training_row_and_no_test_row(
    parts: tuple[pd.DataFrame, pd.DataFrame], spy: list[tuple[str, pd.Index]]
) -> None:
    train, test = parts
    outcome = search_and_fit(train, AI4I, ["logistic_regression"], n_iter=1, cv_folds=3, seed=0)
    fits = [index for kind, index in spy if kind == "fit"]
    assert all(not f.isin(test.index).any() for f in fits)
    assert fits[-1].sort_values().equals(train.index.sort_values())
    assert outcome.model.n_fit_rows == outcome.model.n_train_rows == len(train)


def test_test_rows_passed_by_mistake_would_change_the_result(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    # The guard above matters: the search's figures depend on the rows it is given.
    train, test = parts
    alone = search_candidate(train, AI4I, "logistic_regression", n_iter=1, seed=0)
    leaked = search_candidate(pd.concat([train, test]), AI4I, "logistic_regression", n_iter=1)
    assert leaked.n_train_rows == len(train) + len(test)
    assert alone.best.threshold != leaked.best.threshold


# --- the threshold travels with the refitted pipeline ----------------------------------------


def test_tuned_threshold_travels_with_the_refitted_pipeline(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = parts
    outcome = search_and_fit(train, AI4I, FAST, n_iter=2, cv_folds=3, seed=1)
    model, winner = outcome.model, outcome.selection.winner
    assert model.model_name == winner.name
    assert model.params == winner.best.params
    assert model.threshold == winner.best.threshold
    assert model.threshold != 0.5
    assert "out-of-fold" in model.threshold_source and "0.85" in model.threshold_source
    classifier = model.pipeline.named_steps["classifier"]
    assert isinstance(classifier, FixedThresholdClassifier)
    assert classifier.threshold == model.threshold
    scaler = model.pipeline.named_steps["preprocess"].named_transformers_["numeric"]
    assert scaler.n_samples_seen_ == len(train)

    # the artifact, as serialised for the registry, predicts with that threshold
    restored = pickle.loads(pickle.dumps(model.pipeline))
    x = model_inputs(test, AI4I)
    proba = restored.predict_proba(x)[:, 1]
    np.testing.assert_array_equal(restored.predict(x), (proba >= model.threshold).astype(int))
    assert evaluate(restored, test, AI4I) == evaluate(model.pipeline, test, AI4I)


def test_tuned_threshold_reaches_the_target_recall_out_of_fold(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    rule = SelectionRule(target_recall=0.9)
    result = search_candidate(train, AI4I, "hist_gradient_boosting", rule=rule, n_iter=2)
    for trial in result.trials:
        assert trial.recall >= 0.9 and trial.meets_target
        assert 0.0 < trial.precision <= 1.0
        assert 0.0 < trial.pr_auc <= 1.0


# --- the selection rule ----------------------------------------------------------------------


def _trial(precision: float, recall: float, pr_auc: float, target: float = 0.85) -> Trial:
    return Trial(
        params={},
        threshold=0.3,
        recall=recall,
        precision=precision,
        pr_auc=pr_auc,
        meets_target=recall >= target,
        seconds=0.0,
    )


def _result(name: str, best: Trial, rule: SelectionRule | None = None) -> SearchResult:
    return SearchResult(
        name=name,
        trials=(best,),
        best=best,
        rule=rule or SelectionRule(),
        cv_folds=3,
        seed=0,
        n_train_rows=100,
        max_fit_rows=None,
        fit_rows_per_fold=66,
        n_planned=1,
        stopped_by_budget=False,
        seconds=0.0,
    )


def test_rule_picks_the_highest_precision_among_those_meeting_the_recall_target() -> None:
    results = [
        _result("misses_recall", _trial(precision=0.99, recall=0.80, pr_auc=0.99)),
        _result("meets_low_precision", _trial(precision=0.70, recall=0.90, pr_auc=0.95)),
        _result("meets_high_precision", _trial(precision=0.90, recall=0.86, pr_auc=0.80)),
        _result("same_precision_lower_pr_auc", _trial(precision=0.90, recall=0.86, pr_auc=0.7)),
    ]
    selection = select_champion(results, SelectionRule(target_recall=0.85))
    assert selection.winner.name == "meets_high_precision"
    assert [r.name for r in selection.ranking] == [
        "meets_high_precision",
        "same_precision_lower_pr_auc",
        "meets_low_precision",
        "misses_recall",
    ]
    table = selection.table()
    assert [row["candidate"] for row in table] == [r.name for r in selection.ranking]
    assert table[0]["rank"] == 1 and table[0]["oof_precision"] == 0.9
    markdown = selection.markdown()
    assert markdown.splitlines()[0].startswith("| rank | candidate |")
    assert len(markdown.splitlines()) == 2 + len(results)


def test_rule_is_data_another_primary_ranks_differently() -> None:
    results = [
        _result("precise", _trial(precision=0.9, recall=0.9, pr_auc=0.8)),
        _result("ranks_well", _trial(precision=0.8, recall=0.9, pr_auc=0.95)),
    ]
    assert select_champion(results, SelectionRule()).winner.name == "precise"
    by_pr_auc = SelectionRule(primary="pr_auc", tie_break="precision_at_target_recall")
    assert select_champion(results, by_pr_auc).winner.name == "ranks_well"
    assert "0.85" in SelectionRule().describe()


def test_when_none_meets_the_target_the_best_of_the_rest_wins() -> None:
    results = [
        _result("a", _trial(precision=0.9, recall=0.5, pr_auc=0.5)),
        _result("b", _trial(precision=0.95, recall=0.6, pr_auc=0.5)),
    ]
    assert select_champion(results, SelectionRule()).winner.name == "b"


def test_selection_rejects_nothing_and_mixed_targets() -> None:
    with pytest.raises(ValueError, match="at least one"):
        select_champion([], SelectionRule())
    other = _result("other", _trial(0.9, 0.9, 0.9), SelectionRule(target_recall=0.7))
    with pytest.raises(ValueError, match="other"):
        select_champion([other], SelectionRule(target_recall=0.85))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_recall": 0.0}, "target_recall"),
        ({"target_recall": 1.5}, "target_recall"),
        ({"primary": "accuracy"}, "accuracy"),
        ({"tie_break": "f1"}, "f1"),
    ],
)
def test_selection_rule_rejects_invalid_declarations(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SelectionRule(**kwargs)


# --- determinism, degraded candidates, cost bounds -------------------------------------------


def test_search_is_deterministic_by_seed(parts: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, _ = parts
    runs = [
        search_candidate(train, AI4I, "random_forest", n_iter=2, seed=seed) for seed in (4, 4, 5)
    ]
    same = [[(t.params, t.threshold, t.precision, t.pr_auc) for t in r.trials] for r in runs]
    assert same[0] == same[1]
    assert same[0] != same[2]


def test_parallel_search_gives_the_sequential_result(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    kwargs: dict[str, Any] = {"n_iter": 2, "cv_folds": 2, "seed": 2}
    sequential = search_candidate(train, AI4I, "logistic_regression", n_jobs=1, **kwargs)
    parallel = search_candidate(train, AI4I, "logistic_regression", n_jobs=2, **kwargs)
    for a, b in zip(sequential.trials, parallel.trials, strict=True):
        assert a.params == b.params
        assert a.threshold == pytest.approx(b.threshold)
        assert a.precision == pytest.approx(b.precision)


class ShuffledLabelsClassifier(LogisticRegression):
    """A degraded candidate: learns from its training labels in a random order."""

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> ShuffledLabelsClassifier:
        rng = np.random.default_rng(self.random_state)
        return super().fit(X, rng.permutation(np.asarray(y)), sample_weight)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_degraded_candidate_never_wins(
    parts: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    train, _ = parts
    degraded = Candidate(
        "shuffled_labels",
        "Logistic regression fitted on shuffled labels.",
        ShuffledLabelsClassifier,
        {"C": 1.0, "class_weight": "balanced", "max_iter": 2_000},
        search_space={"C": [0.1, 1.0, 10.0]},
    )
    monkeypatch.setitem(models.CANDIDATES, degraded.name, degraded)
    outcome = search_and_fit(train, AI4I, [degraded.name, *FAST], n_iter=2, seed=seed)
    ranking = [r.name for r in outcome.selection.ranking]
    assert outcome.model.model_name != degraded.name
    assert ranking[-1] == degraded.name
    worst = outcome.selection.ranking[-1].best
    assert worst.precision < 0.2  # about the positive rate: it learned nothing


def test_row_cap_bounds_every_fit_but_every_row_is_scored(
    parts: tuple[pd.DataFrame, pd.DataFrame], spy: list[tuple[str, pd.Index]]
) -> None:
    train, _ = parts
    result = search_candidate(train, AI4I, "gaussian_process", n_iter=1, max_fit_rows=120, seed=0)
    assert result.max_fit_rows == 120 and result.fit_rows_per_fold == 120
    fits = [index for kind, index in spy if kind == "fit"]
    scored = [index for kind, index in spy if kind == "predict_proba"]
    assert [len(f) for f in fits] == [120, 120, 120]
    assert sum(len(s) for s in scored) == len(train)
    fitted = search_and_fit(
        train, AI4I, ["gaussian_process"], n_iter=1, max_fit_rows={"gaussian_process": 120}
    ).model
    assert fitted.n_fit_rows == 120 and fitted.n_train_rows == len(train)


def test_gaussian_process_search_keeps_its_kernel_fixed(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    outcome = search_and_fit(
        train, AI4I, ["gaussian_process"], n_iter=1, max_fit_rows={"gaussian_process": 150}
    )
    params = outcome.model.params
    assert params["optimize_kernel"] is False
    gp = outcome.model.pipeline.named_steps["classifier"].estimator_
    assert gp.kernel_.k1.constant_value == params["amplitude"]
    assert gp.kernel_.k2.length_scale == params["length_scale"]


def test_time_budget_stops_after_the_first_configuration(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    result = search_candidate(train, AI4I, "logistic_regression", n_iter=4, time_budget_s=0.0)
    assert len(result.trials) == 1 and result.n_planned == 4
    assert result.stopped_by_budget
    unlimited = search_candidate(train, AI4I, "logistic_regression", n_iter=4)
    assert len(unlimited.trials) == 4 and not unlimited.stopped_by_budget


@pytest.mark.parametrize(
    ("names", "message"),
    [([], "no candidates"), (["xgboost"], "xgboost"), (FAST + FAST[:1], "twice")],
)
def test_search_rejects_bad_candidate_lists(
    parts: tuple[pd.DataFrame, pd.DataFrame], names: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        search_and_fit(parts[0], AI4I, names, n_iter=1)


def test_search_rejects_too_few_folds_or_positives(
    parts: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = parts
    with pytest.raises(ValueError, match="cv_folds"):
        search_candidate(train, AI4I, "logistic_regression", cv_folds=1)
    few = pd.concat([train[train[AI4I.target] == 0], train[train[AI4I.target] == 1].head(2)])
    with pytest.raises(ValueError, match="at least cv_folds=3"):
        search_candidate(few, AI4I, "logistic_regression", cv_folds=3)
    with pytest.raises(ValueError, match="unknown candidate"):
        search_candidate(train, AI4I, "xgboost")


# --- the real file ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.heavy
def test_real_file_default_search_reaches_the_targets() -> None:
    raw = read_real_ai4i_as_text()
    table = build_feature_table(type_and_validate(raw, AI4I, "ai4i2020.csv").valid, AI4I)
    split, _ = stratified_split(table, AI4I.target, test_size=0.3, seed=42)
    train = split.loc[split[SPLIT_COLUMN] == "train"]
    test = split.loc[split[SPLIT_COLUMN] == "test"]

    outcome = search_and_fit(train, AI4I, DEFAULT_CANDIDATES, seed=42, n_jobs=-1)

    assert [r.name for r in outcome.selection.ranking][-1] != outcome.model.model_name
    report = evaluate(outcome.model.pipeline, test, AI4I)
    summary = f"{outcome.model.model_name}: {report}\n{outcome.selection.markdown()}"
    assert report.recall >= 0.85, summary
    assert report.precision >= 0.80, summary


# --- the derived features the search relies on -----------------------------------------------


def test_limit_features_cross_their_threshold_exactly_at_the_documented_limits() -> None:
    rows = pd.DataFrame(
        {
            "type": pd.array(["L", "M", "H", "L"], dtype="string"),
            "air_temperature_k": [300.0, 300.0, 300.0, 300.0],
            "process_temperature_k": [308.6, 309.0, 308.0, 312.0],
            "rotational_speed_rpm": np.array([1380, 1300, 1379, 2000], dtype="int64"),
            "torque_nm": [55.0, 60.0, 65.0, 10.0],
            "tool_wear_min": np.array([200, 200, 200, 0], dtype="int64"),
        }
    )
    derived = {d.name: d.compute(rows) for d in AI4I.derived}
    # 200 min x 55 / 60 / 65 Nm against 11,000 / 12,000 / 13,000 min·Nm: exactly at the limit
    np.testing.assert_allclose(derived["overstrain_ratio"], [1.0, 1.0, 1.0, 0.0])
    # power margin is negative exactly outside 3,500-9,000 W
    outside = (derived["power_w"] < 3_500) | (derived["power_w"] > 9_000)
    assert ((derived["power_margin_w"] < 0) == outside).all()
    # heat dissipation: below both 8.6 K and 1,380 rpm only in the third row
    assert (derived["heat_dissipation_margin"] < 0).tolist() == [False, False, True, False]
