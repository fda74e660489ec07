"""The whole graph, materialized for real: sample data to champion and predictions."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlplatform.core.schema import AI4I
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform.resources.predictions import PredictionStore
from mlplatform_tests.defs.helpers import LENIENT, gate_config, land_sample, materialize_all


def _materialized(result: Any) -> set[str]:
    return {
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None
    }


def test_first_run_ends_with_champion_and_predictions(resources: dict[str, Any]) -> None:
    land_sample(resources, 4000, seed=11)
    result = materialize_all(resources, LENIENT)
    assert result.success
    assert len(result.ingest) == 1  # the landed file was ingested in a run of its own
    assert _materialized(result) == {
        "raw_observations",
        "feature_table",
        "train_test_split",
        "candidate_model",
        "model_evaluation",
        "gate_decision",
        "registered_model",
        "champion_model",
        "batch_predictions",
    }
    registry: MlflowRegistry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None and champion.version == "1"

    # the registered version carries the decision, the run id and the lineage
    tags = registry.version_tags(champion)
    assert tags["gate.passed"] == "true"
    assert tags["dagster_run_id"] == result.run_id
    run = registry._client().get_run(champion.run_id)
    assert run.data.tags["dagster_run_id"] == result.run_id
    assert len(run.data.tags["dataset_digest"]) == 64
    for metric in ("recall", "precision", "f1", "roc_auc", "pr_auc", "true_positive"):
        assert metric in run.data.metrics
    assert run.data.params["model_name"] == "hist_gradient_boosting"

    # the registered model is the fitted pipeline and never sees identifiers or leakage
    model = registry.load(champion)
    seen = set(model.feature_names_in_)
    assert seen == set(AI4I.model_features)
    assert not seen & set(AI4I.excluded_from_model)

    # the new batch was scored in a run of its own, after training
    assert len(result.score) == 1 and result.score[0].success
    files = resources["prediction_store"].files()
    assert len(files) == 1
    predictions = pd.read_parquet(files[0])
    assert len(predictions) == 4000
    assert set(predictions["model_version"]) == {"1"}
    assert set(predictions["model_name"]) == {registry.model_name}
    assert predictions["scored_at"].notna().all()
    assert predictions["failure_probability"].between(0, 1).all()


def test_evaluation_metadata_has_metrics_and_plots(resources: dict[str, Any]) -> None:
    land_sample(resources, 3000, seed=12)
    result = materialize_all(resources, LENIENT)
    assert result.success
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.to_user_string() == "model_evaluation"
    ]
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    for key in ("recall", "precision", "f1", "roc_auc", "pr_auc"):
        value = metadata[key]
        assert isinstance(value, float) and 0.0 <= value <= 1.0
    assert "data:image/png;base64," in str(metadata["confusion_matrix_plot"])
    assert "data:image/png;base64," in str(metadata["precision_recall_plot"])


def test_failing_gate_leaves_champion_unchanged(resources: dict[str, Any]) -> None:
    registry: MlflowRegistry = resources["mlflow_registry"]
    predictions: PredictionStore = resources["prediction_store"]
    land_sample(resources, 3000, seed=13)
    assert materialize_all(resources, LENIENT).success
    first = registry.champion()
    assert first is not None

    land_sample(resources, 3000, seed=14, start_udi=3001)
    failed = materialize_all(resources, gate_config(min_recall=0.999))
    # loud: the blocking check fails the run, and promotion does not run
    assert not failed.success
    assert [r.success for r in failed.ingest] == [True]  # the new data was stored
    assert failed.main is not None and not failed.main.success
    checks = {c.check_name: c.passed for c in failed.get_asset_check_evaluations()}
    assert {name for name, passed in checks.items() if not passed} == {"recall_gate"}
    assert registry.champion() == first
    assert [v.version for v in registry.versions()] == ["1", "2"]
    assert registry.version_tags(registry.versions()[1])["gate.passed"] == "false"
    # the new batch is still scored: by the unchanged champion, version 1
    assert [r.success for r in failed.score] == [True]
    assert len(predictions.files()) == 2
    newest = pd.read_parquet(predictions.files()[-1])
    assert set(newest["model_version"]) == {"1"} and len(newest) == 3000

    # automation may materialize promotion regardless of blocking checks (dagster#17332):
    # the promotion step reads the failed decision itself and does not move the alias
    promotion = materialize_all(resources, selection=["champion_model"])
    assert promotion.success
    state = promotion.output_for_node("champion_model")
    assert not state.promoted
    assert registry.champion() == first


@pytest.mark.parametrize("rows", [3000])
def test_second_candidate_compared_on_rows_champion_never_saw(
    resources: dict[str, Any], rows: int
) -> None:
    land_sample(resources, rows, seed=15)
    assert materialize_all(resources, LENIENT).success
    land_sample(resources, rows, seed=16, start_udi=rows + 1)
    result = materialize_all(resources, LENIENT)
    evaluation = result.output_for_node("model_evaluation")
    decision = result.output_for_node("gate_decision")
    assert evaluation.champion_version == "1"
    names = [c.name for c in decision.criteria]
    assert names[:2] == ["recall_ci_lower", "precision"]
    assert {"recall[L]", "recall[M]", "recall[H]"} <= set(names)
    assert names[-1] == "recall_vs_champion"
    # the comparison excludes the champion's training rows
    registry: MlflowRegistry = resources["mlflow_registry"]
    seen = set(registry.training_ids(registry.versions()[0]))
    assert len(seen) == int(rows * 0.7)
    split = result.output_for_node("train_test_split")
    test_ids = set(split.loc[split["split"] == "test", "udi"])
    assert evaluation.champion.n_rows == len(test_ids - seen)
    assert evaluation.candidate_same_rows.n_rows == evaluation.champion.n_rows


@pytest.mark.parametrize("model_name", ["gaussian_process", "random_forest"])
def test_which_candidate_trains_is_configuration(
    resources: dict[str, Any], model_name: str
) -> None:
    land_sample(resources, 3000, seed=17)
    config = {
        **LENIENT,
        "ops": {
            **LENIENT["ops"],
            "candidate_model": {"config": {"model_name": model_name, "max_fit_rows": 400}},
        },
    }
    result = materialize_all(resources, config)
    # the gate may reject a Gaussian process fitted on 400 rows: only training and
    # registration are under test here
    trained = result.output_for_node("candidate_model")
    assert trained.model_name == model_name
    # the Gaussian process's probabilities rarely pass 0.5 at a 3 % base rate: its default
    # threshold is tuned on out-of-fold training predictions
    tuned = model_name == "gaussian_process"
    assert trained.threshold_source.startswith("tuned") == tuned
    assert trained.n_fit_rows == 400 and trained.n_train_rows == 2100
    classifier = trained.pipeline.named_steps["classifier"].estimator
    assert (
        type(classifier).__name__
        == {
            "gaussian_process": "GaussianProcessClassifier",
            "random_forest": "RandomForestClassifier",
        }[model_name]
    )
    registry: MlflowRegistry = resources["mlflow_registry"]
    [version] = registry.versions()
    run = registry._client().get_run(version.run_id)
    assert run.data.params["model_name"] == model_name
    assert run.data.params["fit_rows"] == "400"
