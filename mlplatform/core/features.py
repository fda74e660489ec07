"""Feature table construction: model inputs plus derived domain features.

Identifier and leakage columns are dropped from the model's inputs here, by the
declared schema, not by a hand-kept list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlplatform.core.digest import frame_digest
from mlplatform.core.expectations import ValidationSummary, table_expectations, validate
from mlplatform.core.schema import DatasetSpec, Role

__all__ = [
    "AS_OF_ATTR",
    "DIGEST_ATTR",
    "LINEAGE",
    "CheckedTable",
    "build_feature_table",
    "checked_feature_table",
    "model_inputs",
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
    for derived in spec.derived:
        columns[derived.name] = np.asarray(derived.compute(observations), dtype="float64")
    columns[spec.target] = observations[spec.target].to_numpy(dtype="int64")
    lineage = [c for c in LINEAGE if c in observations.columns]
    for c in lineage:
        columns[c] = observations[c].array
    ordered = [spec.entity_id, *spec.model_features, spec.target, *lineage]
    return pd.DataFrame({c: columns[c] for c in ordered}, copy=False)


@dataclass(frozen=True)
class CheckedTable:
    """A feature table, its digest and the Great Expectations result of its blocking check."""

    table: pd.DataFrame
    digest: str
    check: ValidationSummary


def checked_feature_table(
    observations: pd.DataFrame, spec: DatasetSpec, *, as_of: str
) -> CheckedTable:
    """What the ``feature_table`` asset computes: the table, its digest and its check.

    The table (:func:`build_feature_table`) carries ``as_of`` and the digest in its
    ``attrs``; the check is the schema's table suite (columns, storage types,
    ranges, sets, unique entity ids) run by Great Expectations on every row.
    """
    table = build_feature_table(observations, spec)
    digest = frame_digest(table)
    table.attrs = {AS_OF_ATTR: as_of, DIGEST_ATTR: digest}
    declared = [c for c in table.columns if c in {x.name for x in spec.columns}]
    must_have = [spec.entity_id, *spec.names(Role.FEATURE), spec.target]
    check = validate(
        table[declared],
        table_expectations(spec, declared, required=must_have),
        name=f"{spec.name}-features",
    )
    return CheckedTable(table, digest, check)


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
