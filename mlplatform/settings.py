"""Every environment variable the platform reads or sets, declared once.

``docs/configuration.md`` is generated from :data:`ENVIRONMENT` (``scripts/docs.py``),
and a test scans the package's source for every ``os.environ`` / ``os.getenv`` /
``dg.EnvVar`` use and fails when one names a variable that is not declared here,
or when a declared one is no longer used: the reference cannot drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.core.automation_settings import AUTOMATION_ENV

__all__ = [
    "DATASET_ENV",
    "ENVIRONMENT",
    "MLFLOW_UI_URL_ENV",
    "EnvironmentSetting",
]

DATASET_ENV = "MLPLATFORM_DATASET"
MLFLOW_UI_URL_ENV = "MLPLATFORM_MLFLOW_UI_URL"


@dataclass(frozen=True)
class EnvironmentSetting:
    """One environment variable: its default and what it changes."""

    name: str
    default: str
    description: str
    set_by_platform: bool = False
    """True for variables the platform itself sets for the tools it starts."""


ENVIRONMENT: tuple[EnvironmentSetting, ...] = (
    EnvironmentSetting(
        "MLPLATFORM_HOME",
        "./data",
        "The state folder: landing area, feature store, predictions, MLflow store, promotion "
        "ledger, SQL source and Dagster home all live under it.",
    ),
    EnvironmentSetting(
        DATASET_ENV,
        "(the AI4I 2020 declaration in mlplatform/core/schema.py)",
        "A YAML, TOML or JSON file declaring the dataset (columns, roles, types, ranges, "
        "target, derived features); see docs/examples/new-dataset.md.",
    ),
    EnvironmentSetting(
        "MLFLOW_TRACKING_URI",
        "sqlite:///$MLPLATFORM_HOME/mlflow/mlflow.db",
        "An MLflow tracking server (or any MLflow store URI) instead of the embedded SQLite "
        "store; its registry holds the model versions and the champion alias.",
    ),
    EnvironmentSetting(
        MLFLOW_UI_URL_ENV,
        "the tracking URI when it is http(s), else http://127.0.0.1:5000",
        "Base URL of the MLflow UI that the Dagster UI links to (MLflow run, model version).",
    ),
    EnvironmentSetting(
        "MLPLATFORM_LEDGER_URL",
        "sqlite:///$MLPLATFORM_HOME/ledger.db",
        "SQLAlchemy URL of the promotion ledger (every change of the champion alias).",
    ),
    EnvironmentSetting(
        "MLPLATFORM_SQL_URL",
        "sqlite:///$MLPLATFORM_HOME/sources.db",
        "SQLAlchemy URL of the SQL source (table machine_readings), e.g. a PostgreSQL database.",
    ),
    EnvironmentSetting(
        "DAGSTER_HOME",
        "$MLPLATFORM_HOME/dagster_home",
        "Dagster's instance folder (runs, event logs, schedules); the mlplatform command "
        "points it into the state folder and copies dagster.yaml there.",
        set_by_platform=True,
    ),
    EnvironmentSetting(
        "GX_ANALYTICS_ENABLED",
        "false",
        "Great Expectations' usage statistics; off unless set otherwise.",
        set_by_platform=True,
    ),
    EnvironmentSetting(
        "ARROW_DEFAULT_MEMORY_POOL",
        "system",
        "Arrow's allocator. Importing mlplatform makes it the C library's (mimalloc's "
        "memory came in zeroed 2 MB huge pages: ingestion took 1.2 times as long); "
        "mimalloc or jemalloc if set otherwise.",
        set_by_platform=True,
    ),
    EnvironmentSetting(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
        "false",
        "MLflow's download progress bars; the mlplatform command turns them off.",
        set_by_platform=True,
    ),
)
"""Every environment variable, in the order the reference lists them: the platform's,
then the automation's (declared in :data:`mlplatform.core.automation_settings.AUTOMATION_ENV`,
where its parser reads them)."""
ENVIRONMENT += tuple(EnvironmentSetting(s.name, s.default, s.description) for s in AUTOMATION_ENV)
