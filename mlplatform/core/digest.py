"""Content digests of files and frames, for lineage and idempotent ingestion."""

from __future__ import annotations

import hashlib

import pandas as pd

__all__ = ["frame_digest"]


def frame_digest(frame: pd.DataFrame) -> str:
    """A sha256 of a frame's column names, dtypes and values, independent of its index.

    Two frames with equal columns, dtypes and row values in the same order have the
    same digest; any changed cell, dtype, name or row order changes it.
    """
    h = hashlib.sha256()
    h.update("\x1f".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    h.update(row_hashes.tobytes())
    return h.hexdigest()
