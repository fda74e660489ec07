"""Unit tests of evaluation metrics (mlplatform.core.evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.evaluation import EvaluationReport, evaluate, metrics_from_predictions
from mlplatform.core.features import model_inputs
from mlplatform.core.models import train_candidate
from mlplatform.core.schema import AI4I

from ._frames import train_test

# Ten rows by hand: 4 positives; predictions give tp=3, fn=1, fp=2, tn=4.
Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
Y_PRED = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
Y_SCORE = np.array([0.9, 0.8, 0.7, 0.3, 0.75, 0.6, 0.2, 0.1, 0.05, 0.4])


def test_metrics_equal_hand_computed_values() -> None:
    report = metrics_from_predictions(Y_TRUE, Y_PRED, Y_SCORE)
    tp, fn, fp, tn = 3, 1, 2, 4
    assert (report.true_positive, report.false_negative) == (tp, fn)
    assert (report.false_positive, report.true_negative) == (fp, tn)
    assert report.n_rows == 10
    assert report.n_positive == 4
    assert report.recall == pytest.approx(3 / 4)
    assert report.precision == pytest.approx(3 / 5)
    assert report.f1 == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert report.f1 == pytest.approx(2 / 3)
    assert report.accuracy == pytest.approx(7 / 10)
    # ROC AUC: of 4 x 6 positive-negative pairs, the positive scores higher in 6+6+5+3.
    assert report.roc_auc == pytest.approx(20 / 24)


def test_pr_auc_is_average_precision_by_hand() -> None:
    y_true = np.array([1, 0, 1, 0])
    y_score = np.array([0.9, 0.8, 0.7, 0.1])
    report = metrics_from_predictions(y_true, (y_score >= 0.5).astype(int), y_score)
    # Ranked: +, -, +, -: precision at each positive 1/1 and 2/3, each with recall step 1/2.
    assert report.pr_auc == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert report.roc_auc == pytest.approx(3 / 4)


def test_confusion_matrix_layout() -> None:
    report = metrics_from_predictions(Y_TRUE, Y_PRED, Y_SCORE)
    assert report.confusion_matrix() == [[4, 2], [1, 3]]
    tn_fp, fn_tp = report.confusion_matrix()
    assert tn_fp == [report.true_negative, report.false_positive]
    assert fn_tp == [report.false_negative, report.true_positive]


def test_metrics_dict_holds_every_field_as_float() -> None:
    report = metrics_from_predictions(Y_TRUE, Y_PRED, Y_SCORE)
    metrics = report.metrics()
    assert set(metrics) == {
        "n_rows", "n_positive", "recall", "precision", "f1", "roc_auc", "pr_auc", "accuracy",
        "true_negative", "false_positive", "false_negative", "true_positive",
    }  # fmt: skip
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["recall"] == 0.75
    assert metrics["false_positive"] == 2.0


def test_no_predicted_positives_gives_zero_precision_not_an_error() -> None:
    report = metrics_from_predictions(Y_TRUE, np.zeros(10, dtype=int), Y_SCORE)
    assert report.precision == 0.0
    assert report.recall == 0.0
    assert report.f1 == 0.0
    assert report.confusion_matrix() == [[6, 0], [4, 0]]


def test_perfect_predictions() -> None:
    report = metrics_from_predictions(Y_TRUE, Y_TRUE, Y_TRUE.astype(float))
    assert (report.recall, report.precision, report.f1, report.accuracy) == (1.0, 1.0, 1.0, 1.0)
    assert report.roc_auc == 1.0
    assert report.pr_auc == 1.0


def test_inputs_may_be_lists_or_series() -> None:
    a = metrics_from_predictions(list(Y_TRUE), list(Y_PRED), list(Y_SCORE))
    b = metrics_from_predictions(pd.Series(Y_TRUE), pd.Series(Y_PRED), pd.Series(Y_SCORE))
    assert a == b == metrics_from_predictions(Y_TRUE, Y_PRED, Y_SCORE)


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_truth_raises(label: int) -> None:
    y_true = np.full(5, label)
    with pytest.raises(ValueError, match="single class") as info:
        metrics_from_predictions(y_true, y_true, np.linspace(0.1, 0.9, 5))
    assert f"[{label}]" in str(info.value)


def test_evaluate_uses_the_pipelines_own_threshold() -> None:
    train, test = train_test(600, seed=3, test_size=0.2, split_seed=0)
    model = train_candidate(train, AI4I, model_name="logistic_regression", threshold=0.3)
    report = evaluate(model.pipeline, test, AI4I)
    x = model_inputs(test, AI4I)
    score = model.pipeline.predict_proba(x)[:, 1]
    expected = metrics_from_predictions(
        test[AI4I.target].to_numpy(), (score >= 0.3).astype(int), score
    )
    assert isinstance(report, EvaluationReport)
    assert report == expected
    assert report.n_rows == len(test)
    assert report.n_positive == int(test[AI4I.target].sum())
