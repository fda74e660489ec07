"""Evaluation of a fitted pipeline on the untouched test split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline

from mlplatform.core.features import model_inputs
from mlplatform.core.schema import DatasetSpec

__all__ = ["EvaluationReport", "evaluate", "metrics_from_predictions"]


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics of one model on one set of test rows."""

    n_rows: int
    n_positive: int
    recall: float
    precision: float
    f1: float
    roc_auc: float
    pr_auc: float
    accuracy: float
    true_negative: int
    false_positive: int
    false_negative: int
    true_positive: int

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, by name (what the gate and MLflow read)."""
        return {k: float(v) for k, v in asdict(self).items()}

    def confusion_matrix(self) -> list[list[int]]:
        """``[[tn, fp], [fn, tp]]``."""
        return [
            [self.true_negative, self.false_positive],
            [self.false_negative, self.true_positive],
        ]


def metrics_from_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray
) -> EvaluationReport:
    """Every metric from labels, predicted labels and positive-class scores.

    Raises
    ------
    ValueError
        If ``y_true`` has a single class: ranking metrics are then undefined and a
        gate on them would be meaningless.
    """
    y_true = np.asarray(y_true).astype("int64")
    if np.unique(y_true).size < 2:
        raise ValueError(
            f"the test rows hold a single class ({np.unique(y_true).tolist()}): "
            "recall, precision and AUCs are undefined; more labelled data is needed"
        )
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return EvaluationReport(
        n_rows=int(y_true.size),
        n_positive=int(y_true.sum()),
        recall=float(recall_score(y_true, y_pred, zero_division=0)),
        precision=float(precision_score(y_true, y_pred, zero_division=0)),
        f1=float(f1_score(y_true, y_pred, zero_division=0)),
        roc_auc=float(roc_auc_score(y_true, y_score)),
        pr_auc=float(average_precision_score(y_true, y_score)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        true_negative=int(tn),
        false_positive=int(fp),
        false_negative=int(fn),
        true_positive=int(tp),
    )


def evaluate(pipeline: Pipeline, test: pd.DataFrame, spec: DatasetSpec) -> EvaluationReport:
    """Score ``pipeline`` on the test rows with its own decision threshold."""
    x = model_inputs(test, spec)
    y_score = pipeline.predict_proba(x)[:, 1]
    y_pred = pipeline.predict(x)
    return metrics_from_predictions(test[spec.target].to_numpy(), y_pred, y_score)


@dataclass(frozen=True)
class CandidateEvaluation:
    """A candidate's report and, when a champion exists, both scored on the same rows.

    The comparison rows are the test rows the champion never trained on, so neither
    model is scored on rows it has seen.
    """

    candidate: EvaluationReport
    test_digest: str
    plots: dict[str, bytes]
    champion_version: str | None = None
    champion: EvaluationReport | None = None
    candidate_same_rows: EvaluationReport | None = None
