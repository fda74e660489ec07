"""Registry: every candidate becomes an MLflow model version; only a passed gate promotes."""

import json
import os
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from mlplatform.core import ledger as core_ledger
from mlplatform.core import serving as core_serving
from mlplatform.core.digest import frame_digest
from mlplatform.core.evaluation import CandidateEvaluation
from mlplatform.core.features import AS_OF_ATTR, DIGEST_ATTR, model_inputs
from mlplatform.core.gate import GateDecision
from mlplatform.core.models import TrainedModel
from mlplatform.core.serving import TrainingReference
from mlplatform.core.split import SPLIT_COLUMN
from mlplatform.defs.common import DATASET, OWNER, REGISTRY, code_version
from mlplatform.defs.evaluation import gate_metadata
from mlplatform.defs.policies import EXTERNAL_SERVICE_RETRY
from mlplatform.resources.ledger import (
    ChampionMovedSinceGateError,
    GateChampion,
    PromotionLedger,
    RolledBackVersionError,
    move_champion,
)
from mlplatform.resources.mlflow_registry import MlflowRegistry, ModelVersionRef
from mlplatform.settings import MLFLOW_UI_URL_ENV

TRAINING_REFERENCE_DOC = "training_reference.json"
CANDIDATE_SEARCH_DOC = "candidate_search.json"

RECALL_GATE_CHECK = "recall_gate"
GATE_PASSED_TAG = "gate.passed"
GATE_DECISION_TAG = "gate.decision"
CANDIDATE_TAG = "candidate"


def mlflow_ui_url(tracking_uri: str) -> str:
    """Base URL of the MLflow UI: ``MLPLATFORM_MLFLOW_UI_URL``, an http(s) tracking
    server itself, else where ``mlflow ui`` listens by default."""
    configured = os.environ.get(MLFLOW_UI_URL_ENV)
    if configured:
        return configured.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def mlflow_links(tracking_uri: str, ref: ModelVersionRef) -> dict[str, dg.MetadataValue]:
    """URL metadata: the version's MLflow run and its model-version page."""
    base = mlflow_ui_url(tracking_uri)
    return {
        "mlflow_run": dg.MetadataValue.url(f"{base}/#/runs/{ref.run_id}"),
        "mlflow_model_version": dg.MetadataValue.url(
            f"{base}/#/models/{ref.name}/versions/{ref.version}"
        ),
    }


@dataclass(frozen=True)
class ChampionState:
    """The champion after a promotion step: who it is, and whether this run moved it."""

    name: str
    version: str | None
    previous_version: str | None
    promoted: bool
    not_promoted_reason: str | None = None


@dg.asset(
    group_name=REGISTRY,
    kinds={"mlflow", "sklearn"},
    owners=[OWNER],
    code_version=code_version(__file__, "registered_model", uses=(core_serving,)),
    retry_policy=EXTERNAL_SERVICE_RETRY,
)
def registered_model(
    context: dg.AssetExecutionContext,
    candidate_model: TrainedModel,
    model_evaluation: CandidateEvaluation,
    gate_decision: GateDecision,
    train_test_split: pd.DataFrame,
    mlflow_registry: MlflowRegistry,
) -> dg.Output[ModelVersionRef]:
    """The candidate logged to MLflow (params, metrics, signature, digest) as a new version."""
    train = train_test_split[train_test_split[SPLIT_COLUMN] == "train"]
    digest = frame_digest(train)
    report = model_evaluation.candidate
    ref = mlflow_registry.log_and_register(
        pipeline=candidate_model.pipeline,
        params={
            "model_name": candidate_model.model_name,
            **{f"model.{k}": v for k, v in candidate_model.params.items()},
            "decision_threshold": candidate_model.threshold,
            "threshold_source": candidate_model.threshold_source,
            "seed": candidate_model.seed,
            "train_rows": candidate_model.n_train_rows,
            "fit_rows": candidate_model.n_fit_rows,
            "test_rows": report.n_rows,
            "features": ",".join(DATASET.model_features),
            # enough to rebuild the training set: store as of this time, then the split
            AS_OF_ATTR: str(train_test_split.attrs.get(AS_OF_ATTR, "")),
            DIGEST_ATTR: str(train_test_split.attrs.get(DIGEST_ATTR, "")),
        },
        metrics={**report.metrics(), "fit_seconds": candidate_model.fit_seconds},
        run_tags={
            "dagster_run_id": context.run.run_id,
            "dataset": DATASET.name,
            "test_digest": model_evaluation.test_digest,
        },
        version_tags={
            GATE_PASSED_TAG: str(gate_decision.passed).lower(),
            GATE_DECISION_TAG: json.dumps(gate_decision.to_dict()),
            CANDIDATE_TAG: candidate_model.model_name,
            "dagster_run_id": context.run.run_id,
        },
        input_example=model_inputs(train.head(5), DATASET),
        training_frame=train,
        dataset_digest=digest,
        training_ids=train[DATASET.entity_id],
        documents={
            "gate_decision.json": gate_decision.to_dict(),
            # what the training rows looked like: the train/serve checks of scoring
            TRAINING_REFERENCE_DOC: TrainingReference.from_frame(train, DATASET).to_dict(),
            # how this model was chosen: every candidate's best configuration, ranked
            **({CANDIDATE_SEARCH_DOC: candidate_model.search} if candidate_model.search else {}),
        },
        images=model_evaluation.plots,
    )
    context.log.info(f"registered {ref.name} version {ref.version} (run {ref.run_id})")
    return dg.Output(
        ref,
        metadata={
            "model_name": ref.name,
            "version": ref.version,
            "mlflow_run_id": ref.run_id,
            "model_uri": ref.uri,
            "training_digest": digest,
            "feature_as_of": str(train_test_split.attrs.get(AS_OF_ATTR, "")),
            "gate_passed": gate_decision.passed,
            **mlflow_links(mlflow_registry.tracking_uri, ref),
        },
    )


@dg.asset_check(
    asset=registered_model,
    name=RECALL_GATE_CHECK,
    blocking=True,
    additional_ins={"gate_decision": dg.AssetIn("gate_decision")},
)
def recall_gate(
    registered_model: ModelVersionRef, gate_decision: GateDecision, mlflow_registry: MlflowRegistry
) -> dg.AssetCheckResult:
    """The registered version passed the recall gate (blocks promotion when it did not)."""
    recorded = mlflow_registry.version_tags(registered_model).get(GATE_PASSED_TAG)
    consistent = recorded == str(gate_decision.passed).lower()
    return dg.AssetCheckResult(
        passed=gate_decision.passed and consistent,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate_decision.summary()
        + ("" if consistent else f"; registry tag {GATE_PASSED_TAG}={recorded!r} disagrees"),
        metadata={**gate_metadata(gate_decision), "version": registered_model.version},
    )


@dg.asset(
    group_name=REGISTRY,
    kinds={"mlflow"},
    owners=[OWNER],
    code_version=code_version(__file__, "champion_model", "ChampionState", uses=(core_ledger,)),
    retry_policy=EXTERNAL_SERVICE_RETRY,
)
def champion_model(
    context: dg.AssetExecutionContext,
    registered_model: ModelVersionRef,
    gate_decision: GateDecision,
    mlflow_registry: MlflowRegistry,
    ledger: PromotionLedger,
) -> dg.Output[ChampionState]:
    """The champion alias: moved to the new version only when its gate passed, and recorded."""
    previous = mlflow_registry.champion()
    previous_version = previous.version if previous else None
    entry = None
    refused: str | None = None
    # Blocking checks do not stop declarative automation (dagster#17332): read the decision here.
    if gate_decision.passed:
        try:
            entry = move_champion(
                mlflow_registry,
                ledger,
                action="promote",
                to_version=registered_model.version,
                reason=gate_decision.summary(),
                gate_passed=True,
                dagster_run_id=context.run.run_id,
                gate_champion=_gate_champion(context, gate_decision),
            )
        except (RolledBackVersionError, ChampionMovedSinceGateError) as exc:
            refused = str(exc)
            context.log.warning(refused)
    current = mlflow_registry.champion()
    state = ChampionState(
        registered_model.name,
        current.version if current else None,
        previous_version,
        promoted=entry is not None,
        not_promoted_reason=refused,
    )
    if entry is not None:
        context.log.info(
            f"champion: {entry.from_version or '(none)'} -> version {entry.to_version} "
            f"(ledger entry {entry.id})"
        )
    elif state.version == registered_model.version:
        context.log.info(f"version {registered_model.version} already is the champion")
    elif not gate_decision.passed:
        context.log.warning(
            f"gate failed for version {registered_model.version}: champion stays at "
            f"{previous_version or '(none)'}; {gate_decision.summary()}"
        )
    return dg.Output(
        state,
        metadata={
            "champion_version": state.version or "none",
            "previous_version": previous_version or "none",
            "promoted": state.promoted,
            **({"not_promoted": refused} if refused else {}),
            "gate_champion_version": gate_decision.champion_version or "none",
            "ledger_entry": str(entry.id) if entry else "none",
            "champion_uri": f"models:/{state.name}@{mlflow_registry.champion_alias}",
            **(mlflow_links(mlflow_registry.tracking_uri, current) if current else {}),
        },
    )


def _gate_champion(
    context: dg.AssetExecutionContext, decision: GateDecision
) -> GateChampion | None:
    """The champion the gate compared the candidate with (the promotion must still find it)."""
    if decision.first_model:
        return GateChampion(None)
    if decision.champion_version is not None:
        return GateChampion(decision.champion_version)
    # a decision stored before the gate recorded its champion: nothing to check against
    context.log.warning(
        "the gate decision does not name the champion it compared the candidate with; "
        "promoting without checking that the champion is unchanged"
    )
    return None
