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

    def batch_dir(self, batch: str) -> Path:
        """The folder of one source batch's predictions (one sub-folder per model version)."""
        return Path(self.root) / batch

    def files(self) -> list[Path]:
        """Every published prediction part, oldest first (``.`` and ``_`` folders skipped)."""
        root = Path(self.root)
        if not root.is_dir():
            return []
        parts = [
            p
            for p in root.rglob("*.parquet")
            # hidden: a run still writing (.tmp-), reports beside the predictions (_monitoring)
            if not any(x.startswith((".", "_", TMP_PREFIX)) for x in p.relative_to(root).parts)
        ]
        return sorted(parts, key=lambda p: (p.stat().st_mtime, str(p)))

    def write_drift(self, batch: str, version: str, report: pd.DataFrame) -> Path:
        """Store a scoring run's per-feature drift report (read by monitoring and sensors)."""
        target = Path(self.root) / "_monitoring" / f"{batch}__v{version}__drift.parquet"
        return write_parquet_atomic(report, target)

    def write_summary(self, batch: str, version: str, summary: pd.DataFrame) -> Path:
        """Store a scoring run's totals (rows, positive rate, probability histogram)."""
        target = Path(self.root) / "_monitoring" / f"{batch}__v{version}__summary.parquet"
        return write_parquet_atomic(summary, target)

    def summaries(self) -> pd.DataFrame:
        """Every stored scoring summary, one row per (batch, model version)."""
        folder = Path(self.root) / "_monitoring"
        paths = sorted(folder.glob("*__summary.parquet")) if folder.is_dir() else []
        frames = [pd.read_parquet(p) for p in paths]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def drift_reports(self) -> pd.DataFrame:
        """Every stored drift report, with its batch and model version."""
        folder = Path(self.root) / "_monitoring"
        frames = []
        for p in sorted(folder.glob("*__drift.parquet")) if folder.is_dir() else []:
            batch, version, _ = p.name.split("__")
            frames.append(pd.read_parquet(p).assign(batch=batch, model_version=version[1:]))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def read(self, batch: str, version: str) -> pd.DataFrame:
        """The predictions of ``batch`` by model ``version``."""
        return pd.read_parquet(self.batch_dir(batch) / f"v{version}")
