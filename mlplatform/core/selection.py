"""Candidate search and champion selection on the training rows only.

Each candidate's configurations (sampled from its declared search space, see
:class:`mlplatform.core.models.Candidate`) are scored on out-of-fold predictions of
stratified K folds of the training rows: the decision threshold is tuned on those
predictions to reach the target recall, and a configuration is judged by the
declared :class:`SelectionRule` at that threshold (by default: its precision, ties
broken by PR-AUC). The same rule then picks the champion among the candidates'
best configurations, and the champion is refitted on every training row with the
tuned threshold baked into its pipeline, so the registered artifact predicts with
the threshold it was chosen with.

Class imbalance is handled twice: class weights (``None`` or ``"balanced"``, which
is the same as per-row sample weights) are part of the search spaces, and the
threshold is tuned for recall rather than left at 0.5.

The test split never reaches this module: callers pass the training rows only.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.metrics import average_precision_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlplatform.core.features import model_inputs
from mlplatform.core.models import (
    CANDIDATES,
    Candidate,
    TrainedModel,
    build_pipeline,
    stratified_subsample,
    threshold_for_recall,
    train_candidate,
)
from mlplatform.core.schema import DatasetSpec

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_CV_FOLDS",
    "DEFAULT_SEARCH_ITERATIONS",
    "METRICS",
    "SearchOutcome",
    "SearchResult",
    "Selection",
    "SelectionRule",
    "Trial",
    "fit_champion",
    "search_and_fit",
    "search_candidate",
    "search_configurations",
    "select_champion",
]

DEFAULT_CANDIDATES: tuple[str, ...] = (
    "gaussian_process",
    "logistic_regression",
    "random_forest",
    "hist_gradient_boosting",
)
"""Every registered candidate: the whole search fits the 60 s budget on 10,000 rows."""

DEFAULT_SEARCH_ITERATIONS = 6
"""Configurations tried per candidate (fewer when its search space is smaller)."""

DEFAULT_CV_FOLDS = 3
"""Stratified folds of the training rows for the out-of-fold predictions."""

METRICS: dict[str, str] = {
    "precision_at_target_recall": "out-of-fold precision at the threshold tuned for the "
    "target recall",
    "recall_at_threshold": "out-of-fold recall at the tuned threshold",
    "pr_auc": "out-of-fold PR-AUC (average precision)",
}
"""Metrics a :class:`SelectionRule` may rank by, with what they mean."""


@dataclass(frozen=True)
class SelectionRule:
    """How configurations and candidates are ranked, declared as data.

    A configuration *meets the target* when its tuned threshold reaches
    ``target_recall`` on the out-of-fold predictions. Those that meet it rank above
    those that do not; within each group the higher ``primary`` metric wins, then
    the higher ``tie_break``. With the defaults: the highest precision among the
    configurations meeting the recall target, ties broken by PR-AUC.
    """

    target_recall: float = 0.85
    primary: str = "precision_at_target_recall"
    tie_break: str = "pr_auc"

    def __post_init__(self) -> None:
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {self.target_recall!r}")
        for role, metric in (("primary", self.primary), ("tie_break", self.tie_break)):
            if metric not in METRICS:
                raise ValueError(
                    f"selection rule: unknown {role} metric {metric!r}; known: {sorted(METRICS)}"
                )

    def key(self, trial: Trial) -> tuple[bool, float, float]:
        """Sort key: the larger, the better under this rule."""
        return (trial.meets_target, trial.metric(self.primary), trial.metric(self.tie_break))

    def describe(self) -> str:
        """The rule in words, for metadata."""
        return (
            f"among configurations whose out-of-fold recall reaches {self.target_recall} at "
            f"their tuned threshold, the highest {METRICS[self.primary]}; "
            f"ties: the highest {METRICS[self.tie_break]}"
        )


@dataclass(frozen=True)
class Trial:
    """One configuration of a candidate, scored on out-of-fold predictions."""

    params: dict[str, Any]
    threshold: float
    recall: float
    precision: float
    pr_auc: float
    meets_target: bool
    seconds: float

    def metric(self, name: str) -> float:
        """The figure named ``name`` (a key of :data:`METRICS`)."""
        values = {
            "precision_at_target_recall": self.precision,
            "recall_at_threshold": self.recall,
            "pr_auc": self.pr_auc,
        }
        if name not in values:
            raise KeyError(f"unknown metric {name!r}; known: {sorted(values)}")
        return values[name]


@dataclass(frozen=True)
class SearchResult:
    """Every configuration tried for one candidate, and the best by the rule."""

    name: str
    trials: tuple[Trial, ...]
    best: Trial
    rule: SelectionRule
    cv_folds: int
    seed: int
    n_train_rows: int
    max_fit_rows: int | None
    fit_rows_per_fold: int
    n_planned: int
    stopped_by_budget: bool
    seconds: float


@dataclass(frozen=True)
class Selection:
    """The champion chosen by ``rule`` and every candidate ranked, best first."""

    rule: SelectionRule
    winner: SearchResult
    ranking: tuple[SearchResult, ...]

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate with its best configuration's CV figures, best first."""
        rows = []
        for rank, result in enumerate(self.ranking, start=1):
            best = result.best
            rows.append(
                {
                    "rank": rank,
                    "candidate": result.name,
                    "oof_precision": round(best.precision, 4),
                    "oof_recall": round(best.recall, 4),
                    "oof_pr_auc": round(best.pr_auc, 4),
                    "threshold": float(f"{best.threshold:.6g}"),
                    "meets_target": best.meets_target,
                    "configurations": f"{len(result.trials)}/{result.n_planned}",
                    "fit_rows_per_fold": result.fit_rows_per_fold,
                    "seconds": round(result.seconds, 2),
                    "params": _short_params(result.name, best.params),
                }
            )
        return rows

    def markdown(self) -> str:
        """:meth:`table` as a Markdown table."""
        rows = self.table()
        columns = list(rows[0])
        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
        ]
        lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class SearchOutcome:
    """The refitted champion, how it was chosen, and what the whole search cost."""

    model: TrainedModel
    selection: Selection
    search_seconds: float


def _short_params(name: str, params: Mapping[str, Any]) -> str:
    """The parameters that differ from the candidate's defaults, or that were searched."""
    candidate = CANDIDATES.get(name)
    if candidate is None:
        return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    shown = {
        k: v
        for k, v in params.items()
        if k in candidate.search_space or candidate.defaults.get(k) != v
    }
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "defaults"


def search_configurations(candidate: Candidate, n_iter: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``n_iter`` distinct configurations from the candidate's search space.

    The whole grid when it has at most ``n_iter`` points, otherwise a sample
    without replacement drawn with ``seed``. Each configuration is complete (the
    candidate's defaults under the searched values). ``n_iter`` 0 (no search) or an
    empty search space give the defaults alone.
    """
    if n_iter < 0:
        raise ValueError(f"n_iter must be 0 (no search) or more, got {n_iter!r}")
    if n_iter == 0:
        return [dict(candidate.defaults)]
    grid = ParameterGrid({k: list(v) for k, v in candidate.search_space.items()})
    n = len(grid)
    picks = (
        range(n)
        if n <= n_iter
        else sorted(np.random.default_rng(seed).choice(n, size=n_iter, replace=False).tolist())
    )
    return [{**candidate.defaults, **grid[int(i)]} for i in picks]


def _single_threaded(pipeline: Pipeline) -> Pipeline:
    """The pipeline with its classifier's own worker pool (``n_jobs``) set to one."""
    estimator = pipeline.named_steps["classifier"].estimator
    if estimator.get_params().get("n_jobs") is not None:
        pipeline.set_params(classifier__estimator__n_jobs=1)
    return pipeline


def _fold_scores(
    probe: Pipeline,
    x: pd.DataFrame,
    y: np.ndarray,
    fit_rows: np.ndarray,
    score_rows: np.ndarray,
    one_thread: bool,
) -> tuple[np.ndarray, float]:
    """Fit a clone of ``probe`` on ``fit_rows``; positive-class scores of ``score_rows``."""
    started = time.perf_counter()
    model = clone(probe)
    if one_thread:
        model = _single_threaded(model)
    # OpenMP always single-threaded (see train_candidate); in a parallel search, BLAS too.
    with threadpool_limits(limits=1, user_api=None if one_thread else "openmp"):
        model.fit(x.iloc[fit_rows], y[fit_rows])
        scores = model.predict_proba(x.iloc[score_rows])[:, 1]
    return scores, time.perf_counter() - started


def _score(
    params: dict[str, Any], y: np.ndarray, oof: np.ndarray, rule: SelectionRule, seconds: float
) -> Trial:
    threshold = threshold_for_recall(y, oof, rule.target_recall)
    flagged = oof >= threshold
    hits = int((flagged & (y == 1)).sum())
    recall = hits / int((y == 1).sum())
    precision = hits / int(flagged.sum()) if flagged.any() else 0.0
    return Trial(
        params=params,
        threshold=threshold,
        recall=float(recall),
        precision=float(precision),
        pr_auc=float(average_precision_score(y, oof)),
        meets_target=bool(recall >= rule.target_recall),
        seconds=seconds,
    )


def search_candidate(
    train: pd.DataFrame,
    spec: DatasetSpec,
    name: str,
    *,
    rule: SelectionRule | None = None,
    n_iter: int = DEFAULT_SEARCH_ITERATIONS,
    cv_folds: int = DEFAULT_CV_FOLDS,
    seed: int = 0,
    time_budget_s: float | None = None,
    max_fit_rows: int | None = None,
    n_jobs: int = 1,
) -> SearchResult:
    """Score configurations of candidate ``name`` by cross-validation on ``train``.

    Parameters
    ----------
    train : DataFrame
        Training rows of the feature table only; the test split must not be passed.
    spec : DatasetSpec
        Declares the features and the target.
    name : str
        A key of :data:`mlplatform.core.models.CANDIDATES`.
    rule : SelectionRule, optional
        Target recall and ranking; default :class:`SelectionRule`'s defaults.
    n_iter : int
        Configurations to try (see :func:`search_configurations`).
    cv_folds : int
        Stratified folds; every configuration of every candidate searched with the
        same ``seed`` and rows sees the same folds.
    seed : int
        Seed of the folds, the configuration sample, any row cap and the classifiers.
    time_budget_s : float, optional
        Wall-clock budget: no further configuration is started once it is spent
        (at least one always is); the result records whether it stopped early.
    max_fit_rows : int, optional
        Row cap of each fit (a stratified subsample of the in-fold rows; every
        out-of-fold row is still scored); default the candidate's own cap.
    n_jobs : int
        Fits run in parallel (processes, one native thread each); 1 runs them here.

    Returns
    -------
    SearchResult
    """
    if name not in CANDIDATES:
        raise ValueError(f"unknown candidate {name!r}; choose from {sorted(CANDIDATES)}")
    if cv_folds < 2:
        raise ValueError(f"cv_folds must be at least 2, got {cv_folds!r}")
    rule = rule or SelectionRule()
    candidate = CANDIDATES[name]
    x, y = model_inputs(train, spec), train[spec.target].to_numpy().astype("int64")
    counts = np.bincount(y, minlength=2)
    if counts.min() < cv_folds:
        raise ValueError(
            f"candidate search on {len(y)} training rows: each class needs at least "
            f"cv_folds={cv_folds} rows for stratified folds, got counts {counts.tolist()}"
        )
    started = time.perf_counter()
    cap = max_fit_rows if max_fit_rows is not None else candidate.max_fit_rows
    folds = []
    for fit_rows, score_rows in StratifiedKFold(cv_folds, shuffle=True, random_state=seed).split(
        x, y
    ):
        folds.append((fit_rows[stratified_subsample(y[fit_rows], cap, seed)], score_rows))
    configs = search_configurations(candidate, n_iter, seed)
    workers = 1 if n_jobs == 1 else (n_jobs if n_jobs > 0 else max(1, _cpu_count() + 1 + n_jobs))
    # Without a budget every fit goes to the pool at once; with one, a batch of
    # configurations at a time, so the budget is checked between batches.
    batch = len(configs) if time_budget_s is None else max(1, math.ceil(workers / cv_folds))
    trials: list[Trial] = []
    stopped = False
    with Parallel(n_jobs=workers) as parallel:
        for start in range(0, len(configs), batch):
            spent = time.perf_counter() - started
            if trials and time_budget_s is not None and spent >= time_budget_s:
                stopped = True
                break
            chunk = configs[start : start + batch]
            probes = [build_pipeline(spec, candidate.make(p, seed), 0.5) for p in chunk]
            outputs = parallel(
                delayed(_fold_scores)(probe, x, y, fit_rows, score_rows, workers > 1)
                for probe in probes
                for fit_rows, score_rows in folds
            )
            for i, params in enumerate(chunk):
                oof = np.empty(len(y), dtype="float64")
                seconds = 0.0
                for (_, score_rows), (scores, spent) in zip(
                    folds, outputs[i * cv_folds : (i + 1) * cv_folds], strict=True
                ):
                    oof[score_rows] = scores
                    seconds += spent
                trials.append(_score(params, y, oof, rule, seconds))
    best = max(trials, key=rule.key)  # the first of equals: the sample order is seeded
    return SearchResult(
        name=name,
        trials=tuple(trials),
        best=best,
        rule=rule,
        cv_folds=cv_folds,
        seed=seed,
        n_train_rows=len(y),
        max_fit_rows=cap,
        fit_rows_per_fold=max(len(f) for f, _ in folds),
        n_planned=len(configs),
        stopped_by_budget=stopped,
        seconds=time.perf_counter() - started,
    )


def _cpu_count() -> int:
    from joblib import cpu_count

    return int(cpu_count())


def select_champion(results: Sequence[SearchResult], rule: SelectionRule) -> Selection:
    """The candidate whose best configuration ranks first under ``rule``.

    Ties keep the order of ``results``. Raises ValueError on no results, or on
    results searched for another target recall (their thresholds would not compare).
    """
    if not results:
        raise ValueError("select_champion needs at least one search result")
    other = sorted({r.name for r in results if r.rule.target_recall != rule.target_recall})
    if other:
        raise ValueError(
            f"candidates {other} were searched for another target recall than "
            f"{rule.target_recall}: their thresholds and precisions do not compare"
        )
    ranking = sorted(results, key=lambda r: rule.key(r.best), reverse=True)
    return Selection(rule=rule, winner=ranking[0], ranking=tuple(ranking))


def fit_champion(train: pd.DataFrame, spec: DatasetSpec, selection: Selection) -> TrainedModel:
    """Refit the winner's best configuration on every training row, threshold baked in."""
    winner = selection.winner
    best = winner.best
    trained = train_candidate(
        train,
        spec,
        model_name=winner.name,
        params=best.params,
        threshold=best.threshold,
        seed=winner.seed,
        max_fit_rows=winner.max_fit_rows,
    )
    return dataclasses.replace(
        trained,
        threshold_source=(
            f"tuned on {winner.cv_folds}-fold out-of-fold predictions of the training rows "
            f"for recall {selection.rule.target_recall} (candidate search)"
        ),
    )


def search_and_fit(
    train: pd.DataFrame,
    spec: DatasetSpec,
    names: Sequence[str] = DEFAULT_CANDIDATES,
    *,
    rule: SelectionRule | None = None,
    n_iter: int = DEFAULT_SEARCH_ITERATIONS,
    cv_folds: int = DEFAULT_CV_FOLDS,
    seed: int = 0,
    time_budget_s: float | None = None,
    max_fit_rows: Mapping[str, int] | None = None,
    n_jobs: int = 1,
) -> SearchOutcome:
    """Search every candidate in ``names``, select the champion, refit it on ``train``.

    A time budget is shared: each candidate gets an equal part of what is left when
    its turn comes. ``max_fit_rows`` overrides row caps by candidate name.
    """
    if not names:
        raise ValueError("no candidates to search")
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; choose from {sorted(CANDIDATES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"candidates listed twice in {list(names)}")
    rule = rule or SelectionRule()
    caps = dict(max_fit_rows or {})
    started = time.perf_counter()
    results = []
    for i, name in enumerate(names):
        budget = None
        if time_budget_s is not None:
            left = time_budget_s - (time.perf_counter() - started)
            budget = max(0.0, left) / (len(names) - i)
        results.append(
            search_candidate(
                train,
                spec,
                name,
                rule=rule,
                n_iter=n_iter,
                cv_folds=cv_folds,
                seed=seed,
                time_budget_s=budget,
                max_fit_rows=caps.get(name),
                n_jobs=n_jobs,
            )
        )
    selection = select_champion(results, rule)
    model = fit_champion(train, spec, selection)
    return SearchOutcome(
        model=model, selection=selection, search_seconds=time.perf_counter() - started
    )
