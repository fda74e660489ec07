"""Helpers for asset tests: the asset list, landing sample data, materializing."""

from __future__ import annotations

from typing import Any

import dagster as dg

from mlplatform.core.generator import generate_ai4i
from mlplatform.defs import evaluation, features, inference, ingestion, registry, training
from mlplatform.resources.landing import LandingArea

MODULES = [ingestion, features, training, evaluation, registry, inference]
ASSETS: list[Any] = [
    *dg.load_assets_from_modules(MODULES),
    *dg.load_asset_checks_from_modules(MODULES),
]


def land_sample(resources: dict[str, Any], rows: int, *, seed: int, start_udi: int = 1) -> str:
    """Drop ``rows`` generated rows into the landing folder; returns the file name."""
    landing: LandingArea = resources["landing"]
    name = f"sample_{start_udi:08d}.csv"
    sample = generate_ai4i(rows, seed=seed, start_udi=start_udi, burn_in=5_000)
    landing.drop(sample, name)
    return name


def materialize_all(
    resources: dict[str, Any],
    run_config: dict[str, Any] | None = None,
    selection: Any = None,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the whole graph (or ``selection``) in-process, without raising."""
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        run_config=run_config or {},
        raise_on_error=False,
        selection=selection,
    )


def gate_config(**thresholds: float) -> dict[str, Any]:
    """Run config setting the gate's thresholds."""
    return {"ops": {"gate_decision": {"config": thresholds}}}


# Tests that are not about the gate's thresholds must not hinge on the recall of a
# few dozen positives: they pass the gate with room to spare. Nor are they about the
# candidate search: one fast candidate, trained as configured, keeps them quick.
LENIENT = {
    "ops": {
        **gate_config(
            min_recall=0.2, min_precision=0.2, max_recall_drop_vs_champion=0.8, min_slice_recall=0.0
        )["ops"],
        "candidate_model": {
            "config": {"candidates": ["hist_gradient_boosting"], "search_iterations": 0}
        },
    }
}


def log_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """Every user log message of a run."""
    return [entry.user_message for entry in instance.all_logs(run_id)]
