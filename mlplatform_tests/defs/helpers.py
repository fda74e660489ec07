"""Helpers for asset tests: the asset list, landing sample data, materializing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pandas as pd

from mlplatform.core.features import table_columns
from mlplatform.core.generator import generate_ai4i
from mlplatform.defs import (
    evaluation,
    features,
    inference,
    ingestion,
    monitoring,
    registry,
    training,
)
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import SOURCE_BATCHES_NAME, register_new_batches
from mlplatform.paths import StatePaths
from mlplatform.resources.asset_storage import AssetStorage
from mlplatform.resources.feature_tables import read_features
from mlplatform.resources.landing import LandingArea

MODULES = [ingestion, features, training, evaluation, registry, inference, monitoring]
ASSETS: list[Any] = [
    *dg.load_assets_from_modules(MODULES),
    *dg.load_asset_checks_from_modules(MODULES),
]
# what the training job materializes: every asset but ingestion, scoring and monitoring
DOWNSTREAM = [
    a.key.to_user_string()
    for a in dg.load_assets_from_modules(MODULES)
    if isinstance(a, dg.AssetsDefinition)
    and a.group_names_by_key.get(a.key) not in ("ingestion", "inference", "monitoring")
]


def land_sample(resources: dict[str, Any], rows: int, *, seed: int, start_udi: int = 1) -> str:
    """Drop ``rows`` generated rows into the landing folder; returns the file name."""
    landing: LandingArea = resources["landing"]
    name = f"sample_{start_udi:08d}.csv"
    sample = generate_ai4i(rows, seed=seed, start_udi=start_udi, burn_in=5_000)
    landing.drop(sample, name)
    return name


def read_feature_table(state: StatePaths) -> pd.DataFrame:
    """The feature table the last ``feature_table`` materialization stored, read whole
    (derived features computed, as training reads them)."""
    storage = AssetStorage(base_dir=str(state.feature_store))
    table = storage.load_table(dg.AssetKey("feature_table"))
    return read_features(table, DATASET, table_columns(DATASET, table.columns))


INGESTION_ASSET = "raw_observations"
SCORING_ASSET = "batch_predictions"


@dataclass
class LifecycleResult:
    """The ingestion runs (one per new batch) and the run of everything downstream."""

    ingest: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    main: dg.ExecuteInProcessResult | None = None
    score: list[dg.ExecuteInProcessResult] = field(default_factory=list)

    @property
    def runs(self) -> list[dg.ExecuteInProcessResult]:
        """Every run: ingestion, training, then scoring of each new batch."""
        return [*self.ingest, *([self.main] if self.main is not None else []), *self.score]

    @property
    def success(self) -> bool:
        """Whether every run succeeded."""
        return all(r.success for r in self.runs)

    @property
    def all_events(self) -> list[dg.DagsterEvent]:
        """Events of every run, in run order."""
        return [e for r in self.runs for e in r.all_events]

    @property
    def run_id(self) -> str:
        """The training run's id (else the last run's)."""
        return self.main.run_id if self.main is not None else self.runs[-1].run_id

    def output_for_node(self, node: str) -> Any:
        """An output of the downstream run."""
        assert self.main is not None, "no downstream run"
        return self.main.output_for_node(node)

    def get_asset_materialization_events(self) -> list[dg.DagsterEvent]:
        """Materializations of every run."""
        return [e for r in self.runs for e in r.get_asset_materialization_events()]

    def asset_materializations_for_node(self, node: str) -> list[dg.AssetMaterialization]:
        """Materializations of ``node`` in every run."""
        return [m for r in self.runs for m in r.asset_materializations_for_node(node)]

    def get_asset_check_evaluations(self) -> list[dg.AssetCheckEvaluation]:
        """Check evaluations of every run."""
        return [c for r in self.runs for c in r.get_asset_check_evaluations()]


def ingest_pending(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    run_config: dict[str, Any] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Plan new batches (landed files, SQL rows) and ingest each in its own run."""
    found = register_new_batches(instance, resources["sources"], resources["feature_store"])
    return [
        dg.materialize(
            ASSETS,
            instance=instance,
            resources=resources,
            partition_key=plan.key,
            selection=[INGESTION_ASSET],
            run_config=run_config or {},
            raise_on_error=False,
        )
        for plan in found.to_ingest
    ]


def score_batches(
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    keys: list[str],
    run_config: dict[str, Any] | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Score each source batch in its own run (as ``mlplatform run`` does after training)."""
    known = set(instance.get_dynamic_partitions(SOURCE_BATCHES_NAME))
    missing = [k for k in keys if k not in known]
    if missing:
        instance.add_dynamic_partitions(SOURCE_BATCHES_NAME, missing)
    return [
        dg.materialize(
            ASSETS,
            instance=instance,
            resources=resources,
            partition_key=key,
            selection=[SCORING_ASSET],
            run_config=run_config or {},
            raise_on_error=False,
        )
        for key in keys
    ]


def _partition_of(run: dg.ExecuteInProcessResult) -> str:
    return str(run.dagster_run.tags["dagster/partition"])


def materialize_all(
    resources: dict[str, Any],
    run_config: dict[str, Any] | None = None,
    selection: Any = None,
    instance: dg.DagsterInstance | None = None,
) -> LifecycleResult:
    """Ingest new batches, train, then score the new batches (or just ``selection``).

    As ``mlplatform run`` does: one run per new batch, one run of training, one
    scoring run per batch ingested. Nothing raises; ``success`` is whether every run
    succeeded. With ``selection``, only the selected assets run (scoring of every
    stored batch when ``batch_predictions`` is selected).
    """
    instance = instance or dg.DagsterInstance.ephemeral()
    wanted = None if selection is None else list(selection)
    result = LifecycleResult()
    if wanted is None or INGESTION_ASSET in wanted:
        result.ingest = ingest_pending(resources, instance)
    rest = (
        list(DOWNSTREAM)
        if wanted is None
        else [a for a in wanted if a not in (INGESTION_ASSET, SCORING_ASSET)]
    )
    if rest:
        result.main = dg.materialize(
            ASSETS,
            instance=instance,
            resources=resources,
            run_config=run_config or {},
            raise_on_error=False,
            selection=rest,
        )
    if wanted is None:
        # new data is scored by whichever model is champion now: a failed gate leaves
        # the old champion serving
        ingested = [_partition_of(r) for r in result.ingest if r.success]
        result.score = score_batches(resources, instance, ingested)
    elif SCORING_ASSET in wanted:
        keys = sorted({m.key for m in resources["feature_store"].latest()})
        result.score = score_batches(resources, instance, keys)
    return result


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
