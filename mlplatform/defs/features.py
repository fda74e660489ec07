"""Features: the feature table the models read, a point-in-time view of the feature store."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
from pydantic import Field

from mlplatform.core import batches as core_batches
from mlplatform.core import expectations as core_expectations
from mlplatform.core import features as core_features
from mlplatform.core import schema as core_schema
from mlplatform.core.batches import parse_time
from mlplatform.core.features import LINEAGE, checked_feature_table
from mlplatform.core.schema import DatasetSpec, Role
from mlplatform.defs.common import DATASET, FEATURES, OWNER, code_version, preview_md
from mlplatform.defs.ingestion import raw_observations
from mlplatform.resources.feature_store import FeatureStore

FEATURE_TABLE_CHECK = "feature_table_meets_expectations"


def observation_columns(spec: DatasetSpec) -> list[str]:
    """The stored columns the table is built from: no leakage, no stored derived features.

    Derived features are recomputed from the declared columns (never from leakage ones),
    and identifiers other than the entity id are not in the table, so reading fewer
    columns leaves the table unchanged and halves what is held in memory.
    """
    declared = [
        c.name
        for c in spec.columns
        if c.role is not Role.LEAKAGE
        and (c.role is not Role.IDENTIFIER or c.name == spec.entity_id)
    ]
    return list(dict.fromkeys([*declared, *LINEAGE]))


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
        "observation_columns",
        uses=(core_batches, core_features, core_expectations, core_schema),
    ),
    check_specs=[
        dg.AssetCheckSpec(
            FEATURE_TABLE_CHECK,
            asset="feature_table",
            blocking=True,
            description="The table against the schema's suite (columns, storage types, ranges, "
            "sets, label in {0, 1}, unique entity ids): a bad table trains no model.",
        )
    ],
)
def feature_table(
    context: dg.AssetExecutionContext, config: FeatureTableConfig, feature_store: FeatureStore
) -> Iterator[dg.Output[pd.DataFrame] | dg.AssetCheckResult]:
    """Entity, model features (raw and derived), target and lineage, as of one moment.

    Every stored batch's newest version known at ``as_of``, one row per entity (a later
    reading supersedes an earlier one). The as-of time and the digest are recorded, so
    the same table, and any training set split from it, can be rebuilt bit for bit.
    """
    as_of = parse_time(config.as_of) if config.as_of else parse_time(datetime.now(UTC))
    observations = feature_store.as_of(DATASET, as_of, columns=observation_columns(DATASET))
    if observations.empty:
        raise dg.Failure(
            description=f"the feature store has no rows as of {as_of.isoformat()}: drop CSV or "
            "Parquet files into the landing folder (or add SQL rows) and ingest them"
        )
    checked = checked_feature_table(observations, DATASET, as_of=as_of.isoformat())
    table, digest, check = checked.table, checked.digest, checked.check
    batches = feature_store.latest(as_of)
    context.log.info(
        f"feature table as of {as_of.isoformat()}: {len(table):,} rows from "
        f"{len(batches)} batches, digest {digest[:12]}"
    )
    yield dg.AssetCheckResult(
        check_name=FEATURE_TABLE_CHECK,
        passed=check.success,
        metadata={
            **{k: v for k, v in check.as_metadata().items() if k != "failures"},
            "failures": dg.MetadataValue.md(
                "\n".join(f"- {f}" for f in check.as_metadata()["failures"]) or "none"
            ),
        },
    )
    yield dg.Output(
        table,
        metadata={
            "as_of": as_of.isoformat(),
            "dataset_digest": digest,
            "rows": len(table),
            "dagster/row_count": len(table),
            "batches": len(batches),
            "positive_rate": float(table[DATASET.target].mean()),
            "model_features": ", ".join(DATASET.model_features),
            "excluded_from_model": ", ".join(DATASET.excluded_from_model),
            "sources": dg.MetadataValue.md(
                table.groupby("source_file", observed=True)
                .size()
                .rename("rows")
                .reset_index()
                .to_markdown(index=False)
            ),
            "preview": preview_md(table),
        },
        data_version=dg.DataVersion(digest[:16]),
    )
