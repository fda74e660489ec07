"""Stratified train/test split, made before any fitting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedShuffleSplit

__all__ = ["SPLIT_COLUMN", "SplitInfo", "stratified_split"]

SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class SplitInfo:
    """What a split was made with, for the record."""

    seed: int
    test_size: float
    n_train: int
    n_test: int
    positive_rate_train: float
    positive_rate_test: float


def stratified_split(
    table: pd.DataFrame, target: str, *, test_size: float, seed: int
) -> tuple[pd.DataFrame, SplitInfo]:
    """Label every row ``train`` or ``test`` by a stratified shuffle split.

    Parameters
    ----------
    table : DataFrame
        The feature table; not modified.
    target : str
        The label column to stratify on.
    test_size : float
        Share of rows held out, strictly between 0 and 1.
    seed : int
        Random seed; the same table, share and seed give the same split.

    Returns
    -------
    (DataFrame, SplitInfo)
        A copy of ``table`` with a ``split`` column, and the split's record.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be strictly between 0 and 1, got {test_size!r}")
    y = table[target].to_numpy()
    counts = np.bincount(y.astype("int64"), minlength=2)
    if (counts < 2).any():
        raise ValueError(
            f"cannot stratify on {target!r}: each class needs at least 2 rows, "
            f"got counts {counts.tolist()}"
        )
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    train_idx, test_idx = next(splitter.split(np.zeros(len(table)), y))
    labels = np.full(len(table), "train", dtype=object)
    labels[test_idx] = "test"
    out = table.copy()
    out[SPLIT_COLUMN] = pd.Series(labels, index=out.index, dtype="string")
    info = SplitInfo(
        seed=seed,
        test_size=test_size,
        n_train=len(train_idx),
        n_test=len(test_idx),
        positive_rate_train=float(y[train_idx].mean()),
        positive_rate_test=float(y[test_idx].mean()),
    )
    return out, info
