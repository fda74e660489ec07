"""Operator actions on the champion: roll it back, or override a failed gate with a reason.

``mlplatform rollback`` and the ``rollback_champion`` job both call :func:`rollback`;
``mlplatform promote VERSION --reason …`` calls :func:`override`. Both go through
:func:`~mlplatform.resources.ledger.move_champion`, the one code path that moves the
alias and writes the promotion ledger.
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from mlplatform.core.ledger import LedgerEntry
from mlplatform.defs.jobs import ROLLBACK_CHAMPION
from mlplatform.defs.registry import GATE_PASSED_TAG, mlflow_links
from mlplatform.resources.ledger import (
    ChampionChangeError,
    LedgerError,
    PromotionLedger,
    move_champion,
)
from mlplatform.resources.mlflow_registry import MlflowRegistry

__all__ = ["RollbackConfig", "override", "rollback", "rollback_champion_job"]


def _require_reason(reason: str, what: str) -> str:
    if not reason.strip():
        raise ChampionChangeError(f"{what} needs a reason (it is recorded in the ledger)")
    return reason.strip()


def rollback(
    registry: MlflowRegistry,
    ledger: PromotionLedger,
    *,
    reason: str,
    dagster_run_id: str | None = None,
) -> LedgerEntry:
    """Move the champion back to the version that was champion before it, and record it.

    Raises
    ------
    ChampionChangeError
        No reason, no champion, or no previous champion in the ledger.
    """
    what = f"a rollback of the champion of model {registry.model_name!r}"
    entry = move_champion(
        registry,
        ledger,
        action="rollback",
        reason=_require_reason(reason, what),
        dagster_run_id=dagster_run_id,
    )
    if entry is None:  # the ledger's previous champion is never the current one
        raise LedgerError(f"{what} recorded no change")
    return entry


def override(
    registry: MlflowRegistry,
    ledger: PromotionLedger,
    *,
    version: str,
    reason: str,
    dagster_run_id: str | None = None,
) -> LedgerEntry | None:
    """Make ``version`` champion whatever its gate decided, recorded as an override.

    Returns the committed entry, or None when ``version`` already is the champion.

    Raises
    ------
    ChampionChangeError
        No reason, or the model has no such version.
    """
    reason = _require_reason(
        reason, f"an override making version {version} of model {registry.model_name!r} champion"
    )
    try:
        ref = registry.get_version(version)
    except LookupError as exc:
        raise ChampionChangeError(str(exc)) from exc
    recorded = registry.version_tags(ref).get(GATE_PASSED_TAG)
    gate_passed = {"true": True, "false": False}.get(recorded or "")
    return move_champion(
        registry,
        ledger,
        action="override",
        to_version=ref.version,
        reason=reason,
        gate_passed=gate_passed,
        dagster_run_id=dagster_run_id,
    )


class RollbackConfig(dg.Config):
    """Why the champion is rolled back."""

    reason: str = Field(description="Why the champion is rolled back; recorded in the ledger.")


@dg.op(out={}, tags={"kind": "mlflow"})
def roll_back_champion(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    mlflow_registry: MlflowRegistry,
    ledger: PromotionLedger,
) -> Iterator[dg.AssetMaterialization]:
    """Move the champion alias back to the previous champion and record the rollback."""
    try:
        entry = rollback(
            mlflow_registry, ledger, reason=config.reason, dagster_run_id=context.run.run_id
        )
    except ChampionChangeError as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(
        f"champion of {entry.model_name}: version {entry.from_version} -> version "
        f"{entry.to_version} (ledger entry {entry.id}: rollback, {entry.reason})"
    )
    # The alias moved outside the asset graph: the champion asset shows it.
    yield dg.AssetMaterialization(
        asset_key="champion_model",
        description=f"rolled back: {entry.reason}",
        metadata={
            "champion_version": entry.to_version,
            "previous_version": entry.from_version or "none",
            "promoted": False,
            "action": entry.action,
            "ledger_entry": str(entry.id),
            "champion_uri": f"models:/{entry.model_name}@{mlflow_registry.champion_alias}",
            **mlflow_links(
                mlflow_registry.tracking_uri, mlflow_registry.get_version(entry.to_version)
            ),
        },
    )


@dg.job(
    name=ROLLBACK_CHAMPION,
    tags={"mlplatform/kind": "operations"},
    description="Move the champion alias back to the previous champion (from the promotion "
    "ledger) and record the rollback with its reason.",
)
def rollback_champion_job() -> None:
    """Roll the champion back (config: ``reason``)."""
    roll_back_champion()
