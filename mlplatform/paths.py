"""Where the platform keeps its state: one folder, chosen by one environment variable.

``MLPLATFORM_HOME`` (default ``./data``) holds the Dagster home, the MLflow SQLite
backend and artifacts, the landing area, the feature store, the predictions and
the promotion ledger.
Nothing here touches the disk at import time; :meth:`StatePaths.ensure` creates
the folders when a command needs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HOME_ENV", "StatePaths"]

HOME_ENV = "MLPLATFORM_HOME"
DEFAULT_HOME = "data"


@dataclass(frozen=True)
class StatePaths:
    """Every folder and file of the platform's state, under one root."""

    root: Path

    @classmethod
    def from_env(cls) -> StatePaths:
        """The state folder named by ``MLPLATFORM_HOME``, else ``./data``, made absolute."""
        return cls(Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve())

    @property
    def landing(self) -> Path:
        """Inbox: drop CSV or Parquet files here."""
        return self.root / "landing"

    @property
    def archive(self) -> Path:
        """Every landed file, kept byte for byte after ingestion."""
        return self.root / "archive"

    @property
    def rejected(self) -> Path:
        """Landed files that could not be ingested, each with a reason file."""
        return self.root / "rejected"

    @property
    def feature_store(self) -> Path:
        """Typed raw batches, the quarantine and the feature table (Parquet)."""
        return self.root / "feature_store"

    @property
    def asset_storage(self) -> Path:
        """Values passed between assets (the IO manager's folder)."""
        return self.root / "assets"

    @property
    def predictions(self) -> Path:
        """Batch predictions (Parquet)."""
        return self.root / "predictions"

    @property
    def mlflow_dir(self) -> Path:
        """MLflow's SQLite backend store and artifact root."""
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        """SQLite URI of the embedded MLflow backend store."""
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> str:
        """File URI of the embedded MLflow artifact root."""
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def ledger_url(self) -> str:
        """SQLAlchemy URL of the promotion ledger (SQLite, beside the other state)."""
        return f"sqlite:///{self.root / 'ledger.db'}"

    @property
    def sources_db_url(self) -> str:
        """The embedded SQL source: a SQLite database of machine readings."""
        return f"sqlite:///{self.root / 'sources.db'}"

    @property
    def labels_inbox(self) -> Path:
        """Inbox for true outcomes: labels files (entity id, outcome) of scored rows."""
        return self.landing / "labels"

    @property
    def monitoring(self) -> Path:
        """Drift windows, live performance, labels received and run-failure alerts."""
        return self.root / "monitoring"

    @property
    def dagster_home(self) -> Path:
        """``DAGSTER_HOME``: runs, event logs and schedules of the local instance."""
        return self.root / "dagster_home"

    def ensure(self) -> None:
        """Create every folder (idempotent)."""
        for p in (
            self.landing,
            self.labels_inbox,
            self.archive,
            self.rejected,
            self.feature_store,
            self.asset_storage,
            self.predictions,
            self.monitoring,
            self.mlflow_dir / "artifacts",
            self.dagster_home,
        ):
            p.mkdir(parents=True, exist_ok=True)
