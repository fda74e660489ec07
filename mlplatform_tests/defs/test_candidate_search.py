"""The candidate_model asset: a candidate search by configuration, its champion and table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlplatform.core.models import TrainedModel
from mlplatform.core.split import SPLIT_COLUMN
from mlplatform.defs.registry import CANDIDATE_SEARCH_DOC
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform_tests.defs.helpers import LifecycleResult, gate_config, land_sample, materialize_all

# the landed file's ingestion, then the feature table, the split and the candidate
UP_TO_CANDIDATE = ["raw_observations", "feature_table", "train_test_split", "candidate_model"]


def _training(**config: Any) -> dict[str, Any]:
    return {"ops": {"candidate_model": {"config": config}}}


def _candidate_metadata(result: LifecycleResult) -> dict[str, Any]:
    [event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key and e.asset_key.to_user_string() == "candidate_model"
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_search_names_the_winner_and_tables_every_candidate(resources: dict[str, Any]) -> None:
    land_sample(resources, 2000, seed=31)
    names = ["logistic_regression", "hist_gradient_boosting", "gaussian_process"]
    config = _training(candidates=names, search_iterations=2, search_jobs=1, max_fit_rows=300)
    result = materialize_all(resources, config, selection=UP_TO_CANDIDATE)
    assert result.success
    trained: TrainedModel = result.output_for_node("candidate_model")
    metadata = _candidate_metadata(result)

    table = metadata["candidates"].splitlines()
    assert len(table) == 2 + len(names)
    ranked = [row.split("|")[2].strip() for row in table[2:]]
    assert sorted(ranked) == sorted(names)
    assert trained.model_name == metadata["model_name"] == ranked[0]
    assert "0.85" in metadata["selection_rule"]
    assert metadata["row_caps"] == dict.fromkeys(names, 300)
    assert metadata["cv_recall"] >= 0.85
    assert metadata["search_seconds"] > 0
    # the same table travels with the model, for its registered version's record
    assert [row["candidate"] for row in trained.search["candidates"]] == ranked
    assert trained.search["rule"] == metadata["selection_rule"]

    # the threshold chosen by the search is the one the fitted pipeline predicts with
    classifier = trained.pipeline.named_steps["classifier"]
    assert classifier.threshold == trained.threshold == metadata["decision_threshold"]
    assert trained.threshold_source.startswith("tuned on 3-fold out-of-fold")
    split = result.output_for_node("train_test_split")
    assert trained.n_train_rows == int((split[SPLIT_COLUMN] == "train").sum())


def test_one_candidate_without_search_trains_as_configured(resources: dict[str, Any]) -> None:
    land_sample(resources, 1500, seed=32)
    config = _training(
        candidates=["logistic_regression"], search_iterations=0, decision_threshold=0.3
    )
    result = materialize_all(resources, config, selection=UP_TO_CANDIDATE)
    assert result.success
    trained: TrainedModel = result.output_for_node("candidate_model")
    assert trained.model_name == "logistic_regression"
    assert trained.threshold == 0.3 and trained.threshold_source == "configured"
    assert "candidates" not in _candidate_metadata(result)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"candidates": ["xgboost", "random_forest"]}, "xgboost"),
        ({"params": {"C": 2.0}}, "params"),
        ({"decision_threshold": 0.3}, "decision_threshold"),
    ],
)
def test_search_rejects_settings_that_would_be_ignored(
    resources: dict[str, Any], config: dict[str, Any], message: str
) -> None:
    land_sample(resources, 600, seed=33)
    result = materialize_all(resources, _training(**config), selection=UP_TO_CANDIDATE)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert message in str(failure.step_failure_data.error)


def test_the_search_table_is_an_artifact_of_the_registered_version(
    resources: dict[str, Any],
) -> None:
    land_sample(resources, 1500, seed=33)
    names = ["logistic_regression", "hist_gradient_boosting"]
    gate = gate_config(
        min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
    )
    config = {
        "ops": {
            **gate["ops"],
            **_training(candidates=names, search_iterations=1, search_jobs=1)["ops"],
        }
    }
    result = materialize_all(
        resources,
        config,
        selection=[*UP_TO_CANDIDATE, "model_evaluation", "gate_decision", "registered_model"],
    )
    assert result.success
    trained: TrainedModel = result.output_for_node("candidate_model")
    ref = result.output_for_node("registered_model")
    registry: MlflowRegistry = resources["mlflow_registry"]
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{ref.run_id}/{CANDIDATE_SEARCH_DOC}",
        tracking_uri=registry.tracking_uri,
    )
    logged = json.loads(Path(path).read_text())
    assert logged == trained.search
    assert sorted(row["candidate"] for row in logged["candidates"]) == sorted(names)
    assert logged["candidates"][0]["candidate"] == trained.model_name
    assert "0.85" in logged["rule"] and logged["cv_folds"] == 3
