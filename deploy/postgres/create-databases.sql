-- Run once by the postgres image on an empty data volume (docker-entrypoint-initdb.d),
-- as POSTGRES_USER, who owns them: one database per store, because Dagster and MLflow
-- both keep an `alembic_version` table.
CREATE DATABASE dagster;     -- runs, event logs, schedules (DAGSTER_POSTGRES_DB)
CREATE DATABASE mlflow;      -- MLflow's backend store: experiments, runs, model registry
CREATE DATABASE mlplatform;  -- the promotion ledger (MLPLATFORM_LEDGER_URL)
