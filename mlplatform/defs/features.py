"""Features: the feature table the models read, built from the stored observations."""

import dagster as dg
import pandas as pd

from mlplatform.core.digest import frame_digest
from mlplatform.core.features import build_feature_table
from mlplatform.defs.common import DATASET, FEATURES, preview_md
from mlplatform.defs.ingestion import raw_observations
from mlplatform.resources.feature_store import FeatureStore


@dg.asset(
    group_name=FEATURES,
    deps=[raw_observations],
    io_manager_key="feature_io_manager",
    kinds={"pandas", "parquet"},
    owners=["team:ml-platform"],
)
def feature_table(feature_store: FeatureStore) -> dg.Output[pd.DataFrame]:
    """Model inputs, derived features (temperature gap, power, tool strain) and the target."""
    table = build_feature_table(feature_store.read_observations(), DATASET)
    return dg.Output(
        table,
        metadata={
            "rows": len(table),
            "positive_rate": float(table[DATASET.target].mean()),
            "model_features": ", ".join(DATASET.model_features),
            "excluded_from_model": ", ".join(DATASET.excluded_from_model),
            "dataset_digest": frame_digest(table),
            "preview": preview_md(table),
        },
    )
