"""The one place that chooses where resources read and write."""

import os
from typing import Any

from mlplatform.defs.common import DATASET
from mlplatform.paths import StatePaths
from mlplatform.resources.asset_storage import AssetStorage
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.landing import LandingArea
from mlplatform.resources.ledger import PromotionLedger
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform.resources.monitoring import MonitoringStore
from mlplatform.resources.predictions import PredictionStore
from mlplatform.resources.sql_source import SqlTableSource

__all__ = ["LEDGER_URL_ENV", "SQL_TABLE", "SQL_URL_ENV", "build_resources"]

LEDGER_URL_ENV = "MLPLATFORM_LEDGER_URL"
SQL_URL_ENV = "MLPLATFORM_SQL_URL"
# The SQL source's table: readings with canonical column names, an autoincrement
# watermark and the time each reading was taken.
SQL_SOURCE_NAME = "machines"
SQL_TABLE = "machine_readings"
SQL_WATERMARK = "reading_id"
SQL_EVENT_TIME = "recorded_at"


def build_resources(
    paths: StatePaths, *, tracking_uri: str | None = None, ledger_url: str | None = None
) -> dict[str, Any]:
    """Every resource, rooted at ``paths``.

    ``tracking_uri`` overrides the embedded MLflow store and ``ledger_url`` the embedded
    SQLite promotion ledger (a deployment with an MLflow server keeps its ledger in a
    shared database too).
    """
    landing = LandingArea(
        landing_dir=str(paths.landing),
        archive_dir=str(paths.archive),
        rejected_dir=str(paths.rejected),
        numeric_columns=DATASET.numeric_headers,
        integer_columns=DATASET.integer_headers,
    )
    sql_source = SqlTableSource(
        name=SQL_SOURCE_NAME,
        url=os.environ.get(SQL_URL_ENV) or paths.sources_db_url,
        table=SQL_TABLE,
        watermark_column=SQL_WATERMARK,
        event_time_column=SQL_EVENT_TIME,
    )
    return {
        "landing": landing,
        "sql_source": sql_source,
        # every source the feature store ingests from; a new source is one more entry
        "sources": [landing, sql_source],
        "feature_store": FeatureStore(root=str(paths.feature_store)),
        "prediction_store": PredictionStore(root=str(paths.predictions)),
        "monitoring": MonitoringStore(
            root=str(paths.monitoring), labels_inbox=str(paths.labels_inbox)
        ),
        "mlflow_registry": MlflowRegistry(
            model_name=DATASET.model_name,
            tracking_uri=tracking_uri or paths.mlflow_tracking_uri,
            artifact_root=None if tracking_uri else paths.mlflow_artifact_root,
        ),
        "ledger": PromotionLedger(url=ledger_url or paths.ledger_url),
        "io_manager": AssetStorage(base_dir=str(paths.asset_storage)),
        "feature_io_manager": AssetStorage(base_dir=str(paths.feature_store)),
    }
