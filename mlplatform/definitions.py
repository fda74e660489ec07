"""The code location: every asset, check, job and resource of the platform.

Steps run in-process: the lifecycle is a chain of short steps, and a process per
step would add seconds of orchestration to every cycle. Values between steps are
persisted (Parquet / joblib), so any asset can be re-materialized from the UI alone.
"""

import os

import dagster as dg

from mlplatform.defs import evaluation, features, inference, ingestion, registry, training
from mlplatform.defs.jobs import batch_inference_job, ingest_job, train_and_score_job
from mlplatform.defs.operations import rollback_champion_job
from mlplatform.defs.resources import LEDGER_URL_ENV, build_resources
from mlplatform.paths import StatePaths

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def build_definitions(paths: StatePaths | None = None) -> dg.Definitions:
    """The platform's definitions, with state under ``paths`` (default: ``MLPLATFORM_HOME``)."""
    paths = paths or StatePaths.from_env()
    modules = [ingestion, features, training, evaluation, registry, inference]
    return dg.Definitions(
        assets=dg.load_assets_from_modules(modules),
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=[train_and_score_job, batch_inference_job, ingest_job, rollback_champion_job],
        sensors=[ingestion.new_source_batches],
        resources=build_resources(
            paths,
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
            ledger_url=os.environ.get(LEDGER_URL_ENV),
        ),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
