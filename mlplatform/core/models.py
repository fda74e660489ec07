"""Candidate models: one sklearn ``Pipeline`` each, fitted on the training split only.

A pipeline is preprocessing (scaling of numeric columns, one-hot encoding of
categorical ones) followed by the classifier wrapped with its decision threshold,
so the very object that is evaluated, registered and served predicts with the
threshold it was gated on. Nothing is refitted at inference.

Adding a candidate is one entry in :data:`CANDIDATES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.gaussian_process import GaussianProcessClassifier
from sklearn.gaussian_process.kernels import RBF, ConstantKernel
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve
from sklearn.model_selection import (
    FixedThresholdClassifier,
    StratifiedKFold,
    StratifiedShuffleSplit,
    cross_val_predict,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from mlplatform.core.features import model_inputs
from mlplatform.core.schema import DatasetSpec

__all__ = [
    "CANDIDATES",
    "Candidate",
    "TrainedModel",
    "build_pipeline",
    "stratified_subsample",
    "threshold_for_recall",
    "train_candidate",
]


@dataclass(frozen=True)
class Candidate:
    """A named model family: a classifier factory, its defaults, row cap and search space.

    ``max_fit_rows`` bounds the cost of models whose fit is super-linear in rows
    (the Gaussian process is cubic): above it, a stratified subsample is fitted.
    ``default_threshold`` is the decision threshold used unless one is configured;
    None means it is tuned on out-of-fold predictions (for models whose
    probabilities are not calibrated around 0.5, like the Gaussian process, whose
    positive-class probabilities rarely pass 0.5 at a 3 % base rate).
    ``search_space`` maps hyperparameters to the values a candidate search tries
    (over the defaults; see :mod:`mlplatform.core.selection`); empty means the
    defaults are the only configuration.
    """

    name: str
    description: str
    factory: Callable[..., ClassifierMixin]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    max_fit_rows: int | None = None
    default_threshold: float | None = 0.5
    search_space: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.search_space) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"candidate {self.name!r}: search space names unknown parameters "
                f"{sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        empty = sorted(k for k, values in self.search_space.items() if len(values) == 0)
        if empty:
            raise ValueError(f"candidate {self.name!r}: no values to search for {empty}")

    def make(self, params: Mapping[str, Any], seed: int) -> ClassifierMixin:
        """A fresh, unfitted classifier with ``params`` over the defaults."""
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"candidate {self.name!r}: unknown parameters {sorted(unknown)}; "
                f"known: {sorted(self.defaults)}"
            )
        return self.factory(**{**self.defaults, **params}, random_state=seed)


def _gaussian_process(
    *, length_scale: float, amplitude: float, optimize_kernel: bool, random_state: int
) -> ClassifierMixin:
    # With optimize_kernel off the kernel is fixed at (amplitude, length_scale): one
    # Laplace fit, no optimiser loop of repeated cubic fits, so its cost is bounded by
    # the row cap alone; the candidate search tries a few fixed kernels instead.
    bounds: Any = "fixed" if not optimize_kernel else (1e-5, 1e5)
    kernel = ConstantKernel(amplitude, constant_value_bounds=bounds) * RBF(
        length_scale=length_scale, length_scale_bounds=bounds
    )
    return GaussianProcessClassifier(
        kernel=kernel,
        optimizer="fmin_l_bfgs_b" if optimize_kernel else None,
        random_state=random_state,
    )


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate(
            "gaussian_process",
            "Gaussian-process classifier with an RBF kernel (the baseline); "
            "cubic in rows (and its kernel optimiser makes many fits), so fitted on a "
            "capped stratified subsample.",
            _gaussian_process,
            {"length_scale": 1.0, "amplitude": 1.0, "optimize_kernel": True},
            max_fit_rows=1_000,
            default_threshold=None,
            search_space={
                "length_scale": [2.0, 4.0, 8.0],
                "amplitude": [100.0],
                "optimize_kernel": [False],
            },
        ),
        Candidate(
            "logistic_regression",
            "L2-regularised logistic regression with balanced class weights.",
            LogisticRegression,
            {"C": 1.0, "class_weight": "balanced", "max_iter": 2_000},
            search_space={"C": [0.01, 0.1, 1.0, 10.0, 100.0], "class_weight": [None, "balanced"]},
        ),
        Candidate(
            "random_forest",
            "Random forest with balanced-subsample class weights.",
            RandomForestClassifier,
            {
                "n_estimators": 300,
                "min_samples_leaf": 1,
                "class_weight": "balanced_subsample",
                "max_depth": None,
                "max_features": "sqrt",
                "n_jobs": -1,
            },
            search_space={
                "n_estimators": [100],
                "min_samples_leaf": [1, 2, 4],
                "max_depth": [None, 12],
                "max_features": ["sqrt", 0.5],
                "class_weight": ["balanced_subsample", None],
            },
        ),
        Candidate(
            "hist_gradient_boosting",
            "Histogram gradient boosting (fast, strong on tabular data).",
            HistGradientBoostingClassifier,
            {
                "max_iter": 300,
                "learning_rate": 0.1,
                "max_leaf_nodes": 31,
                "min_samples_leaf": 20,
                "l2_regularization": 0.0,
                "class_weight": None,
            },
            search_space={
                "max_iter": [150],
                "learning_rate": [0.05, 0.1, 0.2],
                "max_leaf_nodes": [15, 31, 63],
                "min_samples_leaf": [5, 10, 20, 40],
                "l2_regularization": [0.0, 1.0],
                "class_weight": [None, "balanced"],
            },
        ),
    )
}


def build_pipeline(spec: DatasetSpec, classifier: ClassifierMixin, threshold: float) -> Pipeline:
    """Preprocessing and ``classifier`` with its decision ``threshold``, unfitted.

    Columns the schema does not declare as features are dropped by the
    preprocessing step, so identifiers and leakage can never reach the classifier.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"decision threshold must be in (0, 1), got {threshold!r}")
    preprocess = ColumnTransformer(
        [
            ("numeric", StandardScaler(), spec.numeric_features),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                spec.categorical_features,
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    return Pipeline(
        [
            ("preprocess", preprocess),
            (
                "classifier",
                FixedThresholdClassifier(
                    classifier, threshold=threshold, response_method="predict_proba"
                ),
            ),
        ]
    )


def threshold_for_recall(y_true: np.ndarray, y_score: np.ndarray, target_recall: float) -> float:
    """The highest threshold whose recall on (``y_true``, ``y_score``) reaches ``target_recall``.

    The highest such threshold has the fewest false alarms among those meeting the
    target. If no threshold reaches it, the lowest observed score is returned
    (maximum recall), clipped into (0, 1).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
    _, recall, thresholds = precision_recall_curve(y_true, y_score)
    meets = np.flatnonzero(recall[:-1] >= target_recall)
    chosen = float(thresholds[meets[-1]]) if meets.size else float(thresholds[0])
    return float(np.clip(chosen, 1e-6, 1.0 - 1e-6))


@dataclass(frozen=True)
class TrainedModel:
    """A fitted candidate and the facts of its fit."""

    pipeline: Pipeline
    model_name: str
    params: dict[str, Any]
    threshold: float
    seed: int
    n_train_rows: int
    n_fit_rows: int
    fit_seconds: float
    threshold_source: str = "configured"
    # the candidate search that chose this model (rule, one row per candidate, seconds);
    # empty when one candidate was trained as configured
    search: dict[str, Any] = field(default_factory=dict)


def stratified_subsample(y: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``cap`` rows, keeping the class shares of ``y``.

    Every position when ``cap`` is None or not below the row count.
    """
    if cap is None or len(y) <= cap:
        return np.arange(len(y))
    splitter = StratifiedShuffleSplit(n_splits=1, train_size=cap, random_state=seed)
    keep, _ = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(keep)


def _capped(train: pd.DataFrame, target: str, cap: int | None, seed: int) -> pd.DataFrame:
    if cap is None or len(train) <= cap:
        return train
    return train.iloc[stratified_subsample(train[target].to_numpy(), cap, seed)]


def train_candidate(
    train: pd.DataFrame,
    spec: DatasetSpec,
    *,
    model_name: str,
    params: Mapping[str, Any] | None = None,
    threshold: float | Literal["default", "tune"] = "default",
    target_recall: float = 0.85,
    cv_folds: int = 3,
    seed: int = 0,
    max_fit_rows: int | None = None,
) -> TrainedModel:
    """Fit candidate ``model_name`` on the training rows ``train`` only.

    Parameters
    ----------
    train : DataFrame
        Training rows of the feature table (test rows must not be passed).
    spec : DatasetSpec
        Declares the features and the target.
    model_name : str
        A key of :data:`CANDIDATES`.
    params : mapping, optional
        Overrides of the candidate's default hyperparameters.
    threshold : float, "default" or "tune"
        Decision threshold on the positive-class probability. ``"tune"`` tunes it
        on out-of-fold predictions of the training rows (``cv_folds`` stratified
        folds) to the highest threshold reaching ``target_recall``; the test
        split is never used for it. ``"default"`` uses the candidate's own
        default (which may itself be "tune").
    target_recall : float
        Recall the tuned threshold aims at.
    cv_folds : int
        Folds for the out-of-fold predictions when tuning.
    seed : int
        Seed for the classifier and any subsample.
    max_fit_rows : int, optional
        Row cap; defaults to the candidate's own cap (None: no cap).
    """
    if model_name not in CANDIDATES:
        raise ValueError(f"unknown candidate {model_name!r}; choose from {sorted(CANDIDATES)}")
    candidate = CANDIDATES[model_name]
    params = dict(params or {})
    cap = max_fit_rows if max_fit_rows is not None else candidate.max_fit_rows
    fit_rows = _capped(train, spec.target, cap, seed)
    x, y = model_inputs(fit_rows, spec), fit_rows[spec.target].to_numpy()
    started = time.perf_counter()
    source = "configured"
    if threshold == "default":
        default = candidate.default_threshold
        threshold = "tune" if default is None else default
        source = "candidate default"
    # One OpenMP thread: at these row counts a second thread gains little, and on a
    # busy small machine the many short parallel regions of histogram boosting wait
    # on descheduled threads (a 0.5 s fit was seen to take 27 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        if threshold == "tune":
            probe = build_pipeline(spec, candidate.make(params, seed), 0.5)
            folds = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
            oof = cross_val_predict(clone(probe), x, y, cv=folds, method="predict_proba")[:, 1]
            threshold = threshold_for_recall(y, oof, target_recall)
            source = f"tuned on {cv_folds}-fold out-of-fold predictions for recall {target_recall}"
        pipeline = build_pipeline(spec, candidate.make(params, seed), threshold)
        pipeline.fit(x, y)
    return TrainedModel(
        pipeline=pipeline,
        model_name=model_name,
        params={**candidate.defaults, **params},
        threshold=threshold,
        seed=seed,
        n_train_rows=len(train),
        n_fit_rows=len(fit_rows),
        fit_seconds=time.perf_counter() - started,
        threshold_source=source,
    )
