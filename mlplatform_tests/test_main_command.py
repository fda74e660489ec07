"""The README's main command, end to end, and the Dagster UI on the state it leaves.

Runs ``mlplatform run`` in a subprocess against a temp ``MLPLATFORM_HOME`` (the
embedded default: SQLite MLflow, local Dagster home, generated data), then starts
``mlplatform ui`` (``dagster dev``: webserver and daemon) on loopback on that same
state and asks its GraphQL API whether every asset shows a materialization with
its metadata.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlplatform_tests.test_definitions import EXPECTED_GROUPS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e


def _mlplatform(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLPLATFORM_HOME": str(state)}
    env.pop("DAGSTER_HOME", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(BIN / "mlplatform"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state folder after two runs of the main command."""
    root = tmp_path_factory.mktemp("e2e") / "state"
    first = _mlplatform(root, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "champion:      models:/ai4i-failure-classifier@champion = version 1" in first.stdout
    second = _mlplatform(root, "run")
    # the second candidate may or may not beat the first; both outcomes are valid
    assert second.returncode in (0, 3), second.stdout + second.stderr
    return root


def test_main_command_leaves_champion_metrics_and_predictions(state: Path) -> None:
    status = _mlplatform(state, "status")
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "champion:      models:/ai4i-failure-classifier@champion = version" in out
    assert "recall" in out and "precision" in out
    predictions = Path(out.split("predictions:")[1].split()[0])
    frame = pd.read_parquet(predictions)
    assert len(frame) == 10_000
    assert frame["model_version"].nunique() == 1
    # state lives in one folder: Dagster home, MLflow, feature store, predictions
    for sub in (
        "dagster_home/dagster.yaml",
        "mlflow/mlflow.db",
        "feature_store/raw",
        "archive",
        "predictions",
    ):
        assert (state / sub).exists(), sub
    assert len(list((state / "archive").iterdir())) == 2


def test_gate_failure_exits_3_and_keeps_champion(state: Path) -> None:
    before = _mlplatform(state, "status").stdout.split("champion:")[1].splitlines()[0]
    failed = _mlplatform(state, "run", "--rows", "0", "--min-recall", "0.9999")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "gate FAILED" in failed.stdout
    assert "champion is unchanged" in failed.stdout
    after = _mlplatform(state, "status").stdout.split("champion:")[1].splitlines()[0]
    assert before == after


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _graphql(port: int, query: str, variables: dict[str, object] | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload: dict = json.loads(response.read())
    assert "errors" not in payload, payload
    return payload["data"]


@pytest.fixture
def webserver(state: Path, tmp_path: Path) -> Iterator[int]:
    """``mlplatform ui`` (that is, ``dagster dev``) on loopback, on the main command's state."""
    port = _free_port()
    env = {**os.environ, "MLPLATFORM_HOME": str(state)}
    env.pop("DAGSTER_HOME", None)  # the command itself must point Dagster at the state
    log = open(tmp_path / "webserver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "mlplatform"), "ui", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # dagster dev starts children: stop the whole group
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        "webserver did not start:\n"
                        + (tmp_path / "webserver.log").read_text()[-3000:]
                    )
                time.sleep(0.5)
        yield port
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_ui_shows_every_asset_materialized_with_metadata(webserver: int) -> None:
    deadline = time.monotonic() + 120
    while True:  # the code location loads in the background after the server answers
        nodes = _graphql(webserver, "{ assetNodes { assetKey { path } } }")["assetNodes"]
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(1)
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert keys == set(EXPECTED_GROUPS)
    query = """
    query($key: AssetKeyInput!) {
      assetOrError(assetKey: $key) {
        ... on Asset { assetMaterializations(limit: 1) { runId metadataEntries { label } } }
      }
    }"""
    for key in EXPECTED_GROUPS:
        data = _graphql(webserver, query, {"key": {"path": [key]}})
        [latest] = data["assetOrError"]["assetMaterializations"]
        labels = {e["label"] for e in latest["metadataEntries"]}
        assert labels, f"{key} has a materialization without metadata"
        if key == "model_evaluation":
            assert {"recall", "precision", "roc_auc", "confusion_matrix_plot"} <= labels
        if key == "champion_model":
            assert {"champion_version", "promoted"} <= labels
