"""Evaluation plots as PNG bytes: confusion matrix, precision-recall and ROC curves.

Uses matplotlib's object API on an Agg canvas (no pyplot global state, no screen).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

__all__ = [
    "confusion_matrix_png",
    "drift_png",
    "precision_recall_png",
    "probability_histogram_png",
    "roc_png",
]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def confusion_matrix_png(matrix: list[list[int]], title: str = "Confusion matrix") -> bytes:
    """``[[tn, fp], [fn, tp]]`` as an annotated heat map."""
    m = np.asarray(matrix)
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        colour = "white" if v > m.max() / 2 else "black"
        ax.text(j, i, f"{v:,}", ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks([0, 1], ["no failure", "failure"])
    ax.set_yticks([0, 1], ["no failure", "failure"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    return _png(fig)


def precision_recall_png(
    y_true: np.ndarray, y_score: np.ndarray, threshold: float, min_recall: float | None = None
) -> bytes:
    """Precision-recall curve with the operating point at ``threshold`` marked."""
    precision, recall, thresholds = precision_recall_curve(y_true, y_score)
    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.add_subplot()
    ax.plot(recall, precision, lw=1.5)
    if thresholds.size:
        k = int(np.clip(np.searchsorted(thresholds, threshold), 0, thresholds.size - 1))
        ax.scatter(
            [recall[k]],
            [precision[k]],
            color="crimson",
            zorder=3,
            label=f"threshold {threshold:.2f}",
        )
    if min_recall is not None:
        ax.axvline(min_recall, color="grey", ls="--", lw=1, label=f"min recall {min_recall:.2f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title("Precision-recall (test split)")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def roc_png(y_true: np.ndarray, y_score: np.ndarray) -> bytes:
    """ROC curve with the chance diagonal."""
    fpr, tpr, _ = roc_curve(y_true, y_score)
    fig = Figure(figsize=(4.2, 3.4))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=1.5)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC (test split)")
    return _png(fig)


def probability_histogram_png(
    counts: tuple[int, ...] | list[int], threshold: float | None
) -> bytes:
    """Counts of failure probabilities in equal bins on [0, 1], the threshold marked."""
    values = np.asarray(counts, dtype="float64")
    edges = np.linspace(0.0, 1.0, len(values) + 1)
    fig = Figure(figsize=(5.0, 2.8))
    ax = fig.add_subplot()
    ax.bar(edges[:-1], values, width=np.diff(edges), align="edge", color="#4c72b0")
    ax.set_yscale("symlog")
    if threshold is not None and 0.0 <= threshold <= 1.0:
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:.3g}")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("predicted failure probability")
    ax.set_ylabel("rows")
    ax.set_xlim(0.0, 1.0)
    return _png(fig)


def drift_png(features: list[str], psi: list[float], threshold: float) -> bytes:
    """PSI per feature as horizontal bars, the drift threshold marked."""
    fig = Figure(figsize=(5.0, 0.3 * max(4, len(features)) + 0.8))
    ax = fig.add_subplot()
    values = np.nan_to_num(np.asarray(psi, dtype="float64"))
    colours = ["#c44e52" if v >= threshold else "#4c72b0" for v in values]
    ax.barh(features, values, color=colours)
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"PSI {threshold:g}")
    ax.invert_yaxis()
    ax.set_xlabel("population stability index vs training")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def live_metrics_png(metrics: pd.DataFrame, recall_floor: float) -> bytes:
    """Live recall and precision per window (from :func:`~mlplatform.core.monitoring.live_metrics`),
    the recall floor marked."""
    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.add_subplot()
    starts = pd.to_datetime(metrics["window_start"], utc=True)
    ax.plot(starts, metrics["recall"], marker="o", label="live recall")
    ax.plot(starts, metrics["precision"], marker="s", label="live precision")
    ax.axhline(
        recall_floor, color="#c44e52", linestyle="--", label=f"recall floor {recall_floor:g}"
    )
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("window start (UTC)")
    ax.legend(loc="lower left", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)
