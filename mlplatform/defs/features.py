"""Features: the feature table the models read, a point-in-time view of the feature store."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from mlplatform.core import batches as core_batches
from mlplatform.core import expectations as core_expectations
from mlplatform.core import features as core_features
from mlplatform.core import schema as core_schema
from mlplatform.core import snapshots as core_snapshots
from mlplatform.core.batches import parse_time
from mlplatform.core.features import table_columns
from mlplatform.core.snapshots import FeatureSnapshot
from mlplatform.defs.common import DATASET, FEATURES, OWNER, code_version, preview_md
from mlplatform.defs.ingestion import raw_observations
from mlplatform.resources import feature_tables
from mlplatform.resources.feature_store import FeatureStore, SnapshotCheck
from mlplatform.resources.feature_tables import StoredTable, read_features

FEATURE_TABLE_CHECK = "feature_table_meets_expectations"


class FeatureTableConfig(dg.Config):
    """Which moment of the feature store the table shows."""

    as_of: str | None = Field(
        default=None,
        description="ISO-8601 time (UTC if no zone): rebuild the table exactly as the store "
        "knew it then, e.g. a past model's training set. None: now.",
    )


@dg.asset(
    group_name=FEATURES,
    deps=[raw_observations],
    io_manager_key="feature_io_manager",
    kinds={"pandas", "parquet", "great_expectations"},
    owners=[OWNER],
    code_version=code_version(
        __file__,
        "feature_table",
        "FeatureTableConfig",
        "TableVersion",
        "table_version",
        "check_metadata",
        "table_metadata",
        uses=(
            core_batches,
            core_features,
            core_expectations,
            core_schema,
            core_snapshots,
            feature_tables,
        ),
    ),
    check_specs=[
        dg.AssetCheckSpec(
            FEATURE_TABLE_CHECK,
            asset="feature_table",
            blocking=True,
            description="The table may train a model: every stored part it reads is intact "
            "(sha256) and holds its columns in their declared storage types, and every row "
            "passed the schema's full Great Expectations suite (columns, storage types, "
            "ranges, sets, label in {0, 1}, unique entity ids) as stored; rows validated "
            "under an older suite are validated again. A bad table trains no model.",
        )
    ],
)
def feature_table(
    context: dg.AssetExecutionContext, config: FeatureTableConfig, feature_store: FeatureStore
) -> Iterator[dg.Output[FeatureSnapshot] | dg.AssetCheckResult]:
    """Entity, model features (raw and derived), target and lineage, as of one moment.

    Every stored batch's newest version known at ``as_of``, one row per entity (a later
    reading supersedes an earlier one). A version of the table is a snapshot: the
    stored Parquet parts it reads, each by its sha256, and the rows it keeps; no row
    is copied. The as-of time and the digest are recorded, so the same table, and any
    training set split from it, can be rebuilt bit for bit.
    """
    as_of = parse_time(config.as_of) if config.as_of else parse_time(datetime.now(UTC))
    version = table_version(feature_store, as_of)
    snapshot, check = version.snapshot, version.check
    if check.revalidated:
        context.log.info(
            f"validated {len(check.revalidated)} batch(es) again with Great Expectations "
            f"(stored under another suite): {check.revalidated}"
        )
    context.log.info(
        f"feature table as of {as_of.isoformat()}: {snapshot.num_rows:,} rows from "
        f"{len(snapshot.batches)} batches ({len(snapshot.parts)} parts verified), digest "
        f"{snapshot.digest[:12]}"
    )
    yield dg.AssetCheckResult(
        check_name=FEATURE_TABLE_CHECK, passed=check.success, metadata=check_metadata(check)
    )
    yield dg.Output(
        snapshot, metadata=version.metadata, data_version=dg.DataVersion(snapshot.digest[:16])
    )


@dataclass(frozen=True)
class TableVersion:
    """One version of the feature table: its snapshot, its check and its metadata."""

    snapshot: FeatureSnapshot
    check: SnapshotCheck
    metadata: dict[str, Any]


def table_version(store: FeatureStore, as_of: pd.Timestamp) -> TableVersion:
    """What the ``feature_table`` asset computes (and the ingestion benchmark times).

    The snapshot as of ``as_of``, its blocking check and the metadata the UI shows.

    Raises
    ------
    dagster.Failure
        When the store has no rows as of ``as_of``.
    """
    manifests = store.manifests()  # read once, for the snapshot, its check and its labels
    snapshot = store.snapshot(DATASET, as_of, manifests=manifests)
    if not snapshot.num_rows:
        raise dg.Failure(
            description=f"the feature store has no rows as of {as_of.isoformat()}: drop CSV or "
            "Parquet files into the landing folder (or add SQL rows) and ingest them"
        )
    table = store.table(snapshot)
    check = store.check_snapshot(DATASET, table, manifests)
    # rows are read for the metadata only from intact parts: a failed check is shown,
    # not turned into an error of its own
    readable = not check.problems
    labels = store.labels(snapshot.batches, manifests)
    metadata = table_metadata(table, snapshot, labels, read=readable)
    return TableVersion(snapshot, check, metadata)


def check_metadata(check: SnapshotCheck) -> dict[str, Any]:
    """The feature table check's metadata: GX's summary, parts verified, problems."""
    values = check.as_metadata()
    return {
        **{k: v for k, v in values.items() if k not in ("failures", "revalidated_batches")},
        "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in values["failures"]) or "none"),
        "revalidated_batches": ", ".join(values["revalidated_batches"]) or "none",
    }


def table_metadata(
    table: StoredTable, snapshot: FeatureSnapshot, labels: dict[str, str], *, read: bool = True
) -> dict[str, Any]:
    """What the UI shows of a table: size, positive rate, rows per source, a preview.

    Reads the target column and the first rows only (nothing with ``read`` False: the
    positive rate and preview are then left out); ``labels`` names each batch.
    """
    shown: dict[str, Any] = {}
    if read:
        target = table.read_column(DATASET.target)
        columns = table_columns(DATASET, table.columns)
        preview = read_features(table, DATASET, columns, np.arange(min(5, snapshot.num_rows)))
        shown = {
            "positive_rate": float(np.mean(target)) if len(target) else 0.0,
            "preview": preview_md(preview),
        }
    per_batch: dict[str, int] = {}
    for part in snapshot.parts:
        per_batch[part.batch] = per_batch.get(part.batch, 0) + part.kept_rows
    sources = pd.DataFrame(
        {
            "batch": list(per_batch),
            "source_file": [labels.get(b, "") for b in per_batch],
            "rows": list(per_batch.values()),
        }
    )
    return {
        "as_of": snapshot.as_of,
        "dataset_digest": snapshot.digest,
        "rows": snapshot.num_rows,
        "dagster/row_count": snapshot.num_rows,
        "batches": len(snapshot.batches),
        "parts": len(snapshot.parts),
        "superseded_rows": sum(p.rows for p in snapshot.parts) - snapshot.num_rows,
        "model_features": ", ".join(DATASET.model_features),
        "excluded_from_model": ", ".join(DATASET.excluded_from_model),
        "sources": dg.MetadataValue.md(sources.to_markdown(index=False)),
        **shown,
    }
