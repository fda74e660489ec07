"""Small shared builders of test frames for the pure-core unit tests.

Every builder returns a fresh copy, so a test may mutate what it gets.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from mlplatform.core.features import build_feature_table
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.schema import AI4I
from mlplatform.core.split import SPLIT_COLUMN, stratified_split
from mlplatform_tests.real_data import require_real_ai4i


def read_real_ai4i_as_text() -> pd.DataFrame:
    """The real file as landed text (every column a string), or skip the calling test."""
    return pd.read_csv(require_real_ai4i(), dtype=str, keep_default_na=False)


def raw_text(n_rows: int, seed: int = 0, start_udi: int = 1) -> pd.DataFrame:
    """Generated rows with every cell as text, as ``read_csv(dtype=str)`` would give."""
    return generate_ai4i(n_rows, seed=seed, start_udi=start_udi).astype(str)


@lru_cache(maxsize=16)
def _feature_table(n_rows: int, seed: int) -> pd.DataFrame:
    batch = type_and_validate(raw_text(n_rows, seed), AI4I, f"generated-{seed}.csv")
    assert batch.rows_quarantined == 0
    return build_feature_table(batch.valid, AI4I)


def feature_table(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """A feature table (entity id, model features, target) of generated rows."""
    return _feature_table(n_rows, seed).copy()


@lru_cache(maxsize=16)
def _split(n_rows: int, seed: int, test_size: float, split_seed: int) -> pd.DataFrame:
    table, _ = stratified_split(
        _feature_table(n_rows, seed), AI4I.target, test_size=test_size, seed=split_seed
    )
    return table


def train_test(
    n_rows: int, seed: int = 0, test_size: float = 0.2, split_seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and test parts of a stratified split of a generated feature table."""
    table = _split(n_rows, seed, test_size, split_seed)
    train = table.loc[table[SPLIT_COLUMN] == "train"].copy()
    test = table.loc[table[SPLIT_COLUMN] == "test"].copy()
    return train, test


def hand_observations() -> pd.DataFrame:
    """Two typed, validated observations with hand-picked values (canonical names)."""
    return pd.DataFrame(
        {
            "udi": np.array([7, 9], dtype="int64"),
            "product_id": pd.array(["L50001", "H30002"], dtype="string"),
            "type": pd.array(["L", "H"], dtype="string"),
            "air_temperature_k": [300.0, 298.5],
            "process_temperature_k": [310.5, 307.0],
            "rotational_speed_rpm": np.array([1500, 3000], dtype="int64"),
            "torque_nm": [40.0, 12.5],
            "tool_wear_min": np.array([10, 200], dtype="int64"),
            "machine_failure": np.array([0, 1], dtype="int64"),
            "twf": pd.array([0, 1], dtype="Int64"),
            "hdf": pd.array([0, 0], dtype="Int64"),
            "pwf": pd.array([0, 0], dtype="Int64"),
            "osf": pd.array([0, 1], dtype="Int64"),
            "rnf": pd.array([0, 0], dtype="Int64"),
        }
    )
