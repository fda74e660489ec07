"""Faults around the registry: SIGKILLs mid-registration, racing training runs, refused writes.

Every fault is real. A child process (``registry_faults_child.py``) runs the platform's
own code and is SIGKILLed by this process at an exact phase of a real MLflow call. Two
``mlplatform run`` commands, and two promoting processes round after round, race on one
state folder. Writes fail because the child runs as ``nobody`` (as root) or into
write-protected folders (as any other user): permission denied; or under
``RLIMIT_FSIZE``: EFBIG, as on a full disk. Afterwards every store must read, nothing
partial may be visible, the champion alias must point at a complete model that the
ledger agrees on, and the next run must complete the work.

One small state folder is trained once per module (2,000 generated rows, logistic
regression, a cheap evaluation) and copied into each test.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from errno import EACCES, EFBIG
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlplatform.cli import training_lock
from mlplatform.core.digest import frame_digest
from mlplatform.core.features import model_inputs
from mlplatform.core.ledger import LedgerEntry, ledger_champion, rollback_target
from mlplatform.core.serving import TrainingReference, pipeline_threshold
from mlplatform.core.split import SPLIT_COLUMN
from mlplatform.defs.common import DATASET
from mlplatform.defs.registry import (
    GATE_DECISION_TAG,
    GATE_PASSED_TAG,
    TRAINING_REFERENCE_DOC,
    ChampionState,
)
from mlplatform.defs.resources import build_resources
from mlplatform.paths import StatePaths
from mlplatform.resources.batch_scoring import score_dataset
from mlplatform.resources.files import TMP_PREFIX
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.ledger import ChampionChangeError, PromotionLedger, move_champion
from mlplatform.resources.mlflow_registry import (
    RUN_HOST_TAG,
    RUN_PID_TAG,
    MlflowRegistry,
    ModelVersionRef,
    process_tags,
)
from mlplatform_tests.defs.helpers import (
    ASSETS,
    INGESTION_ASSET,
    LENIENT,
    land_sample,
    materialize_all,
)
from mlplatform_tests.kills import kill_when_marked
from mlplatform_tests.pg import fresh_database
from mlplatform_tests.registry_faults_child import register_version

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHILD = "mlplatform_tests.registry_faults_child"
UP_TO_GATE = [
    INGESTION_ASSET,
    "feature_table",
    "train_test_split",
    "candidate_model",
    "model_evaluation",
    "gate_decision",
]
REGISTER_AND_PROMOTE = ["registered_model", "champion_model"]
EVALUATE = ["model_evaluation", "gate_decision"]
# the fastest candidate, a gate it passes, and an evaluation without the costly extras:
# what is under test is what happens around the registry
FAST = {
    "ops": {
        **LENIENT["ops"],
        "candidate_model": {"config": {"model_name": "logistic_regression"}},
        "model_evaluation": {"config": {"bootstrap_resamples": 200, "importance_repeats": 0}},
    }
}
NOBODY = 65534
# 4 KiB: smaller than any Parquet part and than the MLflow database, so that every write
# under test fails
FILE_SIZE_LIMIT = 4096


# --- helpers ---------------------------------------------------------------------------


def _child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLPLATFORM_LEDGER_URL")
    }
    env.update(
        MLFLOW_ENABLE_TELEMETRY="false",
        GX_ANALYTICS_ENABLED="false",
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )
    return env


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _wait_all(children: list[subprocess.Popen[bytes]], timeout: float = 600) -> list[int]:
    """Exit codes of processes started together; once one fails, the others are killed
    (a racer waiting for a dead one would wait in vain)."""
    deadline = time.monotonic() + timeout
    while any(c.poll() is None for c in children):
        failed = any(c.poll() not in (None, 0) for c in children)
        if failed or time.monotonic() > deadline:
            for child in children:
                if child.poll() is None:
                    child.kill()
        time.sleep(0.1)
    return [int(c.wait()) for c in children]


def _copy_state(trained: StatePaths, root: Path) -> StatePaths:
    shutil.copytree(trained.root, root)
    return StatePaths(root)


def _register_and_promote(
    resources: dict[str, Any], ledger: PromotionLedger | None = None, *, evaluate: bool = False
) -> dg.ExecuteInProcessResult:
    """The training job's last two steps, in this process; with ``evaluate``, the evaluation
    and the gate first, so that the gate compares the candidate with the current champion
    (as the next training run would: a promotion needs a gate that saw the champion it
    replaces)."""
    selection = [*(EVALUATE if evaluate else []), *REGISTER_AND_PROMOTE]
    return dg.materialize(
        ASSETS,
        selection=selection,
        resources={**resources, **({"ledger": ledger} if ledger else {})},
        run_config=_fast(selection),
        raise_on_error=False,
    )


def _fast(selection: list[str]) -> dict[str, Any]:
    """``FAST``'s config of the selected steps only."""
    return {"ops": {k: v for k, v in FAST["ops"].items() if k in selection}}


def _evaluate(resources: dict[str, Any]) -> None:
    """Evaluate the stored candidate and decide its gate again, against the current champion."""
    result = dg.materialize(
        ASSETS, selection=EVALUATE, resources=resources, run_config=_fast(EVALUATE)
    )
    assert result.success


def _test_rows(state: StatePaths) -> pd.DataFrame:
    split = pd.read_parquet(state.asset_storage / "train_test_split.parquet")
    return model_inputs(split[split[SPLIT_COLUMN] == "test"], DATASET)


def _champion_predicts(registry: MlflowRegistry, rows: pd.DataFrame) -> None:
    """``models:/<name>@champion`` loads and scores every row (0 or 1)."""
    import mlflow.sklearn

    registry._client()
    uri = f"models:/{registry.model_name}@{registry.champion_alias}"
    with tempfile.TemporaryDirectory() as tmp:  # MLflow would write into the store otherwise
        model = mlflow.sklearn.load_model(uri, dst_path=tmp)
    assert set(model.predict(rows)) <= {0, 1}


def _versions(registry: MlflowRegistry) -> list[str]:
    return [ref.version for ref in registry.versions()]


def _alias(registry: MlflowRegistry) -> str | None:
    champion = registry.champion()
    return champion.version if champion else None


def _chain(entries: list[LedgerEntry]) -> list[tuple[str | None, str, str]]:
    return [(e.from_version, e.to_version, e.state) for e in entries]


def _assert_ledger_agrees(registry: MlflowRegistry, ledger: PromotionLedger) -> list[LedgerEntry]:
    """Nothing pending; each committed change starts where the previous one ended; the alias
    is where the last one went. Returns the committed entries."""
    entries = ledger.entries(registry.model_name)
    assert [e for e in entries if e.state == "pending"] == []
    committed = [e for e in entries if e.state == "committed"]
    previous = None
    for entry in committed:
        assert entry.from_version == previous, _chain(entries)
        previous = entry.to_version
    assert _alias(registry) == ledger_champion(entries) == previous
    return committed


def _assert_versions_numbered(
    registry: MlflowRegistry, *, timed_in_order: bool = True
) -> list[str]:
    """Versions 1..n, each once, all READY; with ``timed_in_order``, their creation times
    ascend too. (Racing registrations are numbered in the order they commit, but MLflow
    takes each one's time before it waits for the database: those may cross by a few ms.)"""
    client = registry._client()
    found = client.search_model_versions(f"name = '{registry.model_name}'")
    ordered = sorted(found, key=lambda mv: int(mv.version))
    numbers = [int(mv.version) for mv in ordered]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert {mv.status for mv in ordered} == {"READY"}
    created = [mv.creation_timestamp for mv in ordered]
    if timed_in_order:
        assert created == sorted(created), list(zip(numbers, created, strict=True))
    return [str(n) for n in numbers]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    """A state folder with one ingested batch and a candidate that passed its gate, but
    nothing registered yet (the MLflow store exists, with no experiment)."""
    paths = StatePaths(tmp_path_factory.mktemp("trained") / "state")
    paths.ensure()
    resources = build_resources(paths)
    land_sample(resources, 2000, seed=3)
    result = materialize_all(resources, FAST, selection=UP_TO_GATE)
    assert result.success
    return paths


# --- 1. SIGKILL while logging, registering, and moving the alias --------------------------


def _kill_at(state: StatePaths, phase: str, marker: Path) -> dict[str, Any]:
    """Run the register and promote steps in a child, SIGKILL it at ``phase``; the facts
    the child reported there."""
    argv = [sys.executable, "-m", CHILD, "promote", str(state.root)]
    argv += ["--stall-at", phase, "--marker", str(marker)]
    kill_when_marked(argv, marker, env=_child_env(), what=phase)
    facts: dict[str, Any] = json.loads(marker.read_text())
    return facts


def _run_status(registry: MlflowRegistry, run_id: str) -> str:
    return str(registry._client().get_run(run_id).info.status)


def test_sigkill_while_logging_registering_and_moving_the_alias(
    trained: StatePaths, tmp_path: Path
) -> None:
    from mlflow.entities import LoggedModelStatus

    state = _copy_state(trained, tmp_path / "state")
    resources = build_resources(state)
    registry: MlflowRegistry = resources["mlflow_registry"]
    ledger: PromotionLedger = resources["ledger"]
    rows = _test_rows(state)
    assert _register_and_promote(resources).success
    assert (_versions(registry), _alias(registry)) == (["1"], "1")
    client = registry._client()
    experiment = registry._experiment_id(client)

    # (a) killed half-way through copying the model file into the artifact store
    copying = _kill_at(state, "artifact_copy", tmp_path / "artifact_copy.json")
    partial = Path(copying["path"])
    assert partial.stat().st_size == copying["written"] < copying["size"]
    # the half-written model exists on disk, but the registry never points at it: it was
    # not registered, and its logged model was never marked READY
    assert _versions(registry) == ["1"]
    [stalled] = [
        m
        for m in client.search_logged_models([experiment])
        if partial.is_relative_to(Path(m.artifact_location.removeprefix("file://")))
    ]
    assert stalled.status == LoggedModelStatus.PENDING
    assert _alias(registry) == "1"
    _champion_predicts(registry, rows)
    assert ledger.pending(registry.model_name) == []
    # MLflow leaves the killed process's run RUNNING; it is stamped with that process
    assert stalled.source_run_id is not None
    orphan = client.get_run(stalled.source_run_id)
    assert orphan.info.status == "RUNNING"
    assert orphan.data.tags[RUN_PID_TAG] == str(copying["pid"])

    # RUNNING runs that are not provably orphaned: this (live) process's, one of another
    # host (with the dead child's pid), and one without a stamp
    live = client.create_run(experiment, tags=process_tags()).info.run_id
    foreign_tags = {**orphan.data.tags, RUN_HOST_TAG: "another-host"}
    foreign = client.create_run(
        experiment, tags={k: v for k, v in foreign_tags.items() if k.startswith("mlplatform.")}
    ).info.run_id
    unstamped = client.create_run(experiment).info.run_id
    left_alone = [live, foreign, unstamped]

    # (b) killed right after create_model_version: a complete version 2, without its gate
    # tags, never promoted
    created = _kill_at(state, "version_created", tmp_path / "version_created.json")
    assert created["version"] == "2"
    assert _versions(registry) == ["1", "2"]
    assert GATE_PASSED_TAG not in registry.version_tags(registry.get_version("2"))
    assert _alias(registry) == "1"
    _champion_predicts(registry, rows)
    assert [e.to_version for e in ledger.entries(registry.model_name)] == ["1"]
    # that run began by cleaning (a)'s leftovers: its run and its logged model FAILED;
    # the runs of a live process, of another host and without a stamp are untouched
    assert _run_status(registry, orphan.info.run_id) == "FAILED"
    assert client.get_logged_model(stalled.model_id).status == LoggedModelStatus.FAILED
    assert [_run_status(registry, r) for r in left_alone] == ["RUNNING"] * 3
    killed_b = registry.get_version("2").run_id
    assert _run_status(registry, killed_b) == "RUNNING"

    # (c) killed right after the alias moved to version 3, before the ledger settled; its
    # gate compared the candidate with the champion, version 1 (a gate that saw no
    # champion would not promote over one)
    _evaluate(resources)
    moved = _kill_at(state, "alias_moved", tmp_path / "alias_moved.json")
    assert moved["version"] == "3"
    assert _alias(registry) == "3"
    _champion_predicts(registry, rows)  # the alias points at a complete model
    [pending] = ledger.pending(registry.model_name)
    assert (pending.from_version, pending.to_version) == ("1", "3")
    assert _run_status(registry, killed_b) == "FAILED"  # (b)'s leftover, cleaned by (c)
    assert [_run_status(registry, r) for r in left_alone] == ["RUNNING"] * 3

    # the next run settles the interrupted change and completes the work (a ledger that
    # treats nothing as still in flight: the killed process is gone)
    settling = PromotionLedger(url=ledger.url, in_flight_seconds=0)
    assert _register_and_promote(resources, settling, evaluate=True).success
    assert _assert_versions_numbered(registry) == ["1", "2", "3", "4"]
    assert _chain(ledger.entries(registry.model_name)) == [
        (None, "1", "committed"),
        ("1", "3", "committed"),
        ("3", "4", "committed"),
    ]
    _assert_ledger_agrees(registry, ledger)
    _champion_predicts(registry, rows)
    for ref in registry.versions():  # every registered version is a complete model
        assert set(registry.load(ref).predict(rows)) <= {0, 1}
    # no run of a killed process is RUNNING any more; the others still are
    running = {
        r.info.run_id for r in client.search_runs([experiment], "attributes.status = 'RUNNING'")
    }
    assert running == set(left_alone)


# --- 2. two training runs at once ---------------------------------------------------------

_RUN_LINE = re.compile(r"^run (\S+) \(train_and_score\): (SUCCESS|FAILURE)", re.MULTILINE)


def _step_window(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """When a run's first step started and its last step ended (event-log timestamps)."""
    starts, ends = [], []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts.append(entry.timestamp)
        elif event.event_type in (
            dg.DagsterEventType.STEP_SUCCESS,
            dg.DagsterEventType.STEP_FAILURE,
        ):
            ends.append(entry.timestamp)
    assert starts and ends, run_id
    return min(starts), max(ends)


def _waiting_for(pid: int) -> str:
    return f"waiting for another training run (pid {pid}) to finish"


def test_two_training_commands_at_once_leave_one_entry_per_alias_change(
    trained: StatePaths, tmp_path: Path
) -> None:
    """Two ``mlplatform run`` started together, while a third training run (this process)
    holds the state folder's training lock: both say they wait for it; once it is released
    they train one after the other (their steps never overlap, so neither reads the
    other's intermediate values), the second says it waits for the first, and the second's
    gate compares its candidate with the first's champion."""
    state = _copy_state(trained, tmp_path / "state")
    argv = [str(BIN / "mlplatform"), "run", "--rows", "0", "--model", "logistic_regression"]
    argv += ["--min-recall", "0.2", "--min-precision", "0.2"]
    env = _child_env(MLPLATFORM_HOME=str(state.root))
    env.pop("DAGSTER_HOME", None)
    logs = [tmp_path / f"run-{i}.log" for i in range(2)]
    children = []
    with training_lock(state):
        for log in logs:
            with log.open("wb") as out:
                children.append(
                    subprocess.Popen(
                        argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        deadline = time.monotonic() + 300
        while not all(_waiting_for(os.getpid()) in log.read_text() for log in logs):
            for child, log in zip(children, logs, strict=True):
                assert child.poll() is None, f"exited {child.returncode}:\n{_tail(log)}"
            assert time.monotonic() < deadline, "\n\n".join(_tail(log) for log in logs)
            time.sleep(0.1)
    codes = _wait_all(children)
    outputs = [log.read_text(errors="replace") for log in logs]
    assert codes == [0, 0], "\n\n".join(o[-4000:] for o in outputs)
    run_ids = [_RUN_LINE.findall(o)[-1][0] for o in outputs]

    instance = dg.DagsterInstance.from_config(str(state.dagster_home))
    try:
        windows = [_step_window(instance, run_id) for run_id in run_ids]
    finally:
        instance.dispose()
    first, second = sorted(range(2), key=lambda i: windows[i][0])
    assert windows[first][1] <= windows[second][0], windows
    assert _waiting_for(children[first].pid) in outputs[second], outputs[second][-4000:]
    assert _waiting_for(children[second].pid) not in outputs[first]

    resources = build_resources(state)
    registry: MlflowRegistry = resources["mlflow_registry"]
    ledger: PromotionLedger = resources["ledger"]
    assert _assert_versions_numbered(registry) == ["1", "2"]
    # each run registered one version and promoted it: both promotions recorded, once
    registered_by = {
        registry.version_tags(ref)["dagster_run_id"]: ref.version for ref in registry.versions()
    }
    assert sorted(registered_by) == sorted(run_ids)
    committed = _assert_ledger_agrees(registry, ledger)
    assert [(e.dagster_run_id, e.to_version) for e in committed] == [
        (run_ids[first], registered_by[run_ids[first]]),
        (run_ids[second], registered_by[run_ids[second]]),
    ]
    assert len(ledger.entries(registry.model_name)) == 2
    decision = json.loads(
        registry.version_tags(registry.get_version(registered_by[run_ids[second]]))[
            GATE_DECISION_TAG
        ]
    )
    assert decision["champion_version"] == registered_by[run_ids[first]]


def test_a_promotion_whose_champion_changed_since_its_gate_ran_is_refused(
    trained: StatePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate compares a candidate with the champion of its time; a promotion finding
    another champion is refused and recorded, before anything is written and (an exact
    interleaving) inside the ledger's locked section; the step succeeds; the alias and the
    chain of committed entries are untouched; the next run re-judges and promotes."""
    state = _copy_state(trained, tmp_path / "state")
    resources = build_resources(state)
    registry: MlflowRegistry = resources["mlflow_registry"]
    ledger: PromotionLedger = resources["ledger"]
    assert _register_and_promote(resources).success  # version 1, by a gate that saw none

    # (a) this gate ran before version 1 became champion: version 2 is registered, with its
    # passed gate, and not promoted
    result = _register_and_promote(resources)
    assert result.success
    outcome: ChampionState = result.output_for_node("champion_model")
    assert (outcome.promoted, outcome.version) == (False, "1")
    assert "version 2 of model" in str(outcome.not_promoted_reason)
    assert "not promoted: the champion changed from no champion to v1 since the gate ran" in str(
        outcome.not_promoted_reason
    )
    [materialized] = result.asset_materializations_for_node("champion_model")
    assert materialized.metadata["not_promoted"].value == outcome.not_promoted_reason
    assert registry.version_tags(registry.get_version("2"))[GATE_PASSED_TAG] == "true"
    assert _chain(ledger.entries(registry.model_name)) == [(None, "1", "committed")]
    assert _alias(registry) == "1"

    # (b) the gate compared with version 1; another run promotes version 2 after this
    # promotion checked the champion, just before it records its change
    _evaluate(resources)
    digest = MlflowRegistry.dataset_digest

    def another_run_promotes_meanwhile(self: MlflowRegistry, ref: ModelVersionRef) -> str | None:
        monkeypatch.setattr(MlflowRegistry, "dataset_digest", digest)
        entry = move_champion(
            registry,
            ledger,
            action="promote",
            to_version="2",
            reason="gate PASSED in another run",
            gate_passed=True,
            dagster_run_id="another-run",
        )
        assert entry is not None
        return digest(self, ref)

    monkeypatch.setattr(MlflowRegistry, "dataset_digest", another_run_promotes_meanwhile)
    result = _register_and_promote(resources)
    assert result.success
    outcome = result.output_for_node("champion_model")
    assert (outcome.promoted, outcome.version) == (False, "2")
    assert "version 3 of model" in str(outcome.not_promoted_reason)
    assert "the champion changed from v1 to v2 since the gate ran" in str(
        outcome.not_promoted_reason
    )
    assert _chain(ledger.entries(registry.model_name)) == [
        (None, "1", "committed"),
        ("1", "2", "committed"),
        ("1", "3", "aborted"),
    ]
    _assert_ledger_agrees(registry, ledger)

    # the next run compares its candidate with version 2 and promotes it
    assert _register_and_promote(resources, evaluate=True).success
    assert _assert_versions_numbered(registry) == ["1", "2", "3", "4"]
    committed = _assert_ledger_agrees(registry, ledger)
    assert (committed[-1].from_version, committed[-1].to_version) == ("2", "4")
    _champion_predicts(registry, _test_rows(state))


def test_a_promotion_prepared_before_another_committed_is_refused(
    trained: StatePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlucky interleaving of two runs, made certain: run B reads the champion (1),
    then run A promotes version 2 from start to end, then B records its change. B's
    ``from_version`` 1 would be false (the alias left 2, not 1) and a later rollback would
    skip version 2; B is refused instead, and nothing it did remains but an aborted entry."""
    state = _copy_state(trained, tmp_path / "state")
    registry: MlflowRegistry = build_resources(state)["mlflow_registry"]
    ledger = PromotionLedger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    experiment = registry._experiment_id(registry._client())
    assert [register_version(registry, experiment) for _ in range(3)] == ["1", "2", "3"]

    def promote(version: str, run: str) -> LedgerEntry | None:
        return move_champion(
            registry,
            ledger,
            action="promote",
            to_version=version,
            reason=f"gate PASSED for version {version}",
            gate_passed=True,
            dagster_run_id=run,
        )

    promote("1", "run-0")
    digest = MlflowRegistry.dataset_digest

    def run_a_promotes_meanwhile(self: MlflowRegistry, ref: ModelVersionRef) -> str | None:
        # the last read before run B records its pending entry
        monkeypatch.setattr(MlflowRegistry, "dataset_digest", digest)
        assert promote("2", "run-A") is not None
        return digest(self, ref)

    monkeypatch.setattr(MlflowRegistry, "dataset_digest", run_a_promotes_meanwhile)
    with pytest.raises(ChampionChangeError, match="moved from version 1 to version 2"):
        promote("3", "run-B")
    assert _chain(ledger.entries(registry.model_name)) == [
        (None, "1", "committed"),
        ("1", "2", "committed"),
        ("1", "3", "aborted"),
    ]
    assert _alias(registry) == "2"
    # B's retry starts from the true champion; a rollback then goes back to version 2
    assert promote("3", "run-B") is not None
    committed = _assert_ledger_agrees(registry, ledger)
    assert rollback_target(committed, "3") == "2"


@pytest.fixture(params=["sqlite", "postgresql"])
def race_ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A ledger that neither racer has used yet: SQLite, and the local PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'race-ledger.db'}"
        return
    with fresh_database() as url:
        yield url


RACE_ROUNDS = 8


def test_racing_promotions_keep_the_ledger_and_the_alias_in_agreement(
    trained: StatePaths, tmp_path: Path, race_ledger_url: str
) -> None:
    state = _copy_state(trained, tmp_path / "state")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    out = tmp_path / "outcomes.jsonl"
    logs = [tmp_path / f"racer-{i}.log" for i in range(2)]
    children = []
    for me, log in enumerate(logs):
        argv = [sys.executable, "-m", CHILD, "race", str(state.root)]
        argv += ["--ledger-url", race_ledger_url, "--rounds", str(RACE_ROUNDS)]
        argv += ["--me", str(me), "--barrier", str(barrier), "--out", str(out)]
        with log.open("wb") as sink:
            children.append(
                subprocess.Popen(
                    argv, cwd=REPO, env=_child_env(), stdout=sink, stderr=subprocess.STDOUT
                )
            )
    codes = _wait_all(children)
    assert codes == [0, 0], "\n\n".join(_tail(log) for log in logs)
    outcomes = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(outcomes) == 2 * RACE_ROUNDS

    registry = build_resources(state)["mlflow_registry"]
    ledger = PromotionLedger(url=race_ledger_url)
    assert len(_assert_versions_numbered(registry, timed_in_order=False)) == 2 * RACE_ROUNDS
    committed = _assert_ledger_agrees(registry, ledger)
    # every promotion a racer was told about is one committed entry, and vice versa; every
    # refusal says why and changed nothing
    promoted = [o for o in outcomes if "refused" not in o]
    assert {(o["version"], o["entry"]) for o in promoted} == {
        (e.to_version, e.id) for e in committed
    }
    refused = [o for o in outcomes if "refused" in o]
    for outcome in refused:
        assert outcome["refused"].startswith(
            ("ChampionChangeError: ", "ChampionMovedSinceGateError: ")
        ), outcome
        assert outcome["version"] not in {e.to_version for e in committed}
    # both racers of a round compared their versions with the same champion: exactly one
    # of them promotes, and every committed change replaced the champion its gate saw
    assert sorted(o["round"] for o in promoted) == list(range(RACE_ROUNDS))
    gate_of = {o["version"]: o["gate_champion"] for o in outcomes}
    assert [e.from_version for e in committed] == [gate_of[e.to_version] for e in committed]


# --- 3. the disk refuses a write ------------------------------------------------------


def _reachable_by_nobody(folder: Path) -> bool:
    for part in [folder, *folder.parents]:
        info = part.stat()
        mask = stat.S_IXUSR if info.st_uid == NOBODY else stat.S_IXOTH
        if not info.st_mode & mask:
            return False
    return True


@pytest.fixture
def fault_root(tmp_path: Path) -> Iterator[Path]:
    """Where the state lives: ``tmp_path``; as root, a folder ``nobody`` can reach too
    (the parents of ``tmp_path`` are private to their owner)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        pytest.skip(f"running as root with no user {NOBODY} (nobody) to drop privileges to")
    base = next(
        (
            Path(folder)
            for folder in (tempfile.gettempdir(), "/tmp", "/var/tmp")
            if Path(folder).is_dir() and _reachable_by_nobody(Path(folder))
        ),
        None,
    )
    if base is None:
        pytest.skip("no temp folder that the nobody user can reach")
    root = Path(tempfile.mkdtemp(prefix="mlplatform-faults-", dir=base))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def _write_protected(folders: list[Path]) -> Iterator[None]:
    """Every folder under ``folders`` without its write bits meanwhile (for a non-root
    user, whose writes the kernel then refuses)."""
    modes = {p: p.stat().st_mode for f in folders for p in [f, *f.rglob("*")] if p.is_dir()}
    for path, mode in modes.items():
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


def _run_faults(
    state: StatePaths, batch: str, new_batch: str, *, fault: str, refused: list[Path]
) -> dict[str, Any]:
    """The three writes in a child whose writes into ``refused`` fail: its report."""
    home = state.root.parent / f"home-{fault}"
    home.mkdir()
    argv = [sys.executable, "-m", CHILD, "faults", str(state.root), "--batch", batch]
    argv += ["--new-batch", new_batch, "--out", str(home / "report.json")]
    return run_refused(argv, state, home, fault=fault, refused=refused)


def run_refused(
    argv: list[str],
    state: StatePaths,
    home: Path,
    *,
    fault: str,
    refused: list[Path],
    **env: str,
) -> dict[str, Any]:
    """Run ``argv`` so that its writes into ``refused`` fail; the JSON it left in
    ``home/report.json``.

    ``disk_full``: ``--file-size-limit`` is appended (the child lowers ``RLIMIT_FSIZE``
    around its writes). ``permission_denied``: as root, the child runs as ``nobody``
    (``home`` and the MLflow database are its, the state stays root's); as any other
    user, ``refused`` is write-protected meanwhile.
    """
    report, log = home / "report.json", home / "child.log"
    account: dict[str, Any] = {}
    protected: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if fault == "disk_full":
        argv = [*argv, "--file-size-limit", str(FILE_SIZE_LIMIT)]
    elif os.geteuid() == 0:  # root writes anywhere: the child runs as nobody instead
        # it keeps a writable MLflow database (its failed run is recorded there) and reads
        # what root wrote (atomic writes leave mkstemp's mode 0600); the folders under
        # test stay root's
        for path in (home, state.mlflow_dir, state.mlflow_dir / "mlflow.db"):
            if path.exists():
                os.chown(path, NOBODY, NOBODY)
        for path in state.root.rglob("*"):
            if path.is_file():
                path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH)
        account = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    else:
        protected = _write_protected(refused)
    with log.open("wb") as out, protected:
        done = subprocess.run(
            argv,
            cwd=REPO,
            env=_child_env(HOME=str(home), TMPDIR=str(home), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
            **account,
        )
    assert done.returncode == 0, _tail(log)
    outcome: dict[str, Any] = json.loads(report.read_text())
    return outcome


def _score(state: StatePaths, batch: str) -> None:
    """Score a stored batch with the champion, as ``batch_predictions`` does."""
    resources = build_resources(state)
    registry: MlflowRegistry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    pipeline = registry.load(champion)
    threshold = pipeline_threshold(pipeline)
    score_dataset(
        resources["feature_store"].batch_paths(batch),
        pipeline,
        DATASET,
        TrainingReference.from_dict(registry.load_document(champion, TRAINING_REFERENCE_DOC) or {}),
        out_dir=resources["prediction_store"].batch_dir(batch),
        partition=f"v{champion.version}",
        model_name=champion.name,
        model_version=champion.version,
        alias=registry.champion_alias,
        threshold=float("nan") if threshold is None else threshold,
        run_id="registry-faults-parent",
        scored_at=datetime.now(UTC),
    )


def _files(state: StatePaths) -> dict[str, int]:
    """Every file of the output folders and the inbox, with its size (not the MLflow DB)."""
    found = {}
    for folder in (
        state.landing,
        state.archive,
        state.rejected,
        state.feature_store,
        state.predictions,
        state.mlflow_dir / "artifacts",
    ):
        for path in folder.rglob("*"):
            if path.is_file():
                found[str(path.relative_to(state.root))] = path.stat().st_size
    return found


def _snapshot(state: StatePaths, batch: str) -> dict[str, Any]:
    """What must survive a failed write: files, rows, predictions, versions, champion."""
    resources = build_resources(state)
    registry: MlflowRegistry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    predictions = resources["prediction_store"].read(batch, champion.version)
    return {
        "files": _files(state),
        "features": frame_digest(resources["feature_store"].as_of(DATASET)),
        "predictions": frame_digest(predictions.drop(columns="scored_at")),
        "versions": _versions(registry),
        "champion": champion,
        "landed": [f.name for f in resources["landing"].pending()],
    }


def test_refused_writes_fail_naming_the_path_and_corrupt_nothing(
    trained: StatePaths, fault_root: Path
) -> None:
    state = _copy_state(trained, fault_root / "state")
    resources = build_resources(state)
    registry: MlflowRegistry = resources["mlflow_registry"]
    store, landing = resources["feature_store"], resources["landing"]
    [batch] = [m.key for m in store.latest()]
    # before: a champion, the stored batch scored by it, and a new file landed and planned
    assert _register_and_promote(resources).success
    _score(state, batch)
    land_sample(resources, 500, seed=5, start_udi=100_001)
    [plan] = discover(resources["sources"], store).new
    before = _snapshot(state, batch)
    rows = _test_rows(state)
    # where each write goes; the registry's error names its store
    folders = {
        "ingest": state.feature_store / "batches",
        "score": state.predictions / batch,
        "register": state.mlflow_dir / "artifacts",
    }

    for fault in ("permission_denied", "disk_full"):
        report = _run_faults(state, batch, plan.key, fault=fault, refused=list(folders.values()))
        errno = EACCES if fault == "permission_denied" else EFBIG
        expected = {
            "ingest": (errno, folders["ingest"]),
            "score": (errno, folders["score"]),
            # on the full disk the MLflow database cannot grow either: SQLite's "disk I/O
            # error" comes first, with no errno
            "register": (errno if fault == "permission_denied" else None, state.mlflow_dir),
        }
        for operation, (code, folder) in expected.items():
            outcome = report[operation]
            assert outcome["errno"] == code, (fault, operation, report)
            assert str(folder) in outcome["message"], (fault, operation, report)
        assert report["register"]["error"] == "RegistryWriteError", (fault, report)
        # nothing partial, nothing temporary, nothing lost: the same files, rows,
        # predictions, versions and champion; the landed file still waits in the inbox
        assert _snapshot(state, batch) == before, fault
        assert not [p for p in state.root.rglob(f"{TMP_PREFIX}*")], fault
        with contextlib.closing(sqlite3.connect(state.mlflow_dir / "mlflow.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        _champion_predicts(registry, rows)

    # once the disk takes writes again, the same work completes
    ingest_batch(store.load_plan(plan.key), landing, store, DATASET)
    assert sorted(m.key for m in store.latest()) == sorted([batch, plan.key])
    _score(state, plan.key)
    assert _register_and_promote(resources, evaluate=True).success
    assert (_versions(registry), _alias(registry)) == (["1", "2"], "2")
