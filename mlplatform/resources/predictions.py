"""Batch predictions on disk: one Parquet file per scoring run, written atomically."""

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

    def files(self) -> list[Path]:
        """Every prediction file, oldest name first."""
        root = Path(self.root)
        if not root.is_dir():
            return []
        return sorted(p for p in root.glob("*.parquet") if not p.name.startswith(TMP_PREFIX))
