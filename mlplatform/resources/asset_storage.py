"""IO manager for values passed between assets: Parquet for tables, joblib otherwise.

Values live at ``<base_dir>/<asset key>.parquet`` (DataFrames), ``.snapshot.json``
(feature table snapshots) or ``.joblib`` (fitted pipelines and small records),
written atomically. Parquet keeps tables readable by any tool; joblib is used only
for objects this platform wrote itself (never for anything from the landing area).

A snapshot is stored as its JSON file only: the rows stay in the feature store's
parts it names, which must live under ``base_dir`` (the feature store's root: the
``feature_io_manager``). An input annotated :class:`StoredTable` gets the stored
table unread (a :class:`ParquetTable` or a :class:`SnapshotTable`): the asset reads
only the columns and rows it needs (a large feature table never has to fit in
memory whole). An input annotated ``pd.DataFrame`` gets the whole table as stored (a
snapshot: its stored columns; the derived features are computed by
:func:`~mlplatform.resources.feature_tables.read_features`, which needs the dataset's
spec).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import joblib
import pandas as pd

from mlplatform.core.snapshots import FeatureSnapshot
from mlplatform.resources.feature_tables import ParquetTable, SnapshotTable, StoredTable
from mlplatform.resources.files import write_bytes_atomic, write_parquet_atomic, write_with_atomic

__all__ = [
    "SNAPSHOT_SUFFIX",
    "AssetStorage",
    "ParquetTable",
    "SnapshotTable",
    "StoredTable",
    "read_snapshot",
    "write_snapshot",
]

SNAPSHOT_SUFFIX = ".snapshot.json"
_SUFFIXES = (".parquet", SNAPSHOT_SUFFIX, ".joblib")


def write_snapshot(snapshot: FeatureSnapshot, target: Path) -> Path:
    """Write ``snapshot`` to ``target`` as its JSON file, atomically; returns ``target``."""
    return write_bytes_atomic(json.dumps(snapshot.to_json(), indent=1).encode(), target)


def read_snapshot(path: Path) -> FeatureSnapshot:
    """The snapshot :func:`write_snapshot` wrote (its digest checked against its content)."""
    return FeatureSnapshot.from_json(json.loads(path.read_text()))


class AssetStorage(dg.ConfigurableIOManager):
    """Stores each asset's value as one file named by its asset key."""

    base_dir: str

    def _stem(self, key: dg.AssetKey) -> Path:
        return Path(self.base_dir) / "__".join(key.path)

    def _file(self, key: dg.AssetKey, suffix: str) -> Path:
        stem = self._stem(key)
        return stem.with_name(stem.name + suffix)

    def path_for(self, key: dg.AssetKey) -> Path | None:
        """The file holding ``key``'s value, if one has been written."""
        for suffix in _SUFFIXES:
            p = self._file(key, suffix)
            if p.exists():
                return p
        return None

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write ``obj`` atomically; removes a stale file of another format."""
        if obj is None:
            return
        key = context.asset_key
        if isinstance(obj, pd.DataFrame):
            target = write_parquet_atomic(obj, self._file(key, ".parquet"))
            context.add_output_metadata(
                {"path": dg.MetadataValue.path(str(target)), "rows": len(obj)}
            )
        elif isinstance(obj, FeatureSnapshot):
            target = write_snapshot(obj, self._file(key, SNAPSHOT_SUFFIX))
            context.add_output_metadata({"path": dg.MetadataValue.path(str(target))})
        else:
            target = write_with_atomic(
                lambda tmp: joblib.dump(obj, tmp), self._file(key, ".joblib")
            )
        for suffix in _SUFFIXES:
            stale = self._file(key, suffix)
            if stale != target:
                stale.unlink(missing_ok=True)

    def load_table(self, key: dg.AssetKey) -> StoredTable:
        """``key``'s stored table, unread (a Parquet file or a feature table snapshot).

        Raises
        ------
        FileNotFoundError
            When no table was stored for ``key``.
        """
        path = self.path_for(key)
        if path is None or path.suffix == ".joblib":
            raise FileNotFoundError(
                f"asset {key.to_user_string()!r} has no stored table under {self.base_dir}; "
                "materialize it first"
            )
        if path.name.endswith(SNAPSHOT_SUFFIX):
            return SnapshotTable(read_snapshot(path), Path(self.base_dir))
        return ParquetTable(path)

    def load_input(self, context: dg.InputContext) -> Any:
        """Read the upstream asset's value, with a clear error if it was never written.

        A table input annotated :class:`StoredTable` is handed over unread; annotated
        otherwise, a table is read whole (a snapshot: every row of its parts).
        """
        key = context.asset_key
        path = self.path_for(key)
        if path is None:
            raise FileNotFoundError(
                f"asset {key.to_user_string()!r} has no stored value under {self.base_dir}; "
                "materialize it first"
            )
        if path.suffix == ".joblib":
            return joblib.load(path)
        table = self.load_table(key)
        if context.dagster_type.typing_type is StoredTable:
            return table
        if isinstance(table, ParquetTable):
            return pd.read_parquet(path)
        return table.read_all()
