"""The production topology, for real, on loopback (see :mod:`.topology`).

PostgreSQL (a server of this module's own, :func:`~mlplatform_tests.pg.private_postgres`;
the machine's where its server programs are missing), ``mlflow server`` with the
Postgres backend store and a temp artifact root, ``dagster api grpc`` serving the
package, ``dagster-webserver`` on a workspace pointing at it and ``dagster-daemon``,
all from ``deploy/docker-compose.yaml``. Data lands as an operator would land it
(``mlplatform generate`` in the code server's environment); the ingestion sensor,
started through the webserver's GraphQL API, ingests it; training and scoring are
launched through GraphQL and queued, launched and monitored by the daemon. Then the
daemon is SIGKILLed in the middle of a training run and restarted; last, PostgreSQL
is restarted in the middle of one.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterEventType

from mlplatform.defs.ingestion import SOURCE_BATCHES_NAME, new_source_batches
from mlplatform.defs.jobs import BATCH_INFERENCE, ROLLBACK_CHAMPION, TRAIN_AND_SCORE
from mlplatform.defs.registry import RECALL_GATE_CHECK, registered_model
from mlplatform.resources.ledger import PromotionLedger
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform_tests.defs.helpers import LENIENT
from mlplatform_tests.deploy import compose as c
from mlplatform_tests.deploy.topology import Postgres, Topology, free_port, graphql, wait_for
from mlplatform_tests.pg import (
    PrivatePostgres,
    admin_url,
    fresh_database,
    postgres_bindir,
    private_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROWS = 3_000
RUN_TIMEOUT = 600  # seconds: a run that takes longer than this is hanging
# one quick candidate that passes the gate; a short bootstrap and importance (the
# evaluation's statistics are tested elsewhere)
TRAINING_CONFIG = {
    "ops": {
        **LENIENT["ops"],
        "model_evaluation": {"config": {"bootstrap_resamples": 200, "importance_repeats": 1}},
    }
}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""
RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"""
RUNS_BY_TAG = """
query($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on Error { message }
  }
}"""


@dataclass
class Deployment:
    topology: Topology
    databases: dict[str, str]  # production name -> SQLAlchemy URL of this run's database
    location: str
    server: PrivatePostgres | None  # the postgres service, when it is this module's own

    @property
    def webserver(self) -> int:
        return self.topology.port_of("webserver")

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.topology.port_of('mlflow')}"

    @property
    def registry(self) -> MlflowRegistry:
        return MlflowRegistry(tracking_uri=self.tracking_uri)

    @property
    def state(self) -> Path:
        code_server = next(s for s in self.topology.services.values() if "grpc" in s.argv)
        return Path(code_server.env["MLPLATFORM_HOME"])

    def query(self, database: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        engine = sa.create_engine(self.databases[database], poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()

    def launch(self, job: str, *, run_config: dict[str, Any], tags: dict[str, str]) -> str:
        params = {
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": "__repository__",
                "jobName": job,
            },
            "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = graphql(self.webserver, LAUNCH, {"params": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return str(result["run"]["runId"])

    def status(self, run_id: str) -> str:
        run = graphql(self.webserver, RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        return str(run["status"])

    def wait_finished(self, run_id: str, timeout: float = RUN_TIMEOUT) -> str:
        def finished() -> str | None:
            status = self.status(run_id)
            return status if status in TERMINAL else None

        return str(
            wait_for(f"run {run_id} to finish", finished, timeout=timeout, diagnostics=self.logs)
        )

    def failure_messages(self, run_id: str) -> str:
        rows = self.query(
            "dagster",
            "SELECT event FROM event_logs WHERE run_id = :run_id "
            "AND dagster_event_type IN ('STEP_FAILURE', 'PIPELINE_FAILURE', 'ENGINE_EVENT') "
            "ORDER BY id",
            run_id=run_id,
        )
        return "\n".join(str(r[0])[:1500] for r in rows)[-6000:]

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.name}\n{s.log_tail(1500)}" for s in self.topology.services.values()
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Every service of the compose file running on loopback; stopped and dropped after.

    The ``postgres`` service is a server of this module's own (:func:`private_postgres`),
    so that it can be restarted under the platform; where PostgreSQL's server programs
    are not installed, the machine's server, and the restart test skips.
    """
    root = tmp_path_factory.mktemp("topology")
    production_databases = c.created_databases(c.DATABASES_SQL.read_text())
    with ExitStack() as stack:
        server = (
            stack.enter_context(private_postgres(free_port()))
            if postgres_bindir() is not None
            else None
        )
        server_url = server.url() if server else admin_url()
        admin = sa.make_url(server_url)
        urls = {
            name: stack.enter_context(
                fresh_database(f"mlplatform_topology_{name}", server_url=server_url)
            )
            for name in production_databases
        }
        postgres = Postgres(
            host=admin.host or "127.0.0.1",
            port=admin.port or 5432,
            user=admin.username or "postgres",
            password=admin.password or "",
            databases={name: str(sa.make_url(url).database) for name, url in urls.items()},
        )
        # what deploy/.env would hold: the server's credentials, the socket's group;
        # sensors and schedules start stopped, so only the runs this test starts run
        secrets = {
            "POSTGRES_USER": postgres.user,
            "POSTGRES_PASSWORD": postgres.password or "unused-with-trust-authentication",
            "DOCKER_GID": str(os.getgid()),
            "MLPLATFORM_AUTOMATION": "off",
        }
        topology = Topology(root, postgres, secrets)
        stack.callback(topology.stop)
        topology.start()
        [location] = c.grpc_locations(c.load_yaml(c.WORKSPACE_YAML))
        yield Deployment(topology, urls, str(location["location_name"]), server)


@dataclass(frozen=True)
class Ingested:
    batches: dict[str, int]  # partition key -> rows stored
    run_ids: list[str]


@pytest.fixture(scope="module")
def ingested(deployment: Deployment) -> Ingested:
    """Sample data landed with the CLI, ingested by the sensor the daemon runs."""
    generated = deployment.topology.cli("generate", "--rows", str(ROWS), "--seed", "7")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    expected = generated.stdout.count("generated sample rows ->")
    assert expected == 2, generated.stdout  # a landed file and a SQL pull

    selector = {
        "repositoryLocationName": deployment.location,
        "repositoryName": "__repository__",
        "sensorName": new_source_batches.name,
    }
    started = graphql(deployment.webserver, START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started

    def ingestion_runs() -> list[dict[str, Any]] | None:
        runs = graphql(
            deployment.webserver,
            RUNS_BY_TAG,
            {"key": "dagster/sensor_name", "value": new_source_batches.name},
        )["runsOrError"]["results"]
        done = [r for r in runs if r["status"] in TERMINAL]
        return runs if len(runs) == expected and len(done) == expected else None

    runs = wait_for(
        "the sensor's ingestion runs", ingestion_runs, timeout=240, diagnostics=deployment.logs
    )
    for run in runs:
        assert run["status"] == "SUCCESS", deployment.failure_messages(run["runId"])
    keys = [
        next(t["value"] for t in run["tags"] if t["key"] == "dagster/partition") for run in runs
    ]
    # the partitions the sensor added are in Dagster's PostgreSQL storage
    stored = deployment.query(
        "dagster",
        "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = :name",
        name=SOURCE_BATCHES_NAME,
    )
    assert sorted(r[0] for r in stored) == sorted(keys)
    batches = {}
    for key in keys:
        [manifest] = (deployment.state / "feature_store" / "batches" / key).glob("*/_manifest.json")
        batches[key] = int(pd.read_json(manifest, typ="series")["rows_stored"])
    assert sum(batches.values()) == ROWS
    return Ingested(batches, [r["runId"] for r in runs])


@dataclass(frozen=True)
class Trained:
    run_id: str
    seconds: float


@pytest.fixture(scope="module")
def trained(deployment: Deployment, ingested: Ingested) -> Trained:
    """``train_and_score`` launched through the webserver's GraphQL API, to success."""
    started = time.monotonic()
    run_id = deployment.launch(
        TRAIN_AND_SCORE, run_config=TRAINING_CONFIG, tags={"test": "topology"}
    )
    status = deployment.wait_finished(run_id)
    assert status == "SUCCESS", deployment.failure_messages(run_id)
    return Trained(run_id, time.monotonic() - started)


def test_training_run_and_its_events_are_in_postgres(
    deployment: Deployment, trained: Trained
) -> None:
    [(status, job)] = deployment.query(
        "dagster", "SELECT status, pipeline_name FROM runs WHERE run_id = :id", id=trained.run_id
    )
    assert (status, job) == ("SUCCESS", TRAIN_AND_SCORE)
    events = deployment.query(
        "dagster",
        "SELECT dagster_event_type, asset_key FROM event_logs WHERE run_id = :id ORDER BY id",
        id=trained.run_id,
    )
    kinds = [e[0] for e in events]
    # stored under Dagster's own names (RUN_SUCCESS is PIPELINE_SUCCESS in the table)
    enqueued, starting, start, success = (
        DagsterEventType.RUN_ENQUEUED.value,
        DagsterEventType.RUN_STARTING.value,
        DagsterEventType.RUN_START.value,
        DagsterEventType.RUN_SUCCESS.value,
    )
    assert kinds.count(success) == 1, kinds
    # queued first (QueuedRunCoordinator), then launched by the daemon
    assert kinds.index(enqueued) < kinds.index(starting) < kinds.index(start)
    materialized = {e[1] for e in events if e[0] == DagsterEventType.ASSET_MATERIALIZATION.value}
    assert '["champion_model"]' in materialized and '["registered_model"]' in materialized
    # the daemon's heartbeats are in the same storage
    daemons = {
        r[0] for r in deployment.query("dagster", "SELECT daemon_type FROM daemon_heartbeats")
    }
    assert {"QUEUED_RUN_COORDINATOR", "SENSOR", "MONITORING"} <= daemons


def test_champion_is_in_the_mlflow_server_registry(
    deployment: Deployment, trained: Trained
) -> None:
    from mlflow import MlflowClient

    registry = deployment.registry
    uri = deployment.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = client.get_model_version_by_alias(registry.model_name, registry.champion_alias)
    assert version.status == "READY" and version.run_id
    run = client.get_run(version.run_id)
    assert run.data.tags["dagster_run_id"] == trained.run_id
    assert run.data.metrics["recall"] > 0
    # the registry lives in the server's PostgreSQL backend store ...
    [(alias_version,)] = deployment.query(
        "mlflow",
        "SELECT version FROM registered_model_aliases WHERE name = :name AND alias = :alias",
        name=registry.model_name,
        alias=registry.champion_alias,
    )
    assert str(alias_version) == version.version
    # ... the model's files in its artifact root, uploaded through the server (proxied)
    mlflow_service = deployment.topology.services["mlflow"]
    destination = Path(c.option(mlflow_service.argv, "--artifacts-destination") or "")
    assert destination.is_dir() and list(destination.rglob("MLmodel")), destination
    # and it loads and predicts through the server
    champion = registry.champion()
    assert champion is not None and champion.version == version.version
    assert registry.load(champion) is not None
    # the promotion ledger is in its PostgreSQL database
    ledger = PromotionLedger(url=deployment.databases["mlplatform"])
    [entry] = ledger.entries(registry.model_name)
    assert (entry.state, entry.to_version, entry.dagster_run_id) == (
        "committed",
        version.version,
        trained.run_id,
    )


def _score(deployment: Deployment, key: str) -> str:
    return deployment.launch(
        BATCH_INFERENCE, run_config={}, tags={"dagster/partition": key, "test": "topology"}
    )


def test_batch_predictions_through_the_same_path(
    deployment: Deployment, ingested: Ingested, trained: Trained
) -> None:
    version = deployment.registry.champion()
    assert version is not None
    # one batch here; the other is scored while the daemon is down (below)
    runs = {key: _score(deployment, key) for key in list(ingested.batches)[:1]}
    for key, run_id in runs.items():
        status = deployment.wait_finished(run_id)
        assert status == "SUCCESS", deployment.failure_messages(run_id)
        folder = deployment.state / "predictions" / key / f"v{version.version}"
        frame = pd.read_parquet(folder)
        assert len(frame) == ingested.batches[key]
        assert frame["entity_id"].is_unique
        assert set(frame["model_version"].astype(str)) == {version.version}


def test_daemon_killed_mid_run_recovers(
    deployment: Deployment, ingested: Ingested, trained: Trained
) -> None:
    daemon = deployment.topology.services["daemon"]
    run_id = deployment.launch(
        TRAIN_AND_SCORE, run_config=TRAINING_CONFIG, tags={"test": "kill-daemon"}
    )

    def steps_started() -> bool:
        return bool(
            deployment.query(
                "dagster",
                "SELECT 1 FROM event_logs WHERE run_id = :id AND dagster_event_type = :kind",
                id=run_id,
                kind=DagsterEventType.STEP_START.value,
            )
        )

    wait_for("the run's first step", steps_started, timeout=120, diagnostics=deployment.logs)
    daemon.kill()
    assert deployment.status(run_id) not in TERMINAL, "killed too late: the run had finished"

    # with no daemon, nothing leaves the queue
    key = list(ingested.batches)[-1]
    queued = _score(deployment, key)
    time.sleep(3)
    assert deployment.status(queued) == "QUEUED"

    killed_at = time.monotonic()
    daemon.start(c.REPO)
    deployment.topology.wait_healthy(daemon)  # its own liveness check: fresh heartbeats
    # the run ends, one way or the other, within a bounded time
    status = deployment.wait_finished(run_id)
    assert status in {"SUCCESS", "FAILURE"}
    assert deployment.wait_finished(queued) == "SUCCESS", deployment.failure_messages(queued)
    assert time.monotonic() - killed_at < 2 * RUN_TIMEOUT

    # no alias on a half-registered model: every version is complete, the champion loads,
    # and the ledger agrees with the alias
    from mlflow import MlflowClient

    registry = deployment.registry
    uri = deployment.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{registry.model_name}'")
    assert versions and all(v.status == "READY" for v in versions)
    champion = registry.champion()
    assert champion is not None
    assert registry.load(champion) is not None
    ledger = PromotionLedger(url=deployment.databases["mlplatform"])
    entries = ledger.entries(registry.model_name)
    assert not [e for e in entries if e.state == "pending"]
    assert [e for e in entries if e.state == "committed"][-1].to_version == champion.version
    if status == "SUCCESS":  # the run went on without the daemon: it registered a version
        assert len(versions) == 2


def test_rollback_job_moves_the_champion_back(
    deployment: Deployment, ingested: Ingested, trained: Trained
) -> None:
    # the operator's rollback from the UI: the rollback_champion job, through GraphQL
    registry = deployment.registry
    ledger = PromotionLedger(url=deployment.databases["mlplatform"])
    promotions = [e for e in ledger.entries(registry.model_name) if e.action == "promote"]
    if len(promotions) < 2:
        pytest.skip("one champion so far (the run under the killed daemon promoted none)")
    before = registry.champion()
    assert before is not None
    run_id = deployment.launch(
        ROLLBACK_CHAMPION,
        run_config={"ops": {"roll_back_champion": {"config": {"reason": "topology test"}}}},
        tags={"test": "topology"},
    )
    assert deployment.wait_finished(run_id) == "SUCCESS", deployment.failure_messages(run_id)
    after = registry.champion()
    assert after is not None and after.version != before.version
    last = ledger.entries(registry.model_name)[-1]
    assert (last.action, last.state, last.to_version, last.dagster_run_id) == (
        "rollback",
        "committed",
        after.version,
        run_id,
    )


# PostgreSQL restarted under the platform (issue 9). Down for a few seconds, as when
# its container restarts (compose ``restart: unless-stopped``): stop, start, recovery.
POSTGRES_DOWN_FOR = 3.0
HEARTBEAT_RECOVERY = 90.0  # the daemon's heartbeat interval is 30 s
RUNS = "query { runsOrError { __typename ... on Runs { results { runId } } } }"
LOGS_FOR_RUN = """
query($runId: ID!) { logsForRun(runId: $runId) { __typename ... on PythonError { message } } }"""
SENSOR_STATE = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
ACTIVE_RUNS = """
query {
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId } }
  }
}"""
PARENT_RUN_TAG = "dagster/parent_run_id"  # set on the daemon's automatic re-execution


@contextmanager
def _writes_held(database_url: str, table: str) -> Iterator[Callable[[], bool]]:
    """Hold a SHARE lock on ``table`` (reads go on, writes wait); yields a probe: whether
    another session's write waits on it. The lock ends with the server's restart."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    holder = engine.connect()
    try:
        holder.begin()
        holder.exec_driver_sql(f"LOCK TABLE {table} IN SHARE MODE")

        def waiting() -> bool:
            # (pg_stat_activity keeps a statement's first 1 kB: the table, not the values)
            with engine.connect() as conn:
                count = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' "
                        "AND (query LIKE :insert OR query LIKE :update)"
                    ),
                    {"insert": f"INSERT INTO {table} %", "update": f"UPDATE {table} %"},
                ).scalar_one()
            return bool(count)

        yield waiting
    finally:
        with contextlib.suppress(sa.exc.DBAPIError):  # its session ended with the server
            holder.close()
        engine.dispose()


def test_postgres_restarted_mid_run_recovers(
    deployment: Deployment, ingested: Ingested, trained: Trained
) -> None:
    """PostgreSQL restarts (``-m fast``: every session ended, down a few seconds) while a
    training run writes to it: nobody restarts anything, and everything recovers.

    The restart lands while a statement of the run is in flight: the recall gate's
    result, which waits on a lock this test holds on ``asset_check_executions`` (nothing
    else writes there meanwhile). Dagster retries opening a connection for ~6 s, which
    rides out a short outage, but not a statement the shutdown ended: the gate's step
    fails, so nothing is promoted. The daemon re-executes the run from that step (run
    retries, ``deploy/dagster.yaml``): the gate is recorded and the version the first
    run registered is promoted, without training or registering again.
    """
    server = deployment.server
    if server is None:
        pytest.skip("PostgreSQL's server programs are not installed: no private server")
    # nothing left running by the tests before (a run of theirs registering a version)
    wait_for(
        "the runs before to finish",
        lambda: not graphql(deployment.webserver, ACTIVE_RUNS)["runsOrError"]["results"],
        timeout=RUN_TIMEOUT,
    )
    services = deployment.topology.services
    pids = {name: s.proc.pid for name, s in services.items() if s.proc is not None}
    registry = deployment.registry
    registered = len(registry.versions())
    run_id = deployment.launch(
        TRAIN_AND_SCORE, run_config=TRAINING_CONFIG, tags={"test": "restart-postgres"}
    )

    def training_started() -> bool:
        return bool(
            deployment.query(
                "dagster",
                "SELECT 1 FROM event_logs WHERE run_id = :id AND step_key = 'candidate_model' "
                "AND dagster_event_type = :kind",
                id=run_id,
                kind=DagsterEventType.STEP_START.value,
            )
        )

    wait_for("the training step", training_started, timeout=180, diagnostics=deployment.logs)
    with _writes_held(deployment.databases["dagster"], "asset_check_executions") as waiting:
        wait_for("the gate's result", waiting, timeout=180, diagnostics=deployment.logs)
        assert deployment.status(run_id) == "STARTED"
        assert server.restart(down_for=POSTGRES_DOWN_FOR) >= POSTGRES_DOWN_FOR
    heartbeats = "SELECT daemon_type, timestamp FROM daemon_heartbeats"
    at_restart = {kind: at for kind, at in deployment.query("dagster", heartbeats)}

    # the webserver answers at once, from each of its storages (runs, events, sensors):
    # it holds no connection the restart ended (--db-pool-recycle 0, the compose file)
    selector = {
        "repositoryLocationName": deployment.location,
        "repositoryName": "__repository__",
        "sensorName": new_source_batches.name,
    }
    answers = {
        "run storage": graphql(deployment.webserver, RUNS)["runsOrError"],
        "event log": graphql(deployment.webserver, LOGS_FOR_RUN, {"runId": run_id})["logsForRun"],
        "schedule storage": graphql(deployment.webserver, SENSOR_STATE, {"selector": selector})[
            "sensorOrError"
        ],
    }
    assert {name: a["__typename"] for name, a in answers.items()} == {
        "run storage": "Runs",
        "event log": "EventConnection",
        "schedule storage": "Sensor",
    }, answers
    # and a run launched now is queued, started and finished as before the restart
    scored = _score(deployment, next(iter(ingested.batches)))

    # the run failed at the gate's step, because the restart ended its statement
    assert deployment.wait_finished(run_id) == "FAILURE"
    [(step,)] = deployment.query(
        "dagster",
        "SELECT step_key FROM event_logs WHERE run_id = :id AND dagster_event_type = :kind",
        id=run_id,
        kind=DagsterEventType.STEP_FAILURE.value,
    )
    assert step == f"{registered_model.key.to_python_identifier()}_{RECALL_GATE_CHECK}"
    failures = deployment.failure_messages(run_id)
    assert "OperationalError" in failures and "asset_check_executions" in failures, failures

    # ... and the daemon re-executes it, with no one asking, to success
    def retry() -> str | None:
        runs = graphql(deployment.webserver, RUNS_BY_TAG, {"key": PARENT_RUN_TAG, "value": run_id})[
            "runsOrError"
        ]["results"]
        return str(runs[0]["runId"]) if runs else None

    retry_id = str(wait_for("the run's retry", retry, timeout=120, diagnostics=deployment.logs))
    assert deployment.wait_finished(retry_id) == "SUCCESS", deployment.failure_messages(retry_id)
    assert deployment.wait_finished(scored) == "SUCCESS", deployment.failure_messages(scored)

    # the champion is the version the first run registered (one new version: the retry
    # neither trained nor registered again), promoted by the retry, and the ledger agrees
    from mlflow import MlflowClient

    versions = registry.versions()
    assert len(versions) == registered + 1
    champion = registry.champion()
    assert champion == versions[-1]
    mlflow_run = MlflowClient(tracking_uri=deployment.tracking_uri).get_run(champion.run_id)
    assert mlflow_run.data.tags["dagster_run_id"] == run_id
    entries = PromotionLedger(url=deployment.databases["mlplatform"]).entries(registry.model_name)
    assert not [e for e in entries if e.state == "pending"]
    assert (entries[-1].state, entries[-1].to_version, entries[-1].dagster_run_id) == (
        "committed",
        champion.version,
        retry_id,
    )

    # the same processes throughout: nothing was restarted but PostgreSQL
    assert {name: s.proc.pid for name, s in services.items() if s.proc is not None} == pids
    assert all(s.running() for s in services.values()), deployment.logs()

    # and every daemon has written its heartbeat since
    def fresh_heartbeats() -> bool:
        now = {kind: at for kind, at in deployment.query("dagster", heartbeats)}
        return all(now.get(kind, at) > at for kind, at in at_restart.items())

    wait_for("the daemon's heartbeats", fresh_heartbeats, timeout=HEARTBEAT_RECOVERY, interval=2)
