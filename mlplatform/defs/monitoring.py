"""Monitoring: live performance from true outcomes, and the drift of recent feature rows.

``live_performance`` joins every labels file received (true outcomes, by entity
id) with the champion's predictions and stores recall and precision per
twelve-hour window; the ``live_recall_decay`` sensor reads that table.
``feature_drift`` is recorded by the ``feature_drift_monitor`` sensor, one
materialization per window of newly stored rows, with the per-feature tests.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from mlplatform.core import monitoring as core_monitoring
from mlplatform.core.automation_settings import AutomationSettings
from mlplatform.core.ingest import FileRejected
from mlplatform.core.monitoring import join_outcomes, live_metrics
from mlplatform.core.plots import live_metrics_png
from mlplatform.defs.common import DATASET, OWNER, code_version, image_md
from mlplatform.defs.inference import batch_predictions, window_predictions
from mlplatform.resources.landing import file_label
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform.resources.monitoring import MonitoringStore, read_champion_predictions
from mlplatform.resources.predictions import PredictionStore

MONITORING = "monitoring"

feature_drift = dg.AssetSpec(
    "feature_drift",
    group_name=MONITORING,
    kinds={"scipy"},
    owners=[OWNER],
    description="Recent feature rows against the champion's training rows, one window at a "
    "time: KS (numeric) and chi-squared (categorical) tests with a Bonferroni correction, "
    "and PSI. Recorded by the feature_drift_monitor sensor; its verdicts start retraining "
    "after consecutive drifted windows.",
)


@dg.asset(
    group_name=MONITORING,
    deps=[batch_predictions, window_predictions],
    kinds={"pandas", "parquet"},
    owners=[OWNER],
    code_version=code_version(__file__, "live_performance", uses=(core_monitoring,)),
)
def live_performance(
    context: dg.AssetExecutionContext,
    monitoring: MonitoringStore,
    prediction_store: PredictionStore,
    mlflow_registry: MlflowRegistry,
) -> Iterator[dg.MaterializeResult]:
    """The champion's live recall and precision per twelve-hour window, from true outcomes.

    Labels files dropped in ``landing/labels/`` (entity id and outcome, e.g. ``UDI``
    and ``Machine failure``) are read in chunks, kept byte for byte, joined on entity
    id with the champion's latest prediction of each entity, and the metrics of every
    window are recomputed from all outcomes received so far. Refused rows (an id that
    is not a whole number, an outcome that is not 0 or 1, a line superseded by a later
    one for the same entity) are stored with row, column and reason. A file that
    cannot be read as labels (a link, never followed; not UTF-8; a missing column; no
    rows; ...) is moved aside with its reason and fails the run, after the others are
    counted. Folders and FIFOs in the inbox are left alone, unopened.
    """
    for name, why in monitoring.left_alone_labels():
        context.log.warning(f"labels inbox: {name!r} is {why}")
    rejected: list[str] = []
    for path in monitoring.pending_labels():
        label = file_label(path.name)
        try:
            parsed = monitoring.read_outcomes(path, DATASET, label=label)
        except Exception as exc:  # any file that cannot be read is moved aside, never lost
            reason = str(exc) if isinstance(exc, FileRejected) else f"{label}: {exc!r}"
            kept = monitoring.reject_labels(path, reason)
            context.log.error(f"labels file rejected (moved to {kept.parent}): {reason}")
            rejected.append(reason)
            continue
        kept = monitoring.receive_labels(path)
        refused = parsed.refused
        if parsed.rows_refused:
            monitoring.write_refused(kept, refused)
            first = refused.iloc[0]
            context.log.warning(
                f"{label}: {parsed.rows_refused:,} row(s) refused"
                f"{'' if len(refused) == parsed.rows_refused else f' ({len(refused):,} stored)'}; "
                f"first: row {first['row_number']}, column {first['column']!r}: {first['reason']}"
            )
        context.log.info(
            f"received outcomes {label} ({parsed.rows:,} rows, {len(parsed.valid):,} outcomes)"
        )
    outcomes = []
    for kept in monitoring.received_labels():
        try:
            outcomes.append(monitoring.read_outcomes(kept, DATASET).valid)
        except FileRejected as exc:  # kept by an earlier version that took it
            context.log.warning(f"a kept labels file no longer reads, left out: {exc}")
    # a later file's outcome for an entity corrects an earlier one
    all_outcomes = (
        pd.concat(outcomes, ignore_index=True).drop_duplicates("entity_id", keep="last")
        if outcomes
        else pd.DataFrame({"entity_id": pd.Series(dtype="int64"), "outcome": []})
    )
    predictions = read_champion_predictions(
        prediction_store, all_outcomes["entity_id"].tolist(), mlflow_registry.champion_alias
    )
    joined = join_outcomes(all_outcomes, predictions)
    metrics = live_metrics(joined)
    path = monitoring.write_live_metrics(metrics)
    settings = AutomationSettings.from_env()
    unmatched = len(all_outcomes) - len(joined)
    context.log.info(
        f"{len(joined):,} outcomes joined with the champion's predictions "
        f"({unmatched:,} without a prediction), {len(metrics)} window(s)"
    )
    latest = metrics.loc[metrics["positives"] >= settings.live_min_positives].tail(1)
    metadata: dict[str, Any] = {
        "outcomes": len(all_outcomes),
        "joined": len(joined),
        "without_prediction": unmatched,
        "windows": len(metrics),
        "recall_floor": settings.live_recall_floor,
        "path": dg.MetadataValue.path(str(path)),
        "windows_table": dg.MetadataValue.md(
            metrics.tail(12).to_markdown(index=False, floatfmt=".3f") if len(metrics) else "none"
        ),
    }
    if not latest.empty:
        metadata["live_recall"] = float(latest["recall"].iloc[0])
        metadata["live_precision"] = float(latest["precision"].iloc[0])
        metadata["latest_judged_window"] = str(latest["window_start"].iloc[0])
    if len(metrics):
        metadata["live_metrics_plot"] = image_md(
            live_metrics_png(metrics, settings.live_recall_floor), "live recall and precision"
        )
    if rejected:
        raise dg.Failure(
            description="labels file(s) rejected: " + "; ".join(rejected),
            metadata={"rejected": "; ".join(rejected)},
            allow_retries=False,
        )
    yield dg.MaterializeResult(metadata=metadata)
