"""Inference: batch predictions from the registered champion."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlplatform.core.scoring import newest_rows, score_rows
from mlplatform.defs.common import DATASET, INFERENCE, preview_md
from mlplatform.defs.registry import champion_model
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform.resources.predictions import PredictionStore


@dg.asset(
    group_name=INFERENCE,
    deps=[champion_model],
    output_required=False,
    kinds={"sklearn", "parquet"},
    owners=["team:ml-platform"],
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    feature_table: pd.DataFrame,
    mlflow_registry: MlflowRegistry,
    prediction_store: PredictionStore,
) -> Iterator[dg.MaterializeResult]:
    """Failure probabilities for the newest feature rows, from models:/<name>@champion."""
    champion = mlflow_registry.champion()
    if champion is None:
        context.log.warning(
            f"no champion yet for {mlflow_registry.model_name!r}: nothing scored. "
            "A model becomes champion when it passes the recall gate."
        )
        return
    pipeline = mlflow_registry.load(champion)
    rows = newest_rows(feature_table)
    scored_at = datetime.now(UTC)
    predictions = score_rows(
        pipeline,
        rows,
        DATASET,
        model_name=champion.name,
        model_version=champion.version,
        scored_at=scored_at,
    )
    name = f"{scored_at:%Y%m%dT%H%M%S}Z_{context.run.run_id[:8]}"
    path = prediction_store.write(predictions, name)
    context.log.info(
        f"scored {len(predictions)} rows with {champion.name} v{champion.version}; wrote {path}"
    )
    yield dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "rows": len(predictions),
            "predicted_positive_rate": float(predictions["predicted_failure"].mean())
            if len(predictions)
            else 0.0,
            "model_version": champion.version,
            "model_uri": f"models:/{champion.name}@{mlflow_registry.champion_alias}",
            "preview": preview_md(predictions),
        }
    )
