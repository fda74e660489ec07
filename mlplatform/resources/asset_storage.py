"""IO manager for values passed between assets: Parquet for tables, joblib otherwise.

Values live at ``<base_dir>/<asset key>.parquet`` (DataFrames) or ``.joblib``
(fitted pipelines and small records), written atomically. Parquet keeps tables
readable by any tool; joblib is used only for objects this platform wrote itself
(never for anything from the landing area).

An input annotated :class:`StoredTable` gets the stored table unread: the asset
reads only the columns and rows it needs (a large feature table never has to fit
in memory whole).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.resources.files import write_parquet_atomic, write_with_atomic

__all__ = ["AssetStorage", "StoredTable"]

# rows decoded at a time while picking sampled rows: the memory bound of a read
_READ_BATCH_ROWS = 1 << 16


@dataclass(frozen=True)
class StoredTable:
    """A table stored as Parquet, read on demand: some columns, some rows."""

    path: Path

    @property
    def num_rows(self) -> int:
        """Rows in the table (from the file's footer; nothing is read)."""
        return int(pq.ParquetFile(self.path).metadata.num_rows)

    @property
    def columns(self) -> list[str]:
        """The table's columns, in order."""
        return list(pq.read_schema(self.path).names)

    @property
    def attrs(self) -> dict[str, Any]:
        """The ``DataFrame.attrs`` it was written with (as ``pd.read_parquet`` restores them)."""
        metadata = pq.read_schema(self.path).metadata or {}
        raw = metadata.get(b"PANDAS_ATTRS")
        return dict(json.loads(raw)) if raw else {}

    def read_column(self, name: str) -> np.ndarray:
        """One column's values, as a NumPy array."""
        return np.asarray(pq.read_table(self.path, columns=[name]).column(0).to_numpy())

    def read(self, columns: Sequence[str], rows: np.ndarray | None = None) -> pd.DataFrame:
        """``columns`` of the rows at positions ``rows`` (sorted; all rows when None).

        Rows are picked from batches of the file as they are decoded, so what is held
        is the rows kept plus one batch, never the whole table. The frame's dtypes and
        ``attrs`` are those ``pd.read_parquet`` gives.

        Raises
        ------
        KeyError
            Naming the columns the table does not have.
        """
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise KeyError(f"{self.path.name} has no columns {missing}")
        parquet = pq.ParquetFile(self.path)
        if rows is None:
            table = parquet.read(columns=list(columns))
        else:
            positions = np.asarray(rows, dtype="int64")
            if positions.size and (np.any(np.diff(positions) <= 0) or positions[0] < 0):
                raise ValueError("rows must be increasing, non-negative positions")
            if positions.size and positions[-1] >= parquet.metadata.num_rows:
                raise IndexError(f"row {positions[-1]} beyond the table's {self.num_rows} rows")
            kept: list[pa.RecordBatch] = []
            start = 0
            for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, columns=list(columns)):
                lo, hi = np.searchsorted(positions, [start, start + batch.num_rows])
                if hi > lo:
                    kept.append(batch.take(pa.array(positions[lo:hi] - start)))
                start += batch.num_rows
            schema = parquet.schema_arrow
            table = pa.Table.from_batches(
                kept, schema=pa.schema([schema.field(c) for c in columns], schema.metadata)
            )
        frame = table.to_pandas(split_blocks=True, self_destruct=True)
        frame.attrs = self.attrs
        return frame


class AssetStorage(dg.ConfigurableIOManager):
    """Stores each asset's value as one file named by its asset key."""

    base_dir: str

    def _stem(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir) / "__".join(key.path)

    def path_for(self, key: dg.AssetKey) -> Path | None:
        """The file holding ``key``'s value, if one has been written."""
        for suffix in (".parquet", ".joblib"):
            p = self._stem(key).with_suffix(suffix)
            if p.exists():
                return p
        return None

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write ``obj`` atomically; removes a stale file of the other format."""
        if obj is None:
            return
        stem = self._stem(context.asset_key)
        if isinstance(obj, pd.DataFrame):
            target = write_parquet_atomic(obj, stem.with_suffix(".parquet"))
            stem.with_suffix(".joblib").unlink(missing_ok=True)
            context.add_output_metadata(
                {"path": dg.MetadataValue.path(str(target)), "rows": len(obj)}
            )
        else:
            target = write_with_atomic(
                lambda tmp: joblib.dump(obj, tmp), stem.with_suffix(".joblib")
            )
            stem.with_suffix(".parquet").unlink(missing_ok=True)

    def load_input(self, context: dg.InputContext) -> Any:
        """Read the upstream asset's value, with a clear error if it was never written.

        A table input annotated :class:`StoredTable` is handed over unread.
        """
        key = context.asset_key
        path = self.path_for(key)
        if path is None:
            raise FileNotFoundError(
                f"asset {key.to_user_string()!r} has no stored value under {self.base_dir}; "
                "materialize it first"
            )
        if path.suffix == ".parquet":
            if context.dagster_type.typing_type is StoredTable:
                return StoredTable(path)
            return pd.read_parquet(path)
        return joblib.load(path)
