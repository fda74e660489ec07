"""The promotion ledger: the SQL resource, the write protocol across crashes, the operator
commands, the rollback job, and the champion asset recording its promotions.

Most tests register versions directly in a temp SQLite MLflow store (a run with a
dataset digest and a gate tag, no model), which takes well under a second; one test
materializes the graph for real.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from mlplatform.cli import EXIT_OK, EXIT_USAGE, main
from mlplatform.core.ledger import LedgerEntry, ledger_champion
from mlplatform.defs import operations
from mlplatform.defs.registry import GATE_PASSED_TAG
from mlplatform.paths import StatePaths
from mlplatform.resources.ledger import (
    ChampionChangeError,
    LedgerError,
    PromotionLedger,
    RolledBackVersionError,
    move_champion,
    reconcile_champion,
)
from mlplatform.resources.mlflow_registry import (
    DATASET_DIGEST_TAG,
    MlflowRegistry,
    ModelVersionRef,
)
from mlplatform_tests.defs.helpers import (
    DOWNSTREAM,
    INGESTION_ASSET,
    LENIENT,
    gate_config,
    land_sample,
    materialize_all,
)
from mlplatform_tests.pg import fresh_database

REPO = Path(__file__).resolve().parents[2]
# The lifecycle without scoring: inference is not under test here.
UP_TO_CHAMPION = [INGESTION_ASSET, *(a for a in DOWNSTREAM if a != "batch_predictions")]


def _register(registry: MlflowRegistry, *, gate_passed: bool = True) -> ModelVersionRef:
    """A new model version with a run carrying a dataset digest (no model artifact)."""
    from mlflow.exceptions import MlflowException

    client = registry._client()
    run = client.create_run(registry._experiment_id(client))
    digest = f"{run.info.run_id:0<64}"
    client.set_tag(run.info.run_id, DATASET_DIGEST_TAG, digest)
    client.set_terminated(run.info.run_id)
    with contextlib.suppress(MlflowException):  # already registered
        client.create_registered_model(registry.model_name)
    mv = client.create_model_version(
        registry.model_name,
        source=f"{run.info.artifact_uri}/model",
        run_id=run.info.run_id,
        tags={GATE_PASSED_TAG: str(gate_passed).lower()},
    )
    return ModelVersionRef(registry.model_name, str(mv.version), run.info.run_id)


def _register_versions(registry: MlflowRegistry, count: int) -> None:
    for _ in range(count):
        _register(registry)


def _promote(registry: MlflowRegistry, ledger: PromotionLedger, version: str) -> LedgerEntry:
    entry = move_champion(
        registry,
        ledger,
        action="promote",
        to_version=version,
        reason=f"gate PASSED for version {version}",
        gate_passed=True,
        dagster_run_id=f"run-{version}",
    )
    assert entry is not None
    return entry


def _only(run_config: dict[str, Any], steps: list[str]) -> dict[str, Any]:
    """``run_config`` without the config of steps that are not run."""
    return {"ops": {k: v for k, v in run_config.get("ops", {}).items() if k in steps}}


def _alias(registry: MlflowRegistry) -> str | None:
    champion = registry.champion()
    return champion.version if champion else None


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One SQLite MLflow store for the module (creating one takes a second or two)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


@pytest.fixture
def registry(mlflow_store: tuple[str, str]) -> MlflowRegistry:
    """A registry of a model of its own in the module's MLflow store."""
    tracking_uri, artifact_root = mlflow_store
    return MlflowRegistry(
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
        model_name=f"model-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def ledger(tmp_path: Path) -> PromotionLedger:
    """A fresh ledger that settles pending entries at once (no change is in flight)."""
    return PromotionLedger(url=f"sqlite:///{tmp_path / 'ledger.db'}", in_flight_seconds=0)


@pytest.fixture
def cli_env(state: StatePaths, monkeypatch: pytest.MonkeyPatch) -> StatePaths:
    """The command line pointed at the temp state (the embedded defaults)."""
    monkeypatch.setenv("MLPLATFORM_HOME", str(state.root))
    monkeypatch.setenv("DAGSTER_HOME", str(state.dagster_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLPLATFORM_LEDGER_URL", raising=False)
    return state


# --- the SQL resource ---------------------------------------------------------------


def test_entries_round_trip_in_order(state: StatePaths, resources: dict[str, Any]) -> None:
    ledger: PromotionLedger = resources["ledger"]
    assert ledger.url == state.ledger_url
    first = ledger.begin(
        action="promote",
        model_name="m",
        from_version=None,
        to_version="1",
        reason="gate PASSED",
        gate_passed=True,
        dagster_run_id="run-a",
        data_digest="a" * 64,
    )
    assert [e.state for e in ledger.pending("m")] == ["pending"]
    ledger.commit(first)
    second = ledger.begin(
        action="override", model_name="m", from_version="1", to_version="2", reason="hotfix"
    )
    ledger.abort(second)
    [one, two] = ledger.entries("m")
    assert (one.id, one.action, one.from_version, one.to_version) == (first, "promote", None, "1")
    assert (one.state, one.gate_passed, one.dagster_run_id) == ("committed", True, "run-a")
    assert one.data_digest == "a" * 64
    assert one.recorded_at.tzinfo is not None and one.recorded_at <= two.recorded_at
    assert (two.state, two.gate_passed, two.reason) == ("aborted", None, "hotfix")
    assert ledger.pending("m") == [] and ledger.entries("other") == []
    # settling twice the same way is harmless; the other way is not
    assert ledger.commit(first).state == "committed"
    with pytest.raises(LedgerError, match=r"#2 override 1 -> 2 .*no longer pending"):
        ledger.commit(second)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PromotionLedger]:
    """The ledger on SQLite (the embedded default) and on the local PostgreSQL server."""
    if request.param == "sqlite":
        yield PromotionLedger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    with fresh_database() as url:
        yield PromotionLedger(url=url)


def test_one_pending_entry_per_model(any_ledger: PromotionLedger) -> None:
    ledger = any_ledger
    ledger.begin(action="override", model_name="m", from_version=None, to_version="1", reason="x")
    with pytest.raises(ChampionChangeError, match="model 'm' is in flight: ledger entry #1"):
        ledger.begin(
            action="override", model_name="m", from_version=None, to_version="2", reason="y"
        )
    ledger.begin(action="override", model_name="n", from_version=None, to_version="1", reason="z")


def test_the_database_refuses_edits_and_deletes(any_ledger: PromotionLedger) -> None:
    ledger = any_ledger
    committed = ledger.begin(
        action="override", model_name="m", from_version=None, to_version="1", reason="x"
    )
    ledger.commit(committed)
    pending = ledger.begin(
        action="override", model_name="m", from_version="1", to_version="2", reason="y"
    )
    engine = sa.create_engine(ledger.url)
    refused = [
        "DELETE FROM champion_ledger",
        f"UPDATE champion_ledger SET reason = 'rewritten' WHERE id = {committed}",
        f"UPDATE champion_ledger SET state = 'aborted' WHERE id = {committed}",
        f"UPDATE champion_ledger SET state = 'committed', to_version = '3' WHERE id = {pending}",
        f"UPDATE champion_ledger SET state = 'pending' WHERE id = {pending}",
    ]
    if engine.url.get_backend_name() == "postgresql":
        refused.append("TRUNCATE champion_ledger")
    for sql in refused:
        with pytest.raises(sa.exc.IntegrityError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(sql)
    engine.dispose()
    assert [(e.to_version, e.reason, e.state) for e in ledger.entries("m")] == [
        ("1", "x", "committed"),
        ("2", "y", "pending"),
    ]


def test_a_malformed_entry_writes_nothing(resources: dict[str, Any]) -> None:
    ledger: PromotionLedger = resources["ledger"]
    with pytest.raises(ValueError, match="a rollback needs a reason"):
        ledger.begin(action="rollback", model_name="m", from_version="2", to_version="1", reason="")
    with pytest.raises(ValueError, match="promoting it anyway is an override"):
        ledger.begin(
            action="promote",
            model_name="m",
            from_version=None,
            to_version="1",
            reason="gate FAILED",
            gate_passed=False,
        )
    assert ledger.entries("m") == []


# --- the write protocol -----------------------------------------------------------------


def test_every_change_is_recorded_with_its_data_digest(
    registry: MlflowRegistry, ledger: PromotionLedger
) -> None:
    v1, v2 = _register(registry), _register(registry)
    first, second = _promote(registry, ledger, "1"), _promote(registry, ledger, "2")
    assert (first.from_version, first.to_version, second.from_version) == (None, "1", "1")
    assert first.data_digest == registry.dataset_digest(v1)
    assert second.data_digest == registry.dataset_digest(v2)
    assert _alias(registry) == "2" == ledger_champion(ledger.entries(registry.model_name))
    # the alias already there: nothing changes, nothing is recorded
    assert (
        move_champion(
            registry, ledger, action="override", to_version="2", reason="no-op", gate_passed=True
        )
        is None
    )
    with pytest.raises(ChampionChangeError, match=r"no version '7' \(registered versions: 1, 2\)"):
        move_champion(registry, ledger, action="override", to_version="7", reason="typo")
    assert len(ledger.entries(registry.model_name)) == 2


def test_a_failed_alias_write_aborts_its_entry(
    registry: MlflowRegistry, ledger: PromotionLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register_versions(registry, 2)
    _promote(registry, ledger, "1")

    def unreachable(self: MlflowRegistry, ref: ModelVersionRef) -> None:
        raise ConnectionError(f"registry unreachable while promoting {ref.version}")

    monkeypatch.setattr(MlflowRegistry, "promote", unreachable)
    with pytest.raises(ConnectionError):
        _promote(registry, ledger, "2")
    monkeypatch.undo()
    assert [e.state for e in ledger.entries(registry.model_name)] == ["committed", "aborted"]
    assert _alias(registry) == "1"


def test_a_rolled_back_version_is_not_promoted_again_automatically(
    registry: MlflowRegistry, ledger: PromotionLedger
) -> None:
    _register_versions(registry, 2)
    _promote(registry, ledger, "1")
    _promote(registry, ledger, "2")
    operations.rollback(registry, ledger, reason="version 2 misses failures in production")
    with pytest.raises(RolledBackVersionError, match=r"version 2 of model .* was rolled back"):
        _promote(registry, ledger, "2")
    assert _alias(registry) == "1"
    entry = operations.override(registry, ledger, version="2", reason="fixed upstream sensor")
    assert entry is not None and entry.action == "override" and _alias(registry) == "2"


# --- crashes between the two writes ------------------------------------------------------

# Promotes version 2 through the real code path, and dies by SIGKILL at the alias write:
# right after it reached MLflow ("after_alias"), or right before ("before_alias").
_CRASHING_PROMOTION = textwrap.dedent(
    """
    import os, signal, sys

    import mlflow

    from mlplatform.resources.ledger import PromotionLedger, move_champion
    from mlplatform.resources.mlflow_registry import MlflowRegistry

    tracking_uri, ledger_url, model_name, when = sys.argv[1:]
    set_alias = mlflow.MlflowClient.set_registered_model_alias

    def set_alias_and_die(self, *args, **kwargs):
        if when == "after_alias":
            set_alias(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    mlflow.MlflowClient.set_registered_model_alias = set_alias_and_die
    move_champion(
        MlflowRegistry(tracking_uri=tracking_uri, model_name=model_name),
        PromotionLedger(url=ledger_url),
        action="promote",
        to_version="2",
        reason="gate PASSED (crash test)",
        gate_passed=True,
        dagster_run_id="run-that-dies",
    )
    sys.exit("not killed: the hook was not reached")
    """
)


@pytest.mark.parametrize(("when", "settles_as"), [("after_alias", "2"), ("before_alias", "1")])
def test_a_process_killed_between_the_two_writes_is_reconciled(
    registry: MlflowRegistry, ledger: PromotionLedger, when: str, settles_as: str
) -> None:
    _register_versions(registry, 2)
    _promote(registry, ledger, "1")

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASHING_PROMOTION,
            registry.tracking_uri,
            ledger.url,
            registry.model_name,
            when,
        ],
        cwd=REPO,
        env={**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr

    # the crash left the ledger and the alias disagreeing: a pending entry 1 -> 2
    [crashed] = ledger.pending(registry.model_name)
    assert (crashed.from_version, crashed.to_version) == ("1", "2")
    assert crashed.dagster_run_id == "run-that-dies"
    assert _alias(registry) == settles_as

    # within the in-flight window the entry may be a live change: left alone, and no
    # second change starts meanwhile
    careful = PromotionLedger(url=ledger.url)
    assert careful.in_flight_seconds == 60
    assert reconcile_champion(registry, careful) == []
    with pytest.raises(ChampionChangeError, match="in flight: ledger entry #2 promote 1 -> 2"):
        operations.override(registry, careful, version="2", reason="retry")

    [settled] = reconcile_champion(registry, ledger)
    assert settled.id == crashed.id
    assert settled.state == ("committed" if when == "after_alias" else "aborted")
    entries = ledger.entries(registry.model_name)
    assert ledger.pending(registry.model_name) == []
    assert _alias(registry) == settles_as == ledger_champion(entries)

    # and the next change starts from the agreed state
    _register(registry)
    entry = operations.override(registry, ledger, version="3", reason="next")
    assert entry is not None and entry.from_version == settles_as
    assert _alias(registry) == "3" == ledger_champion(ledger.entries(registry.model_name))


# --- the operator commands ------------------------------------------------------------


def test_commands_refuse_clearly(
    cli_env: StatePaths, resources: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _register(resources["mlflow_registry"])
    assert main(["rollback", "--reason", "bad"]) == EXIT_USAGE
    assert "model 'ai4i-failure-classifier' has no champion to roll back" in capsys.readouterr().err
    assert main(["promote", "1", "--reason", "first by hand"]) == EXIT_OK
    assert main(["rollback", "--reason", "bad"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "version 1 is the first champion" in err and "no previous champion" in err
    assert main(["promote", "9", "--reason", "typo"]) == EXIT_USAGE
    assert "has no version '9' (registered versions: 1)" in capsys.readouterr().err
    assert main(["promote", "1", "--reason", "   "]) == EXIT_USAGE
    assert "needs a reason" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        main(["promote", "1"])
    assert missing.value.code == EXIT_USAGE
    assert "--reason" in capsys.readouterr().err
    assert main(["promote", "1", "--reason", "again"]) == EXIT_OK
    assert "already is the champion: nothing changed" in capsys.readouterr().out


def test_rollback_job_records_its_run(
    state: StatePaths, resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplatform.definitions import build_definitions

    registry: MlflowRegistry = resources["mlflow_registry"]
    ledger: PromotionLedger = resources["ledger"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLPLATFORM_LEDGER_URL", raising=False)
    _register_versions(registry, 2)
    _promote(registry, ledger, "1")
    job = build_definitions(state).resolve_job_def("rollback_champion")

    def run(reason: str) -> dg.ExecuteInProcessResult:
        config = {"ops": {"roll_back_champion": {"config": {"reason": reason}}}}
        return job.execute_in_process(run_config=config, raise_on_error=False)

    refused = run("nothing to go back to")
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert "version 1 is the first champion" in str(failure.step_failure_data.error)

    _promote(registry, ledger, "2")
    result = run("version 2 misses failures in production")
    assert result.success
    [*_, entry] = ledger.entries(registry.model_name)
    assert (entry.action, entry.from_version, entry.to_version) == ("rollback", "2", "1")
    assert (entry.dagster_run_id, entry.reason) == (
        result.run_id,
        "version 2 misses failures in production",
    )
    assert _alias(registry) == "1"
    [shown] = result.asset_materializations_for_node("roll_back_champion")
    assert shown.asset_key == dg.AssetKey("champion_model")
    assert shown.metadata["champion_version"].value == "1"


# --- the champion asset, materialized for real ----------------------------------------


def test_promotions_rollback_and_override_are_all_in_the_ledger(
    cli_env: StatePaths, resources: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    registry: MlflowRegistry = resources["mlflow_registry"]
    ledger: PromotionLedger = resources["ledger"]
    # evaluation included: a promotion needs a gate that compared with the current champion
    promotion = ["model_evaluation", "gate_decision", "registered_model", "champion_model"]

    # two passing runs: the whole graph, then the promotion path again on the same data
    land_sample(resources, 2000, seed=21)
    first = materialize_all(resources, LENIENT, selection=UP_TO_CHAMPION)
    assert first.success
    second = materialize_all(resources, _only(LENIENT, promotion), selection=promotion)
    assert second.success
    entries = ledger.entries(registry.model_name)
    assert [(e.action, e.from_version, e.to_version, e.state) for e in entries] == [
        ("promote", None, "1", "committed"),
        ("promote", "1", "2", "committed"),
    ]
    for entry, run in zip(entries, (first, second), strict=True):
        version = registry.get_version(entry.to_version)
        assert entry.dagster_run_id == run.run_id
        assert entry.gate_passed is True and entry.reason.startswith("gate PASSED")
        assert entry.data_digest == registry.run_tags(version)["dataset_digest"]
        assert len(entry.data_digest) == 64
    assert second.output_for_node("champion_model").promoted

    # a failing gate registers version 3 and writes nothing
    failing = gate_config(min_recall=0.999)
    failed = materialize_all(resources, _only(failing, promotion), selection=promotion)
    assert not failed.success
    assert len(ledger.entries(registry.model_name)) == 2
    assert _alias(registry) == "2"

    assert main(["rollback", "--reason", "version 2 misses failures in production"]) == EXIT_OK
    assert "version 2 -> version 1" in capsys.readouterr().out
    assert _alias(registry) == "1"

    assert main(["promote", "3", "--reason", "recall target lowered for a pilot"]) == EXIT_OK
    assert "override; its gate FAILED" in capsys.readouterr().out
    assert _alias(registry) == "3"

    entries = ledger.entries(registry.model_name)
    assert [(e.action, e.from_version, e.to_version, e.gate_passed) for e in entries[2:]] == [
        ("rollback", "2", "1", None),
        ("override", "1", "3", False),
    ]
    assert entries[2].reason == "version 2 misses failures in production"
    assert entries[3].reason == "recall target lowered for a pilot"
    assert entries[3].dagster_run_id is None
    assert {e.state for e in entries} == {"committed"}

    assert main(["ledger"]) == EXIT_OK
    table = capsys.readouterr().out
    assert "recall target lowered for a pilot" in table and table.count("committed") == 4
    assert main(["status"]) == EXIT_OK
    status = capsys.readouterr().out
    assert "= version 3" in status
    assert "last change:   #4 override 1 -> 3 (committed)" in status
