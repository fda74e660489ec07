"""Feature table snapshots: one version of the feature table, as the stored files it reads.

A snapshot names, for one as-of time, every Parquet part of the batch versions the
store served then, each with the sha256 of its bytes, the stored columns the table
takes from them, the rows of those parts a later reading of the same entity
superseded, and how the derived features are computed from them (a fingerprint
of their definitions: they are computed when the table is read, never stored).
Stored parts are immutable, so the snapshot *is* the table: reading it gives the
same frame, bit for bit, for as long as the files and the feature definitions are
the same, and its **digest** (of the columns, the parts' digests, the superseded
rows and the feature definitions) names that content. Making a snapshot copies no
row; a version of the table costs a small JSON file, whatever the store's size.

Pure logic: which rows a snapshot keeps (:func:`superseded_rows`), its digest and
its JSON form. Reading and checking the files is the feature store's
(:mod:`mlplatform.resources.feature_store`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "SNAPSHOT_FORMAT",
    "FeatureSnapshot",
    "SnapshotPart",
    "mask_to_ranges",
    "ranges_to_mask",
    "snapshot_digest",
    "superseded_rows",
]

SNAPSHOT_FORMAT = "mlplatform.feature-table-snapshot/1"


def mask_to_ranges(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The runs of True in ``mask`` as ``(start, stop)`` row ranges (stop excluded)."""
    flags = np.asarray(mask, dtype=bool)
    if not flags.any():
        return ()
    edges = np.flatnonzero(np.diff(np.concatenate([[False], flags, [False]]).astype(np.int8)))
    return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True))


def ranges_to_mask(ranges: Sequence[tuple[int, int]], rows: int) -> np.ndarray:
    """A mask of ``rows`` values, True inside ``ranges`` (the inverse of :func:`mask_to_ranges`)."""
    mask = np.zeros(rows, dtype=bool)
    for start, stop in ranges:
        if not 0 <= start < stop <= rows:
            raise ValueError(f"row range {start}..{stop} outside a part of {rows} rows")
        mask[start:stop] = True
    return mask


def superseded_rows(entity_ids: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per part, which rows a later row of the same entity supersedes.

    ``entity_ids`` are the parts' entity ids in the order the store stacks them
    (versions by ingestion time then batch key, parts and rows in file order),
    which is the order of :data:`~mlplatform.core.batches.AS_OF_KEYS`: the last row
    of an entity is its newest reading, the one kept, exactly as
    :func:`~mlplatform.core.batches.resolve_as_of` keeps it.
    """
    sizes = [len(ids) for ids in entity_ids]
    if not sizes:
        return []
    every = np.concatenate([np.asarray(ids, dtype="int64") for ids in entity_ids])
    if len(every) < 2 or bool(np.all(every[1:] > every[:-1])):
        # increasing ids (the usual store): no entity repeats, nothing to hash
        dropped = np.zeros(len(every), dtype=bool)
    else:
        dropped = pd.Series(every).duplicated(keep="last").to_numpy()
    bounds = np.cumsum([0, *sizes])
    return [dropped[a:b] for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class SnapshotPart:
    """One stored Parquet part a snapshot reads.

    ``path`` is relative to the feature store's root (POSIX separators);
    ``superseded`` are the row ranges ``(start, stop)`` of the part the table drops.
    """

    path: str
    batch: str
    version: str
    rows: int
    sha256: str
    superseded: tuple[tuple[int, int], ...] = ()

    @property
    def kept_rows(self) -> int:
        """Rows of the part the table keeps."""
        return self.rows - sum(stop - start for start, stop in self.superseded)

    def keep_mask(self) -> np.ndarray | None:
        """Which of the part's rows the table keeps; None when it keeps them all."""
        if not self.superseded:
            return None
        return ~ranges_to_mask(self.superseded, self.rows)

    def to_json(self) -> dict[str, Any]:
        """Plain values for the snapshot file."""
        return {
            "path": self.path,
            "batch": self.batch,
            "version": self.version,
            "rows": self.rows,
            "sha256": self.sha256,
            "superseded": [list(r) for r in self.superseded],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SnapshotPart:
        """The part saved by :meth:`to_json`."""
        return cls(
            path=str(data["path"]),
            batch=str(data["batch"]),
            version=str(data["version"]),
            rows=int(data["rows"]),
            sha256=str(data["sha256"]),
            superseded=tuple((int(a), int(b)) for a, b in data.get("superseded", [])),
        )


def snapshot_digest(
    dataset: str, columns: Sequence[str], parts: Sequence[SnapshotPart], features: str = ""
) -> str:
    """sha256 of what a snapshot reads: its columns, each part's bytes and superseded rows,
    and the fingerprint of the derived features' definitions (``features``).

    Not of the as-of time nor of where the store lives: two snapshots that read the
    same rows of the same files, with the same feature definitions, have the same digest.
    """
    described = {
        "dataset": dataset,
        "columns": list(columns),
        "features": features,
        "parts": [[p.sha256, p.rows, [list(r) for r in p.superseded]] for p in parts],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class FeatureSnapshot:
    """One version of the feature table: the rows of stored parts it reads, and its digest.

    Parameters
    ----------
    dataset : str
        The dataset's name.
    as_of : str
        ISO-8601 time (UTC): the table is what the store knew then.
    columns : tuple of str
        The stored columns the table reads, in order (derived features are computed
        from them when it is read).
    parts : tuple of SnapshotPart
        The parts read, in the order their rows are stacked.
    features : str
        Fingerprint of the derived features' definitions
        (:func:`~mlplatform.core.features.derived_fingerprint`).
    created_at : str
        When the snapshot was made (not part of the digest).
    """

    dataset: str
    as_of: str
    columns: tuple[str, ...]
    parts: tuple[SnapshotPart, ...]
    features: str = ""
    created_at: str = ""
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        digest = snapshot_digest(self.dataset, self.columns, self.parts, self.features)
        object.__setattr__(self, "digest", digest)

    @property
    def num_rows(self) -> int:
        """Rows of the table."""
        return sum(p.kept_rows for p in self.parts)

    @property
    def batches(self) -> list[str]:
        """The batch keys the table reads, in stacking order, once each."""
        return list(dict.fromkeys(p.batch for p in self.parts))

    def to_json(self) -> dict[str, Any]:
        """Plain values for the snapshot file (with the digest, checked when read)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "dataset": self.dataset,
            "as_of": self.as_of,
            "created_at": self.created_at,
            "columns": list(self.columns),
            "features": self.features,
            "rows": self.num_rows,
            "digest": self.digest,
            "parts": [p.to_json() for p in self.parts],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureSnapshot:
        """The snapshot saved by :meth:`to_json`.

        Raises
        ------
        ValueError
            On another format, or when the recorded digest is not the one its
            content gives (the file was edited).
        """
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(
                f"not a feature table snapshot of format {SNAPSHOT_FORMAT!r}: "
                f"{data.get('format')!r}"
            )
        snapshot = cls(
            dataset=str(data["dataset"]),
            as_of=str(data["as_of"]),
            columns=tuple(str(c) for c in data["columns"]),
            parts=tuple(SnapshotPart.from_json(p) for p in data["parts"]),
            features=str(data.get("features", "")),
            created_at=str(data.get("created_at", "")),
        )
        if data.get("digest") != snapshot.digest:
            raise ValueError(
                f"feature table snapshot as of {snapshot.as_of}: recorded digest "
                f"{str(data.get('digest'))[:16]}... is not its content's "
                f"{snapshot.digest[:16]}... (the file was edited)"
            )
        return snapshot
