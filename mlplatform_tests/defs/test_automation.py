"""Sensors and schedules, evaluated with Dagster's test contexts on a real instance.

Every test runs the real assets (ingestion, training, scoring) on a temp state and
an ephemeral Dagster instance, then evaluates a sensor or schedule the way the
daemon does: with the instance, the resources and the cursor of the previous tick.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import pandas as pd
import pytest

from mlplatform.core.generator import generate_ai4i
from mlplatform.core.triggers import TRIGGER_TAG
from mlplatform.definitions import build_definitions
from mlplatform.defs.automation import (
    WILL_RETRY_TAG,
    feature_drift_monitor,
    live_recall_decay,
    new_outcome_labels,
    nightly_retrain,
    retrain_on_new_rows,
    run_failure_alerts,
    window_inference_schedule,
)
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import new_source_batches
from mlplatform.defs.resources import SQL_EVENT_TIME, SQL_TABLE, SQL_WATERMARK
from mlplatform.paths import StatePaths
from mlplatform.resources.sample_data import write_sql_readings
from mlplatform_tests.defs.helpers import (
    ASSETS,
    LENIENT,
    gate_config,
    ingest_pending,
    score_batches,
)

# these tests are about what starts a run, not the gate: one fast candidate, a gate
# any model passes
FAST = {
    "ops": {
        **LENIENT["ops"],
        **gate_config(
            min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
        )["ops"],
    }
}
FAST_TRAINING = json.dumps(FAST)


@pytest.fixture(autouse=True)
def _automation_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "automated_run_config.json"
    config.write_text(FAST_TRAINING)
    monkeypatch.setenv("MLPLATFORM_AUTOMATED_RUN_CONFIG", str(config))
    monkeypatch.setenv("MLPLATFORM_RETRAIN_MIN_ROWS", "1000")
    monkeypatch.setenv("MLPLATFORM_DRIFT_WINDOW_ROWS", "400")
    monkeypatch.setenv("MLPLATFORM_DRIFT_WINDOWS", "2")
    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_MINUTES", "0")
    # MLflow exports the last tracking URI it was given; each test has its own store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real (temp-folder) instance: schedules and run-status sensors need its ref."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _land(state: StatePaths, rows: int, *, seed: int, start_udi: int, shift: float = 0.0) -> str:
    """Drop generated rows as a CSV file; ``shift`` K added to both temperatures (drift)."""
    frame = generate_ai4i(rows, seed=seed, start_udi=start_udi, burn_in=5_000)
    if shift:
        for column in ("Air temperature [K]", "Process temperature [K]"):
            frame[column] = (frame[column] + shift).round(1)
    name = f"sample_{start_udi:08d}.csv"
    frame.to_csv(state.landing / name, index=False)
    return name


def _tick(
    sensor: Any, instance: dg.DagsterInstance, resources: dict[str, Any], cursor: str | None
) -> dg.SensorResult:
    # entered, so the resources it builds are torn down (and Dagster's current-instance
    # state is restored) when the tick ends, as the daemon does
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        result = sensor(ctx)
    if isinstance(result, dg.SkipReason):
        return dg.SensorResult(skip_reason=result, cursor=cursor)
    if isinstance(result, dg.RunRequest):
        return dg.SensorResult(run_requests=[result], cursor=cursor)
    assert isinstance(result, dg.SensorResult)
    if result.cursor is None:
        return dg.SensorResult(
            run_requests=result.run_requests,
            skip_reason=result.skip_reason,
            cursor=cursor,
            dynamic_partitions_requests=result.dynamic_partitions_requests,
            asset_events=result.asset_events,
        )
    return result


def _requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    return list(result.run_requests or [])


def _train(
    state: StatePaths, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    """Run the training job as the daemon would (its job tags mark it as training)."""
    job = build_definitions(state).resolve_job_def("train_and_score")
    result = job.execute_in_process(
        instance=instance, run_config=FAST, tags=tags or {}, raise_on_error=False
    )
    assert result.success
    return result


# --- new data --------------------------------------------------------------------------


def test_new_data_sensor_requests_each_file_once_across_restarts(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _requests(_tick(new_source_batches, instance, resources, None)) == []  # no file

    monkeypatch.setenv("MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK", "2")
    names = [_land(state, 50, seed=i, start_udi=1 + 100 * i) for i in range(5)]
    first = _tick(new_source_batches, instance, resources, None)
    second = _tick(new_source_batches, instance, resources, first.cursor)
    third = _tick(new_source_batches, instance, resources, second.cursor)
    pages = [_requests(r) for r in (first, second, third)]
    # a page of at most two runs per tick, every file once, each tagged new-data
    assert [len(p) for p in pages] == [2, 2, 1]
    keys = [r.partition_key for p in pages for r in p]
    assert len(set(keys)) == 5
    assert all(r.run_key == r.partition_key for p in pages for r in p)
    assert {r.tags[TRIGGER_TAG] for p in pages for r in p} == {"new-data"}
    # the partitions are added before their runs
    added = [
        k
        for r in (first, second, third)
        for q in r.dynamic_partitions_requests
        for k in (q.partition_keys or [])
    ]
    assert sorted(added) == sorted(keys)
    instance.add_dynamic_partitions("source_batches", keys)

    # nothing new: nothing requested (the cursor remembers what was requested)
    assert _requests(_tick(new_source_batches, instance, resources, third.cursor)) == []

    # a daemon restart that lost the tick's cursor: the planned, not yet stored files
    # are requested again under the same run keys, which the daemon never runs twice
    again = _requests(_tick(new_source_batches, instance, resources, second.cursor))
    assert [r.run_key for r in again] == [keys[4]]

    # once ingested, a file is never requested again, even with no cursor at all
    ingested = [
        dg.materialize(
            ASSETS,
            instance=instance,
            resources=resources,
            partition_key=k,
            selection=["raw_observations"],
        )
        for k in keys
    ]
    assert all(r.success for r in ingested)
    assert _requests(_tick(new_source_batches, instance, resources, None)) == []

    # the same file dropped again adds nothing: archived as a duplicate, no run
    archived = next(state.archive.glob(f"*{names[0]}"))
    (state.landing / "again.csv").write_bytes(archived.read_bytes())
    assert _requests(_tick(new_source_batches, instance, resources, third.cursor)) == []
    assert not (state.landing / "again.csv").exists()


# --- retraining on new rows, nightly schedule ---------------------------------------------


def test_retrain_follows_enough_new_rows_not_every_small_file(
    instance: dg.DagsterInstance, resources: dict[str, Any], state: StatePaths
) -> None:
    _land(state, 600, seed=1, start_udi=1)
    ingest_pending(resources, instance)
    skipped = _tick(retrain_on_new_rows, instance, resources, None)
    assert _requests(skipped) == []
    assert "600 new rows" in str(skipped.skip_reason)

    _land(state, 600, seed=2, start_udi=1001)
    ingest_pending(resources, instance)
    [request] = _requests(_tick(retrain_on_new_rows, instance, resources, None))
    assert request.tags[TRIGGER_TAG] == "new-data"
    assert request.tags["mlplatform/new_rows"] == "1200"
    # automated runs get the configured run config (here: one fast candidate)
    assert request.run_config == FAST

    _train(state, instance, request.tags)
    after = _tick(retrain_on_new_rows, instance, resources, None)
    assert _requests(after) == [] and "0 new rows" in str(after.skip_reason)

    # the nightly schedule retrains only when something arrived since
    at = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    with dg.build_schedule_context(
        instance=instance, resources=resources, scheduled_execution_time=at
    ) as ctx:
        assert isinstance(nightly_retrain(ctx), dg.SkipReason)
    _land(state, 100, seed=3, start_udi=2001)
    ingest_pending(resources, instance)
    with dg.build_schedule_context(
        instance=instance, resources=resources, scheduled_execution_time=at
    ) as ctx:
        nightly = nightly_retrain(ctx)
    assert isinstance(nightly, dg.RunRequest)
    assert nightly.tags[TRIGGER_TAG] == "schedule" and nightly.run_key == "nightly-2026-11-22"


def test_no_retrain_request_while_training_runs(
    instance: dg.DagsterInstance, resources: dict[str, Any], state: StatePaths
) -> None:
    _land(state, 1200, seed=4, start_udi=1)
    ingest_pending(resources, instance)
    job = build_definitions(state).resolve_job_def("train_and_score")
    queued = instance.create_run_for_job(job, run_config=FAST, tags=job.tags)
    assert queued.status == dg.DagsterRunStatus.NOT_STARTED
    result = _tick(retrain_on_new_rows, instance, resources, None)
    assert _requests(result) == [] and "queued or running" in str(result.skip_reason)


# --- twelve-hour inference windows ---------------------------------------------------------


def test_window_schedule_scores_the_window_just_closed(
    instance: dg.DagsterInstance, resources: dict[str, Any], state: StatePaths
) -> None:
    # SQL readings one minute apart across the 12:00 boundary of 2026-11-20
    start = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
    write_sql_readings(
        resources["sql_source"].url,
        DATASET,
        generate_ai4i(1500, seed=5, start_udi=1, burn_in=5_000),
        table=SQL_TABLE,
        watermark=SQL_WATERMARK,
        event_time=SQL_EVENT_TIME,
        start=start,
    )
    assert all(r.success for r in ingest_pending(resources, instance))
    _train(state, instance)

    at = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at) as ctx:
        [request] = list(window_inference_schedule.evaluate_tick(ctx).run_requests or [])
    assert request.partition_key == "2026-11-20-12:00"
    assert request.tags[TRIGGER_TAG] == "schedule"

    run = dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        partition_key=request.partition_key,
        selection=["window_predictions"],
    )
    assert run.success
    predictions = pd.read_parquet(state.predictions / "window-20261120T1200Z")
    # readings from 11:00, one a minute: minutes 60..779 fall in 12:00-24:00
    assert len(predictions) == 720
    assert predictions["event_time"].min() == pd.Timestamp("2026-11-20 12:00", tz="UTC")
    assert predictions["event_time"].max() < pd.Timestamp("2026-11-21 00:00", tz="UTC")
    # a window without rows is a success with nothing to score (a backfill of a gap)
    empty = dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        partition_key="2026-11-19-00:00",
        selection=["window_predictions"],
    )
    assert empty.success
    [mat] = empty.asset_materializations_for_node("window_predictions")
    assert mat.metadata["rows"].value == 0


# --- drift ---------------------------------------------------------------------------------


def test_drift_needs_consecutive_windows_and_respects_the_cooldown(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = generate_ai4i(3000, seed=6, start_udi=1, burn_in=5_000)
    pool.to_csv(state.landing / "training.csv", index=False)
    ingest_pending(resources, instance)
    _train(state, instance)

    def window(seed: int, udi: int, shift: float) -> dg.SensorResult:
        # 500 rows drawn from the training pool (the same distribution), renumbered,
        # their temperatures shifted by ``shift`` K
        rows = pool.sample(500, random_state=seed).reset_index(drop=True)
        rows["UDI"] = range(udi, udi + 500)
        for column in ("Air temperature [K]", "Process temperature [K]"):
            rows[column] = (rows[column] + shift).round(1)
        rows.to_csv(state.landing / f"window_{udi}.csv", index=False)
        assert all(r.success for r in ingest_pending(resources, instance))
        return _tick(feature_drift_monitor, instance, resources, cursor)

    cursor: str | None = None
    waiting = _tick(feature_drift_monitor, instance, resources, cursor)
    assert "0 of the 400 rows" in str(waiting.skip_reason)

    calm = window(7, 10_001, 0.0)
    cursor = calm.cursor
    assert _requests(calm) == []
    [event] = calm.asset_events
    assert event.metadata["window_drifted"].value is False
    stored = resources["monitoring"].drift_history()
    assert {"ks", "chi2"} <= set(stored["test"])  # KS for numeric, chi2 for `type`

    first = window(8, 20_001, 5.0)
    cursor = first.cursor
    assert _requests(first) == []  # one drifted window is not a verdict
    assert first.asset_events[0].metadata["window_drifted"].value is True
    assert "air_temperature_k" in first.asset_events[0].metadata["drifted_features"].value

    second = window(9, 30_001, 5.0)
    cursor = second.cursor
    [request] = _requests(second)
    assert request.tags[TRIGGER_TAG] == "drift"
    assert "air_temperature_k" in request.tags["mlplatform/drifted_features"]

    # the drift-triggered retrain starts a cooldown: drift goes on, no new request
    _train(state, instance, request.tags)
    monkeypatch.setenv("MLPLATFORM_RETRAIN_COOLDOWN_MINUTES", "60")
    third = window(10, 40_001, 10.0)
    cursor = third.cursor
    fourth = window(11, 50_001, 10.0)
    assert _requests(third) == [] and _requests(fourth) == []
    assert "cooling down" in fourth.asset_events[0].metadata["verdict"].value
    # each evaluated window is stored with its per-feature statistic and p-value
    history = resources["monitoring"].drift_history()
    assert history["window"].nunique() == 5
    assert {"statistic", "p_value", "psi", "drifted"} <= set(history.columns)


# --- live performance and decay ------------------------------------------------------------


def test_outcomes_give_live_recall_and_decay_starts_a_retrain(
    instance: dg.DagsterInstance, resources: dict[str, Any], state: StatePaths
) -> None:
    _land(state, 3000, seed=12, start_udi=1)
    keys = [r.dagster_run.tags["dagster/partition"] for r in ingest_pending(resources, instance)]
    _train(state, instance)
    assert all(r.success for r in score_batches(resources, instance, keys))
    predictions = resources["prediction_store"].read(keys[0], "1")

    assert _requests(_tick(new_outcome_labels, instance, resources, None)) == []
    # outcomes: every row predicted to fail did not, every failure was missed
    labels = pd.DataFrame(
        {
            "UDI": predictions["entity_id"],
            "Machine failure": 1 - predictions["predicted_failure"],
        }
    )
    labels.loc[len(labels)] = ["not-a-number", 1]
    labels.to_csv(state.labels_inbox / "outcomes_1.csv", index=False)
    [request] = _requests(_tick(new_outcome_labels, instance, resources, None))
    assert request.tags[TRIGGER_TAG] == "new-data"

    run = dg.materialize(
        ASSETS, instance=instance, resources=resources, selection=["live_performance"]
    )
    assert run.success
    [mat] = run.asset_materializations_for_node("live_performance")
    assert mat.metadata["joined"].value == len(predictions)
    assert mat.metadata["live_recall"].value == 0.0
    metrics = resources["monitoring"].live_metrics()
    assert len(metrics) >= 1 and (metrics["recall"].dropna() == 0.0).all()
    # the file is kept, its refused row stored with the reason; the inbox is empty
    assert resources["monitoring"].pending_labels() == []
    refused = pd.read_parquet(next((state.monitoring / "outcomes" / "_refused").glob("*.parquet")))
    assert refused[["row_number", "column"]].values.tolist() == [[len(predictions) + 1, "udi"]]

    [decay] = _requests(_tick(live_recall_decay, instance, resources, None))
    assert decay.tags[TRIGGER_TAG] == "decay"
    # one window, one request: the next tick (with the cursor) does not repeat it
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        first = live_recall_decay(context)
    assert isinstance(first, dg.SensorResult)
    again = _tick(live_recall_decay, instance, resources, first.cursor)
    assert _requests(again) == []


# --- failures ------------------------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    answers: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.received.append(json.loads(body))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    _Hook.received, _Hook.answers = [], [503]  # first answer: a server error, retried
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", _Hook
    server.shutdown()


def _alert_on_failure(
    failed: dg.ExecuteInProcessResult, instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    """Evaluate the run-failure sensor on ``failed``, as the daemon would."""
    failure = next(e for e in failed.all_events if e.event_type_value == "PIPELINE_FAILURE")
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        resources=resources,
    ) as context:
        run_failure_alerts(context.for_run_failure())


def test_failed_run_leaves_an_alert_and_posts_it(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
    webhook: tuple[str, type[_Hook]],
) -> None:
    url, hook = webhook
    monkeypatch.setenv("MLPLATFORM_ALERT_WEBHOOK", url)
    # a training run on an empty feature store fails (no rows to train on)
    job = build_definitions(state).resolve_job_def("train_and_score")
    failed = job.execute_in_process(
        instance=instance, run_config=FAST, raise_on_error=False, tags={TRIGGER_TAG: "drift"}
    )
    assert not failed.success
    _alert_on_failure(failed, instance, resources)
    [alert] = resources["monitoring"].alerts()
    assert alert["run_id"] == failed.run_id
    assert alert["job"] == "train_and_score" and alert["trigger"] == "drift"
    assert alert["failed_steps"] == ["feature_table"]
    assert alert["webhook"] == "posted (200)"
    [posted] = hook.received  # delivered once, after one retried 503
    assert posted["run_id"] == failed.run_id


def test_a_failed_run_that_will_be_retried_is_recorded_but_not_posted(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
    webhook: tuple[str, type[_Hook]],
) -> None:
    # deploy/dagster.yaml retries a failed run once; Dagster tags the failed one
    url, hook = webhook
    monkeypatch.setenv("MLPLATFORM_ALERT_WEBHOOK", url)
    job = build_definitions(state).resolve_job_def("train_and_score")
    failed = job.execute_in_process(
        instance=instance,
        run_config=FAST,
        raise_on_error=False,
        tags={TRIGGER_TAG: "drift", WILL_RETRY_TAG: "true"},
    )
    assert not failed.success
    _alert_on_failure(failed, instance, resources)
    [alert] = resources["monitoring"].alerts()
    assert alert["run_id"] == failed.run_id and alert["will_retry"] is True
    assert alert["webhook"].startswith("not posted")
    assert hook.received == []


def test_using_the_registry_leaves_the_tracking_uri_setting_alone(
    resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow exports MLFLOW_TRACKING_URI when told a URI; that variable is this platform's
    # deployment setting, so a later build of the definitions must not inherit it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resources["mlflow_registry"].champion() is None
    import os

    assert "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resources["mlflow_registry"].champion() is None
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


def test_a_step_that_touches_mlflow_retries_a_transient_failure(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlplatform.resources.mlflow_registry import MlflowRegistry

    _land(state, 1500, seed=13, start_udi=1)
    ingest_pending(resources, instance)
    real = MlflowRegistry.log_and_register
    calls: list[int] = []

    def flaky(self: MlflowRegistry, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("MLflow tracking server unreachable")
        return real(self, **kwargs)

    monkeypatch.setattr(MlflowRegistry, "log_and_register", flaky)
    result = _train(state, instance)
    assert len(calls) == 2
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["registered_model"]
    assert resources["mlflow_registry"].champion() is not None
