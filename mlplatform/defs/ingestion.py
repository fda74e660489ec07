"""Ingestion: source batches (landed files, SQL pulls) into the feature store, one partition each.

``raw_observations`` is partitioned by batch (dynamic partitions
``source_batches``): one partition per landed file (keyed by its content hash)
or per incremental SQL pull. Materializing a partition ingests that batch;
materializing it again re-reads the same file or the same SQL range into a new
version, so a file's data can be replaced or backfilled on its own.

New batches are found by :func:`register_new_batches`, called by the
``new_source_batches`` sensor and by ``mlplatform run``.
"""

import json
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from mlplatform.core import batches as core_batches
from mlplatform.core import expectations as core_expectations
from mlplatform.core import ingest as core_ingest
from mlplatform.core.automation_settings import AutomationSettings
from mlplatform.core.ingest import FileRejected
from mlplatform.core.triggers import Trigger
from mlplatform.defs.common import DATASET, INGESTION, OWNER, code_version
from mlplatform.defs.policies import EXTERNAL_SERVICE_RETRY
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.ingestion import (
    DEFAULT_CHUNK_ROWS,
    Discovery,
    discover,
    ingest_batch,
)
from mlplatform.resources.sources import BatchSource

SOURCE_BATCHES_NAME = "source_batches"
SOURCE_BATCHES = dg.DynamicPartitionsDefinition(name=SOURCE_BATCHES_NAME)
LANDED_ROWS_CHECK = "landed_rows_meet_expectations"
STORED_ROWS_CHECK = "stored_rows_meet_expectations"
COUNT_INVARIANT_CHECK = "count_invariant"


class IngestConfig(dg.Config):
    """How a batch is read."""

    chunk_rows: int = DEFAULT_CHUNK_ROWS


def register_new_batches(
    instance: dg.DagsterInstance, sources: list[BatchSource], store: FeatureStore
) -> Discovery:
    """Plan every new batch, and add it (and any batch to retry) as a partition."""
    found = discover(sources, store)
    known = set(instance.get_dynamic_partitions(SOURCE_BATCHES_NAME))
    keys = [p.key for p in found.to_ingest if p.key not in known]
    if keys:
        instance.add_dynamic_partitions(SOURCE_BATCHES_NAME, keys)
    return found


def _md_table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if not frame.empty else "none")


@dg.asset(
    group_name=INGESTION,
    partitions_def=SOURCE_BATCHES,
    kinds={"pandas", "parquet", "great_expectations"},
    owners=[OWNER],
    code_version=code_version(
        __file__,
        "raw_observations",
        "IngestConfig",
        uses=(core_ingest, core_expectations, core_batches),
    ),
    retry_policy=EXTERNAL_SERVICE_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            LANDED_ROWS_CHECK,
            asset="raw_observations",
            description="The batch as landed, against the schema's expectation suite (GX). "
            "Rows failing it were quarantined; a warning, not a stop.",
        ),
        dg.AssetCheckSpec(
            STORED_ROWS_CHECK,
            asset="raw_observations",
            blocking=True,
            description="The rows as stored against the full suite (columns, storage types, "
            "ranges, sets, unique ids), by Great Expectations: types on the frame written, "
            "the row expectations as run on every landed row (again on the rows kept when "
            "any were quarantined); each part's footer read back. Must pass: nothing "
            "invalid reaches training.",
        ),
        dg.AssetCheckSpec(
            COUNT_INVARIANT_CHECK,
            asset="raw_observations",
            blocking=True,
            description="Rows landed = rows stored + rows quarantined.",
        ),
    ],
)
def raw_observations(
    context: dg.AssetExecutionContext,
    config: IngestConfig,
    sources: dg.ResourceParam[list[BatchSource]],
    feature_store: FeatureStore,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """One source batch, typed by the schema and validated by Great Expectations.

    Valid rows become a new version of the batch in the feature store; invalid rows
    go to its quarantine with file, row, column and failed expectation. A batch that
    cannot be read at all is rejected (file moved to the rejected area with the
    reason) and the store is unchanged.
    """
    key = context.partition_key
    plan = feature_store.load_plan(key)
    source = {s.source_name: s for s in sources}.get(plan.source)
    if source is None:
        raise dg.Failure(f"batch {key}: its source {plan.source!r} is not configured")
    context.log.info(f"ingesting {plan.label} (batch {key}, source {plan.source})")
    try:
        report = ingest_batch(
            plan, source, feature_store, DATASET, chunk_rows=config.chunk_rows, log=context.log
        )
    except FileRejected as exc:
        context.log.error(f"rejected {exc}")
        raise dg.Failure(
            description=str(exc),
            allow_retries=False,
            metadata={
                "file": exc.source_file,
                "reason": exc.reason,
                "column": exc.column or "",
            },
        ) from exc
    m = report.manifest
    if m.rows_quarantined:
        context.log.warning(
            f"{plan.label}: {m.rows_quarantined:,} of {m.rows_landed:,} rows quarantined; "
            f"first: {report.quarantine_sample.iloc[0]['reason']} in row "
            f"{report.quarantine_sample.iloc[0]['row_number']}, column "
            f"{report.quarantine_sample.iloc[0]['column']!r}"
        )
    context.log.info(
        f"{plan.label}: {m.rows_landed:,} rows landed, {m.rows_stored:,} stored, "
        f"{m.rows_quarantined:,} quarantined (version {m.version})"
    )
    landed = report.validation
    yield dg.AssetCheckResult(
        check_name=LANDED_ROWS_CHECK,
        passed=landed.success,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            **{k: v for k, v in landed.as_metadata().items() if k != "failures"},
            "failures": dg.MetadataValue.md(
                "\n".join(f"- {f}" for f in landed.as_metadata()["failures"]) or "none"
            ),
            "quarantined_rows": m.rows_quarantined,
        },
    )
    stored = dict(m.stored_check)
    failures = [str(f) for f in stored.get("failures", [])]
    yield dg.AssetCheckResult(
        check_name=STORED_ROWS_CHECK,
        passed=bool(stored) and not failures,
        metadata={
            **{k: v for k, v in stored.items() if k != "failures"},
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
            "parts": len(m.parts),
            "parts_sha256": dg.MetadataValue.md(
                "\n".join(f"- `{name}`: `{sha}`" for name, sha in m.part_sha256.items()) or "none"
            ),
        },
    )
    yield dg.AssetCheckResult(
        check_name=COUNT_INVARIANT_CHECK,
        passed=m.rows_landed == m.rows_stored + m.rows_quarantined,
        metadata={
            "rows_landed": m.rows_landed,
            "rows_stored": m.rows_stored,
            "rows_quarantined": m.rows_quarantined,
        },
    )
    yield dg.MaterializeResult(
        metadata={
            "source": plan.source,
            "file": plan.label,
            "version": m.version,
            "ingested_at": m.ingested_at,
            "rows_landed": m.rows_landed,
            "rows_stored": m.rows_stored,
            "rows_quarantined": m.rows_quarantined,
            "event_time_range": f"{m.event_time_min} .. {m.event_time_max}",
            "expectations_run": landed.expectations_run,
            "quarantine_sample": _md_table(
                report.quarantine_sample.drop(columns=["record"], errors="ignore").head(10)
            ),
        },
        data_version=dg.DataVersion(f"{key}@{m.version}"),
    )


AUTOMATION = AutomationSettings.from_env()
_REMEMBERED_KEYS = 2_000


@dg.sensor(
    name="new_source_batches",
    minimum_interval_seconds=AUTOMATION.sensor_interval,
    # the ingest job (defined in defs/jobs.py, which imports this module): its runs are
    # named and tagged as ingestion runs in the UI
    job_name="ingest",
    default_status=dg.DefaultSensorStatus.RUNNING
    if AUTOMATION.enabled
    else dg.DefaultSensorStatus.STOPPED,
    description="New data: plans a batch for every new landed file or new SQL rows and "
    "requests its ingestion (one run per batch, tagged new-data). Its cursor remembers the "
    "batches already requested, so a daemon restart neither skips nor repeats a file.",
)
def new_source_batches(
    context: dg.SensorEvaluationContext,
    sources: dg.ResourceParam[list[BatchSource]],
    feature_store: FeatureStore,
) -> dg.SensorResult:
    """Add a partition per new batch and request its ingestion, a page at a time.

    Plans are saved in the feature store before any run is requested: a batch
    planned on a tick that died before its request is found again (planned, not
    stored, data still waiting) and requested then. The cursor lists the batches
    already requested (run keys guard against repeats as well), and at most
    ``MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK`` runs are requested per tick; the rest
    follow on the next ticks.
    """
    settings = AutomationSettings.from_env()
    requested: list[str] = json.loads(context.cursor)["requested"] if context.cursor else []
    found = discover(sources, feature_store)
    if found.duplicates:
        context.log.info(f"archived re-dropped files (already stored): {found.duplicates}")
    for error in found.errors:
        context.log.error(f"source unavailable: {error}")
    seen = set(requested)
    waiting = [p.key for p in found.to_ingest if p.key not in seen]
    page = list(dict.fromkeys(waiting))[: settings.max_runs_per_tick]
    if len(waiting) > len(page):
        context.log.info(
            f"{len(waiting):,} batches to ingest; requesting {len(page)} now, the rest next tick"
        )
    known = set(context.instance.get_dynamic_partitions(SOURCE_BATCHES_NAME)) if page else set()
    new_partitions = [k for k in page if k not in known]
    remembered = [*requested, *page][-_REMEMBERED_KEYS:]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=k, run_key=k, tags=Trigger.NEW_DATA.tags()) for k in page
        ],
        dynamic_partitions_requests=[SOURCE_BATCHES.build_add_request(new_partitions)]
        if new_partitions
        else [],
        cursor=json.dumps({"requested": remembered}),
    )
