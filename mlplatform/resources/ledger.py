"""The promotion ledger (an append-only SQL table) and the one way the champion alias moves.

Every alias change goes through :func:`move_champion`, which keeps the ledger and the
alias in agreement across crashes with a two-step write:

1. settle any pending entry from where the alias actually points (:func:`reconcile_champion`);
2. append a *pending* entry (time, from, to, reason, gate, run id, data digest);
3. move the MLflow alias;
4. mark the entry *committed*.

A process that dies after 2 leaves a pending entry; the next alias change, ``mlplatform
status`` or ``mlplatform ledger`` settles it: committed if the alias reached its
``to_version``, aborted if it did not. A pending entry younger than
``in_flight_seconds`` may belong to a change still running in another process, so it
is left alone, and a second change of the same model is refused meanwhile (a unique
index allows one pending entry per model).

Append-only: rows are inserted, and the only update is a pending row's ``state``; on
SQLite and PostgreSQL, triggers reject any other UPDATE and every DELETE (and TRUNCATE).
SQLAlchemy (installed with MLflow) is imported inside methods, like MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from mlplatform.core.ledger import (
    ACTIONS,
    STATES,
    Action,
    LedgerEntry,
    State,
    reconcile,
    rollback_target,
    rolled_back_from,
)
from mlplatform.resources.mlflow_registry import MlflowRegistry

if TYPE_CHECKING:
    from sqlalchemy import Engine, MetaData, Table

__all__ = [
    "ChampionChangeError",
    "ChampionMovedSinceGateError",
    "GateChampion",
    "LedgerError",
    "PromotionLedger",
    "RolledBackVersionError",
    "move_champion",
    "reconcile_champion",
]

TABLE = "champion_ledger"
_ONE_PENDING_INDEX = f"{TABLE}_one_pending_per_model"

logger = logging.getLogger(__name__)


class ChampionChangeError(ValueError):
    """An alias change that cannot be made (unknown version, nothing to roll back to, …)."""


class RolledBackVersionError(ChampionChangeError):
    """A promotion of a version that was rolled back: only an operator override may do that."""


class ChampionMovedSinceGateError(ChampionChangeError):
    """A promotion refused because the champion is no longer the one its gate compared with.

    ``gate_version`` is the champion the gate saw (None: there was none),
    ``current_version`` the champion now, ``to_version`` the candidate not promoted.
    """

    def __init__(
        self,
        model_name: str,
        to_version: str,
        gate_version: str | None,
        current_version: str | None,
    ) -> None:
        self.model_name = model_name
        self.to_version = to_version
        self.gate_version = gate_version
        self.current_version = current_version
        super().__init__(
            f"version {to_version} of model {model_name!r} not promoted: the champion changed "
            f"from {_v(gate_version)} to {_v(current_version)} since the gate ran (it was "
            f"judged against {_v(gate_version)} only); the champion stays "
            f"{_v(current_version)}, nothing is committed to the ledger, and the next "
            "training run compares its candidate with the new champion"
        )


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "no champion"


@dataclass(frozen=True)
class GateChampion:
    """The champion a gate compared its candidate with: ``version`` None when there was none."""

    version: str | None


class LedgerError(RuntimeError):
    """The ledger is not in the state the write protocol expects."""


def _table(metadata: MetaData) -> Table:
    import sqlalchemy as sa

    pending = sa.text("state = 'pending'")
    return sa.Table(
        TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=True),
        sa.Column("to_version", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("gate_passed", sa.Boolean, nullable=True),
        sa.Column("dagster_run_id", sa.String(64), nullable=True),
        sa.Column("data_digest", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.CheckConstraint(
            "action IN ({})".format(", ".join(f"'{a}'" for a in ACTIONS)), name="known_action"
        ),
        sa.CheckConstraint(
            "state IN ({})".format(", ".join(f"'{s}'" for s in STATES)), name="known_state"
        ),
        sa.Index(
            _ONE_PENDING_INDEX,
            "model_name",
            unique=True,
            sqlite_where=pending,
            postgresql_where=pending,
        ),
    )


_IMMUTABLE = (
    "id",
    "recorded_at",
    "action",
    "model_name",
    "from_version",
    "to_version",
    "reason",
    "gate_passed",
    "dagster_run_id",
    "data_digest",
)

# The database itself refuses edits that are not "a pending entry settles".
_SQLITE_TRIGGERS = (
    f"""
    CREATE TRIGGER IF NOT EXISTS {TABLE}_no_delete BEFORE DELETE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: entries are never deleted'); END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS {TABLE}_settle_only BEFORE UPDATE ON {TABLE}
    WHEN OLD.state != 'pending' OR NEW.state NOT IN ('committed', 'aborted')
      OR {" OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in _IMMUTABLE)}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: only a pending entry''s state may change');
    END
    """,
)

# The same on PostgreSQL: one row trigger for UPDATE and DELETE, one statement trigger
# for TRUNCATE, raising an integrity violation (SQLSTATE 23000) as SQLite's ABORT does.
_PG_FUNCTION = f"{TABLE}_append_only"
_PG_CHANGED = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in _IMMUTABLE)
_PG_TRIGGERS = (
    f"""
    CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
          MESSAGE = '{TABLE} is append-only: entries are never deleted';
      END IF;
      IF OLD.state <> 'pending' OR NEW.state NOT IN ('committed', 'aborted')
         OR {_PG_CHANGED} THEN
        RAISE EXCEPTION USING ERRCODE = 'integrity_constraint_violation',
          MESSAGE = '{TABLE} is append-only: only a pending entry''s state may change';
      END IF;
      RETURN NEW;
    END $$
    """,
    f"""
    CREATE OR REPLACE TRIGGER {TABLE}_settle_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()
    """,
    f"""
    CREATE OR REPLACE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {_PG_FUNCTION}()
    """,
)


def _install_guards(engine: Engine) -> None:
    """Create the append-only triggers of the ledger's database, where it has them."""
    import sqlalchemy as sa

    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        with engine.begin() as conn:
            for ddl in _SQLITE_TRIGGERS:
                conn.exec_driver_sql(ddl)
    elif backend == "postgresql":
        with engine.begin() as conn:
            present = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgrelid = CAST(:table AS regclass)"
                ),
                {"table": TABLE},
            ).scalar_one()
            if present < 2:  # once per database; serialized against a concurrent first use
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": TABLE})
                for ddl in _PG_TRIGGERS:
                    conn.exec_driver_sql(ddl)
    else:
        logger.warning(
            "promotion ledger on %s: no append-only triggers for this database; the "
            "ledger is append-only by this code alone",
            backend,
        )


class PromotionLedger(dg.ConfigurableResource):
    """Append-only record of every champion alias change, in a SQL database."""

    url: str = Field(
        description="SQLAlchemy URL of the ledger database, e.g. sqlite:////state/ledger.db "
        "or postgresql+psycopg2://user@host/db."
    )
    in_flight_seconds: float = Field(
        default=60.0,
        ge=0.0,
        description="A pending entry younger than this may be a change still running in "
        "another process: reconciliation leaves it alone and a second change is refused.",
    )

    @contextmanager
    def _connect(self) -> Iterator[tuple[Engine, Table]]:
        import sqlalchemy as sa

        url = sa.make_url(self.url)
        sqlite = url.get_backend_name() == "sqlite"
        if sqlite and url.database not in (None, "", ":memory:"):
            Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30} if sqlite else {})
        try:
            metadata = sa.MetaData()
            table = _table(metadata)
            try:
                metadata.create_all(engine)
            except sa.exc.DatabaseError:
                # two processes using a new ledger at once both find no table, and the
                # second CREATE fails; the table is there now (else this raises again)
                metadata.create_all(engine)
            _install_guards(engine)
            yield engine, table
        finally:
            engine.dispose()

    def begin(
        self,
        *,
        action: Action,
        model_name: str,
        from_version: str | None,
        to_version: str,
        reason: str,
        gate_passed: bool | None = None,
        dagster_run_id: str | None = None,
        data_digest: str | None = None,
    ) -> int:
        """Append a pending entry for an alias change about to happen; returns its id.

        Raises
        ------
        ValueError
            When the entry is malformed (see :class:`LedgerEntry`).
        ChampionChangeError
            When another change of ``model_name``'s champion is pending.
        """
        import sqlalchemy as sa

        values: dict[str, Any] = {
            "recorded_at": datetime.now(UTC),
            "action": action,
            "model_name": model_name,
            "from_version": from_version,
            "to_version": to_version,
            "reason": reason,
            "gate_passed": gate_passed,
            "dagster_run_id": dagster_run_id,
            "data_digest": data_digest,
            "state": "pending",
        }
        LedgerEntry(id=0, **values)  # validates before anything is written
        with self._connect() as (engine, table):
            try:
                with engine.begin() as conn:
                    inserted = conn.execute(table.insert().values(**values))
                    key = inserted.inserted_primary_key
            except sa.exc.IntegrityError as exc:
                pending = self.pending(model_name)
                if pending:
                    raise ChampionChangeError(
                        f"another change of the champion of model {model_name!r} is in "
                        f"flight: ledger entry {pending[0].describe()} began at "
                        f"{pending[0].recorded_at:%Y-%m-%d %H:%M:%S} UTC; retry when it has "
                        f"finished (a pending entry settles after {self.in_flight_seconds:g} s)"
                    ) from exc
                if "model_name" in str(exc.orig):  # the one-pending-entry index
                    raise ChampionChangeError(
                        f"another change of the champion of model {model_name!r} was in "
                        "flight and has just settled; retry"
                    ) from exc
                raise
        if key is None:
            raise LedgerError(f"the ledger database did not return the id of the {action} entry")
        return int(key[0])

    def commit(self, entry_id: int) -> LedgerEntry:
        """Mark a pending entry committed: its alias change happened."""
        return self._settle(entry_id, "committed")

    def abort(self, entry_id: int) -> LedgerEntry:
        """Mark a pending entry aborted: its alias change did not happen."""
        return self._settle(entry_id, "aborted")

    def _settle(self, entry_id: int, state: State) -> LedgerEntry:
        with self._connect() as (engine, table), engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == entry_id, table.c.state == "pending")
                .values(state=state)
            )
            row = conn.execute(table.select().where(table.c.id == entry_id)).mappings().first()
        if row is None:
            raise LookupError(f"the promotion ledger has no entry {entry_id}")
        entry = _entry(row)
        # Settling twice the same way is harmless (a reconciliation got there first).
        if entry.state != state:
            raise LedgerError(
                f"ledger entry {entry.describe()} of model {entry.model_name!r} cannot become "
                f"{state}: it is no longer pending"
            )
        return entry

    def entries(self, model_name: str) -> list[LedgerEntry]:
        """Every entry of ``model_name``, oldest first."""
        with self._connect() as (engine, table), engine.connect() as conn:
            rows = conn.execute(
                table.select().where(table.c.model_name == model_name).order_by(table.c.id)
            ).mappings()
            return [_entry(row) for row in rows]

    def pending(self, model_name: str) -> list[LedgerEntry]:
        """The entries of ``model_name`` whose alias change is not settled yet."""
        return [e for e in self.entries(model_name) if e.state == "pending"]


def _entry(row: Mapping[Any, Any]) -> LedgerEntry:
    recorded_at: datetime = row["recorded_at"]
    if recorded_at.tzinfo is None:  # SQLite keeps no offset; every entry is written in UTC
        recorded_at = recorded_at.replace(tzinfo=UTC)
    gate = row["gate_passed"]
    return LedgerEntry(
        id=int(row["id"]),
        recorded_at=recorded_at,
        action=row["action"],
        model_name=row["model_name"],
        from_version=row["from_version"],
        to_version=row["to_version"],
        reason=row["reason"],
        gate_passed=None if gate is None else bool(gate),
        dagster_run_id=row["dagster_run_id"],
        data_digest=row["data_digest"],
        state=row["state"],
    )


def reconcile_champion(registry: MlflowRegistry, ledger: PromotionLedger) -> list[LedgerEntry]:
    """Settle pending entries of the registry's model from where its alias points.

    Entries younger than ``ledger.in_flight_seconds`` are left pending. Returns the
    entries settled, oldest first.
    """
    pending = ledger.pending(registry.model_name)
    if not pending:
        return []
    champion = registry.champion()
    cutoff = datetime.now(UTC) - timedelta(seconds=ledger.in_flight_seconds)
    decisions = reconcile(pending, champion.version if champion else None, in_flight_after=cutoff)
    settled = [
        ledger.commit(entry_id) if state == "committed" else ledger.abort(entry_id)
        for entry_id, state in decisions
    ]
    for entry in settled:
        logger.warning(
            f"reconciled ledger entry {entry.describe()} of model {entry.model_name!r} "
            "left by an interrupted alias change"
        )
    return settled


def move_champion(
    registry: MlflowRegistry,
    ledger: PromotionLedger,
    *,
    action: Action,
    reason: str,
    to_version: str | None = None,
    gate_passed: bool | None = None,
    dagster_run_id: str | None = None,
    gate_champion: GateChampion | None = None,
) -> LedgerEntry | None:
    """Move the champion alias and record it: the one code path for every alias change.

    A promotion by a gate passes ``gate_champion``, the champion its gate compared the
    candidate with. If another process moved the alias since (between the evaluation and
    this call, or while this change was being prepared), the promotion is **refused**
    (:class:`ChampionMovedSinceGateError`): the candidate was never compared with the
    new champion, and "a challenger must beat the current champion" would not hold. The
    check is made before anything is written, and again under the pending entry (which
    keeps every other change out), so it cannot be overtaken; a refusal there aborts the
    entry, leaving the alias where it was and the chain of committed entries whole.

    The comparison is not re-run against the new champion here: it needs the candidate,
    the test split and the gate's thresholds (none of which this step has), loading and
    scoring the new champion would hold the pending entry (and block every other change
    of the alias) for seconds, and the gate decision already recorded on the candidate's
    version would no longer be the one that promoted it. The next training run evaluates
    its candidate against the new champion, which is the cheap and auditable way to
    re-judge.

    Parameters
    ----------
    registry : MlflowRegistry
        Owns the model and its champion alias.
    ledger : PromotionLedger
        Where the change is recorded.
    action : {"promote", "rollback", "override"}
        ``promote`` needs ``gate_passed=True``; ``rollback`` chooses its own target (the
        previous champion in the ledger), so ``to_version`` must be None.
    reason : str
        The gate's summary, the override reason or the rollback reason (not blank).
    to_version : str, optional
        The version to make champion (promote, override).
    gate_passed : bool, optional
        The gate decision of ``to_version``, when known.
    dagster_run_id : str, optional
        The Dagster run making the change.
    gate_champion : GateChampion, optional
        The champion ``to_version``'s gate compared it with; the change is refused
        unless that version still is the champion (None: no such check, as for an
        operator's override or rollback).

    Returns
    -------
    LedgerEntry or None
        The committed entry; None when ``to_version`` already is the champion (nothing
        changes, nothing is recorded).

    Raises
    ------
    ChampionChangeError
        Unknown version, no previous champion, another change in flight, or (as
        :class:`RolledBackVersionError`) a promotion of a version that was rolled back,
        or (as :class:`ChampionMovedSinceGateError`) a champion that changed since the
        gate compared the candidate with it.
    """
    model = registry.model_name
    reconcile_champion(registry, ledger)
    current = registry.champion()
    entries = ledger.entries(model)
    in_flight = [e for e in entries if e.state == "pending"]
    if in_flight:
        raise ChampionChangeError(
            f"another change of the champion of model {model!r} is in flight: ledger entry "
            f"{in_flight[0].describe()} began at {in_flight[0].recorded_at:%Y-%m-%d %H:%M:%S} "
            f"UTC; retry when it has finished (it settles after {ledger.in_flight_seconds:g} s)"
        )
    if action == "rollback":
        if to_version is not None:
            raise ValueError(f"a rollback chooses its own target; got to_version={to_version!r}")
        if current is None:
            raise ChampionChangeError(f"model {model!r} has no champion to roll back")
        try:
            to_version = rollback_target(entries, current.version, model_name=model)
        except ValueError as exc:
            raise ChampionChangeError(f"cannot roll back: {exc}") from exc
    elif to_version is None:
        raise ValueError(f"a {action} of model {model!r} needs to_version")
    try:
        target = registry.get_version(to_version)
    except LookupError as exc:
        raise ChampionChangeError(str(exc)) from exc
    if current is not None and current.version == target.version:
        return None
    current_version = current.version if current else None
    if gate_champion is not None and current_version != gate_champion.version:
        raise ChampionMovedSinceGateError(
            model, target.version, gate_champion.version, current_version
        )
    if action == "promote":
        demoted = rolled_back_from(entries, target.version)
        if demoted is not None:
            raise RolledBackVersionError(
                f"version {target.version} of model {model!r} was rolled back (ledger entry "
                f"{demoted.describe()}: {demoted.reason}); it is not promoted again "
                "automatically, only by an operator override"
            )
    digest = registry.dataset_digest(target)
    entry_id = ledger.begin(
        action=action,
        model_name=model,
        from_version=current.version if current else None,
        to_version=target.version,
        reason=reason,
        gate_passed=gate_passed,
        dagster_run_id=dagster_run_id,
        data_digest=digest,
    )
    try:
        # The pending entry keeps every other change out from here on, but one may have
        # committed since `current` was read: then this entry's from_version is false.
        now = registry.champion()
        moved = (now.version if now else None) != (current.version if current else None)
        if not moved:
            registry.promote(target)
    except Exception:
        _settle_after_failed_write(registry, ledger, entry_id, target.version)
        raise
    if moved:
        ledger.abort(entry_id)
        if gate_champion is not None:
            raise ChampionMovedSinceGateError(
                model, target.version, gate_champion.version, now.version if now else None
            )
        raise ChampionChangeError(
            f"the champion of model {model!r} moved from version "
            f"{current.version if current else '(none)'} to version "
            f"{now.version if now else '(none)'} while this {action} to version "
            f"{target.version} was being prepared: nothing changed; retry"
        )
    return ledger.commit(entry_id)


def _settle_after_failed_write(
    registry: MlflowRegistry, ledger: PromotionLedger, entry_id: int, to_version: str
) -> None:
    # The alias write raised: it may or may not have reached the registry (a timeout,
    # say). Settle the entry from where the alias points, if the registry answers.
    try:
        champion = registry.champion()
    except Exception:
        logger.exception(
            f"ledger entry {entry_id} of model {registry.model_name!r} stays pending: the "
            "registry did not answer; the next change or `mlplatform status` settles it"
        )
        return
    if champion is not None and champion.version == to_version:
        ledger.commit(entry_id)
    else:
        ledger.abort(entry_id)
