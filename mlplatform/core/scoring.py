"""Batch scoring of feature rows with a registered pipeline."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sklearn.pipeline import Pipeline

from mlplatform.core.features import model_inputs
from mlplatform.core.schema import DatasetSpec

__all__ = ["PREDICTION_COLUMNS", "newest_rows", "score_rows"]

PREDICTION_COLUMNS = [
    "entity_id",
    "failure_probability",
    "predicted_failure",
    "model_name",
    "model_version",
    "scored_at",
]


def newest_rows(table: pd.DataFrame, column: str = "ingested_at") -> pd.DataFrame:
    """The rows of the most recent ingestion (all rows if ``column`` is absent)."""
    if table.empty or column not in table.columns:
        return table
    return table.loc[table[column] == table[column].max()]


def score_rows(
    pipeline: Pipeline,
    rows: pd.DataFrame,
    spec: DatasetSpec,
    *,
    model_name: str,
    model_version: str,
    scored_at: datetime,
) -> pd.DataFrame:
    """Failure probability and label (at the pipeline's own threshold) for every row.

    Every output row carries the model name, version and scoring time.
    """
    x = model_inputs(rows, spec)
    proba = pipeline.predict_proba(x)[:, 1] if len(x) else []
    labels = pipeline.predict(x) if len(x) else []
    out = pd.DataFrame(
        {
            "entity_id": rows[spec.entity_id].to_numpy(),
            "failure_probability": pd.Series(proba, dtype="float64").to_numpy(),
            "predicted_failure": pd.Series(labels, dtype="int64").to_numpy(),
        }
    )
    out["model_name"] = pd.Series([model_name] * len(out), dtype="string")
    out["model_version"] = pd.Series([model_version] * len(out), dtype="string")
    out["scored_at"] = pd.Series([pd.Timestamp(scored_at)] * len(out), dtype="datetime64[us, UTC]")
    return out[PREDICTION_COLUMNS]
