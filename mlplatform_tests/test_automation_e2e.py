"""The loop closed by a real daemon: a file lands, it is ingested, a model is retrained and
registered; a drifted file lands, a drift-tagged retrain follows.

``dagster-daemon`` runs on a temp ``DAGSTER_HOME`` and loads the code location from
``workspace.yaml``; sensors tick every few seconds; runs are separate processes.
Nothing is called directly: the test only drops files and watches the instance
and the MLflow registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlplatform.core.generator import generate_ai4i
from mlplatform.core.schema import AI4I
from mlplatform.core.triggers import TRIGGER_TAG
from mlplatform_tests.daemon import LocalDaemon, finished, runs
from mlplatform_tests.defs.helpers import LENIENT, gate_config

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# one fast candidate and a gate any model passes: this test is about what starts runs
FAST = {
    "ops": {
        **LENIENT["ops"],
        **gate_config(
            min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
        )["ops"],
    }
}
# generous bounds: a loaded 2-core machine runs every step several times slower
INGEST_TIMEOUT = 240.0
TRAIN_TIMEOUT = 420.0


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[LocalDaemon]:
    local = LocalDaemon(
        tmp_path / "state",
        sensor_interval=3,
        run_config=FAST,
        env={
            "MLPLATFORM_RETRAIN_MIN_ROWS": "2000",
            "MLPLATFORM_DRIFT_WINDOW_ROWS": "500",
            "MLPLATFORM_DRIFT_WINDOWS": "1",
            "MLPLATFORM_RETRAIN_COOLDOWN_MINUTES": "0",
            # no SQL source rows here: only landed files
        },
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _drop(daemon: LocalDaemon, rows: int, *, seed: int, start_udi: int, shift: float) -> None:
    frame = generate_ai4i(rows, seed=seed, start_udi=start_udi, burn_in=5_000)
    for column in ("Air temperature [K]", "Process temperature [K]"):
        frame[column] = (frame[column] + shift).round(1)
    landing = daemon.paths.landing
    tmp = landing / f".part-{start_udi}.csv"  # hidden while written: the sensor skips it
    frame.to_csv(tmp, index=False)
    tmp.rename(landing / f"readings_{start_udi:08d}.csv")


def test_daemon_ingests_retrains_and_retrains_again_on_drift(daemon: LocalDaemon) -> None:
    instance = daemon.instance()
    client = MlflowClient(
        tracking_uri=daemon.paths.mlflow_tracking_uri, registry_uri=daemon.paths.mlflow_tracking_uri
    )
    model = AI4I.registered_model_name

    def versions() -> list[int]:
        try:
            return sorted(int(v.version) for v in client.search_model_versions(f"name='{model}'"))
        except Exception:  # the registry's database does not exist before the first run
            return []

    # 1. a file lands: it is ingested by a new-data run, then enough rows start a retrain
    _drop(daemon, 3000, seed=21, start_udi=1, shift=0.0)
    [ingest] = daemon.wait_for(
        "the ingestion run of the landed file",
        lambda: finished(runs(instance, "ingest")) or None,
        INGEST_TIMEOUT,
    )
    assert ingest.dagster_run.is_success, daemon.log_tail()
    assert ingest.dagster_run.tags[TRIGGER_TAG] == "new-data"
    [first] = daemon.wait_for(
        "the retraining run after new rows",
        lambda: finished(runs(instance, "train_and_score")) or None,
        TRAIN_TIMEOUT,
    )
    assert first.dagster_run.is_success, daemon.log_tail()
    assert first.dagster_run.tags[TRIGGER_TAG] == "new-data"
    assert versions() == [1]
    assert str(client.get_model_version_by_alias(model, "champion").version) == "1"

    # 2. a drifted file (temperatures +6 K): too few rows for a new-rows retrain, but the
    # drift monitor's window drifts, and a drift-tagged retrain registers version 2
    _drop(daemon, 800, seed=22, start_udi=10_001, shift=6.0)
    drift_runs = daemon.wait_for(
        "a drift-tagged retraining run",
        lambda: finished(runs(instance, "train_and_score", {TRIGGER_TAG: "drift"})) or None,
        TRAIN_TIMEOUT,
    )
    assert drift_runs[0].dagster_run.is_success, daemon.log_tail()
    assert "air_temperature_k" in drift_runs[0].dagster_run.tags["mlplatform/drifted_features"]
    assert versions() == [1, 2]
    # the drifted file was ingested by its own new-data run, and nothing else retrained
    ingests = finished(runs(instance, "ingest"))
    assert len(ingests) == 2 and all(r.dagster_run.is_success for r in ingests)
    triggers = [r.dagster_run.tags[TRIGGER_TAG] for r in runs(instance, "train_and_score")]
    assert triggers == ["new-data", "drift"]
    # the drift verdict is recorded as a materialization of feature_drift, and stored
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("feature_drift"))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.metadata["retrain_requested"].value is True
    assert any((daemon.paths.monitoring / "drift").glob("*.parquet"))
