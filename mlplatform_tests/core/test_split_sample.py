"""The stratified sample a large feature table is cut to before it is split."""

from __future__ import annotations

import numpy as np
import pytest

from mlplatform.core.split import stratified_sample


def _labels(negatives: int, positives: int, seed: int = 0) -> np.ndarray:
    y = np.r_[np.zeros(negatives, "int64"), np.ones(positives, "int64")]
    return np.random.default_rng(seed).permutation(y)


def test_the_sample_keeps_each_class_share_and_the_row_order() -> None:
    y = _labels(9_661, 339)  # AI4I's share of failures
    rows = stratified_sample(y, 1_000, seed=3)
    assert len(rows) == 1_000
    assert rows.dtype == np.int64
    assert np.all(np.diff(rows) > 0), "positions are sorted and distinct"
    # 339 of 10,000 is 33.9 of 1,000: largest remainder gives 34 positives, 966 negatives
    assert int(y[rows].sum()) == 34


def test_the_same_seed_gives_the_same_rows_another_seed_others() -> None:
    y = _labels(5_000, 500)
    first = stratified_sample(y, 800, seed=1)
    assert np.array_equal(first, stratified_sample(y, 800, seed=1))
    other = stratified_sample(y, 800, seed=2)
    assert not np.array_equal(first, other)
    assert int(y[first].sum()) == int(y[other].sum()) == 73  # 72.7 rounded by remainder


def test_a_table_within_the_cap_is_kept_whole() -> None:
    y = _labels(90, 10)
    assert np.array_equal(stratified_sample(y, 100, seed=0), np.arange(100))
    assert np.array_equal(stratified_sample(y, 10_000, seed=0), np.arange(100))


def test_a_rare_class_keeps_two_rows_so_the_split_can_stratify() -> None:
    y = _labels(99_997, 3)
    rows = stratified_sample(y, 100, seed=0)
    assert len(rows) == 100
    assert int(y[rows].sum()) == 2  # its share rounds to 0; it still gets two


def test_text_labels_are_sampled_by_class_too() -> None:
    y = np.array(["ok"] * 900 + ["fail"] * 100, dtype=object)
    rows = stratified_sample(y, 50, seed=0)
    assert len(rows) == 50 and int((y[rows] == "fail").sum()) == 5


def test_a_cap_too_small_for_two_rows_per_class_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_rows=3 cannot keep two rows of each of 2 classes"):
        stratified_sample(_labels(50, 50), 3, seed=0)
