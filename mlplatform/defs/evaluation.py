"""Evaluation: metrics on the untouched test split, and the recall gate's decision."""

from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from mlplatform.core import evaluation as core_evaluation
from mlplatform.core import gate as core_gate
from mlplatform.core import plots as core_plots
from mlplatform.core.digest import frame_digest
from mlplatform.core.evaluation import (
    CandidateEvaluation,
    bootstrap_intervals,
    evaluate,
    metrics_from_predictions,
    permutation_importances,
    slice_reports,
)
from mlplatform.core.features import model_inputs
from mlplatform.core.gate import GateDecision, GateThresholds, decide
from mlplatform.core.models import TrainedModel
from mlplatform.core.plots import confusion_matrix_png, precision_recall_png, roc_png
from mlplatform.core.split import SPLIT_COLUMN
from mlplatform.defs.common import DATASET, EVALUATION, OWNER, code_version, image_md
from mlplatform.defs.policies import EXTERNAL_SERVICE_RETRY
from mlplatform.resources.mlflow_registry import MlflowRegistry


class GateConfig(dg.Config):
    """Thresholds of the recall gate."""

    min_recall: float = Field(
        default=0.70,
        description="Minimum for the lower bound of the test recall's bootstrap interval.",
    )
    min_precision: float = Field(
        default=0.50, description="Minimum precision: a model that flags everything fails."
    )
    max_recall_drop_vs_champion: float = Field(
        default=0.05,
        description="How much lower than the champion's recall (same test rows) is tolerated.",
    )
    min_slice_recall: float = Field(
        default=0.50, description="Minimum recall in every slice (product type)."
    )
    min_slice_positives: int = Field(
        default=10, description="Slices with fewer positives are reported but not judged."
    )


class EvaluationConfig(dg.Config):
    """How the candidate is evaluated on the test split."""

    slice_column: str | None = Field(
        default=DATASET.slice_column,
        description="Categorical feature whose values define slices (recall per slice, judged "
        "by the gate); null: no slices. Default: the dataset spec's slice_column.",
    )
    bootstrap_resamples: int = Field(default=2_000, description="Bootstrap resamples.")
    confidence_level: float = Field(default=0.95, description="Confidence level of intervals.")
    importance_repeats: int = Field(
        default=5, description="Shuffles per feature for permutation importance (0: skip)."
    )


@dg.asset(
    group_name=EVALUATION,
    kinds={"sklearn", "mlflow", "matplotlib"},
    owners=[OWNER],
    code_version=code_version(
        __file__, "model_evaluation", "EvaluationConfig", uses=(core_evaluation, core_plots)
    ),
    # it reads the champion (version, training ids, model) from MLflow
    retry_policy=EXTERNAL_SERVICE_RETRY,
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    candidate_model: TrainedModel,
    train_test_split: pd.DataFrame,
    mlflow_registry: MlflowRegistry,
) -> dg.Output[CandidateEvaluation]:
    """Recall, precision, F1, ROC-AUC, PR-AUC and confusion matrix on the untouched test rows."""
    test = train_test_split[train_test_split[SPLIT_COLUMN] == "test"]
    x, y = model_inputs(test, DATASET), test[DATASET.target].to_numpy()
    scores = candidate_model.pipeline.predict_proba(x)[:, 1]
    predicted = candidate_model.pipeline.predict(x)
    report = metrics_from_predictions(y, predicted, scores)
    intervals = bootstrap_intervals(
        report,
        n_resamples=config.bootstrap_resamples,
        level=config.confidence_level,
        seed=candidate_model.seed,
    )
    if config.slice_column is not None and config.slice_column not in test.columns:
        raise dg.Failure(
            f"model_evaluation: slice_column {config.slice_column!r} is not a column of the "
            f"feature table; choose one of {DATASET.categorical_features} or null",
            allow_retries=False,
        )
    slices = (
        slice_reports(y, predicted, test[config.slice_column])
        if config.slice_column is not None
        else {}
    )
    importances = (
        permutation_importances(
            candidate_model.pipeline,
            test,
            DATASET,
            repeats=config.importance_repeats,
            seed=candidate_model.seed,
        )
        if config.importance_repeats > 0
        else None
    )

    champion_ref = mlflow_registry.champion()
    champion_report = candidate_same_rows = None
    if champion_ref is not None:
        seen = mlflow_registry.training_ids(champion_ref)
        shared = test[~test[DATASET.entity_id].isin(seen)]
        champion_report = evaluate(mlflow_registry.load(champion_ref), shared, DATASET)
        candidate_same_rows = evaluate(candidate_model.pipeline, shared, DATASET)
        context.log.info(
            f"on the {len(shared)} test rows champion v{champion_ref.version} never trained on: "
            f"champion recall {champion_report.recall:.4f}, "
            f"candidate recall {candidate_same_rows.recall:.4f}"
        )
    plots = {
        "confusion_matrix.png": confusion_matrix_png(report.confusion_matrix()),
        "precision_recall.png": precision_recall_png(y, scores, candidate_model.threshold),
        "roc.png": roc_png(y, scores),
    }
    result = CandidateEvaluation(
        candidate=report,
        test_digest=frame_digest(test),
        plots=plots,
        champion_version=champion_ref.version if champion_ref else None,
        champion=champion_report,
        candidate_same_rows=candidate_same_rows,
        intervals=intervals,
        slices=slices,
        importances=importances,
    )
    context.log.info(
        f"candidate recall {report.recall:.4f}, precision {report.precision:.4f}, "
        f"ROC-AUC {report.roc_auc:.4f} on {report.n_rows} test rows"
    )
    metadata: dict[str, Any] = {k: v for k, v in report.metrics().items()}
    for name, interval in intervals.items():
        metadata[f"{name}_ci_low"] = interval.low
        metadata[f"{name}_ci_high"] = interval.high
    metadata["test_rows"] = report.n_rows
    metadata["test_positives"] = int(np.sum(y))
    metadata["slices"] = dg.MetadataValue.md(
        f"| {config.slice_column} | rows | positives | recall | precision |\n"
        + "|---|---|---|---|---|\n"
        + "\n".join(
            f"| {s.slice} | {s.n_rows} | {s.n_positive} | {s.recall:.4f} | {s.precision:.4f} |"
            for s in slices.values()
        )
        if slices
        else "no slices (slice_column is null)"
    )
    if importances is not None:
        metadata["permutation_importance"] = dg.MetadataValue.md(
            importances.to_markdown(index=False, floatfmt=".4f")
        )
    metadata["confusion_matrix"] = dg.MetadataValue.json(
        {"rows: actual [no failure, failure]": report.confusion_matrix()}
    )
    if champion_report is not None and candidate_same_rows is not None:
        metadata["champion_version"] = str(result.champion_version)
        metadata["comparison_rows"] = champion_report.n_rows
        metadata["champion_recall_same_rows"] = champion_report.recall
        metadata["candidate_recall_same_rows"] = candidate_same_rows.recall
    metadata["confusion_matrix_plot"] = image_md(plots["confusion_matrix.png"], "confusion matrix")
    metadata["precision_recall_plot"] = image_md(plots["precision_recall.png"], "PR curve")
    metadata["roc_plot"] = image_md(plots["roc.png"], "ROC curve")
    return dg.Output(result, metadata=metadata)


@dg.asset(
    group_name=EVALUATION,
    kinds={"python"},
    owners=[OWNER],
    code_version=code_version(
        __file__, "gate_decision", "GateConfig", "gate_metadata", uses=(core_gate,)
    ),
)
def gate_decision(
    context: dg.AssetExecutionContext, config: GateConfig, model_evaluation: CandidateEvaluation
) -> dg.Output[GateDecision]:
    """The recall gate's decision: every criterion with its value, threshold and verdict."""
    thresholds = GateThresholds(
        min_recall=config.min_recall,
        min_precision=config.min_precision,
        max_recall_drop_vs_champion=config.max_recall_drop_vs_champion,
        min_slice_recall=config.min_slice_recall,
        min_slice_positives=config.min_slice_positives,
    )
    champion, same_rows = model_evaluation.champion, model_evaluation.candidate_same_rows
    intervals = model_evaluation.intervals or {}
    decision = decide(
        model_evaluation.candidate.metrics(),
        thresholds,
        champion.metrics() if champion is not None else None,
        same_rows.metrics() if same_rows is not None else None,
        recall_interval=intervals.get("recall"),
        slices=model_evaluation.slices,
        champion_version=model_evaluation.champion_version,
    )
    log = context.log.info if decision.passed else context.log.warning
    log(decision.summary())
    return dg.Output(decision, metadata=gate_metadata(decision))


def gate_metadata(decision: GateDecision) -> dict[str, Any]:
    """Decision metadata: the verdict and a table of criteria."""
    rows = "\n".join(
        f"| {c.name} | {c.value:.4f} | {c.comparison} {c.threshold:.4f} | "
        f"{'pass' if c.passed else '**FAIL**'} | {c.note} |"
        for c in decision.criteria
    )
    return {
        "passed": decision.passed,
        "first_model": decision.first_model,
        "criteria": dg.MetadataValue.md(
            "| criterion | value | threshold | verdict | note |\n|---|---|---|---|---|\n" + rows
        ),
        "decision": dg.MetadataValue.json(decision.to_dict()),
    }
