"""Stratified train/test split, made before any fitting; a stratified sample of a large table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedShuffleSplit

__all__ = ["SPLIT_COLUMN", "SplitInfo", "stratified_sample", "stratified_split"]

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


def stratified_sample(y: np.ndarray, max_rows: int, *, seed: int) -> np.ndarray:
    """Positions of at most ``max_rows`` rows, each class keeping its share of ``y``.

    Chosen from the labels alone, so a table can be sampled before any other of its
    columns is read. Class counts are the largest-remainder rounding of the shares,
    and every class keeps at least two rows where it has them (a split can then
    still stratify). The same ``y``, ``max_rows`` and ``seed`` give the same rows.

    Parameters
    ----------
    y : ndarray
        The label of every row, in table order.
    max_rows : int
        Rows to keep at most.
    seed : int
        Random seed of the draw.

    Returns
    -------
    ndarray
        Sorted row positions (``int64``): the sample keeps the table's row order.
        Every position when ``y`` has at most ``max_rows`` rows.

    Raises
    ------
    ValueError
        When ``max_rows`` cannot hold two rows of every class.
    """
    labels = np.asarray(y)
    n = len(labels)
    if labels.dtype.kind in "iub" and (n == 0 or labels.min() >= 0):
        codes = labels  # integer labels are their own codes: no sorted copy of a long column
    else:
        codes = np.unique(labels, return_inverse=True)[1]
    counts = np.bincount(codes)
    floor = np.minimum(counts, 2)
    if max_rows < max(1, int(floor.sum())):
        classes = int(np.count_nonzero(counts))
        raise ValueError(f"max_rows={max_rows!r} cannot keep two rows of each of {classes} classes")
    if n <= max_rows:
        return np.arange(n, dtype="int64")
    exact = counts * (max_rows / n)
    take = np.floor(exact).astype("int64")
    # largest remainders first; ties by class order, so the counts are deterministic
    order = np.lexsort((np.arange(len(counts)), -(exact - take)))
    take[order[: max_rows - int(take.sum())]] += 1
    for k in np.flatnonzero(take < floor):  # a rare class: its two rows, from the largest
        for _ in range(int(floor[k] - take[k])):
            take[int(np.argmax(take - floor))] -= 1
            take[k] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(codes == k), size=int(take[k]), replace=False)
        for k in np.flatnonzero(take)
    ]
    return np.sort(np.concatenate(chosen)).astype("int64", copy=False)
