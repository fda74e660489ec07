"""The README's main command, end to end, and the Dagster UI on the state it leaves.

Runs ``mlplatform run`` in a subprocess against a temp ``MLPLATFORM_HOME`` (the
embedded default: SQLite MLflow and SQL source, local Dagster home, generated
data in a landed CSV file and the SQL table), then starts ``mlplatform ui``
(``dagster dev``: webserver and daemon) on loopback on that same state and asks
its GraphQL API whether every asset shows a materialization with its metadata.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.core.features import DIGEST_ATTR
from mlplatform.core.generator import generate_ai4i
from mlplatform.paths import StatePaths
from mlplatform.resources.files import write_parquet_atomic
from mlplatform_tests.defs.helpers import read_feature_table
from mlplatform_tests.test_definitions import EXPECTED_GROUPS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.e2e

# assets only schedules and sensors materialize (12-hour windows, outcome labels, drift):
# the main command trains and scores, it does not run them
AUTOMATION_ONLY = {"window_predictions", "live_performance", "feature_drift"}

# "ingested <label> (<batch key>): <landed> landed, <stored> stored, <quarantined> quarantined"
INGESTED = re.compile(
    r"^ingested (?P<label>.+) \((?P<key>[a-z0-9_.-]+)\): (?P<landed>[\d,]+) landed, "
    r"(?P<stored>[\d,]+) stored, (?P<quarantined>[\d,]+) quarantined$",
    re.MULTILINE,
)


def _mlplatform(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLPLATFORM_HOME": str(state)}
    for name in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "MLPLATFORM_SQL_URL"):
        env.pop(name, None)
    return subprocess.run(
        [str(BIN / "mlplatform"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _ingested(stdout: str) -> dict[str, tuple[str, int, int, int]]:
    """Batch key -> (label, landed, stored, quarantined), from the ``ingested`` lines."""

    def count(text: str) -> int:
        return int(text.replace(",", ""))

    return {
        m["key"]: (m["label"], count(m["landed"]), count(m["stored"]), count(m["quarantined"]))
        for m in INGESTED.finditer(stdout)
    }


@dataclass(frozen=True)
class MainCommandRuns:
    """The state folder after two runs of the main command, and what was seen between."""

    root: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    first_table: Path  # the feature table as the first run left it, as one Parquet file
    between: str  # an ISO time after the first run and before the second


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> MainCommandRuns:
    """Two runs of the main command on one fresh state folder."""
    root = tmp_path_factory.mktemp("e2e") / "state"
    first = _mlplatform(root, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "champion:      models:/ai4i-failure-classifier@champion = version 1" in first.stdout
    first_table = root.parent / "feature_table_after_first_run.parquet"
    write_parquet_atomic(read_feature_table(StatePaths(root)), first_table)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    second = _mlplatform(root, "run")
    # the second candidate may or may not beat the first; both outcomes are valid
    assert second.returncode in (0, 3), second.stdout + second.stderr
    return MainCommandRuns(root, first, second, first_table, between)


@pytest.fixture(scope="module")
def state(runs: MainCommandRuns) -> Path:
    """The state folder after two runs of the main command."""
    return runs.root


def test_main_command_ingests_the_landed_file_and_the_sql_table(runs: MainCommandRuns) -> None:
    # 10,000 generated rows: 8,000 in a landed CSV file, 2,000 in the SQL table, each
    # ingested as a batch of its own, nothing quarantined
    first = _ingested(runs.first.stdout)
    [file_key] = [k for k in first if k.startswith("file-")]
    assert re.fullmatch(r"file-[0-9a-f]{16}", file_key)
    assert re.fullmatch(r"sample_00000001_00008000\.csv", first[file_key][0])
    assert first[file_key][1:] == (8_000, 8_000, 0)
    assert first["sql-machines-000001"] == (
        "machine_readings rows with reading_id in (-inf, 2000]",
        2_000,
        2_000,
        0,
    )
    assert set(first) == {file_key, "sql-machines-000001"}

    # the feature table of the first run: every row of both batches
    table = pd.read_parquet(runs.first_table)
    assert len(table) == 10_000 and table["udi"].is_unique
    assert table.groupby("batch_id").size().to_dict() == {
        file_key: 8_000,
        "sql-machines-000001": 2_000,
    }

    # the second run ingests only what is new: its own file and the next SQL rows
    second = _ingested(runs.second.stdout)
    assert len(second) == 2 and file_key not in second
    assert second["sql-machines-000002"][1:] == (2_000, 2_000, 0)


def test_feature_table_of_a_past_time_is_rebuilt(runs: MainCommandRuns, tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    rebuilt = _mlplatform(runs.root, "features", "--as-of", runs.between, "--out", str(out))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    first = pd.read_parquet(runs.first_table)
    table = pd.read_parquet(out)
    assert f"10,000 rows as of {pd.Timestamp(runs.between).isoformat()}" in rebuilt.stdout
    assert f"dataset digest: {first.attrs[DIGEST_ATTR]}" in rebuilt.stdout
    pd.testing.assert_frame_equal(table, first, check_like=False)

    now = _mlplatform(runs.root, "features", "--out", str(out))
    assert now.returncode == 0, now.stdout + now.stderr
    assert len(pd.read_parquet(out)) == 20_000


def _latest_predictions(state: Path) -> pd.DataFrame:
    status = _mlplatform(state, "status")
    assert status.returncode == 0, status.stderr
    return pd.read_parquet(Path(status.stdout.split("predictions:")[1].split()[0]))


def test_main_command_leaves_champion_metrics_and_predictions(state: Path) -> None:
    status = _mlplatform(state, "status")
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "champion:      models:/ai4i-failure-classifier@champion = version" in out
    assert "recall" in out and "precision" in out
    assert "feature store: 4 batches, 20,000 rows stored, 0 quarantined" in out
    frame = _latest_predictions(state)
    assert len(frame) > 0 and frame["entity_id"].is_unique
    assert frame["model_version"].nunique() == 1
    # state lives in one folder: Dagster home, MLflow, SQL source, feature store, predictions
    for sub in (
        "dagster_home/dagster.yaml",
        "mlflow/mlflow.db",
        "sources.db",
        "feature_store/batches",
        "feature_store/plans",
        "archive",
        "predictions",
    ):
        assert (state / sub).exists(), sub
    assert len(list((state / "archive").iterdir())) == 2
    assert not list((state / "rejected").iterdir())


def test_main_command_scores_every_row_its_runs_generated(state: Path) -> None:
    predictions = state / "predictions"
    parts = [
        p
        for p in predictions.rglob("*.parquet")
        if not any(x.startswith((".", "_")) for x in p.relative_to(predictions).parts)
    ]
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    # every batch of both runs (2 files, 2 SQL pulls) scored once: 20,000 generated rows
    assert len(frame) == 20_000
    assert frame["entity_id"].is_unique
    assert sorted(frame["entity_id"]) == list(range(1, 20_001))
    batches = sorted(p.name for p in predictions.iterdir() if not p.name.startswith("_"))
    assert len(batches) == 4
    assert sum(b.startswith("sql-machines-") for b in batches) == 2


def test_gate_failure_exits_3_and_keeps_champion(state: Path) -> None:
    before = _mlplatform(state, "status").stdout.split("champion:")[1].splitlines()[0]
    # one fast candidate: what is tested is the refused gate, not the search
    failed = _mlplatform(
        state, "run", "--rows", "0", "--model", "logistic_regression", "--min-recall", "0.9999"
    )
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "no new source batches" in failed.stdout  # trained on what the store holds
    assert "gate FAILED" in failed.stdout
    assert "champion is unchanged" in failed.stdout
    after = _mlplatform(state, "status").stdout.split("champion:")[1].splitlines()[0]
    assert before == after


def test_ingest_command_stores_good_batches_and_exits_4_on_a_rejected_file(
    tmp_path: Path,
) -> None:
    root = tmp_path / "state"
    generated = _mlplatform(root, "generate", "--rows", "500", "--seed", "3")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    no_torque = generate_ai4i(10, seed=4, start_udi=1001).drop(columns=["Torque [Nm]"])
    no_torque.to_csv(root / "landing" / "no_torque.csv", index=False)

    ingested = _mlplatform(root, "ingest")
    assert ingested.returncode == 4, ingested.stdout + ingested.stderr
    batches = _ingested(ingested.stdout)
    assert sorted(v[1:] for v in batches.values()) == [(100, 100, 0), (400, 400, 0)]
    [rejected] = [line for line in ingested.stdout.splitlines() if line.startswith("REJECTED")]
    assert rejected.startswith("REJECTED no_torque.csv (file-")
    assert "missing required column" in rejected and "Torque [Nm]" in rejected
    [reason] = (root / "rejected").glob("*__no_torque.csv.reason.txt")
    assert "missing required column" in reason.read_text()

    # the good batches are in the store; the rejected file added nothing
    out = tmp_path / "features.parquet"
    features = _mlplatform(root, "features", "--out", str(out))
    assert features.returncode == 0, features.stdout + features.stderr
    table = pd.read_parquet(out)
    assert len(table) == 500 and table["batch_id"].nunique() == 2
    # nothing new: nothing to do, nothing rejected
    again = _mlplatform(root, "ingest")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no new source batches" in again.stdout


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
    # a test server: a short grace period, then killed (a webserver holding open
    # connections can take a minute to shut down gracefully)
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
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
        materializations = data["assetOrError"]["assetMaterializations"]
        if key in AUTOMATION_ONLY:  # listed in the UI; materialized by schedules and sensors
            assert materializations == [], f"the main command materialized {key}"
            continue
        [latest] = materializations
        labels = {e["label"] for e in latest["metadataEntries"]}
        assert labels, f"{key} has a materialization without metadata"
        if key == "model_evaluation":
            assert {"recall", "precision", "roc_auc", "confusion_matrix_plot"} <= labels
        if key == "champion_model":
            assert {"champion_version", "promoted"} <= labels


# --- operator commands on the state the main command left ------------------------------


def _champion_version(state: Path) -> str:
    shown = _mlplatform(state, "champion")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    match = re.search(
        r"^champion:\s+models:/ai4i-failure-classifier/(\d+) \(= @champion\)$",
        shown.stdout,
        re.MULTILINE,
    )
    assert match, shown.stdout
    return match[1]


def test_champion_command_shows_its_gate_decision(state: Path) -> None:
    shown = _mlplatform(state, "champion")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    out = shown.stdout
    assert re.search(
        r"^candidate:\s+(gaussian_process|logistic_regression|random_forest|"
        r"hist_gradient_boosting)$",
        out,
        re.MULTILINE,
    ), out
    assert re.search(r"^test metrics:\s+recall 0\.\d{4}, precision 0\.\d{4}", out, re.MULTILINE)
    # the champion got there through a passed gate: every criterion is listed
    assert re.search(r"^gate:\s+PASSED", out, re.MULTILINE), out
    assert re.search(r"^  recall_ci_lower 0\.\d{4} >= 0\.7000: pass", out, re.MULTILINE), out
    assert re.search(r"^  precision 0\.\d{4} >= 0\.5000: pass", out, re.MULTILINE), out
    assert re.search(r"^ledger:\s+#\d+ promote", out, re.MULTILINE), out


def test_versions_command_lists_every_version_and_marks_the_champion(state: Path) -> None:
    listed = _mlplatform(state, "versions")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines() if re.match(r"^\d+\s", line)]
    # one version per training run of this module so far (at least the two main runs)
    assert [r[0] for r in rows] == [str(v) for v in range(1, len(rows) + 1)] and len(rows) >= 2
    starred = [r[0] for r in rows if r[1] == "*"]
    assert starred == [_champion_version(state)]
    assert all(r[-3] in {"passed", "FAILED"} for r in rows)  # the gate column


def _to_score(path: Path, start_udi: int, rows: int) -> pd.DataFrame:
    """Raw readings as an operator would get them: no label, no failure modes."""
    frame = generate_ai4i(rows, seed=11, start_udi=start_udi)
    frame = frame.drop(columns=["Machine failure", "TWF", "HDF", "PWF", "OSF", "RNF"])
    frame.to_csv(path, index=False)
    return frame


def test_score_command_scores_a_file_with_the_champion(state: Path, tmp_path: Path) -> None:
    source = tmp_path / "readings.csv"
    frame = _to_score(source, 500_001, 1_200)
    frame.loc[5, "Torque [Nm]"] = -3.0  # physically impossible: reported, not scored
    frame.to_csv(source, index=False)
    out = tmp_path / "scored.parquet"
    scored = _mlplatform(state, "score", str(source), "--out", str(out))
    assert scored.returncode == 4, scored.stdout + scored.stderr  # one input row rejected
    champion = _champion_version(state)
    predictions = pd.read_parquet(out)
    assert len(predictions) == 1_199
    assert sorted(predictions["entity_id"]) == [
        udi for udi in frame["UDI"].tolist() if udi != frame.loc[5, "UDI"]
    ]
    assert set(predictions["model_version"]) == {champion}
    assert set(predictions["alias"]) == {"champion"}
    assert predictions["failure_probability"].between(0, 1).all()
    assert f"scored 1,199 of 1,200 rows of {source}" in scored.stdout
    invalid = pd.read_csv(tmp_path / "scored.invalid-rows.csv")
    assert invalid[["row_number", "column"]].values.tolist() == [[6, "Torque [Nm]"]]

    # a pinned version, to CSV; the same rows scored by the same model give the same numbers
    again = tmp_path / "scored_v.csv"
    pinned = _mlplatform(state, "score", str(source), "--out", str(again), "--version", champion)
    assert pinned.returncode == 4, pinned.stdout + pinned.stderr
    by_csv = pd.read_csv(again)
    assert set(by_csv["alias"]) == {"pinned"}
    assert by_csv["failure_probability"].tolist() == pytest.approx(
        predictions["failure_probability"].tolist(), rel=1e-12
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["promote", "999", "--reason", "typo"], "has no version '999'"),
        (["champion", "--version", "999"], "has no version '999'"),
        (
            ["score", "{tmp}/readings.csv", "--out", "{tmp}/p.parquet", "--version", "999"],
            "has no version '999'",
        ),
        (["score", "{tmp}/missing.csv", "--out", "{tmp}/p.parquet"], "no such file"),
        (["score", "{tmp}/readings.csv", "--out", "{tmp}/no/such/dir/p.parquet"], "does not exist"),
        (["score", "{tmp}/readings.csv", "--out", "{tmp}/p.json"], "use a .csv or .parquet"),
        (
            ["score", "{tmp}/no_torque.csv", "--out", "{tmp}/p.parquet"],
            "missing required column (header 'Torque [Nm]'",
        ),
        (["run", "--model", "xgboost", "--rows", "0"], "unknown candidate 'xgboost'"),
        (["run", "--threshold", "1.5", "--rows", "0"], "--threshold must be between 0 and 1"),
        (["features", "--out", "{tmp}/no/such/dir/f.parquet"], "does not exist"),
        (["features", "--as-of", "last tuesday", "--out", "{tmp}/f.parquet"], "not an ISO-8601"),
    ],
)
def test_commands_report_a_wrong_name_version_or_path_without_a_traceback(
    state: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    # in-process (a subprocess per case would cost seconds each); the real process's
    # stderr is checked by the next test
    from mlplatform.cli import EXIT_USAGE, main

    for name in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "MLPLATFORM_SQL_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLPLATFORM_HOME", str(state))
    monkeypatch.setenv("DAGSTER_HOME", str(state / "dagster_home"))  # restored after
    _to_score(tmp_path / "readings.csv", 600_001, 20)
    no_torque = _to_score(tmp_path / "no_torque.csv", 600_001, 20).drop(columns=["Torque [Nm]"])
    no_torque.to_csv(tmp_path / "no_torque.csv", index=False)
    assert main([a.format(tmp=tmp_path) for a in argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_a_wrong_state_folder_or_dataset_file_is_an_error_not_a_traceback(
    state: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    done = _mlplatform(a_file, "status")
    assert done.returncode == 2 and "is a file, not a state folder" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    version = _mlplatform(state, "promote", "999", "--reason", "typo")
    assert version.returncode == 2, version.stdout + version.stderr
    assert version.stderr.startswith("error: ") and "has no version '999'" in version.stderr
    assert "Traceback" not in version.stderr
    env = {
        **os.environ,
        "MLPLATFORM_HOME": str(tmp_path / "s"),
        "MLPLATFORM_DATASET": str(tmp_path / "nope.yaml"),
    }
    bad = subprocess.run(
        [str(BIN / "mlplatform"), "run", "--rows", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert f"{tmp_path / 'nope.yaml'}: dataset spec file not found" in bad.stderr
    assert "Traceback" not in bad.stderr
