"""Unit tests of the declared schema (mlplatform.core.schema)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.generator import AI4I_COLUMNS
from mlplatform.core.schema import AI4I, ColumnSpec, DatasetSpec, DerivedFeature, Role

from ._frames import hand_observations

LEAKAGE = ["twf", "hdf", "pwf", "osf", "rnf"]
IDENTIFIERS = ["udi", "event_time", "product_id"]
REQUIRED = [
    "udi",
    "product_id",
    "type",
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
    "machine_failure",
]


def _col(name: str, role: Role = Role.FEATURE, dtype: str = "float64") -> ColumnSpec:
    return ColumnSpec(name, name.upper(), dtype, role)


def _toy(*extra: ColumnSpec, event_time: str | None = None) -> DatasetSpec:
    columns = (_col("id", Role.IDENTIFIER, "int64"), _col("x"), _col("y", Role.TARGET, "int64"))
    return DatasetSpec("toy", columns + extra, entity_id="id", target="y", event_time=event_time)


def _derived(name: str) -> DerivedFeature:
    return DerivedFeature(name, "", "", lambda df: df["x"])


# --- AI4I declaration ------------------------------------------------------------------------


def test_ai4i_sources_are_the_real_files_headers_in_order() -> None:
    # the real file has no timestamp; "Timestamp" is the one header it lacks
    real = [c.source for c in AI4I.columns if c.name != AI4I.event_time]
    assert real == list(AI4I_COLUMNS)
    assert [c.source for c in AI4I.columns][1] == "Timestamp"


def test_ai4i_event_time_is_an_optional_utc_timestamp_identifier() -> None:
    assert AI4I.event_time == "event_time"
    col = AI4I.column("event_time")
    assert col.source == "Timestamp"
    assert col.dtype == "timestamp"
    assert col.role is Role.IDENTIFIER
    assert col.required is False
    assert col.is_numeric is False
    assert "event_time" in AI4I.excluded_from_model
    assert "event_time" not in AI4I.model_features


def test_ai4i_roles() -> None:
    assert AI4I.entity_id == "udi"
    assert AI4I.target == "machine_failure"
    assert AI4I.names(Role.IDENTIFIER) == IDENTIFIERS
    assert AI4I.names(Role.LEAKAGE) == LEAKAGE
    assert AI4I.names(Role.TARGET) == ["machine_failure"]
    assert AI4I.excluded_from_model == IDENTIFIERS + LEAKAGE


def test_ai4i_required_columns_are_all_but_event_time_and_leakage() -> None:
    assert AI4I.required_columns == REQUIRED
    assert set(AI4I.required_columns) | {"event_time", *LEAKAGE} == {c.name for c in AI4I.columns}


def test_ai4i_model_features_exclude_identifiers_leakage_and_target() -> None:
    assert AI4I.numeric_features == [
        "air_temperature_k",
        "process_temperature_k",
        "rotational_speed_rpm",
        "torque_nm",
        "tool_wear_min",
        "temp_diff_k",
        "power_w",
        "strain_min_nm",
        "overstrain_ratio",
        "power_margin_w",
        "heat_dissipation_margin",
    ]
    assert AI4I.categorical_features == ["type"]
    assert AI4I.model_features == [*AI4I.numeric_features, "type"]
    forbidden = set(AI4I.excluded_from_model) | {AI4I.target}
    assert forbidden.isdisjoint(AI4I.model_features)


@pytest.mark.parametrize(
    ("name", "required"),
    [("udi", True), ("product_id", True), ("type", True), ("torque_nm", True),
     ("machine_failure", True), ("event_time", False), *[(n, False) for n in LEAKAGE]],
)  # fmt: skip
def test_only_leakage_columns_and_event_time_are_optional(name: str, required: bool) -> None:
    assert AI4I.column(name).required is required


@pytest.mark.parametrize(
    ("name", "is_numeric"),
    [("udi", True), ("product_id", False), ("type", False), ("torque_nm", True),
     ("rotational_speed_rpm", True), ("machine_failure", True), ("event_time", False)],
)  # fmt: skip
def test_is_numeric(name: str, is_numeric: bool) -> None:
    assert AI4I.column(name).is_numeric is is_numeric


def test_source_to_name_maps_every_header() -> None:
    mapping = AI4I.source_to_name
    assert len(mapping) == 15
    assert set(mapping) == {*AI4I_COLUMNS, "Timestamp"}
    assert mapping["Timestamp"] == "event_time"
    assert mapping["Torque [Nm]"] == "torque_nm"
    assert mapping["Product ID"] == "product_id"
    assert mapping["Machine failure"] == "machine_failure"
    assert mapping["TWF"] == "twf"


def test_column_lookup_and_unknown_column() -> None:
    assert AI4I.column("torque_nm").min_value == 0.0
    assert AI4I.column("type").allowed == ("L", "M", "H")
    with pytest.raises(KeyError, match="no_such_column"):
        AI4I.column("no_such_column")


def test_derived_features_compute_exact_values() -> None:
    obs = hand_observations()
    derived = {d.name: d.compute(obs) for d in AI4I.derived}
    np.testing.assert_allclose(derived["temp_diff_k"], [10.5, 8.5])
    np.testing.assert_allclose(
        derived["power_w"], [40.0 * 1500 * 2 * np.pi / 60, 12.5 * 3000 * 2 * np.pi / 60]
    )
    np.testing.assert_allclose(derived["strain_min_nm"], [400.0, 2500.0])
    # relative to the documented limits: overstrain 11,000 (L) / 13,000 (H) min·Nm, power
    # band 3,500-9,000 W, heat dissipation 8.6 K and 1,380 rpm
    np.testing.assert_allclose(derived["overstrain_ratio"], [400.0 / 11_000, 2500.0 / 13_000])
    power = derived["power_w"].to_numpy()
    np.testing.assert_allclose(derived["power_margin_w"], [9_000 - power[0], power[1] - 3_500])
    np.testing.assert_allclose(
        derived["heat_dissipation_margin"], [max(10.5 / 8.6, 1500 / 1380) - 1, 3000 / 1380 - 1]
    )
    for name, series in derived.items():
        assert series.name == name
        assert series.dtype == "float64"


# --- validation of declarations --------------------------------------------------------------


def test_column_spec_rejects_unsupported_dtype() -> None:
    with pytest.raises(ValueError, match="bool"):
        ColumnSpec("flag", "Flag", "bool", Role.FEATURE)


@pytest.mark.parametrize("dtype", ["int64", "float64", "string", "timestamp"])
def test_column_spec_accepts_the_declared_dtypes(dtype: str) -> None:
    assert ColumnSpec("c", "C", dtype, Role.FEATURE).dtype == dtype


def test_column_spec_rejects_an_inverted_range() -> None:
    with pytest.raises(ValueError, match=r"'t'.*min_value 2.0 > max_value 1.0"):
        ColumnSpec("t", "T", "float64", Role.FEATURE, min_value=2.0, max_value=1.0)


def test_dataset_spec_event_time_is_optional_and_checked() -> None:
    assert _toy().event_time is None
    spec = _toy(_col("at", Role.IDENTIFIER, "timestamp"), event_time="at")
    assert spec.event_time == "at"
    assert spec.excluded_from_model == ["id", "at"]
    assert spec.model_features == ["x"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "event time 'at' not declared"),
        ((_col("at", Role.IDENTIFIER, "string"),), "event time 'at' must be a timestamp"),
        ((_col("at", Role.FEATURE, "timestamp"),), "event time 'at' must have role 'identifier'"),
        ((_col("at", Role.LEAKAGE, "timestamp"),), "event time 'at' must have role 'identifier'"),
    ],
)
def test_dataset_spec_rejects_a_bad_event_time(extra: tuple[ColumnSpec, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _toy(*extra, event_time="at")


def test_required_columns_follow_the_declarations_in_order() -> None:
    optional = ColumnSpec("z", "Z", "float64", Role.FEATURE, required=False)
    assert _toy(optional).required_columns == ["id", "x", "y"]


def test_dataset_spec_minimal_valid() -> None:
    spec = DatasetSpec(
        "toy", (_col("id", Role.IDENTIFIER, "int64"), _col("x"), _col("y", Role.TARGET, "int64")),
        entity_id="id", target="y", derived=(_derived("x2"),),
    )  # fmt: skip
    assert spec.model_features == ["x", "x2"]
    assert spec.excluded_from_model == ["id"]


@pytest.mark.parametrize(
    ("columns", "entity_id", "target", "derived", "message"),
    [
        ((_col("id", Role.IDENTIFIER), _col("id"), _col("y", Role.TARGET)),
         "id", "y", (), "duplicate column names"),
        ((_col("x"), _col("y", Role.TARGET)), "id", "y", (), "entity id 'id' not declared"),
        ((_col("id", Role.IDENTIFIER), _col("x")), "id", "y", (), "target 'y' not declared"),
        ((_col("id", Role.IDENTIFIER), _col("y")), "id", "y", (), "must have role 'target'"),
        ((_col("id", Role.IDENTIFIER), _col("x"), _col("y", Role.TARGET)),
         "id", "y", (_derived("x"),), "derived 'x' shadows a column"),
    ],
)  # fmt: skip
def test_dataset_spec_rejects_inconsistent_declarations(
    columns: tuple[ColumnSpec, ...],
    entity_id: str,
    target: str,
    derived: tuple[DerivedFeature, ...],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        DatasetSpec("toy", columns, entity_id=entity_id, target=target, derived=derived)


def test_derived_compute_accepts_nullable_integers() -> None:
    obs = hand_observations().astype({"rotational_speed_rpm": "Int64", "tool_wear_min": "Int64"})
    power = AI4I.derived[1].compute(obs)
    assert isinstance(power, pd.Series)
    np.testing.assert_allclose(power.to_numpy(dtype="float64"), [2000 * np.pi, 1250 * np.pi])


def test_dataset_spec_rejects_duplicate_derived_names() -> None:
    columns = (_col("id", Role.IDENTIFIER), _col("x"), _col("y", Role.TARGET, "int64"))
    with pytest.raises(ValueError, match="x2"):
        DatasetSpec(
            "toy", columns, entity_id="id", target="y", derived=(_derived("x2"), _derived("x2"))
        )


def test_dataset_spec_rejects_an_entity_id_that_is_a_feature() -> None:
    columns = (_col("id", Role.FEATURE), _col("x"), _col("y", Role.TARGET, "int64"))
    with pytest.raises(ValueError, match="'id'"):
        DatasetSpec("toy", columns, entity_id="id", target="y")
