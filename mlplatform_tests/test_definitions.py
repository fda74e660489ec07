"""The definitions load, and their shape is what the UI and the jobs rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlplatform.definitions import build_definitions
from mlplatform.paths import StatePaths

REPO = Path(__file__).resolve().parents[1]

EXPECTED_GROUPS = {
    "raw_observations": "ingestion",
    "feature_table": "features",
    "train_test_split": "training",
    "candidate_model": "training",
    "model_evaluation": "evaluation",
    "gate_decision": "evaluation",
    "registered_model": "registry",
    "champion_model": "registry",
    "batch_predictions": "inference",
    "window_predictions": "inference",
    "live_performance": "monitoring",
    "feature_drift": "monitoring",
}


@pytest.fixture(scope="module")
def defs(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    return build_definitions(StatePaths(tmp_path_factory.mktemp("state")))


def test_asset_keys_and_groups(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == EXPECTED_GROUPS


def test_every_asset_is_described_and_owned(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.owners, f"{key.to_user_string()} has no owner"


def test_lineage_runs_through_the_graph(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("feature_table") == {"raw_observations"}
    assert parents("train_test_split") == {"feature_table"}
    assert parents("candidate_model") == {"train_test_split"}
    assert parents("model_evaluation") == {"candidate_model", "train_test_split"}
    assert parents("gate_decision") == {"model_evaluation"}
    assert "gate_decision" in parents("champion_model")
    assert "registered_model" in parents("champion_model")


# (asset, check) -> blocking: a failed blocking check stops everything downstream of it
EXPECTED_CHECKS = {
    ("raw_observations", "landed_rows_meet_expectations"): False,
    ("raw_observations", "stored_rows_meet_expectations"): True,
    ("raw_observations", "count_invariant"): True,
    ("feature_table", "feature_table_meets_expectations"): True,
    ("registered_model", "recall_gate"): True,
}


def test_checks_and_which_of_them_block(defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    checks = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
    }
    assert checks == EXPECTED_CHECKS
    from mlplatform.defs.registry import recall_gate

    [spec] = list(recall_gate.check_specs)
    assert spec.blocking


def test_ingestion_is_partitioned_by_source_batch(defs: dg.Definitions) -> None:
    from mlplatform.defs.ingestion import SOURCE_BATCHES

    graph = defs.resolve_asset_graph()
    partitioned = {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).partitions_def is not None
    }
    # ingestion and scoring run per source batch, scheduled scoring per twelve-hour
    # window; everything between is one table
    assert partitioned == {"raw_observations", "batch_predictions", "window_predictions"}
    assert graph.get(dg.AssetKey("raw_observations")).partitions_def == SOURCE_BATCHES
    assert SOURCE_BATCHES.name == "source_batches"


def test_jobs_run_in_process(defs: dg.Definitions) -> None:
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert {
        "train_and_score",
        "batch_inference",
        "window_inference",
        "ingest",
        "evaluate_live_performance",
        "rollback_champion",
    } <= jobs
    job = defs.resolve_job_def("train_and_score")
    assert job.executor_def.name == "in_process"


def test_jobs_split_ingestion_from_training(defs: dg.Definitions) -> None:
    def selected(name: str) -> set[str]:
        job = defs.resolve_job_def(name)
        return {k.to_user_string() for k in job.asset_layer.selected_asset_keys}

    # one run per batch ingests it; training reads the store and never ingests
    assert selected("ingest") == {"raw_observations"}
    assert defs.resolve_job_def("ingest").partitions_def is not None
    assert selected("train_and_score") == set(EXPECTED_GROUPS) - {
        "raw_observations",
        "batch_predictions",
        "window_predictions",
        "live_performance",
        "feature_drift",
    }
    assert defs.resolve_job_def("train_and_score").partitions_def is None
    assert selected("batch_inference") == {"batch_predictions"}
    assert defs.resolve_job_def("batch_inference").partitions_def is not None


def test_sensors_and_schedules_are_named_and_run_by_default(defs: dg.Definitions) -> None:
    repo = defs.get_repository_def()
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) == {
        "new_source_batches",
        "retrain_on_new_rows",
        "feature_drift_monitor",
        "new_outcome_labels",
        "live_recall_decay",
        "run_failure_alerts",
    }
    schedules = {s.name: s for s in repo.schedule_defs}
    assert set(schedules) == {"nightly_retrain", "window_inference_schedule"}
    # automation on by default (MLPLATFORM_AUTOMATION unset or 'on'); every one described
    expected = (
        dg.DefaultSensorStatus.RUNNING
        if os.environ.get("MLPLATFORM_AUTOMATION", "on") == "on"
        else dg.DefaultSensorStatus.STOPPED
    )
    for sensor in sensors.values():
        assert sensor.description
        assert sensor.default_status == expected
    for schedule in schedules.values():
        assert schedule.description
    assert sensors["new_source_batches"].job_name == "ingest"
    assert sensors["retrain_on_new_rows"].job_name == "train_and_score"
    assert sensors["feature_drift_monitor"].job_name == "train_and_score"
    assert sensors["live_recall_decay"].job_name == "train_and_score"
    assert sensors["new_outcome_labels"].job_name == "evaluate_live_performance"
    assert schedules["nightly_retrain"].job_name == "train_and_score"
    assert schedules["window_inference_schedule"].job_name == "window_inference"
    assert schedules["window_inference_schedule"].cron_schedule == "0 0,12 * * *"


def test_automation_is_switched_off_by_environment(tmp_path: Path) -> None:
    code = (
        "from mlplatform.definitions import defs\n"
        "repo = defs.get_repository_def()\n"
        "print(sorted({s.default_status.value for s in repo.sensor_defs}),"
        " sorted({s.default_status.value for s in repo.schedule_defs}))"
    )
    env = {**os.environ, "MLPLATFORM_AUTOMATION": "off", "MLPLATFORM_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "['STOPPED'] ['STOPPED']"


def test_rollback_job_moves_the_alias_with_a_reason(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("rollback_champion")
    assert job.executor_def.name == "in_process"
    [node] = job.nodes
    op = node.definition
    assert isinstance(op, dg.OpDefinition)
    assert op.required_resource_keys == {"mlflow_registry", "ledger"}
    assert op.config_schema is not None
    config_type: Any = op.config_schema.config_type
    reason = config_type.fields["reason"]
    assert reason.is_required and reason.description


@pytest.mark.e2e
def test_workspace_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MLPLATFORM_HOME": str(tmp_path)}
    dagster = Path(sys.executable).parent / "dagster"
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful for code location mlplatform" in proc.stdout + proc.stderr
