"""Ingestion: landed files into typed Parquet batches of the feature store."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlplatform.core.ingest import FileRejected, type_and_validate
from mlplatform.defs.common import DATASET, INGESTION
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.landing import LandingArea


@dg.asset(group_name=INGESTION, kinds={"pandas", "parquet"}, owners=["team:ml-platform"])
def raw_observations(
    context: dg.AssetExecutionContext, landing: LandingArea, feature_store: FeatureStore
) -> dg.MaterializeResult:
    """Landed CSV/Parquet files, typed by the schema, stored as Parquet batches by content hash."""
    ingested_at = pd.Timestamp(datetime.now(UTC)).as_unit("us")
    report: list[dict[str, object]] = []
    rejected: list[FileRejected] = []
    for landed in landing.pending():
        if feature_store.has_batch(landed.sha256):
            landing.archive(landed)
            context.log.info(
                f"{landed.name}: already ingested (sha256 {landed.sha256[:12]}), "
                "archived without adding rows"
            )
            report.append(
                {
                    "file": landed.name,
                    "status": "duplicate",
                    "landed": 0,
                    "stored": 0,
                    "quarantined": 0,
                }
            )
            continue
        try:
            batch = type_and_validate(landing.read(landed), DATASET, landed.name)
        except FileRejected as exc:
            moved = landing.reject(landed, str(exc))
            context.log.error(f"rejected {exc}; moved to {moved}")
            rejected.append(exc)
            report.append(
                {
                    "file": landed.name,
                    "status": f"rejected: {exc.reason}",
                    "landed": 0,
                    "stored": 0,
                    "quarantined": 0,
                }
            )
            continue
        rows = batch.valid.assign(
            source_file=landed.name, content_sha256=landed.sha256, ingested_at=ingested_at
        )
        quarantine = batch.quarantine.assign(content_sha256=landed.sha256, ingested_at=ingested_at)
        feature_store.write_batch(landed.sha256, rows, quarantine)
        landing.archive(landed)
        if batch.rows_quarantined:
            context.log.warning(
                f"{landed.name}: {batch.rows_quarantined} of {batch.rows_landed} rows quarantined; "
                f"first: row {quarantine.iloc[0]['row_number']}, column "
                f"{quarantine.iloc[0]['column']!r}: {quarantine.iloc[0]['reason']}"
            )
        context.log.info(
            f"{landed.name}: {len(rows)} rows stored, {batch.rows_quarantined} quarantined"
        )
        report.append(
            {
                "file": landed.name,
                "status": "ingested",
                "landed": batch.rows_landed,
                "stored": len(rows),
                "quarantined": batch.rows_quarantined,
            }
        )

    stored = feature_store.read_observations()
    if rejected:
        raise dg.Failure(
            description="; ".join(str(e) for e in rejected),
            metadata={"rejected_files": [e.source_file for e in rejected]},
        )
    if stored.empty:
        raise dg.Failure(
            description=f"no observations: drop CSV or Parquet files into {landing.landing_dir}"
        )
    if not report:
        context.log.info(f"no new files in {landing.landing_dir}")
    files = pd.DataFrame(report, columns=["file", "status", "landed", "stored", "quarantined"])
    return dg.MaterializeResult(
        metadata={
            "files_processed": len(report),
            "rows_stored_this_run": int(files["stored"].sum()),
            "rows_quarantined_this_run": int(files["quarantined"].sum()),
            "rows_in_store": len(stored),
            "files": dg.MetadataValue.md(
                files.to_markdown(index=False) if report else "no new files"
            ),
        }
    )
