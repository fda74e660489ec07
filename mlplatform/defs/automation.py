"""Continuous training and evaluation: the sensors and schedules the daemon runs.

Every run they start carries ``mlplatform/trigger`` saying why:

- ``new_source_batches`` (in :mod:`mlplatform.defs.ingestion`): each new landed
  file or SQL pull is ingested (``new-data``);
- ``retrain_on_new_rows``: enough new stored rows since the last training start a
  retraining run (``new-data``), not every small file;
- ``nightly_retrain``: a nightly retraining run when rows arrived since the last
  one (``schedule``);
- ``window_inference_schedule``: each twelve-hour event-time window is scored
  once it closes (``schedule``); missed windows are backfilled from the UI;
- ``feature_drift_monitor``: recent rows against the champion's training rows;
  consecutive drifted windows, outside the cooldown, start a retrain (``drift``);
- ``new_outcome_labels`` and ``live_recall_decay``: true outcomes update live
  recall; recall below its floor starts a retrain (``decay``);
- ``run_failure_alerts``: every failed run leaves an alert record (and a webhook
  POST when configured).

Settings come from the environment (:mod:`mlplatform.core.automation_settings`).
"""

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg

from mlplatform.core.automation_settings import AutomationSettings
from mlplatform.core.batches import BatchManifest, parse_time
from mlplatform.core.monitoring import (
    DriftState,
    decide_decay,
    decide_drift,
    feature_drift,
)
from mlplatform.core.plots import drift_png
from mlplatform.core.serving import TrainingReference
from mlplatform.core.triggers import TRIGGER_TAG, Trigger
from mlplatform.defs.common import DATASET, image_md
from mlplatform.defs.jobs import (
    KIND_TAG,
    TRAINING_KIND,
    evaluate_live_job,
    train_and_score_job,
    window_inference_job,
)
from mlplatform.defs.monitoring import feature_drift as feature_drift_asset
from mlplatform.defs.registry import TRAINING_REFERENCE_DOC
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform.resources.monitoring import MonitoringStore, post_webhook, read_recent_rows

log = logging.getLogger(__name__)

AUTOMATION = AutomationSettings.from_env()
SENSOR_STATUS = (
    dg.DefaultSensorStatus.RUNNING if AUTOMATION.enabled else dg.DefaultSensorStatus.STOPPED
)
SCHEDULE_STATUS = (
    dg.DefaultScheduleStatus.RUNNING if AUTOMATION.enabled else dg.DefaultScheduleStatus.STOPPED
)
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
FEATURE_TABLE = dg.AssetKey("feature_table")


# --- what the instance knows about training ----------------------------------------------


def training_active(instance: dg.DagsterInstance) -> bool:
    """Whether a training run is queued or running."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={KIND_TAG: TRAINING_KIND}, statuses=ACTIVE_STATUSES), limit=1
    )
    return bool(records)


def last_retrain(instance: dg.DagsterInstance) -> datetime | None:
    """When the latest training run (succeeded or still active) was created."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            tags={KIND_TAG: TRAINING_KIND},
            statuses=[dg.DagsterRunStatus.SUCCESS, *ACTIVE_STATUSES],
        ),
        limit=1,
    )
    return records[0].create_timestamp.astimezone(UTC) if records else None


def last_training_as_of(instance: dg.DagsterInstance) -> datetime | None:
    """The as-of time of the latest feature table built (the rows the last training saw)."""
    event = instance.get_latest_materialization_event(FEATURE_TABLE)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("as_of")
    if value is not None and isinstance(value.value, str):
        return parse_time(value.value).to_pydatetime()
    return datetime.fromtimestamp(event.timestamp, UTC)


def rows_since(store: FeatureStore, moment: datetime | None) -> tuple[int, list[BatchManifest]]:
    """Rows stored (current versions) after ``moment`` (all rows when None), and their batches."""
    batches = [m for m in store.latest() if moment is None or parse_time(m.ingested_at) > moment]
    return sum(m.rows_stored for m in batches), batches


def _training_request(
    trigger: Trigger, run_key: str, settings: AutomationSettings, **tags: str
) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        run_config=settings.run_config(),
        tags={**trigger.tags(), **{f"mlplatform/{k}": v for k, v in tags.items()}},
    )


# --- retraining on new rows --------------------------------------------------------------


@dg.sensor(
    name="retrain_on_new_rows",
    job=train_and_score_job,
    minimum_interval_seconds=AUTOMATION.sensor_interval,
    default_status=SENSOR_STATUS,
    description="Starts a retraining run (candidate, evaluation, gate, promotion) when at "
    "least MLPLATFORM_RETRAIN_MIN_ROWS rows were stored since the last training.",
)
def retrain_on_new_rows(
    context: dg.SensorEvaluationContext, feature_store: FeatureStore
) -> dg.SensorResult | dg.SkipReason:
    """Request a retrain when enough rows arrived since the last feature table was built."""
    settings = AutomationSettings.from_env()
    if training_active(context.instance):
        return dg.SkipReason("a training run is queued or running")
    since = last_training_as_of(context.instance)
    rows, batches = rows_since(feature_store, since)
    if rows < max(1, settings.retrain_min_rows):
        return dg.SkipReason(
            f"{rows:,} new rows since the last training; {settings.retrain_min_rows:,} needed"
        )
    newest = max(m.ingested_at for m in batches)
    context.log.info(f"{rows:,} new rows in {len(batches)} batch(es): requesting a retrain")
    return dg.SensorResult(
        run_requests=[
            _training_request(Trigger.NEW_DATA, f"new-rows-{newest}", settings, new_rows=str(rows))
        ]
    )


@dg.schedule(
    name="nightly_retrain",
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    job=train_and_score_job,
    default_status=SCHEDULE_STATUS,
    description="Every night at 02:00 UTC: retrain on everything stored, if any row "
    "arrived since the last training.",
)
def nightly_retrain(
    context: dg.ScheduleEvaluationContext, feature_store: FeatureStore
) -> dg.RunRequest | dg.SkipReason:
    """The nightly retraining run (skipped when nothing new arrived)."""
    settings = AutomationSettings.from_env()
    rows, _ = rows_since(feature_store, last_training_as_of(context.instance))
    if rows == 0:
        return dg.SkipReason("no new rows since the last training")
    tick = context.scheduled_execution_time or datetime.now(UTC)
    return _training_request(
        Trigger.SCHEDULE, f"nightly-{tick:%Y-%m-%d}", settings, new_rows=str(rows)
    )


window_inference_schedule = dg.build_schedule_from_partitioned_job(
    window_inference_job,
    name="window_inference_schedule",
    description="Scores each twelve-hour event-time window (00:00-12:00, 12:00-24:00 UTC) "
    "as it closes. Missed windows: backfill window_predictions from the UI.",
    tags=Trigger.SCHEDULE.tags(),
    default_status=SCHEDULE_STATUS,
)


# --- drift -------------------------------------------------------------------------------


@dg.sensor(
    name="feature_drift_monitor",
    job=train_and_score_job,
    minimum_interval_seconds=AUTOMATION.sensor_interval,
    default_status=SENSOR_STATUS,
    description="Tests each window of newly stored rows against the champion's training rows "
    "(KS, chi-squared, PSI, Bonferroni) and records it as feature_drift; "
    "MLPLATFORM_DRIFT_WINDOWS drifted windows in a row, outside the cooldown after a "
    "retrain, start a drift-tagged retraining run.",
)
def feature_drift_monitor(
    context: dg.SensorEvaluationContext,
    feature_store: FeatureStore,
    mlflow_registry: MlflowRegistry,
    monitoring: MonitoringStore,
) -> dg.SensorResult | dg.SkipReason:
    """Evaluate the next window of new rows; request a retrain on confirmed drift."""
    settings = AutomationSettings.from_env()
    state = DriftState.from_dict(json.loads(context.cursor) if context.cursor else None)
    champion = mlflow_registry.champion()
    if champion is None:
        return dg.SkipReason("no champion yet: nothing to compare recent rows with")
    document = mlflow_registry.load_document(champion, TRAINING_REFERENCE_DOC)
    if document is None:
        return dg.SkipReason(f"champion v{champion.version} has no {TRAINING_REFERENCE_DOC}")
    reference = TrainingReference.from_dict(document)
    after = (
        parse_time(state.after).to_pydatetime()
        if state.after
        else last_training_as_of(context.instance)
    )
    rows, batches = rows_since(feature_store, after)
    if rows < settings.drift_window_rows:
        return dg.SkipReason(
            f"next drift window has {rows:,} of the {settings.drift_window_rows:,} rows it needs"
        )
    batches = sorted(batches, key=lambda m: m.ingested_at)
    frame = read_recent_rows(
        feature_store, batches, reference.features, DATASET, max_rows=settings.drift_max_rows
    )
    report = feature_drift(
        frame,
        reference,
        alpha=settings.drift_alpha,
        psi_threshold=settings.drift_psi,
        novelty_share=settings.drift_novelty,
    )
    drifted = report.loc[report["drifted"], "feature"].tolist()
    now = datetime.now(UTC)
    decision = decide_drift(
        state,
        bool(drifted),
        now=now,
        last_retrain=last_retrain(context.instance),
        training_active=training_active(context.instance),
        windows_needed=settings.drift_windows,
        cooldown=settings.cooldown,
    )
    newest = batches[-1].ingested_at
    window = f"{batches[0].ingested_at}..{newest}"
    next_state = replace(decision.state, after=newest)
    path = monitoring.write_drift(
        report,
        window=window,
        evaluated_at=now,
        info={
            "champion_version": champion.version,
            "batches": ",".join(m.key for m in batches),
            "window_drifted": bool(drifted),
            "consecutive": decision.state.consecutive,
            "retrain_requested": decision.retrain,
            "verdict": decision.reason,
        },
    )
    verdict = f"window {next_state.windows}: " + (
        f"drifted features {drifted}; {decision.reason}" if drifted else decision.reason
    )
    (context.log.warning if drifted else context.log.info)(verdict)
    materialization = dg.AssetMaterialization(
        asset_key=feature_drift_asset.key,
        description=verdict,
        metadata={
            "window": window,
            "rows": rows,
            "rows_tested": len(frame),
            "champion_version": champion.version,
            "drifted_features": ", ".join(drifted) or "none",
            "window_drifted": bool(drifted),
            "consecutive_drifted_windows": decision.state.consecutive
            if not decision.retrain
            else settings.drift_windows,
            "retrain_requested": decision.retrain,
            "verdict": decision.reason,
            "report": dg.MetadataValue.md(report.to_markdown(index=False, floatfmt=".4g")),
            "psi_plot": image_md(
                drift_png(report["feature"].tolist(), report["psi"].tolist(), settings.drift_psi),
                "PSI per feature",
            ),
            "path": dg.MetadataValue.path(str(path)),
        },
    )
    requests = (
        [
            _training_request(
                Trigger.DRIFT,
                f"drift-{newest}",
                settings,
                drifted_features=",".join(drifted),
            )
        ]
        if decision.retrain
        else []
    )
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(next_state.to_dict()),
        asset_events=[materialization],
    )


# --- live performance --------------------------------------------------------------------


@dg.sensor(
    name="new_outcome_labels",
    job=evaluate_live_job,
    minimum_interval_seconds=AUTOMATION.sensor_interval,
    default_status=SENSOR_STATUS,
    description="When a labels file (true outcomes) lands in landing/labels/, joins it with "
    "the champion's predictions: live recall and precision per window.",
)
def new_outcome_labels(
    context: dg.SensorEvaluationContext, monitoring: MonitoringStore
) -> dg.RunRequest | dg.SkipReason:
    """Request a live-performance run for the labels files waiting in the inbox."""
    pending = monitoring.pending_labels()
    if not pending:
        return dg.SkipReason("no labels file waiting in landing/labels/")
    context.log.info(f"labels waiting: {[p.name for p in pending]}")
    return dg.RunRequest(
        run_key=f"labels-{monitoring.pending_fingerprint()}", tags=Trigger.NEW_DATA.tags()
    )


@dg.sensor(
    name="live_recall_decay",
    job=train_and_score_job,
    minimum_interval_seconds=AUTOMATION.sensor_interval,
    default_status=SENSOR_STATUS,
    description="Starts a decay-tagged retraining run when the champion's live recall, in a "
    "window with at least MLPLATFORM_LIVE_MIN_POSITIVES failures, is below "
    "MLPLATFORM_LIVE_RECALL_FLOOR (once per window, outside the cooldown).",
)
def live_recall_decay(
    context: dg.SensorEvaluationContext, monitoring: MonitoringStore
) -> dg.SensorResult | dg.SkipReason:
    """Judge the newest window of live metrics; request a retrain when recall decayed."""
    settings = AutomationSettings.from_env()
    judged_through = json.loads(context.cursor)["judged_through"] if context.cursor else None
    metrics = monitoring.live_metrics()
    if metrics.empty:
        return dg.SkipReason("no live metrics yet (no outcomes received)")
    decision = decide_decay(
        metrics,
        recall_floor=settings.live_recall_floor,
        min_positives=settings.live_min_positives,
        judged_through=judged_through,
        now=datetime.now(UTC),
        last_retrain=last_retrain(context.instance),
        training_active=training_active(context.instance),
        cooldown=settings.cooldown,
    )
    cursor = json.dumps({"judged_through": decision.window or judged_through})
    if not decision.retrain:
        context.log.info(decision.reason)
        return dg.SensorResult(skip_reason=decision.reason, cursor=cursor)
    context.log.warning(f"{decision.reason}: requesting a retrain")
    return dg.SensorResult(
        run_requests=[
            _training_request(
                Trigger.DECAY,
                f"decay-{decision.window}",
                settings,
                decayed_window=str(decision.window),
            )
        ],
        cursor=cursor,
    )


# --- failures ----------------------------------------------------------------------------


# set by Dagster on a failed run that run_retries (deploy/dagster.yaml) will re-execute
WILL_RETRY_TAG = "dagster/will_retry"


@dg.run_failure_sensor(
    name="run_failure_alerts",
    minimum_interval_seconds=AUTOMATION.sensor_interval,
    default_status=SENSOR_STATUS,
    description="Writes an alert record for every failed run (monitoring/alerts/) and POSTs "
    "it to MLPLATFORM_ALERT_WEBHOOK when set (retried with backoff); a run the daemon will "
    "retry (run_retries) is recorded but not posted, so one failure pages once.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext, monitoring: MonitoringStore) -> None:
    """Record the failed run; post it to the webhook if one is configured and it is final."""
    settings = AutomationSettings.from_env()
    run = context.dagster_run
    will_retry = run.tags.get(WILL_RETRY_TAG) == "true"
    record: dict[str, object] = {
        "run_id": run.run_id,
        "job": run.job_name,
        "trigger": run.tags.get(TRIGGER_TAG, "unknown"),
        "partition": run.tags.get("dagster/partition"),
        "error": context.failure_event.message,
        "failed_steps": sorted(
            {e.step_key for e in context.get_step_failure_events() if e.step_key}
        ),
        "will_retry": will_retry,
    }
    if settings.alert_webhook and will_retry:
        record["webhook"] = "not posted: the run will be retried (its retry alerts if it fails)"
    elif settings.alert_webhook:
        try:
            status = post_webhook(settings.alert_webhook, record)
            record["webhook"] = f"posted ({status})"
        except Exception as exc:
            record["webhook"] = f"not delivered: {exc}"
            context.log.error(f"alert webhook failed for run {run.run_id}: {exc}")
    path = monitoring.write_alert(record)
    context.log.warning(f"run {run.run_id} ({run.job_name}) failed: alert recorded at {path}")


SENSORS = [
    retrain_on_new_rows,
    feature_drift_monitor,
    new_outcome_labels,
    live_recall_decay,
    run_failure_alerts,
]
SCHEDULES = [nightly_retrain, window_inference_schedule]
