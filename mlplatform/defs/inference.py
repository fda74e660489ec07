"""Inference: batch predictions per source batch, streamed, with train/serve checks.

``batch_predictions`` is partitioned like ingestion (one partition per source
batch), so every file or SQL pull is scored once it is stored, and a partition can
be re-scored on its own (e.g. by a pinned model version for a backfill or an A/B
comparison). Rows are streamed from the stored batch in record batches; memory does
not grow with the batch's size.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.compute as pc
from pydantic import Field

from mlplatform.core import serving as core_serving
from mlplatform.core.automation_settings import AutomationSettings
from mlplatform.core.batches import parse_time
from mlplatform.core.plots import drift_png, probability_histogram_png
from mlplatform.core.serving import (
    ServingInputError,
    TrainingReference,
    drift_report,
    pipeline_threshold,
)
from mlplatform.defs.common import DATASET, INFERENCE, OWNER, code_version, image_md
from mlplatform.defs.ingestion import SOURCE_BATCHES, raw_observations
from mlplatform.defs.policies import EXTERNAL_SERVICE_RETRY
from mlplatform.defs.registry import TRAINING_REFERENCE_DOC, champion_model, mlflow_links
from mlplatform.resources.batch_scoring import DEFAULT_BATCH_ROWS, score_dataset
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.mlflow_registry import MlflowRegistry, ModelVersionRef
from mlplatform.resources.predictions import PredictionStore

# PSI above 0.2 is the usual "significant shift" rule of thumb
PSI_THRESHOLD = 0.2


class ScoringConfig(dg.Config):
    """Which model scores the batch, and how many rows at a time."""

    model_version: str | None = Field(
        default=None,
        description="Pin a registered version instead of the champion alias (backfills, "
        "comparisons). None: models:/<name>@champion.",
    )
    also_versions: list[str] = Field(
        default_factory=list,
        description="Other versions (e.g. a challenger) scoring the same rows; each is "
        "stored beside the main predictions.",
    )
    batch_rows: int = Field(
        default=DEFAULT_BATCH_ROWS,
        description="Rows read and scored at a time: the memory bound.",
    )


def _models(config: ScoringConfig, registry: MlflowRegistry) -> list[tuple[ModelVersionRef, str]]:
    main: list[tuple[ModelVersionRef, str]] = []
    if config.model_version is not None:
        main = [(registry.get_version(config.model_version), "pinned")]
    else:
        champion = registry.champion()
        if champion is not None:
            main = [(champion, registry.champion_alias)]
    others = [(registry.get_version(v), "challenger") for v in config.also_versions]
    return main + others


def _score_partition(
    context: dg.AssetExecutionContext,
    key: str,
    paths: list[Path],
    models: list[tuple[ModelVersionRef, str]],
    config: ScoringConfig,
    mlflow_registry: MlflowRegistry,
    prediction_store: PredictionStore,
    row_filter: pc.Expression | None = None,
) -> dict[str, Any]:
    """Score ``paths`` (only the rows ``row_filter`` keeps) into partition ``key``.

    Checks the input against each model's training reference, streams the rows,
    stores predictions, totals and the drift report; returns the run's metadata.
    """
    scored_at = datetime.now(UTC)
    metadata: dict[str, Any] = {}
    for ref, role in models:
        document = mlflow_registry.load_document(ref, TRAINING_REFERENCE_DOC)
        if document is None:
            raise dg.Failure(
                f"{ref.name} version {ref.version} has no {TRAINING_REFERENCE_DOC}: it was "
                "registered before train/serve checks existed; retrain or pin a newer version",
                allow_retries=False,
            )
        reference = TrainingReference.from_dict(document)
        pipeline = mlflow_registry.load(ref)
        threshold = pipeline_threshold(pipeline)
        try:
            summary = score_dataset(
                paths,
                pipeline,
                DATASET,
                reference,
                out_dir=prediction_store.batch_dir(key),
                partition=f"v{ref.version}",
                model_name=ref.name,
                model_version=ref.version,
                alias=role,
                threshold=float("nan") if threshold is None else threshold,
                run_id=context.run.run_id,
                scored_at=scored_at,
                batch_rows=config.batch_rows,
                row_filter=row_filter,
            )
        except ServingInputError as exc:
            raise dg.Failure(description=f"batch {key}: {exc}", allow_retries=False) from exc
        flagged = {k: v for k, v in summary.out_of_range.items() if v}
        context.log.info(
            f"batch {key}: {summary.rows:,} rows scored by {ref.name} v{ref.version} ({role}); "
            f"{summary.positive_rate:.2%} predicted to fail"
        )
        if flagged:
            context.log.warning(
                f"batch {key}: values outside the training range (scored, flagged): {flagged}"
            )
        prefix = "" if not metadata else f"v{ref.version}_"
        metadata.update(
            {
                f"{prefix}model_version": ref.version,
                f"{prefix}model_role": role,
                f"{prefix}rows": summary.rows,
                f"{prefix}predicted_positive_rate": summary.positive_rate,
                f"{prefix}out_of_range": dg.MetadataValue.json(flagged),
                f"{prefix}path": dg.MetadataValue.path(
                    str(prediction_store.batch_dir(key) / f"v{ref.version}")
                ),
            }
        )
        totals = summary.as_dict()
        prediction_store.write_summary(
            key,
            ref.version,
            pd.DataFrame(
                {
                    "batch": [key],
                    "model_version": [ref.version],
                    "role": [role],
                    "dagster_run_id": [context.run.run_id],
                    "scored_at": [pd.Timestamp(scored_at)],
                    "rows": [summary.rows],
                    "positives": [summary.positives],
                    "positive_rate": [summary.positive_rate],
                    "probability_histogram": [list(summary.histogram)],
                    "out_of_range": [json.dumps(totals["out_of_range"])],
                    "missing_values": [json.dumps(totals["missing_values"])],
                }
            ),
        )
        drift = drift_report(summary.bins, reference, psi_threshold=PSI_THRESHOLD)
        drift_path = prediction_store.write_drift(key, ref.version, drift)
        drifted = drift.loc[drift["drifted"], "feature"].tolist()
        if drifted:
            context.log.warning(f"batch {key}: features drifted from training: {drifted}")
        metadata[f"{prefix}drifted_features"] = ", ".join(drifted) or "none"
        if not prefix:
            metadata["drift"] = dg.MetadataValue.md(drift.to_markdown(index=False, floatfmt=".4g"))
            metadata["drift_plot"] = image_md(
                drift_png(drift["feature"].tolist(), drift["psi"].tolist(), PSI_THRESHOLD),
                "PSI per feature",
            )
            metadata["drift_report"] = dg.MetadataValue.path(str(drift_path))
            metadata["decision_threshold"] = threshold
            metadata["probability_histogram"] = image_md(
                probability_histogram_png(summary.histogram, threshold),
                "probability histogram",
            )
            metadata["model_uri"] = ref.uri
            metadata.update(mlflow_links(mlflow_registry.tracking_uri, ref))
    return metadata


@dg.asset(
    group_name=INFERENCE,
    partitions_def=SOURCE_BATCHES,
    deps=[raw_observations, champion_model],
    output_required=False,
    kinds={"sklearn", "parquet", "mlflow"},
    owners=[OWNER],
    code_version=code_version(
        __file__,
        "batch_predictions",
        "ScoringConfig",
        "_models",
        "_score_partition",
        uses=(core_serving,),
    ),
    retry_policy=EXTERNAL_SERVICE_RETRY,
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    feature_store: FeatureStore,
    mlflow_registry: MlflowRegistry,
    prediction_store: PredictionStore,
) -> Iterator[dg.MaterializeResult]:
    """Failure probabilities for one source batch, from the champion (or pinned versions).

    The batch's stored rows are checked against the model's training reference first:
    a missing or mistyped column fails the run naming the column, with nothing
    written; values outside the training range are scored, counted and flagged.
    """
    key = context.partition_key
    models = _models(config, mlflow_registry)
    if not models:
        context.log.warning(
            f"no champion yet for {mlflow_registry.model_name!r}: batch {key} not scored. "
            "A model becomes champion when it passes the recall gate."
        )
        return
    metadata = _score_partition(
        context,
        key,
        feature_store.batch_paths(key),
        models,
        config,
        mlflow_registry,
        prediction_store,
    )
    yield dg.MaterializeResult(metadata=metadata)


WINDOW_HOURS_CRON = "0 0,12 * * *"
INFERENCE_WINDOWS = dg.TimeWindowPartitionsDefinition(
    start=parse_time(AutomationSettings.from_env().windows_start).to_pydatetime(),
    fmt="%Y-%m-%d-%H:%M",
    cron_schedule=WINDOW_HOURS_CRON,
    timezone="UTC",
)
"""Twelve-hour windows of event time, 00:00-12:00 and 12:00-24:00 UTC."""


def window_key(start: datetime) -> str:
    """The prediction folder of the window starting at ``start``."""
    return f"window-{start.astimezone(UTC):%Y%m%dT%H%M}Z"


@dg.asset(
    group_name=INFERENCE,
    partitions_def=INFERENCE_WINDOWS,
    # a window's rows may come from any source batch
    deps=[
        dg.AssetDep(raw_observations, partition_mapping=dg.AllPartitionMapping()),
        champion_model,
    ],
    output_required=False,
    kinds={"sklearn", "parquet", "mlflow"},
    owners=[OWNER],
    code_version=code_version(
        __file__,
        "window_predictions",
        "ScoringConfig",
        "_models",
        "_score_partition",
        uses=(core_serving,),
    ),
    retry_policy=EXTERNAL_SERVICE_RETRY,
)
def window_predictions(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    feature_store: FeatureStore,
    mlflow_registry: MlflowRegistry,
    prediction_store: PredictionStore,
) -> Iterator[dg.MaterializeResult]:
    """Failure probabilities for every stored row whose event time is in a twelve-hour window.

    The scheduled inference: each window (00:00-12:00, 12:00-24:00 UTC) is scored
    once it has closed, by the champion (or pinned versions), with the same checks,
    streaming and monitoring as ``batch_predictions``. A missed window is a missing
    partition: backfill it from the UI. Rows are read from the current version of
    every batch whose event times overlap the window.
    """
    window = context.partition_time_window
    start, end = parse_time(window.start), parse_time(window.end)
    key = window_key(start)
    event_time = DATASET.event_time
    if event_time is None:
        raise dg.Failure(
            f"dataset {DATASET.name!r} declares no event time: windows cannot be scored",
            allow_retries=False,
        )
    chosen = [
        m
        for m in feature_store.latest()
        if m.event_time_min is not None
        and m.event_time_max is not None
        and parse_time(m.event_time_min) < end
        and parse_time(m.event_time_max) >= start
    ]
    label = f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    if not chosen:
        context.log.info(f"window {label}: no stored rows; nothing to score")
        yield dg.MaterializeResult(metadata={"window": label, "rows": 0, "batches": 0})
        return
    models = _models(config, mlflow_registry)
    if not models:
        context.log.warning(
            f"no champion yet for {mlflow_registry.model_name!r}: window {label} not scored"
        )
        return
    paths = [p for m in chosen for p in feature_store.batch_paths(m.key, m.version)]
    in_window = (pc.field(event_time) >= pd.Timestamp(start)) & (
        pc.field(event_time) < pd.Timestamp(end)
    )
    context.log.info(f"window {label}: scoring rows of {len(chosen)} batch(es)")
    metadata = _score_partition(
        context, key, paths, models, config, mlflow_registry, prediction_store, in_window
    )
    yield dg.MaterializeResult(
        metadata={"window": label, "batches": ", ".join(m.key for m in chosen), **metadata}
    )
