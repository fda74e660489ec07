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


class FlakyProxy:
    """A loopback HTTP proxy in front of a real MLflow server that answers 503 on demand.

    ``fail_next(n)``: the next ``n`` requests get ``503 Service Unavailable`` (with an
    MLflow-style JSON error) instead of reaching the server; ``fail_always()``: every
    request does, until ``heal()``. Other requests are forwarded as they came.
    """

    def __init__(self, target: MlflowServer) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.target = target
        self._lock = threading.Lock()
        self._failures_left = 0
        self.refused = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._failures_left = n

    def fail_always(self) -> None:
        self.fail_next(10**9)

    def heal(self) -> None:
        self.fail_next(0)

    def should_fail(self) -> bool:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                self.refused += 1
                return True
            return False

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _proxy_handler(proxy: FlakyProxy) -> type:
    import http.client
    from http.server import BaseHTTPRequestHandler

    hop_by_hop = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in hop_by_hop:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if proxy.should_fail():
                error = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "503 from proxy"}'
                self._reply(503, [("Content-Type", "application/json")], error)
                return
            conn = http.client.HTTPConnection("127.0.0.1", proxy.target.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                self._reply(answer.status, answer.getheaders(), answer.read())
            finally:
                conn.close()

        # the names http.server dispatches to
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any  # noqa: N815

    return Handler


@pytest.mark.heavy  # ~50 s: the GitHub workflow's heavy step runs it; .ci/run leaves it out
def test_a_server_answering_503_is_retried_then_fails_clearly_and_recovers(
    server: MlflowServer, state: StatePaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server is up but answers errors (through a proxy that returns 503): errors for
    the whole retry budget fail the run naming the status, with no alias change; a burst
    of errors shorter than the budget is ridden out by the retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # only the platform retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    proxy = FlakyProxy(server)
    try:
        resources = build_resources(state, tracking_uri=proxy.uri)
        registry: MlflowRegistry = resources["mlflow_registry"]
        instance = dg.DagsterInstance.ephemeral()
        land_sample(resources, 1500, seed=43)
        assert all(r.success for r in ingest_pending(resources, instance))
        assert _train(resources, instance).success
        champion = registry.champion()
        assert champion is not None and champion.version == "1"

        # every answer an error: the step retries with backoff, then the run fails
        proxy.fail_always()
        failed = _train(resources, instance)
        assert not failed.success
        retried = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retried) == 3 and len({e.step_key for e in retried}) == 1
        [failure] = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
        message = str(failure.event_specific_data.error)  # type: ignore[union-attr]
        assert "503" in message, message
        done = {e.step_key for e in failed.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert not done & {"registered_model", "champion_model"}
        proxy.heal()
        assert registry.champion() == champion
        assert [v.version for v in registry.versions()] == ["1"]

        # a burst of errors shorter than the retry budget: retried, and the run succeeds
        proxy.fail_next(2)
        refused_before = proxy.refused
        recovered = _train(resources, instance)
        assert recovered.success
        assert proxy.refused == refused_before + 2
        assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in recovered.all_events)
        promoted = registry.champion()
        assert promoted is not None and promoted.version == "2"
    finally:
        proxy.close()
