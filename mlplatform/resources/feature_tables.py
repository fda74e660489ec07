"""Stored tables read on demand: one Parquet file, or a feature table snapshot's parts.

An asset input annotated :class:`StoredTable` gets the table unread: the asset
reads only the columns and rows it needs, so a large feature table never has to
fit in memory whole. Two kinds exist:

* :class:`ParquetTable`: one Parquet file (what the IO manager writes for a frame);
* :class:`SnapshotTable`: a :class:`~mlplatform.core.snapshots.FeatureSnapshot`,
  read from the stored batch parts it names. Each part's bytes are checked against
  the sha256 the snapshot recorded before anything is read from it, so what is
  read is what the snapshot's digest names, or an error says which file changed.

A table holds the stored columns; :func:`read_features` reads any feature table
column, computing derived features from the stored ones (as serving does).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.core.features import AS_OF_ATTR, DIGEST_ATTR, add_derived
from mlplatform.core.schema import DatasetSpec
from mlplatform.core.snapshots import FeatureSnapshot, SnapshotPart
from mlplatform.resources.files import file_sha256

__all__ = ["ParquetTable", "SnapshotChanged", "SnapshotTable", "StoredTable", "read_features"]

# rows decoded at a time while picking sampled rows: the memory bound of a read
_READ_BATCH_ROWS = 1 << 16


class StoredTable(ABC):
    """A stored table, read on demand: some columns, some rows."""

    @property
    @abstractmethod
    def num_rows(self) -> int:
        """Rows in the table (nothing is read)."""

    @property
    @abstractmethod
    def columns(self) -> list[str]:
        """The table's columns, in order."""

    @property
    @abstractmethod
    def attrs(self) -> dict[str, Any]:
        """The ``DataFrame.attrs`` every frame read from it carries (as-of time, digest)."""

    @abstractmethod
    def read(self, columns: Sequence[str], rows: np.ndarray | None = None) -> pd.DataFrame:
        """``columns`` of the rows at positions ``rows`` (increasing; all rows when None).

        What is held is the rows kept plus one record batch, never the whole table.

        Raises
        ------
        KeyError
            Naming the columns the table does not have.
        """

    def read_column(self, name: str) -> np.ndarray:
        """One column's values, as a NumPy array."""
        return np.asarray(self.read([name])[name].to_numpy())

    def read_all(self) -> pd.DataFrame:
        """The whole table (every column, every row)."""
        return self.read(self.columns)

    def _check_request(self, columns: Sequence[str], rows: np.ndarray | None) -> np.ndarray | None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise KeyError(f"{self} has no columns {missing}")
        if rows is None:
            return None
        positions = np.asarray(rows, dtype="int64")
        if positions.size and (np.any(np.diff(positions) <= 0) or positions[0] < 0):
            raise ValueError("rows must be increasing, non-negative positions")
        if positions.size and positions[-1] >= self.num_rows:
            raise IndexError(f"row {positions[-1]} beyond the table's {self.num_rows} rows")
        return positions


def _pick(
    parquet: pq.ParquetFile,
    columns: Sequence[str],
    positions: np.ndarray | None,
    keep: np.ndarray | None = None,
) -> pa.Table:
    """``columns`` of a file's rows that ``keep`` keeps (all: None), at ``positions`` among them.

    Rows are picked from record batches as they are decoded: what is held is the rows
    picked plus one batch.
    """
    schema = parquet.schema_arrow
    wanted = pa.schema([schema.field(c) for c in columns], schema.metadata)
    if positions is None and keep is None:
        return parquet.read(columns=list(columns)).select(list(columns))
    kept: list[pa.RecordBatch] = []
    start = 0  # position (among kept rows) of the batch's first kept row
    offset = 0  # the batch's first row in the file
    for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, columns=list(columns)):
        if positions is not None and (not len(positions) or start > positions[-1]):
            break  # past the last row asked for: nothing more is decoded
        batch = batch.select(list(columns))
        local = np.arange(batch.num_rows)
        if keep is not None:
            local = local[keep[offset : offset + batch.num_rows]]
        offset += batch.num_rows
        if positions is not None:
            lo, hi = np.searchsorted(positions, [start, start + len(local)])
            chosen = local[positions[lo:hi] - start]
        else:
            chosen = local
        start += len(local)
        if len(chosen) == batch.num_rows:
            kept.append(batch)
        elif len(chosen):
            kept.append(batch.take(pa.array(chosen)))
    return pa.Table.from_batches(kept, schema=wanted)


def _to_frame(table: pa.Table, attrs: dict[str, Any]) -> pd.DataFrame:
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    frame.attrs = dict(attrs)
    return frame


class ParquetTable(StoredTable):
    """A table stored as one Parquet file (``attrs`` as ``pd.read_parquet`` restores them)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"ParquetTable({str(self.path)!r})"

    def __str__(self) -> str:
        return self.path.name

    @property
    def num_rows(self) -> int:
        return int(pq.ParquetFile(self.path).metadata.num_rows)

    @property
    def columns(self) -> list[str]:
        return list(pq.read_schema(self.path).names)

    @property
    def attrs(self) -> dict[str, Any]:
        metadata = pq.read_schema(self.path).metadata or {}
        raw = metadata.get(b"PANDAS_ATTRS")
        return dict(json.loads(raw)) if raw else {}

    def read_column(self, name: str) -> np.ndarray:
        return np.asarray(pq.read_table(self.path, columns=[name]).column(0).to_numpy())

    def read(self, columns: Sequence[str], rows: np.ndarray | None = None) -> pd.DataFrame:
        positions = self._check_request(columns, rows)
        return _to_frame(_pick(pq.ParquetFile(self.path), columns, positions), self.attrs)


class SnapshotChanged(RuntimeError):
    """A file a feature table snapshot reads is not the one it recorded."""


class SnapshotTable(StoredTable):
    """A feature table snapshot, read from the feature store's parts under ``root``.

    Every part is checked against its recorded sha256 once, before the first read
    from it; a changed or missing part raises :class:`SnapshotChanged` naming it.
    """

    def __init__(self, snapshot: FeatureSnapshot, root: Path) -> None:
        self.snapshot = snapshot
        self.root = root
        self._verified: set[str] = set()

    def __repr__(self) -> str:
        return f"SnapshotTable(as_of={self.snapshot.as_of!r}, root={str(self.root)!r})"

    def __str__(self) -> str:
        return f"the feature table as of {self.snapshot.as_of}"

    @property
    def num_rows(self) -> int:
        return self.snapshot.num_rows

    @property
    def columns(self) -> list[str]:
        return list(self.snapshot.columns)

    @property
    def attrs(self) -> dict[str, Any]:
        return {AS_OF_ATTR: self.snapshot.as_of, DIGEST_ATTR: self.snapshot.digest}

    def path_of(self, part: SnapshotPart) -> Path:
        """Where ``part`` is stored."""
        return self.root.joinpath(*PurePosixPath(part.path).parts)

    def verify(self, part: SnapshotPart) -> Path:
        """``part``'s path, once its bytes are checked against the recorded sha256.

        Raises
        ------
        SnapshotChanged
            When the file is missing or its bytes are not those recorded.
        """
        path = self.path_of(part)
        if part.path in self._verified:
            return path
        try:
            found = file_sha256(path)
        except FileNotFoundError as exc:
            raise SnapshotChanged(
                f"{self}: part {part.path} of batch {part.batch} is missing ({path})"
            ) from exc
        if found != part.sha256:
            raise SnapshotChanged(
                f"{self}: part {part.path} of batch {part.batch} changed since the snapshot "
                f"was made (sha256 {found[:16]}..., recorded {part.sha256[:16]}...)"
            )
        self._verified.add(part.path)
        return path

    def read(self, columns: Sequence[str], rows: np.ndarray | None = None) -> pd.DataFrame:
        positions = self._check_request(columns, rows)
        tables: list[pa.Table] = []
        start = 0
        for part in self.snapshot.parts:
            kept = part.kept_rows
            local = None
            if positions is not None:
                lo, hi = np.searchsorted(positions, [start, start + kept])
                local = positions[lo:hi] - start
            start += kept
            if local is not None and not len(local):
                continue
            parquet = pq.ParquetFile(self.verify(part))
            tables.append(_pick(parquet, columns, local, part.keep_mask()))
        if not tables:
            empty = [
                pq.read_schema(self.verify(p)).field(c)
                for p in self.snapshot.parts[:1]
                for c in columns
            ]
            return _to_frame(pa.schema(empty).empty_table(), self.attrs)
        table = (
            pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
        )
        del tables
        return _to_frame(table, self.attrs)


def read_features(
    table: StoredTable,
    spec: DatasetSpec,
    columns: Sequence[str],
    rows: np.ndarray | None = None,
) -> pd.DataFrame:
    """``columns`` of the feature table ``table`` holds, derived features included.

    Stored columns are read (:meth:`StoredTable.read`); derived features the table
    does not hold are computed from its raw model features
    (:func:`~mlplatform.core.features.add_derived`), which are then read too.

    Raises
    ------
    KeyError
        Naming the columns that are neither stored nor derived.
    """
    derived = {d.name for d in spec.derived}
    computed = [c for c in columns if c in derived and c not in table.columns]
    inputs = [c for c in spec.model_features if c not in derived and c in table.columns]
    stored = [c for c in columns if c not in computed]
    read = list(dict.fromkeys([*stored, *(inputs if computed else [])]))
    frame = table.read(read, rows)
    if computed:
        frame = add_derived(frame, spec)
    out = frame[list(columns)]
    out.attrs = dict(frame.attrs)
    return out
