"""Training: the train/test split (made before any fitting) and the candidate model."""

from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from mlplatform.core.digest import frame_digest
from mlplatform.core.models import CANDIDATES, TrainedModel, train_candidate
from mlplatform.core.split import SPLIT_COLUMN, stratified_split
from mlplatform.defs.common import DATASET, TRAINING


class SplitConfig(dg.Config):
    """How the feature table is split into training and test rows."""

    test_size: float = Field(default=0.3, description="Share of rows held out for testing.")
    seed: int = Field(default=42, description="Seed of the stratified shuffle split.")


class TrainingConfig(dg.Config):
    """Which candidate to train, and how."""

    model_name: str = Field(
        default="hist_gradient_boosting",
        description=f"Candidate to train; one of {sorted(CANDIDATES)}.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters overriding the candidate's defaults."
    )
    decision_threshold: float | None = Field(
        default=None,
        description="Probability above which a row is predicted to fail; null uses the "
        "candidate's default (0.5, or tuned for the Gaussian process).",
    )
    tune_threshold: bool = Field(
        default=False,
        description="Tune the threshold on out-of-fold predictions of the training rows "
        "to reach target_recall (overrides decision_threshold).",
    )
    target_recall: float = Field(
        default=0.85, description="Recall a tuned threshold aims at (training rows only)."
    )
    seed: int = Field(default=42, description="Seed of the classifier and any subsample.")
    max_fit_rows: int | None = Field(
        default=None,
        description="Cap on rows fitted (stratified subsample); None uses the candidate's own "
        "cap (1,000 for the Gaussian process, none for the others).",
    )


def _threshold(config: TrainingConfig) -> float | Literal["default", "tune"]:
    if config.tune_threshold:
        return "tune"
    return "default" if config.decision_threshold is None else config.decision_threshold


@dg.asset(group_name=TRAINING, kinds={"pandas", "parquet"}, owners=["team:ml-platform"])
def train_test_split(config: SplitConfig, feature_table: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """The feature table with each row marked train or test by a stratified shuffle split."""
    labelled, info = stratified_split(
        feature_table, DATASET.target, test_size=config.test_size, seed=config.seed
    )
    return dg.Output(
        labelled,
        metadata={
            "seed": info.seed,
            "test_size": info.test_size,
            "train_rows": info.n_train,
            "test_rows": info.n_test,
            "positive_rate_train": info.positive_rate_train,
            "positive_rate_test": info.positive_rate_test,
            "train_digest": frame_digest(labelled[labelled[SPLIT_COLUMN] == "train"]),
        },
    )


@dg.asset(group_name=TRAINING, kinds={"sklearn"}, owners=["team:ml-platform"])
def candidate_model(
    context: dg.AssetExecutionContext, config: TrainingConfig, train_test_split: pd.DataFrame
) -> dg.Output[TrainedModel]:
    """One sklearn Pipeline (scaling, one-hot, classifier, threshold) fit on training rows only."""
    train = train_test_split[train_test_split[SPLIT_COLUMN] == "train"]
    context.log.info(f"fitting {config.model_name} on {len(train)} training rows")
    trained = train_candidate(
        train,
        DATASET,
        model_name=config.model_name,
        params=config.params,
        threshold=_threshold(config),
        target_recall=config.target_recall,
        seed=config.seed,
        max_fit_rows=config.max_fit_rows,
    )
    if trained.n_fit_rows < trained.n_train_rows:
        context.log.warning(
            f"{config.model_name}: fitted on a stratified subsample of {trained.n_fit_rows} "
            f"of {trained.n_train_rows} training rows (row cap)"
        )
    context.log.info(f"fitted in {trained.fit_seconds:.2f} s")
    return dg.Output(
        trained,
        metadata={
            "model_name": trained.model_name,
            "params": dg.MetadataValue.json(trained.params),
            "decision_threshold": trained.threshold,
            "threshold_source": trained.threshold_source,
            "train_rows": trained.n_train_rows,
            "fit_rows": trained.n_fit_rows,
            "fit_seconds": trained.fit_seconds,
            "features": ", ".join(DATASET.model_features),
        },
    )
