"""The MLflow tracking server goes away mid-life, then comes back.

A real ``mlflow server`` (SQLite backend, proxied artifacts) on loopback holds the
registry. The first training run registers the champion. The server is stopped: the
next training run retries the steps that talk to MLflow with backoff, then fails with
a message naming the server, and the champion alias is untouched. The server is
started again on the same store: the next run succeeds and promotes.

MLflow's own HTTP retries are cut to one in this test (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``
and ``..._TIMEOUT``); the platform's retry policy (3 more tries, ~2, 4 and 8 s apart) is
what is under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlplatform.defs.resources import build_resources
from mlplatform.paths import StatePaths
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform_tests.defs.helpers import (
    ASSETS,
    DOWNSTREAM,
    LENIENT,
    gate_config,
    ingest_pending,
    land_sample,
)
from mlplatform_tests.deploy.topology import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

BIN = Path(sys.executable).parent
# one fast candidate and a gate any model passes: what is tested is the outage
FAST = {
    "ops": {
        **LENIENT["ops"],
        **gate_config(
            min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
        )["ops"],
    }
}


class MlflowServer:
    """``mlflow server`` on loopback, startable and stoppable on one store and port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
            assert self.proc.poll() is None, (self.root / "server.log").read_text()[-3000:]
        raise AssertionError(f"mlflow server did not answer in {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    started = MlflowServer(tmp_path / "mlflow-server")
    started.start()
    try:
        yield started
    finally:
        started.stop()


def _train(resources: dict[str, Any], instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        selection=DOWNSTREAM,
        run_config=FAST,
        raise_on_error=False,
    )


def test_an_outage_fails_clearly_leaves_the_champion_and_the_next_run_succeeds(
    server: MlflowServer, state: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    resources = build_resources(state, tracking_uri=server.uri)
    registry: MlflowRegistry = resources["mlflow_registry"]
    instance = dg.DagsterInstance.ephemeral()
    land_sample(resources, 1500, seed=41)
    assert all(r.success for r in ingest_pending(resources, instance))
    assert _train(resources, instance).success
    champion = registry.champion()
    assert champion is not None and champion.version == "1"

    # the server goes away: the steps that talk to MLflow retry, then the run fails
    server.stop()
    started = time.monotonic()
    failed = _train(resources, instance)
    seconds = time.monotonic() - started
    assert not failed.success
    retried = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["model_evaluation"] * 3
    assert seconds >= 2 + 4 + 8 - 3  # the backoff (with jitter) was waited out
    [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "model_evaluation"
    message = str(failure.event_specific_data.error)  # type: ignore[union-attr]
    assert f"127.0.0.1:{server.port}" in message  # names the server it could not reach
    # nothing after the evaluation ran: no registration, no promotion
    done = {e.step_key for e in failed.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert not done & {"gate_decision", "registered_model", "champion_model"}

    # back on the same store: the champion did not move, and the next run succeeds
    server.start()
    assert registry.champion() == champion
    assert [v.version for v in registry.versions()] == ["1"]
    assert _train(resources, instance).success
    promoted = registry.champion()
    assert promoted is not None and promoted.version == "2"
