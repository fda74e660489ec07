"""The definitions load, and their shape is what the UI and the jobs rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_gate_is_a_blocking_check_on_the_registered_model(defs: dg.Definitions) -> None:
    checks = list(defs.resolve_asset_graph().asset_check_keys)
    assert [(c.asset_key.to_user_string(), c.name) for c in checks] == [
        ("registered_model", "recall_gate")
    ]
    from mlplatform.defs.registry import recall_gate

    [spec] = list(recall_gate.check_specs)
    assert spec.blocking


def test_jobs_run_in_process(defs: dg.Definitions) -> None:
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert {"train_and_score", "batch_inference", "ingest", "rollback_champion"} <= jobs
    job = defs.resolve_job_def("train_and_score")
    assert job.executor_def.name == "in_process"


def test_rollback_job_moves_the_alias_with_a_reason(defs: dg.Definitions) -> None:
    job = defs.resolve_job_def("rollback_champion")
    assert job.executor_def.name == "in_process"
    [node] = job.nodes
    assert node.definition.required_resource_keys == {"mlflow_registry", "ledger"}
    reason = node.definition.config_schema.config_type.fields["reason"]
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
