"""Training: the train/test split (made before any fitting) and the candidate model."""

import dataclasses
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from mlplatform.core import features as core_features
from mlplatform.core import models as core_models
from mlplatform.core import selection as core_selection
from mlplatform.core import split as core_split
from mlplatform.core.digest import frame_digest
from mlplatform.core.features import AS_OF_ATTR
from mlplatform.core.models import CANDIDATES, TrainedModel, train_candidate
from mlplatform.core.schema import DatasetSpec
from mlplatform.core.selection import (
    DEFAULT_CANDIDATES,
    DEFAULT_CV_FOLDS,
    DEFAULT_SEARCH_ITERATIONS,
    SearchOutcome,
    SelectionRule,
    search_and_fit,
)
from mlplatform.core.split import SPLIT_COLUMN, stratified_sample, stratified_split
from mlplatform.defs.common import DATASET, OWNER, TRAINING, code_version, preview_md
from mlplatform.resources import asset_storage, feature_tables
from mlplatform.resources.asset_storage import StoredTable
from mlplatform.resources.feature_tables import read_features

DEFAULT_MAX_SPLIT_ROWS = 1_000_000


def training_columns(spec: DatasetSpec) -> list[str]:
    """The feature table's columns training reads: entity id, model features, target.

    Lineage columns stay in the feature table; no step after the split uses them.
    """
    return list(dict.fromkeys([spec.entity_id, *spec.model_features, spec.target]))


class SplitConfig(dg.Config):
    """How the feature table is split into training and test rows."""

    test_size: float = Field(default=0.3, description="Share of rows held out for testing.")
    seed: int = Field(default=42, description="Seed of the stratified shuffle split.")
    max_rows: int | None = Field(
        default=DEFAULT_MAX_SPLIT_ROWS,
        description="At most this many feature-table rows are split: a larger table is "
        "sampled first, stratified by the target (same seed), chosen from the target column "
        "alone, and only the sampled rows' training columns are read; memory stays bounded "
        "however large the table. None: every row.",
    )


class TrainingConfig(dg.Config):
    """Which candidates to search, and how; or one candidate to train as configured."""

    candidates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CANDIDATES),
        description=f"Candidates to search, by name; any of {sorted(CANDIDATES)}. The champion "
        "is the best by the selection rule (highest out-of-fold precision at the threshold "
        "reaching target_recall, ties by PR-AUC).",
    )
    search_iterations: int = Field(
        default=DEFAULT_SEARCH_ITERATIONS,
        description="Configurations tried per candidate (sampled from its search space). 0: no "
        "search; a single candidate is then trained as configured (params, decision_threshold, "
        "tune_threshold), several are compared at their defaults.",
    )
    cv_folds: int = Field(
        default=DEFAULT_CV_FOLDS,
        description="Stratified folds of the training rows for out-of-fold predictions (search "
        "and threshold tuning).",
    )
    target_recall: float = Field(
        default=0.85,
        description="Recall the tuned threshold reaches on out-of-fold training predictions; "
        "the selection rule ranks candidates by their precision there.",
    )
    time_budget_s: float | None = Field(
        default=None,
        description="Wall-clock budget of the whole search; no configuration starts once "
        "it is spent (at least one per candidate always does). None: no budget.",
    )
    search_jobs: int = Field(
        default=-1,
        description="Parallel fits during the search (processes, one native thread each); "
        "-1: one per core.",
    )
    model_name: str | None = Field(
        default=None,
        description="Train just this candidate as configured, without a search (overrides "
        f"candidates and search_iterations); one of {sorted(CANDIDATES)}.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyperparameters overriding the candidate's defaults (one candidate, no "
        "search).",
    )
    decision_threshold: float | None = Field(
        default=None,
        description="Probability above which a row is predicted to fail (one candidate, no "
        "search); null uses the candidate's default (0.5, or tuned for the Gaussian process).",
    )
    tune_threshold: bool = Field(
        default=False,
        description="Tune the threshold on out-of-fold predictions of the training rows "
        "to reach target_recall (one candidate, no search; a search always tunes it).",
    )
    seed: int = Field(default=42, description="Seed of folds, samples and classifiers.")
    max_fit_rows: int | None = Field(
        default=None,
        description="Cap on rows per fit (stratified subsample), for every candidate; None "
        "uses each candidate's own cap (1,000 for the Gaussian process, none for the others).",
    )


def _threshold(config: TrainingConfig) -> float | Literal["default", "tune"]:
    if config.tune_threshold:
        return "tune"
    return "default" if config.decision_threshold is None else config.decision_threshold


def _single_candidate(config: TrainingConfig) -> str | None:
    """The one candidate to train as configured, or None when candidates are searched."""
    if config.model_name is not None:
        return config.model_name
    if len(config.candidates) == 1 and config.search_iterations == 0:
        return config.candidates[0]
    return None


def _check_search_config(config: TrainingConfig) -> None:
    ignored = [
        name
        for name, value in (
            ("params", config.params),
            ("decision_threshold", config.decision_threshold),
            ("tune_threshold", config.tune_threshold),
        )
        if value
    ]
    if ignored:
        raise dg.Failure(
            f"candidate_model: {ignored} apply to one candidate trained without a search; "
            f"this configuration searches {config.candidates} (set model_name, or a single "
            "candidate with search_iterations 0)"
        )
    unknown = sorted(set(config.candidates) - set(CANDIDATES))
    if unknown or not config.candidates:
        raise dg.Failure(
            f"candidate_model: unknown or no candidates {unknown or config.candidates}; "
            f"choose from {sorted(CANDIDATES)}"
        )


def read_split_rows(
    table: StoredTable, spec: DatasetSpec, *, max_rows: int | None, seed: int
) -> tuple[pd.DataFrame, int]:
    """The rows ``train_test_split`` splits: training columns of a stratified sample.

    Only the target column is read whole (to draw the sample); then only the sampled
    rows of :func:`training_columns`, derived features computed from the stored ones
    (:func:`~mlplatform.resources.feature_tables.read_features`). Returns the rows,
    with the table's ``attrs`` (as-of time, digest), and the table's row count.
    """
    total = table.num_rows
    rows = None
    if max_rows is not None and total > max_rows:
        rows = stratified_sample(table.read_column(spec.target), max_rows, seed=seed)
    return read_features(table, spec, training_columns(spec), rows), total


@dg.asset(
    group_name=TRAINING,
    kinds={"pandas", "parquet"},
    owners=[OWNER],
    code_version=code_version(
        __file__,
        "train_test_split",
        "SplitConfig",
        "training_columns",
        "read_split_rows",
        uses=(core_split, core_features, asset_storage, feature_tables),
    ),
)
def train_test_split(
    context: dg.AssetExecutionContext, config: SplitConfig, feature_table: StoredTable
) -> dg.Output[pd.DataFrame]:
    """The feature table's training columns, each row marked train or test (stratified split).

    A table of more than ``max_rows`` rows is sampled first, stratified by the target.
    """
    rows, total = read_split_rows(
        feature_table, DATASET, max_rows=config.max_rows, seed=config.seed
    )
    if len(rows) < total:
        context.log.warning(
            f"feature table has {total:,} rows: splitting a stratified sample of {len(rows):,} "
            f"(max_rows {config.max_rows:,})"
        )
    labelled, info = stratified_split(
        rows, DATASET.target, test_size=config.test_size, seed=config.seed
    )
    labelled.attrs = dict(rows.attrs)  # as-of time and digest of the source table
    return dg.Output(
        labelled,
        metadata={
            "feature_as_of": str(rows.attrs.get(AS_OF_ATTR, "")),
            "seed": info.seed,
            "test_size": info.test_size,
            "feature_table_rows": total,
            "sampled": len(rows) < total,
            "train_rows": info.n_train,
            "test_rows": info.n_test,
            "positive_rate_train": info.positive_rate_train,
            "positive_rate_test": info.positive_rate_test,
            "train_digest": frame_digest(labelled[labelled[SPLIT_COLUMN] == "train"]),
            "dagster/row_count": len(labelled),
            "preview": preview_md(labelled),
        },
    )


def _search(
    context: dg.AssetExecutionContext, config: TrainingConfig, train: pd.DataFrame
) -> SearchOutcome:
    _check_search_config(config)
    context.log.info(
        f"searching {config.candidates} on {len(train)} training rows: "
        f"{config.search_iterations} configurations each, {config.cv_folds}-fold "
        f"out-of-fold threshold for recall {config.target_recall}"
    )
    caps = (
        None
        if config.max_fit_rows is None
        else dict.fromkeys(config.candidates, config.max_fit_rows)
    )
    outcome = search_and_fit(
        train,
        DATASET,
        config.candidates,
        rule=SelectionRule(target_recall=config.target_recall),
        n_iter=config.search_iterations,
        cv_folds=config.cv_folds,
        seed=config.seed,
        time_budget_s=config.time_budget_s,
        max_fit_rows=caps,
        n_jobs=config.search_jobs,
    )
    for result in outcome.selection.ranking:
        best = result.best
        context.log.info(
            f"{result.name}: {len(result.trials)} configurations in {result.seconds:.1f} s; "
            f"best out-of-fold precision {best.precision:.4f} at recall {best.recall:.4f} "
            f"(threshold {best.threshold:.4g}), PR-AUC {best.pr_auc:.4f}"
        )
        if result.stopped_by_budget:
            context.log.warning(
                f"{result.name}: time budget spent after {len(result.trials)} of "
                f"{result.n_planned} configurations"
            )
    return outcome


@dg.asset(
    group_name=TRAINING,
    kinds={"sklearn", "joblib"},
    owners=[OWNER],
    code_version=code_version(
        __file__,
        "candidate_model",
        "TrainingConfig",
        "_threshold",
        "_single_candidate",
        "_check_search_config",
        "_search",
        uses=(core_models, core_selection),
    ),
)
def candidate_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, train_test_split: pd.DataFrame
) -> dg.Output[TrainedModel]:
    """The champion of a candidate search (or one configured candidate), fit on training rows."""
    train = train_test_split[train_test_split[SPLIT_COLUMN] == "train"]
    single = _single_candidate(config)
    outcome: SearchOutcome | None = None
    if single is not None:
        context.log.info(f"fitting {single} on {len(train)} training rows")
        trained = train_candidate(
            train,
            DATASET,
            model_name=single,
            params=config.params,
            threshold=_threshold(config),
            target_recall=config.target_recall,
            cv_folds=config.cv_folds,
            seed=config.seed,
            max_fit_rows=config.max_fit_rows,
        )
    else:
        outcome = _search(context, config, train)
        trained = dataclasses.replace(
            outcome.model,
            search={
                "rule": outcome.selection.rule.describe(),
                "search_seconds": round(outcome.search_seconds, 2),
                "search_iterations": config.search_iterations,
                "cv_folds": config.cv_folds,
                "candidates": outcome.selection.table(),
            },
        )
        context.log.info(
            f"champion {trained.model_name} by the rule: {outcome.selection.rule.describe()}; "
            f"search took {outcome.search_seconds:.1f} s"
        )
    if trained.n_fit_rows < trained.n_train_rows:
        context.log.warning(
            f"{trained.model_name}: fitted on a stratified subsample of {trained.n_fit_rows} "
            f"of {trained.n_train_rows} training rows (row cap)"
        )
    context.log.info(f"fitted in {trained.fit_seconds:.2f} s")
    metadata: dict[str, Any] = {
        "model_name": trained.model_name,
        "params": dg.MetadataValue.json(trained.params),
        "decision_threshold": trained.threshold,
        "threshold_source": trained.threshold_source,
        "train_rows": trained.n_train_rows,
        "fit_rows": trained.n_fit_rows,
        "fit_seconds": trained.fit_seconds,
        "features": ", ".join(DATASET.model_features),
    }
    if outcome is not None:
        selection = outcome.selection
        best = selection.winner.best
        metadata.update(
            {
                "selection_rule": selection.rule.describe(),
                "candidates": dg.MetadataValue.md(selection.markdown()),
                "search_seconds": outcome.search_seconds,
                "search_iterations": config.search_iterations,
                "cv_folds": config.cv_folds,
                "cv_precision": best.precision,
                "cv_recall": best.recall,
                "cv_pr_auc": best.pr_auc,
                "row_caps": dg.MetadataValue.json(
                    {r.name: r.max_fit_rows for r in selection.ranking}
                ),
            }
        )
    return dg.Output(trained, metadata=metadata)
