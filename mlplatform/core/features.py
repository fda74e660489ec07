"""Feature table construction: model inputs plus derived domain features.

Identifier and leakage columns are dropped from the model's inputs here, by the
declared schema, not by a hand-kept list.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.core.schema import DatasetSpec

__all__ = [
    "AS_OF_ATTR",
    "DIGEST_ATTR",
    "LINEAGE",
    "add_derived",
    "build_feature_table",
    "derived_fingerprint",
    "model_inputs",
    "stored_columns",
    "table_columns",
]

# ``DataFrame.attrs`` keys a feature table (and the split made from it) carries along.
AS_OF_ATTR = "feature_as_of"
DIGEST_ATTR = "feature_table_digest"
# Lineage columns carried from the store into the table, never into a model.
LINEAGE = ("event_time", "ingested_at", "batch_id", "source_file")


def build_feature_table(observations: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Entity id, raw features, derived features and target, one row per observation.

    Parameters
    ----------
    observations : DataFrame
        Typed, validated rows (canonical names), e.g. from the raw store.
    spec : DatasetSpec
        The declared schema.

    Returns
    -------
    DataFrame
        Columns: entity id, every model feature, the target, then any lineage
        columns present in ``observations`` (:data:`LINEAGE`).
        Leakage and other identifier columns are not carried.
    """
    missing = [
        c
        for c in [spec.entity_id, spec.target, *spec.categorical_features]
        if c not in observations.columns
    ]
    raw_numeric = [f for f in spec.numeric_features if f not in {d.name for d in spec.derived}]
    missing += [c for c in raw_numeric if c not in observations.columns]
    if missing:
        raise KeyError(f"observations lack the columns {missing} declared by {spec.name!r}")
    # one frame built from arrays: no per-column inserts, and datetime columns keep
    # their zone without a round trip through Python objects
    columns: dict[str, Any] = {
        c: observations[c].array for c in [spec.entity_id, *raw_numeric, *spec.categorical_features]
    }
    columns.update(_derived_values(observations, spec))
    columns[spec.target] = observations[spec.target].to_numpy(dtype="int64")
    lineage = [c for c in LINEAGE if c in observations.columns]
    for c in lineage:
        columns[c] = observations[c].array
    ordered = [spec.entity_id, *spec.model_features, spec.target, *lineage]
    return pd.DataFrame({c: columns[c] for c in ordered}, copy=False)


def add_derived(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """``frame`` with every derived feature computed from its columns (float64), appended.

    The one place derived features are computed, for training and serving alike: the
    feature store keeps observations, never derived values, so a changed definition
    applies to every row read afterwards and no stored copy of an older one is ever
    scored. A column of a derived feature's name already in ``frame`` is replaced.

    Raises
    ------
    KeyError
        When ``frame`` lacks a column a derived feature is computed from.
    """
    if not spec.derived:
        return frame
    computed = _derived_values(frame, spec)
    kept = {c: frame[c].array for c in frame.columns if c not in computed}
    out = pd.DataFrame({**kept, **computed}, index=frame.index, copy=False)
    out.attrs = dict(frame.attrs)
    return out


def _derived_values(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Every derived feature of ``spec`` computed from ``frame``, as float64 values."""
    return {d.name: np.asarray(d.compute(frame), dtype="float64") for d in spec.derived}


def derived_fingerprint(spec: DatasetSpec) -> str:
    """A digest of how ``spec``'s derived features are computed (names and code).

    Part of a feature table snapshot's digest: the table's derived columns are
    computed when it is read, so the same stored rows under another definition are
    another table.
    """
    described = []
    for d in spec.derived:
        try:
            how = d.expression or inspect.getsource(d.compute)
        except (OSError, TypeError):  # no source (a builtin, a lambda made at runtime)
            how = f"{d.compute.__module__}.{d.compute.__qualname__}"
        described.append((d.name, how))
    return hashlib.sha256(repr(described).encode()).hexdigest()[:16]


def stored_columns(spec: DatasetSpec, available: Sequence[str] | None = None) -> list[str]:
    """The feature table's columns the store keeps: :func:`table_columns` but derived ones."""
    derived = {d.name for d in spec.derived}
    return [c for c in table_columns(spec, available) if c not in derived]


def table_columns(spec: DatasetSpec, available: Sequence[str] | None = None) -> list[str]:
    """The feature table's columns, in order: those :func:`build_feature_table` gives.

    Entity id, every model feature, the target, then the :data:`LINEAGE` columns
    among ``available`` (all of them when None).
    """
    lineage = [c for c in LINEAGE if available is None or c in available]
    return [spec.entity_id, *spec.model_features, spec.target, *lineage]


def model_inputs(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Exactly the columns a model may see, in the declared order.

    Raises
    ------
    KeyError
        Naming the missing columns, when ``frame`` lacks any model feature.
    """
    missing = [c for c in spec.model_features if c not in frame.columns]
    if missing:
        raise KeyError(f"model inputs missing columns {missing}")
    forbidden = set(spec.excluded_from_model) | {spec.target}
    columns = [c for c in spec.model_features if c not in forbidden]
    return frame[columns]
