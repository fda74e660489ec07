"""Unit tests of the stratified train/test split (mlplatform.core.split)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlplatform.core.schema import AI4I
from mlplatform.core.split import SPLIT_COLUMN, SplitInfo, stratified_split

from ._frames import feature_table

N_ROWS = 2_000
TARGET = AI4I.target


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    t = feature_table(N_ROWS, seed=21)
    assert 0.01 < t[TARGET].mean() < 0.2  # both classes, imbalanced like the real data
    return t


def _ids(split: pd.DataFrame, part: str) -> list[int]:
    return split.loc[split[SPLIT_COLUMN] == part, "udi"].tolist()


def test_same_seed_gives_the_same_split(table: pd.DataFrame) -> None:
    a, info_a = stratified_split(table, TARGET, test_size=0.3, seed=42)
    b, info_b = stratified_split(table, TARGET, test_size=0.3, seed=42)
    pd.testing.assert_series_equal(a[SPLIT_COLUMN], b[SPLIT_COLUMN])
    assert info_a == info_b


def test_different_seeds_give_different_splits(table: pd.DataFrame) -> None:
    a, _ = stratified_split(table, TARGET, test_size=0.3, seed=1)
    b, _ = stratified_split(table, TARGET, test_size=0.3, seed=2)
    assert set(_ids(a, "test")) != set(_ids(b, "test"))


@pytest.mark.parametrize("test_size", [0.1, 0.2, 0.3, 0.5])
@pytest.mark.parametrize("seed", [0, 42])
def test_disjoint_covering_sized_and_stratified(
    table: pd.DataFrame, test_size: float, seed: int
) -> None:
    split, info = stratified_split(table, TARGET, test_size=test_size, seed=seed)
    train, test = _ids(split, "train"), _ids(split, "test")

    assert set(split[SPLIT_COLUMN]) == {"train", "test"}
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(table["udi"].tolist())
    assert abs(len(test) - test_size * N_ROWS) <= 1

    whole = table[TARGET].mean()
    rate_train = split.loc[split[SPLIT_COLUMN] == "train", TARGET].mean()
    rate_test = split.loc[split[SPLIT_COLUMN] == "test", TARGET].mean()
    assert abs(rate_train - whole) <= 0.005
    assert abs(rate_test - whole) <= 0.005

    assert info == SplitInfo(
        seed=seed,
        test_size=test_size,
        n_train=len(train),
        n_test=len(test),
        positive_rate_train=pytest.approx(rate_train),
        positive_rate_test=pytest.approx(rate_test),
    )


def test_input_is_not_modified_and_rows_keep_their_order(table: pd.DataFrame) -> None:
    before = table.copy()
    split, _ = stratified_split(table, TARGET, test_size=0.3, seed=0)
    pd.testing.assert_frame_equal(table, before)
    assert SPLIT_COLUMN not in table.columns
    pd.testing.assert_frame_equal(split.drop(columns=[SPLIT_COLUMN]), table)
    assert split[SPLIT_COLUMN].dtype == "string"


def test_non_default_index_is_preserved() -> None:
    t = pd.DataFrame({"y": [0, 1] * 10, "v": range(20)}, index=range(100, 120))
    split, info = stratified_split(t, "y", test_size=0.5, seed=0)
    assert split.index.tolist() == list(range(100, 120))
    assert split[SPLIT_COLUMN].notna().all()
    assert (info.n_train, info.n_test) == (10, 10)
    assert split.groupby(SPLIT_COLUMN)["y"].sum().to_dict() == {"test": 5, "train": 5}


@pytest.mark.parametrize("test_size", [0, 0.0, 1, 1.0, 1.5, -0.2, math.nan])
def test_invalid_test_size_raises_naming_the_value(table: pd.DataFrame, test_size: float) -> None:
    with pytest.raises(ValueError, match="test_size") as info:
        stratified_split(table, TARGET, test_size=test_size, seed=0)
    assert repr(test_size) in str(info.value)


@pytest.mark.parametrize(
    ("labels", "counts"),
    [([0] * 10 + [1], "[10, 1]"), ([0] * 10, "[10, 0]"), ([1] * 9 + [0], "[1, 9]")],
)
def test_a_class_with_fewer_than_two_rows_raises(labels: list[int], counts: str) -> None:
    t = pd.DataFrame({"y": labels, "v": range(len(labels))})
    with pytest.raises(ValueError, match="at least 2 rows") as info:
        stratified_split(t, "y", test_size=0.3, seed=0)
    assert "'y'" in str(info.value)
    assert counts in str(info.value)
