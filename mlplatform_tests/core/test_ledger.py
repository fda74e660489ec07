"""The promotion ledger's pure rules: entries, rollback targets, reconciliation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mlplatform.core.ledger import (
    LedgerEntry,
    champion_history,
    ledger_champion,
    reconcile,
    rollback_target,
    rolled_back_from,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(
    id: int,
    action: str,
    from_version: str | None,
    to_version: str,
    state: str = "committed",
    *,
    at: datetime | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        id=id,
        recorded_at=at or T0 + timedelta(minutes=id),
        action=action,  # type: ignore[arg-type]
        model_name="m",
        from_version=from_version,
        to_version=to_version,
        reason=f"{action} reason",
        gate_passed=True if action == "promote" else None,
        dagster_run_id=None,
        data_digest=None,
        state=state,  # type: ignore[arg-type]
    )


def _history(*moves: tuple[str, str | None, str]) -> list[LedgerEntry]:
    return [_entry(i + 1, a, f, t) for i, (a, f, t) in enumerate(moves)]


PROMOTED_THRICE = _history(("promote", None, "1"), ("promote", "1", "2"), ("promote", "2", "3"))


@pytest.mark.parametrize(
    ("entries", "current", "target"),
    [
        (PROMOTED_THRICE, "3", "2"),
        (_history(("promote", None, "1"), ("promote", "1", "2")), "2", "1"),
        # a rollback of a rollback walks further back instead of toggling
        ([*PROMOTED_THRICE, _entry(4, "rollback", "3", "2")], "2", "1"),
        # after a rollback a new promotion sits on top of the version rolled back to
        (
            [*PROMOTED_THRICE, _entry(4, "rollback", "3", "2"), _entry(5, "promote", "2", "4")],
            "4",
            "2",
        ),
        # an override of an old version still rolls back to the one it replaced
        ([*PROMOTED_THRICE, _entry(4, "override", "3", "1")], "1", "3"),
        # pending and aborted entries are not history
        (
            [
                *PROMOTED_THRICE,
                _entry(4, "promote", "3", "4", "aborted"),
                _entry(5, "promote", "3", "5", "pending"),
            ],
            "3",
            "2",
        ),
        # the champion before the first ledger entry (set before the ledger existed)
        (_history(("promote", "7", "8")), "8", "7"),
    ],
)
def test_rollback_target_is_the_champion_before_the_current_one(
    entries: list[LedgerEntry], current: str, target: str
) -> None:
    assert rollback_target(entries, current) == target


def test_rolling_back_repeatedly_walks_the_stack_to_its_bottom() -> None:
    entries = list(PROMOTED_THRICE)
    current = "3"
    visited = []
    while True:
        try:
            target = rollback_target(entries, current)
        except ValueError:
            break
        entries.append(_entry(len(entries) + 1, "rollback", current, target))
        visited.append(target)
        current = target
    assert visited == ["2", "1"]
    assert champion_history(entries) == ["1"]


@pytest.mark.parametrize(
    ("entries", "current", "message"),
    [
        ([], "3", "no champion before version 3"),
        (_history(("promote", None, "1")), "1", "version 1 is the first champion of model 'm'"),
        (PROMOTED_THRICE, "5", "says version 3 is champion but the alias points at version 5"),
        ([_entry(1, "promote", None, "1", "aborted")], "1", "records no champion change"),
    ],
)
def test_rollback_target_without_a_previous_champion_is_a_clear_error(
    entries: list[LedgerEntry], current: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        rollback_target(entries, current)


def test_ledger_champion_is_the_latest_committed_target() -> None:
    entries = [
        *PROMOTED_THRICE,
        _entry(4, "rollback", "3", "2"),
        _entry(5, "promote", "2", "6", "aborted"),
    ]
    assert ledger_champion(entries) == "2"
    assert ledger_champion([]) is None


@pytest.mark.parametrize(
    ("alias", "state"),
    [
        ("2", "committed"),  # the alias moved before the process died
        ("1", "aborted"),  # it died before the alias moved
        ("9", "aborted"),  # the alias moved elsewhere since: this move is not in effect
        (None, "aborted"),
    ],
)
def test_reconcile_settles_a_pending_entry_from_the_alias(alias: str | None, state: str) -> None:
    entries = [_entry(1, "promote", None, "1"), _entry(2, "promote", "1", "2", "pending")]
    assert reconcile(entries, alias) == [(2, state)]


def test_reconcile_of_a_first_promotion() -> None:
    pending = [_entry(1, "promote", None, "1", "pending")]
    assert reconcile(pending, None) == [(1, "aborted")]
    assert reconcile(pending, "1") == [(1, "committed")]


def test_reconcile_leaves_settled_and_in_flight_entries_alone() -> None:
    entries = [
        _entry(1, "promote", None, "1"),
        _entry(2, "promote", "1", "2", "aborted"),
        _entry(3, "promote", "1", "3", "pending", at=T0 + timedelta(hours=1)),
    ]
    assert reconcile(entries[:2], "1") == []
    assert reconcile(entries, "3", in_flight_after=T0 + timedelta(minutes=30)) == []
    assert reconcile(entries, "3", in_flight_after=T0 + timedelta(hours=2)) == [(3, "committed")]


def test_rolled_back_from_until_made_champion_again() -> None:
    entries = [*PROMOTED_THRICE, _entry(4, "rollback", "3", "2")]
    assert rolled_back_from(entries, "3") == entries[3]
    assert rolled_back_from(entries, "2") is None
    entries.append(_entry(5, "override", "2", "3"))
    assert rolled_back_from(entries, "3") is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"action": "demote"}, "action must be one of"),
        ({"state": "done"}, "state must be one of"),
        ({"recorded_at": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"from_version": "2", "to_version": "2"}, "both '2'"),
        ({"reason": "  "}, "needs a reason"),
        ({"gate_passed": False}, "promoting it anyway is an override"),
    ],
)
def test_malformed_entries_are_refused(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "id": 7,
        "recorded_at": T0,
        "action": "promote",
        "model_name": "m",
        "from_version": "1",
        "to_version": "2",
        "reason": "gate PASSED",
        "gate_passed": True,
        "dagster_run_id": None,
        "data_digest": None,
        "state": "pending",
        **changes,
    }
    with pytest.raises(ValueError, match=message):
        LedgerEntry(**fields)  # type: ignore[arg-type]


def test_entries_of_two_models_are_refused() -> None:
    other = replace(_entry(2, "promote", "1", "2"), model_name="other")
    with pytest.raises(ValueError, match="one model"):
        champion_history([_entry(1, "promote", None, "1"), other])
