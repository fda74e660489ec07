"""Batch inference through the real asset: per-batch partitions, pinned versions, checks."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd

from mlplatform.core.batches import BatchPlan
from mlplatform.core.generator import generate_ai4i
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import SOURCE_BATCHES_NAME
from mlplatform.paths import StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform.resources.predictions import PredictionStore
from mlplatform_tests.defs.helpers import LENIENT, land_sample, materialize_all, score_batches

EXPECTED_COLUMNS = [
    "entity_id",
    "event_time",
    "failure_probability",
    "predicted_failure",
    "model_name",
    "model_version",
    "alias",
    "threshold",
    "dagster_run_id",
    "scored_at",
]


def _trained(resources: dict[str, Any]) -> tuple[dg.DagsterInstance, list[str]]:
    instance = dg.DagsterInstance.ephemeral()
    land_sample(resources, 3000, seed=61)
    result = materialize_all(resources, LENIENT, instance=instance)
    assert result.success
    keys = [m.key for m in resources["feature_store"].latest()]
    return instance, keys


def test_every_new_batch_is_scored_by_the_champion(resources: dict[str, Any]) -> None:
    _, [key] = _trained(resources)
    registry: MlflowRegistry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    predictions = resources["prediction_store"].read(key, champion.version)
    assert list(predictions.columns) == EXPECTED_COLUMNS
    stored = resources["feature_store"].read_batch(key)
    assert len(predictions) == len(stored) == 3000
    assert predictions["entity_id"].tolist() == stored[DATASET.entity_id].tolist()
    assert (predictions["alias"] == registry.champion_alias).all()
    assert (predictions["model_version"] == champion.version).all()
    # the label is the pipeline's own decision at its own threshold
    pipeline = registry.load(champion)
    from mlplatform.core.features import add_derived, model_inputs

    expected = pipeline.predict(model_inputs(add_derived(stored, DATASET), DATASET))
    assert predictions["predicted_failure"].tolist() == list(expected)


def test_a_pinned_version_and_a_challenger_score_the_same_rows(
    resources: dict[str, Any],
) -> None:
    instance, [key] = _trained(resources)
    land_sample(resources, 1500, seed=62, start_udi=3001)
    assert materialize_all(resources, LENIENT, instance=instance).success
    registry: MlflowRegistry = resources["mlflow_registry"]
    versions = sorted(r.version for r in registry.versions())
    assert versions == ["1", "2"]
    [run] = score_batches(
        resources,
        instance,
        [key],
        {"ops": {"batch_predictions": {"config": {"model_version": "1", "also_versions": ["2"]}}}},
    )
    assert run.success
    store: PredictionStore = resources["prediction_store"]
    one, two = store.read(key, "1"), store.read(key, "2")
    assert one["entity_id"].tolist() == two["entity_id"].tolist()
    assert set(one["alias"]) == {"pinned"} and set(two["alias"]) == {"challenger"}
    [event] = run.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["model_version"].value == "1"
    assert metadata["v2_model_version"].value == "2"


def test_rescoring_a_partition_replaces_it(resources: dict[str, Any]) -> None:
    instance, [key] = _trained(resources)
    store: PredictionStore = resources["prediction_store"]
    champion = resources["mlflow_registry"].champion()
    first = store.read(key, champion.version)
    [again] = score_batches(resources, instance, [key])
    assert again.success
    second = store.read(key, champion.version)
    assert len(second) == len(first)
    assert (second["dagster_run_id"] == again.run_id).all()
    hidden = [p.name for p in store.batch_dir(key).iterdir() if p.name.startswith(".")]
    assert hidden == []


def test_a_batch_missing_a_model_column_fails_naming_it_and_writes_nothing(
    resources: dict[str, Any], state: StatePaths
) -> None:
    instance, _ = _trained(resources)
    store: FeatureStore = resources["feature_store"]
    plan = BatchPlan("file-00000000deadbeef", "landing", "no_torque.csv", {"sha256": "0" * 64})
    store.save_plan(plan)
    rows = store.read_batch(store.latest()[0].key).head(10).drop(columns=["torque_nm"])
    with store.writer(plan, pd.Timestamp.now(tz="UTC")) as writer:
        writer.write_rows(rows)
        writer.commit(rows_landed=10, rows_quarantined=0, validation={})
    instance.add_dynamic_partitions(SOURCE_BATCHES_NAME, [plan.key])
    [run] = score_batches(resources, instance, [plan.key])
    assert not run.success
    [failure] = [e for e in run.all_events if e.is_step_failure]
    data = failure.step_failure_data
    message = data.user_failure_data.description if data.user_failure_data else ""
    assert "torque_nm" in str(message)
    folder = resources["prediction_store"].batch_dir(plan.key)
    assert not folder.exists() or not any(folder.iterdir())


def test_out_of_range_values_are_scored_and_flagged(resources: dict[str, Any]) -> None:
    instance, _ = _trained(resources)
    hot = generate_ai4i(50, seed=63, start_udi=90_001)
    hot["Torque [Nm]"] = 150.0  # physically valid, far above anything trained on
    resources["landing"].drop(hot, "hot.csv")
    ingested = materialize_all(resources, selection=["raw_observations"], instance=instance)
    assert ingested.success
    key = str(ingested.ingest[0].dagster_run.tags["dagster/partition"])
    [scoring] = score_batches(resources, instance, [key])  # the champion trained before
    assert scoring.success
    [event] = scoring.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["rows"].value == 50
    assert metadata["out_of_range"].value["torque_nm"] == 50


def test_drift_is_reported_per_feature_and_stored(resources: dict[str, Any]) -> None:
    instance, _ = _trained(resources)
    store: PredictionStore = resources["prediction_store"]
    baseline = store.drift_reports()
    assert set(baseline["feature"]) == set(DATASET.model_features)
    assert not baseline["drifted"].any()  # the training batch itself does not drift

    shifted = generate_ai4i(2000, seed=64, start_udi=50_001)
    shifted["Air temperature [K]"] += 4.0  # a warmer hall
    shifted["Process temperature [K]"] += 4.0
    resources["landing"].drop(shifted, "warm.csv")
    ingested = materialize_all(resources, selection=["raw_observations"], instance=instance)
    new_key = str(ingested.ingest[0].dagster_run.tags["dagster/partition"])
    [scoring] = score_batches(resources, instance, [new_key])
    assert scoring.success
    report = store.drift_reports()
    warm = report[report["batch"] == new_key].set_index("feature")
    assert warm.loc["air_temperature_k", "drifted"]
    assert warm.loc["process_temperature_k", "drifted"]
    assert warm.loc["air_temperature_k", "psi"] > 0.2
    assert not warm.loc["type", "drifted"]
    [event] = scoring.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert "air_temperature_k" in metadata["drifted_features"].value
    assert "PSI per feature" in metadata["drift_plot"].value
    # the run's totals are stored beside the drift report
    summaries = store.summaries().set_index("batch")
    assert summaries.loc[new_key, "rows"] == 2000
    assert summaries.loc[new_key, "rows"] == sum(summaries.loc[new_key, "probability_histogram"])
    assert 0 <= summaries.loc[new_key, "positive_rate"] <= 1
