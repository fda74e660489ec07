"""IO manager for values passed between assets: Parquet for tables, joblib otherwise.

Values live at ``<base_dir>/<asset key>.parquet`` (DataFrames) or ``.joblib``
(fitted pipelines and small records), written atomically. Parquet keeps tables
readable by any tool; joblib is used only for objects this platform wrote itself
(never for anything from the landing area).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import joblib
import pandas as pd

from mlplatform.resources.files import write_parquet_atomic, write_with_atomic

__all__ = ["AssetStorage"]


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
        """Read the upstream asset's value, with a clear error if it was never written."""
        key = context.asset_key
        path = self.path_for(key)
        if path is None:
            raise FileNotFoundError(
                f"asset {key.to_user_string()!r} has no stored value under {self.base_dir}; "
                "materialize it first"
            )
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return joblib.load(path)
