"""Passwords of the platform's databases never reach events, logs, snapshots or files.

A PostgreSQL role with a password (``CREATE ROLE ... LOGIN PASSWORD``; the local server
trusts loopback, but every URL still carries the password) owns four fresh databases:

- Dagster's storage, configured as production does it: ``deploy/dagster.yaml``
  (postgres storage, the password from ``PGPASSWORD``; compute logs captured into
  ``DAGSTER_COMPUTE_LOGS_DIR``), with Dagster's default run launcher;
- MLflow's backend store: a real ``mlflow server`` whose backend-store URI, password
  included, comes from its environment (``MLFLOW_BACKEND_STORE_URI``);
- the promotion ledger and the SQL source: ``MLPLATFORM_LEDGER_URL`` and
  ``MLPLATFORM_SQL_URL`` set to URLs with the password in them.

A small cycle runs through the code location's jobs (``build_definitions``): a landed
file and a SQL pull ingested, training through registration and promotion (MLflow
server), scoring. Then the password is looked for in every event of every run, every
run record, every job and execution-plan snapshot Dagster stored (what the UI shows
as the resources' configuration), every table of the four databases, the captured
compute logs, the MLflow server's log, the test's own log capture, and every file of
the state folder, the Dagster home and MLflow's artifact store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._serdes import serialize_value

from mlplatform.core.generator import generate_ai4i
from mlplatform.core.triggers import Trigger
from mlplatform.definitions import build_definitions
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import register_new_batches
from mlplatform.defs.resources import (
    LEDGER_URL_ENV,
    SQL_EVENT_TIME,
    SQL_TABLE,
    SQL_URL_ENV,
    SQL_WATERMARK,
    build_resources,
)
from mlplatform.paths import StatePaths
from mlplatform.resources.sample_data import write_sql_readings
from mlplatform_tests.defs.helpers import gate_config, land_sample
from mlplatform_tests.deploy.topology import free_port, loopback_dagster_yaml
from mlplatform_tests.pg import admin_url, fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAINING = {
    "ops": {
        **gate_config(
            min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
        )["ops"],
        "candidate_model": {
            "config": {"candidates": ["logistic_regression"], "search_iterations": 0}
        },
        "model_evaluation": {"config": {"bootstrap_resamples": 200, "importance_repeats": 0}},
    }
}


def _admin() -> sa.Engine:
    return sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextmanager
def _role_with_password(password: str) -> Iterator[str]:
    """A login role with ``password``; dropped afterwards (after its databases)."""
    role = f"mlplatform_cred_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {admin.url.render_as_string()}: {exc}")
    try:
        yield role
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def _owned_by(url: str, role: str, password: str) -> str:
    """``url``'s database handed to ``role``; the URL as that role, password included."""
    database = sa.make_url(url).database
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database}" OWNER TO {role}')
    admin.dispose()
    return (
        sa.make_url(url).set(username=role, password=password).render_as_string(hide_password=False)
    )


def _tables_as_text(url: str) -> dict[str, str]:
    """Every table of the database, each row as PostgreSQL's text form of the record."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            names = conn.execute(
                sa.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            ).scalars()
            return {
                name: "\n".join(conn.exec_driver_sql(f'SELECT t::text FROM "{name}" t').scalars())
                for name in list(names)
            }
    finally:
        engine.dispose()


@contextmanager
def _mlflow_server(backend_uri: str, folder: Path) -> Iterator[tuple[str, Path, Any]]:
    """``mlflow server`` on loopback, its backend-store URI only in its environment.

    Yields its URL, its log and a function that waits until it answers: it migrates a
    fresh database while the caller prepares the rest.
    """
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "mlflow-server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG"))}
    env["MLFLOW_BACKEND_STORE_URI"] = backend_uri
    argv = [str(BIN / "mlflow"), "server", "--port", str(port), "--workers", "1"]
    argv += ["--artifacts-destination", str(folder / "artifacts"), "--serve-artifacts"]
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

        def wait_ready() -> None:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=5):
                        return
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
                    time.sleep(0.5)

        try:
            yield url, log, wait_ready
        finally:
            for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 15)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue


def _files_holding(secret: str, *folders: Path) -> list[str]:
    needle = secret.encode()
    return [
        str(p)
        for folder in folders
        for p in folder.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    ]


def _run_cycle(state: StatePaths, instance: dg.DagsterInstance) -> list[dg.ExecuteInProcessResult]:
    """Ingest (file + SQL pull), train through promotion, score a batch: the location's jobs."""
    defs = build_definitions(state)
    resources = defs.resources
    assert resources is not None
    found = register_new_batches(instance, resources["sources"], resources["feature_store"])
    keys = [plan.key for plan in found.to_ingest]
    assert len(keys) == 2, keys  # the landed file and the SQL pull
    runs = [
        defs.resolve_job_def("ingest").execute_in_process(
            instance=instance, partition_key=key, tags=Trigger.NEW_DATA.tags()
        )
        for key in keys
    ]
    runs.append(
        defs.resolve_job_def("train_and_score").execute_in_process(
            instance=instance, run_config=TRAINING
        )
    )
    # scoring loads the champion through the MLflow server
    runs.append(
        defs.resolve_job_def("batch_inference").execute_in_process(
            instance=instance, partition_key=keys[-1]
        )
    )
    assert all(r.success for r in runs)
    return runs


def test_database_passwords_never_reach_events_snapshots_logs_or_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    state = StatePaths(tmp_path / "state")
    state.ensure()
    home = tmp_path / "dagster_home"
    home.mkdir()
    compute_logs = state.root / "compute_logs"
    production = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    (home / "dagster.yaml").write_text(yaml.safe_dump(loopback_dagster_yaml(production)))

    started = time.perf_counter()
    with ExitStack() as stack:
        role = stack.enter_context(_role_with_password(password))
        urls = {
            name: _owned_by(stack.enter_context(fresh_database()), role, password)
            for name in ("dagster", "mlflow", "ledger", "sql")
        }
        assert all(password in url for url in urls.values())
        tracking_uri, server_log, server_ready = stack.enter_context(
            _mlflow_server(urls["mlflow"], tmp_path / "mlflow")
        )
        dagster_db = sa.make_url(urls["dagster"])
        for name in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", SQL_URL_ENV, LEDGER_URL_ENV):
            monkeypatch.delenv(name, raising=False)
        # as deploy/docker-compose.yaml's production environment, with the password
        monkeypatch.setenv("PGHOST", str(dagster_db.host))
        monkeypatch.setenv("PGPORT", str(dagster_db.port or 5432))
        monkeypatch.setenv("PGUSER", role)
        monkeypatch.setenv("PGPASSWORD", password)
        monkeypatch.setenv("DAGSTER_POSTGRES_DB", str(dagster_db.database))
        monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(compute_logs))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        monkeypatch.setenv(LEDGER_URL_ENV, urls["ledger"])
        monkeypatch.setenv(SQL_URL_ENV, urls["sql"])

        write_sql_readings(
            urls["sql"],
            DATASET,
            generate_ai4i(400, seed=5, start_udi=5001),
            table=SQL_TABLE,
            watermark=SQL_WATERMARK,
            event_time=SQL_EVENT_TIME,
        )
        land_sample({"landing": build_resources(state)["landing"]}, 1200, seed=6)

        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        server_ready()
        server_up = time.perf_counter()
        with caplog.at_level("DEBUG"):
            runs = _run_cycle(state, instance)

        cycle_done = time.perf_counter()
        stored_runs = instance.get_runs()
        assert len(stored_runs) == len(runs) == 4
        events = {
            run.run_id: [serialize_value(r) for r in instance.all_logs(run.run_id)]
            for run in stored_runs
        }
        assert any("MLflow" in e or "mlflow" in e for e in events[runs[2].run_id])
        leaked = [e[:200] for es in events.values() for e in es if password in e]
        assert not leaked, f"the password is in {len(leaked)} run events: {leaked[:3]}"
        records = [serialize_value(run) for run in stored_runs]
        assert not [r[:200] for r in records if password in r], "a run record holds it"
        snapshots = {
            f"job {run.job_name}": serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
            for run in stored_runs
            if run.job_snapshot_id
        } | {
            f"plan {run.job_name}": serialize_value(
                instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            )
            for run in stored_runs
            if run.execution_plan_snapshot_id
        }
        assert len(snapshots) == 6  # three jobs, a job and a plan snapshot each
        holding = sorted(name for name, s in snapshots.items() if password in s)
        assert not holding, f"the password is in the stored snapshots of {holding}"
        # the resources are there, named by the variable that holds their URL
        assert all(SQL_URL_ENV in s for name, s in snapshots.items() if name.startswith("job"))

        tables = {name: _tables_as_text(url) for name, url in urls.items()}
        assert tables["ledger"] and tables["mlflow"].get("model_versions")
        in_tables = [
            f"{db}.{t}" for db, ts in tables.items() for t, text in ts.items() if password in text
        ]
        assert not in_tables, f"the password is stored in the tables {in_tables}"

    captured = [p for p in compute_logs.rglob("*") if p.is_file()]
    assert captured, "no compute logs were captured"
    assert any(p.stat().st_size for p in captured)
    assert password not in caplog.text
    assert password not in server_log.read_text()
    holding_files = _files_holding(password, state.root, home, tmp_path / "mlflow")
    assert not holding_files, f"the password is stored in {holding_files}"
    searched = time.perf_counter() - cycle_done
    print(
        f"databases, MLflow server and instance ready in {server_up - started:.1f} s, "
        f"cycle {cycle_done - server_up:.1f} s, searched in {searched:.1f} s"
    )
