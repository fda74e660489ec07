"""The promotion ledger's rules: what an entry is, where a rollback goes, how a crash settles.

Every change of the champion alias is one :class:`LedgerEntry`. It is written
*pending* before the alias moves and *committed* after, so a process that dies in
between leaves a pending entry that :func:`reconcile` settles from where the alias
actually points. Entries are never edited otherwise and never deleted.

A rollback returns to the version that was champion before the current one. The
champions form a stack: a promotion or override pushes its version, a rollback pops
the current one, so rolling back twice walks two steps back instead of toggling.

Pure Python: no Dagster, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

__all__ = [
    "ACTIONS",
    "STATES",
    "Action",
    "LedgerEntry",
    "State",
    "champion_history",
    "ledger_champion",
    "reconcile",
    "rollback_target",
    "rolled_back_from",
]

Action = Literal["promote", "rollback", "override"]
State = Literal["pending", "committed", "aborted"]

ACTIONS: tuple[Action, ...] = get_args(Action)
STATES: tuple[State, ...] = get_args(State)


@dataclass(frozen=True)
class LedgerEntry:
    """One change of a model's champion alias.

    Parameters
    ----------
    id : int
        Position in the ledger; later entries have larger ids.
    recorded_at : datetime
        When the change began (timezone-aware, UTC).
    action : {"promote", "rollback", "override"}
        ``promote``: a candidate that passed its gate; ``rollback``: back to the
        previous champion; ``override``: an operator promoted a version by hand.
    model_name : str
        The registered model whose alias moved.
    from_version : str or None
        The champion before the change (None for the first champion).
    to_version : str
        The champion after the change.
    reason : str
        Why: the gate's summary, the operator's override reason or the rollback reason.
    gate_passed : bool or None
        The gate decision of ``to_version``, when it is known.
    dagster_run_id : str or None
        The Dagster run that made the change (None from the command line).
    data_digest : str or None
        Digest of the rows ``to_version`` was trained on.
    state : {"pending", "committed", "aborted"}
        ``pending`` until the alias write is known to have happened (``committed``)
        or not (``aborted``).
    """

    id: int
    recorded_at: datetime
    action: Action
    model_name: str
    from_version: str | None
    to_version: str
    reason: str
    gate_passed: bool | None
    dagster_run_id: str | None
    data_digest: str | None
    state: State

    def __post_init__(self) -> None:
        where = f"ledger entry {self.id} of model {self.model_name!r}"
        if self.action not in ACTIONS:
            raise ValueError(f"{where}: action must be one of {ACTIONS}, got {self.action!r}")
        if self.state not in STATES:
            raise ValueError(f"{where}: state must be one of {STATES}, got {self.state!r}")
        if self.recorded_at.tzinfo is None:
            raise ValueError(f"{where}: recorded_at must be timezone-aware, got {self.recorded_at}")
        if not self.to_version:
            raise ValueError(f"{where}: to_version is empty")
        if self.from_version == self.to_version:
            raise ValueError(
                f"{where}: from_version and to_version are both {self.to_version!r}; "
                "an entry records a change"
            )
        if not self.reason.strip():
            raise ValueError(f"{where}: a {self.action} needs a reason")
        if self.action == "promote" and self.gate_passed is not True:
            raise ValueError(
                f"{where}: version {self.to_version} is promoted only after passing its "
                f"gate (gate_passed={self.gate_passed}); promoting it anyway is an override"
            )

    def describe(self) -> str:
        """One line, e.g. ``#4 rollback 3 -> 2 (committed)``."""
        return (
            f"#{self.id} {self.action} {self.from_version or '(none)'} -> "
            f"{self.to_version} ({self.state})"
        )


def _ordered(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    ordered = sorted(entries, key=lambda e: e.id)
    names = {e.model_name for e in ordered}
    if len(names) > 1:
        raise ValueError(f"ledger entries of one model expected, got models {sorted(names)}")
    return ordered


def champion_history(entries: Iterable[LedgerEntry]) -> list[str]:
    """The stack of champions the committed entries describe, oldest first.

    A promotion or override pushes its version; a rollback pops the version it
    leaves. When an entry's ``from_version`` is not the top of the stack (the alias
    was set before the ledger existed, or outside it) that version is pushed first,
    so the stack always reflects what the alias was observed to be.
    """
    stack: list[str] = []
    for entry in _ordered(entries):
        if entry.state != "committed":
            continue
        if entry.from_version is not None and (not stack or stack[-1] != entry.from_version):
            stack.append(entry.from_version)
        if entry.action == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry.to_version:
                stack.append(entry.to_version)
        else:
            stack.append(entry.to_version)
    return stack


def ledger_champion(entries: Iterable[LedgerEntry]) -> str | None:
    """The champion version according to the committed entries (None if there are none)."""
    committed = [e for e in _ordered(entries) if e.state == "committed"]
    return committed[-1].to_version if committed else None


def rollback_target(
    entries: Sequence[LedgerEntry], current_version: str, *, model_name: str | None = None
) -> str:
    """The version that was champion before ``current_version``.

    Parameters
    ----------
    entries : sequence of LedgerEntry
        The ledger of one model (pending and aborted entries are ignored).
    current_version : str
        The version the champion alias points at now.
    model_name : str, optional
        Named in errors (default: the entries' model).

    Raises
    ------
    ValueError
        When the ledger records no champion before ``current_version``, or when it
        disagrees with the alias about who the champion is.
    """
    stack = champion_history(entries)
    name = model_name or (entries[0].model_name if entries else None)
    model = f"model {name!r}" if name else "the model"
    if not stack:
        raise ValueError(
            f"the ledger records no champion change of {model}: "
            f"no champion before version {current_version} to roll back to"
        )
    if stack[-1] != current_version:
        raise ValueError(
            f"the ledger of {model} says version {stack[-1]} is champion but the alias "
            f"points at version {current_version} (moved outside the ledger?)"
        )
    if len(stack) < 2:
        raise ValueError(
            f"version {current_version} is the first champion of {model} in the ledger: "
            "there is no previous champion to roll back to"
        )
    return stack[-2]


def reconcile(
    entries: Iterable[LedgerEntry],
    alias_version: str | None,
    *,
    in_flight_after: datetime | None = None,
) -> list[tuple[int, State]]:
    """What each pending entry becomes, given where the alias actually points.

    A pending entry whose ``to_version`` is the alias happened: ``committed``.
    Otherwise its move is not in effect: ``aborted`` (the alias is still at its
    ``from_version``, or was moved since by something that is not in the ledger).

    Parameters
    ----------
    entries : iterable of LedgerEntry
        The ledger of one model.
    alias_version : str or None
        The version the champion alias points at now (None: no alias).
    in_flight_after : datetime, optional
        Pending entries recorded after this instant may belong to a change still in
        progress in another process; they are left pending.

    Returns
    -------
    list of (int, str)
        ``(entry id, new state)`` for every pending entry that settles, oldest first.
    """
    decisions: list[tuple[int, State]] = []
    for entry in _ordered(entries):
        if entry.state != "pending":
            continue
        if in_flight_after is not None and entry.recorded_at > in_flight_after:
            continue
        decisions.append(
            (entry.id, "committed" if entry.to_version == alias_version else "aborted")
        )
    return decisions


def rolled_back_from(entries: Iterable[LedgerEntry], version: str) -> LedgerEntry | None:
    """The committed rollback that demoted ``version``, unless it was made champion again since.

    A candidate that was rolled back must not come back by an automatic promotion
    (say, a re-materialization of the promotion step); only an operator override
    brings it back.
    """
    demoted: LedgerEntry | None = None
    for entry in _ordered(entries):
        if entry.state != "committed":
            continue
        if entry.action == "rollback" and entry.from_version == version:
            demoted = entry
        elif entry.to_version == version:
            demoted = None
    return demoted
