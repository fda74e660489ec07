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
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from mlplatform.core.plots import drift_png, probability_histogram_png
from mlplatform.core.serving import (
    ServingInputError,
    TrainingReference,
    drift_report,
    pipeline_threshold,
)
from mlplatform.defs.common import DATASET, INFERENCE, image_md
from mlplatform.defs.ingestion import SOURCE_BATCHES, raw_observations
from mlplatform.defs.registry import TRAINING_REFERENCE_DOC, champion_model
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


@dg.asset(
    group_name=INFERENCE,
    partitions_def=SOURCE_BATCHES,
    deps=[raw_observations, champion_model],
    output_required=False,
    kinds={"sklearn", "parquet"},
    owners=["team:ml-platform"],
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
    paths = feature_store.batch_paths(key)
    scored_at = datetime.now(UTC)
    metadata: dict[str, Any] = {}
    for ref, role in models:
        document = mlflow_registry.load_document(ref, TRAINING_REFERENCE_DOC)
        if document is None:
            raise dg.Failure(
                f"{ref.name} version {ref.version} has no {TRAINING_REFERENCE_DOC}: it was "
                "registered before train/serve checks existed; retrain or pin a newer version"
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
            )
        except ServingInputError as exc:
            raise dg.Failure(description=f"batch {key}: {exc}") from exc
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
    yield dg.MaterializeResult(metadata=metadata)
