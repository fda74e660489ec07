"""Batch predictions on disk: one folder per source batch, one partition per model version.

Layout: ``<root>/<batch>/v<version>/part-*.parquet``, published atomically by
:func:`mlplatform.resources.batch_scoring.score_dataset`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform.resources.files import TMP_PREFIX, write_parquet_atomic

__all__ = ["PredictionStore"]


class PredictionStore(dg.ConfigurableResource):
    """Writes and lists prediction files."""

    root: str

    def write(self, predictions: pd.DataFrame, name: str) -> Path:
        """Store ``predictions`` as ``<root>/<name>.parquet``; returns the path."""
        return write_parquet_atomic(predictions, Path(self.root) / f"{name}.parquet")

    def batch_dir(self, batch: str) -> Path:
        """The folder of one source batch's predictions (one sub-folder per model version)."""
        return Path(self.root) / batch

    def files(self) -> list[Path]:
        """Every published prediction part, oldest first (hidden folders skipped)."""
        root = Path(self.root)
        if not root.is_dir():
            return []
        parts = [
            p
            for p in root.rglob("*.parquet")
            if not any(x.startswith((".", TMP_PREFIX)) for x in p.relative_to(root).parts)
        ]
        return sorted(parts, key=lambda p: (p.stat().st_mtime, str(p)))

    def read(self, batch: str, version: str) -> pd.DataFrame:
        """The predictions of ``batch`` by model ``version``."""
        return pd.read_parquet(self.batch_dir(batch) / f"v{version}")
