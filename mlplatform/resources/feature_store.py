"""The feature store on disk: typed raw batches and the quarantine, in Parquet.

One Parquet file per ingested landed file, named by its content hash, so a file
is ingested once however often it is dropped. The quarantine keeps every invalid
row with its file, row number, column and reason.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

from mlplatform.resources.files import TMP_PREFIX, write_parquet_atomic

__all__ = ["FeatureStore"]


class FeatureStore(dg.ConfigurableResource):
    """Typed raw batches and the quarantine under one folder."""

    root: str

    @property
    def _batches(self) -> Path:
        return Path(self.root) / "raw"

    @property
    def _quarantine(self) -> Path:
        return Path(self.root) / "quarantine"

    def has_batch(self, sha256: str) -> bool:
        """Whether a landed file with this content hash was already ingested."""
        return (self._batches / f"{sha256}.parquet").exists()

    def write_batch(self, sha256: str, rows: pd.DataFrame, quarantine: pd.DataFrame) -> None:
        """Store a file's valid rows and its quarantined rows (quarantine first).

        The batch file is written last: its presence marks the file as ingested,
        so a crash in between leaves the file pending, to be ingested again.
        """
        if not quarantine.empty:
            write_parquet_atomic(quarantine, self._quarantine / f"{sha256}.parquet")
        write_parquet_atomic(rows, self._batches / f"{sha256}.parquet")

    def read_observations(self) -> pd.DataFrame:
        """Every stored valid row, in ingestion order."""
        files = self._files(self._batches)
        if not files:
            return pd.DataFrame()
        frames = [pq.read_table(f).to_pandas() for f in files]
        out = pd.concat(frames, ignore_index=True)
        return out.sort_values(
            ["ingested_at", "source_file", "source_row"], kind="stable"
        ).reset_index(drop=True)

    def read_quarantine(self) -> pd.DataFrame:
        """Every quarantined row, from every file."""
        files = self._files(self._quarantine)
        if not files:
            return pd.DataFrame()
        return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(TMP_PREFIX))
