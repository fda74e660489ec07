"""Unit tests of feature-table construction (mlplatform.core.features)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.features import build_feature_table, model_inputs
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.schema import AI4I

from ._frames import hand_observations, raw_text

DROPPED = ["product_id", "twf", "hdf", "pwf", "osf", "rnf"]


def test_derived_values_are_exact_on_a_hand_made_frame() -> None:
    table = build_feature_table(hand_observations(), AI4I)

    assert table["temp_diff_k"].tolist() == pytest.approx([310.5 - 300.0, 307.0 - 298.5])
    assert table["power_w"].tolist() == pytest.approx(
        [40.0 * 1500 * 2 * math.pi / 60, 12.5 * 3000 * 2 * math.pi / 60]
    )
    assert table["strain_min_nm"].tolist() == pytest.approx([10 * 40.0, 200 * 12.5])
    assert table["temp_diff_k"].tolist() == pytest.approx([10.5, 8.5])
    assert table["power_w"].tolist() == pytest.approx([2000 * math.pi, 1250 * math.pi])
    assert table["strain_min_nm"].tolist() == pytest.approx([400.0, 2500.0])
    for name in ("temp_diff_k", "power_w", "strain_min_nm"):
        assert table[name].dtype == "float64"


def test_raw_features_target_and_entity_id_are_carried_unchanged() -> None:
    obs = hand_observations()
    table = build_feature_table(obs, AI4I)
    assert table["udi"].tolist() == [7, 9]
    assert table["type"].tolist() == ["L", "H"]
    assert table["torque_nm"].tolist() == [40.0, 12.5]
    assert table["rotational_speed_rpm"].tolist() == [1500, 3000]
    assert table["machine_failure"].tolist() == [0, 1]
    assert table["machine_failure"].dtype == "int64"


def test_table_columns_are_entity_id_model_features_then_target() -> None:
    table = build_feature_table(hand_observations(), AI4I)
    assert list(table.columns) == ["udi", *AI4I.model_features, "machine_failure"]


@pytest.mark.parametrize("column", DROPPED)
def test_identifier_and_leakage_columns_are_not_in_the_table(column: str) -> None:
    table = build_feature_table(hand_observations(), AI4I)
    assert column in hand_observations().columns
    assert column not in table.columns


def test_udi_is_kept_as_entity_id_but_is_not_a_model_input() -> None:
    table = build_feature_table(hand_observations(), AI4I)
    assert "udi" in table.columns
    assert "udi" not in model_inputs(table, AI4I).columns


def test_model_inputs_are_exactly_the_declared_model_features() -> None:
    table = build_feature_table(hand_observations(), AI4I)
    table["source_file"] = "a.csv"
    x = model_inputs(table, AI4I)
    assert list(x.columns) == AI4I.model_features
    forbidden = set(AI4I.excluded_from_model) | {AI4I.target}
    assert forbidden.isdisjoint(x.columns)
    assert "source_file" not in x.columns


def test_model_inputs_from_raw_observations_drop_leakage() -> None:
    obs = hand_observations()
    for derived in AI4I.derived:
        obs[derived.name] = derived.compute(obs)
    x = model_inputs(obs, AI4I)
    assert list(x.columns) == AI4I.model_features


def test_lineage_columns_are_carried_after_the_target() -> None:
    obs = hand_observations()
    stamp = pd.Timestamp("2024-05-01T12:00:00Z")
    obs["ingested_at"] = stamp
    obs["source_file"] = ["a.csv", "b.csv"]
    obs["source_row"] = [1, 2]
    table = build_feature_table(obs, AI4I)
    assert list(table.columns)[-3:] == ["machine_failure", "ingested_at", "source_file"]
    assert table["source_file"].tolist() == ["a.csv", "b.csv"]
    assert (table["ingested_at"] == stamp).all()
    assert "source_row" not in table.columns


def test_non_default_index_is_aligned_by_position_and_reset() -> None:
    obs = hand_observations()
    obs.index = [10, 3]
    table = build_feature_table(obs, AI4I)
    assert table.index.tolist() == [0, 1]
    assert table["udi"].tolist() == [7, 9]
    assert table["strain_min_nm"].tolist() == pytest.approx([400.0, 2500.0])


def test_input_frame_is_not_modified() -> None:
    obs = hand_observations()
    before = obs.copy()
    build_feature_table(obs, AI4I)
    pd.testing.assert_frame_equal(obs, before)


def test_typed_generated_batch_builds_a_table_without_leakage() -> None:
    batch = type_and_validate(raw_text(50, seed=4), AI4I, "gen.csv")
    table = build_feature_table(batch.valid, AI4I)
    assert len(table) == 50
    assert not set(DROPPED) & set(table.columns)
    assert not table[AI4I.model_features].isna().any().any()
    np.testing.assert_allclose(
        table["temp_diff_k"],
        batch.valid["process_temperature_k"] - batch.valid["air_temperature_k"],
    )


@pytest.mark.parametrize(
    "column",
    ["udi", "machine_failure", "type", "torque_nm", "rotational_speed_rpm", "tool_wear_min",
     "air_temperature_k", "process_temperature_k"],
)  # fmt: skip
def test_missing_column_raises_key_error_naming_it(column: str) -> None:
    obs = hand_observations().drop(columns=[column])
    with pytest.raises(KeyError, match=column):
        build_feature_table(obs, AI4I)


def test_leakage_columns_are_not_needed() -> None:
    obs = hand_observations().drop(columns=["product_id", "twf", "hdf", "pwf", "osf", "rnf"])
    table = build_feature_table(obs, AI4I)
    assert len(table) == 2


@pytest.mark.parametrize("column", ["power_w", "type", "torque_nm"])
def test_model_inputs_missing_column_raises_key_error_naming_it(column: str) -> None:
    table = build_feature_table(hand_observations(), AI4I).drop(columns=[column])
    with pytest.raises(KeyError, match=column):
        model_inputs(table, AI4I)
