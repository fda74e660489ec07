"""The code location: every asset, check, job and resource of the platform.

Steps run in-process: the lifecycle is a chain of short steps, and a process per
step would add seconds of orchestration to every cycle. Values between steps are
persisted (Parquet / joblib), so any asset can be re-materialized from the UI alone.
"""

import os
from typing import Any

import dagster as dg

from mlplatform.defs import (
    automation,
    evaluation,
    features,
    inference,
    ingestion,
    monitoring,
    registry,
    training,
)
from mlplatform.defs.jobs import (
    batch_inference_job,
    evaluate_live_job,
    ingest_job,
    train_and_score_job,
    window_inference_job,
)
from mlplatform.defs.operations import rollback_champion_job
from mlplatform.defs.resources import LEDGER_URL_ENV, SQL_URL_ENV, build_resources
from mlplatform.paths import StatePaths

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# operators read run logs: no artifact-download progress bars in them
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _environment_references(resources: dict[str, Any]) -> dict[str, Any]:
    """``resources``, with each URL taken from the environment as a ``dg.EnvVar``.

    A resource's field values are its configuration's defaults in every job snapshot,
    which Dagster stores with each run and the UI shows: a password in
    ``MLPLATFORM_SQL_URL`` would be kept and displayed with them. As an ``EnvVar`` the
    snapshot names the variable, and the value is read when a run or a sensor tick
    builds the resource.
    """
    out = dict(resources)
    # (resource key, field, the variable's value, a reference to it): the URLs that may
    # hold a password
    for key, field, value, reference in (
        ("sql_source", "url", os.environ.get(SQL_URL_ENV), dg.EnvVar(SQL_URL_ENV)),
        ("ledger", "url", os.environ.get(LEDGER_URL_ENV), dg.EnvVar(LEDGER_URL_ENV)),
        (
            "mlflow_registry",
            "tracking_uri",
            os.environ.get("MLFLOW_TRACKING_URI"),
            dg.EnvVar("MLFLOW_TRACKING_URI"),
        ),
    ):
        resource = resources[key]
        if value and getattr(resource, field) == value:
            values = {name: getattr(resource, name) for name in type(resource).model_fields}
            out[key] = type(resource)(**{**values, field: reference})
    return out


def build_definitions(paths: StatePaths | None = None) -> dg.Definitions:
    """The platform's definitions, with state under ``paths`` (default: ``MLPLATFORM_HOME``)."""
    paths = paths or StatePaths.from_env()
    modules = [ingestion, features, training, evaluation, registry, inference, monitoring]
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules(modules), monitoring.feature_drift],
        asset_checks=dg.load_asset_checks_from_modules(modules),
        jobs=[
            train_and_score_job,
            batch_inference_job,
            window_inference_job,
            ingest_job,
            evaluate_live_job,
            rollback_champion_job,
        ],
        sensors=[ingestion.new_source_batches, *automation.SENSORS],
        schedules=automation.SCHEDULES,
        resources=_environment_references(
            build_resources(
                paths,
                tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
                ledger_url=os.environ.get(LEDGER_URL_ENV),
            )
        ),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
