"""Dataset spec files (``MLPLATFORM_DATASET``) and the assets' code versions."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.core.schema import AI4I, DatasetSpecError, Role, load_dataset_spec

SPEC = {
    "name": "toy",
    "entity_id": "id",
    "target": "y",
    "slice_column": "colour",
    "columns": [
        {"name": "id", "dtype": "int64", "role": "identifier"},
        {"name": "x", "source": "X [m]", "dtype": "float64", "role": "feature", "min": 0},
        {"name": "colour", "dtype": "string", "role": "feature", "allowed": ["red", "blue"]},
        {"name": "y", "dtype": "int64", "role": "target", "min": 0, "max": 1},
        {"name": "note", "dtype": "string", "role": "leakage", "required": False},
    ],
    "derived": [{"name": "x2", "expression": "x * x", "unit": "m2"}],
}


def _write(tmp_path: Path, data: object, suffix: str = ".json") -> Path:
    path = tmp_path / f"spec{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else str(data))
    return path


def test_a_spec_file_declares_columns_roles_ranges_and_derived_features(tmp_path: Path) -> None:
    spec = load_dataset_spec(_write(tmp_path, SPEC))
    assert spec.model_features == ["x", "x2", "colour"]
    assert spec.excluded_from_model == ["id", "note"]
    assert spec.column("x").source == "X [m]" and spec.column("x").min_value == 0.0
    assert spec.column("colour").allowed == ("red", "blue")
    assert spec.column("note").required is False
    assert spec.slice_column == "colour" and spec.model_name == "toy-classifier"
    frame = pd.DataFrame({"x": [1.0, 3.0], "colour": ["red", "blue"]})
    assert spec.derived[0].compute(frame).tolist() == [1.0, 9.0]


def test_yaml_toml_and_json_give_the_same_dataset(tmp_path: Path) -> None:
    yaml_text = textwrap.dedent(
        """
        name: toy
        entity_id: id
        target: y
        columns:
          - {name: id, dtype: int64, role: identifier}
          - {name: x, dtype: float64, role: feature}
          - {name: y, dtype: int64, role: target}
        """
    )
    toml_text = textwrap.dedent(
        """
        name = "toy"
        entity_id = "id"
        target = "y"
        [[columns]]
        name = "id"
        dtype = "int64"
        role = "identifier"
        [[columns]]
        name = "x"
        dtype = "float64"
        role = "feature"
        [[columns]]
        name = "y"
        dtype = "int64"
        role = "target"
        """
    )
    from_yaml = load_dataset_spec(_write(tmp_path, yaml_text, ".yaml"))
    from_toml = load_dataset_spec(_write(tmp_path, toml_text, ".toml"))
    assert from_yaml == from_toml
    assert from_yaml.model_features == ["x"]


def _broken(**changes: object) -> dict[str, object]:
    return {**SPEC, **changes}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_broken(colour="x"), "unknown keys ['colour']"),
        ({k: v for k, v in SPEC.items() if k != "target"}, "missing ['target']"),
        (_broken(target="x"), "'x' must have role 'target'"),
        (_broken(slice_column="id"), "slice column 'id' must be a declared feature"),
        (
            _broken(columns=[*SPEC["columns"], {"name": "z", "dtype": "float64"}]),  # type: ignore[list-item]
            "columns[5] ('z'): missing ['role']",
        ),
        (
            _broken(columns=[{"name": "id", "dtype": "int64", "role": "key"}]),
            "role 'key' is not one of",
        ),
        (
            _broken(columns=[{"name": "id", "dtype": "decimal", "role": "identifier"}]),
            "unsupported dtype 'decimal'",
        ),
        # a derived feature may read feature columns only: the label would leak
        (_broken(derived=[{"name": "d", "expression": "x + y"}]), "derived[0]: expression"),
        (_broken(derived=[{"name": "d", "expression": "x +"}]), "derived[0]: expression"),
        (_broken(derived=[{"name": "x", "expression": "x * 2"}]), "shadows a column"),
    ],
)
def test_a_bad_spec_is_rejected_naming_the_file_and_the_entry(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(DatasetSpecError) as error:
        load_dataset_spec(path)
    assert str(path) in str(error.value) and message in str(error.value), str(error.value)


def test_an_unreadable_spec_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetSpecError, match="dataset spec file not found"):
        load_dataset_spec(tmp_path / "missing.yaml")
    with pytest.raises(DatasetSpecError, match=r"unsupported dataset spec format '\.csv'"):
        load_dataset_spec(_write(tmp_path, "a,b", ".csv"))
    with pytest.raises(DatasetSpecError, match="not valid YAML"):
        load_dataset_spec(_write(tmp_path, "name: [unclosed", ".yaml"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(DatasetSpecError, match="not valid JSON"):
        load_dataset_spec(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(DatasetSpecError, match="expected a mapping at the top level"):
        load_dataset_spec(listed)


def test_scoring_needs_neither_the_label_nor_leakage_columns() -> None:
    scoring = AI4I.for_scoring()
    assert "machine_failure" not in scoring.required_columns
    assert set(scoring.required_columns) == set(AI4I.required_columns) - {"machine_failure"}
    assert scoring.model_features == AI4I.model_features
    assert AI4I.column("machine_failure").required  # the original is unchanged
    assert scoring.names(Role.TARGET) == ["machine_failure"]


def test_ai4i_slices_by_product_type_and_keeps_its_registered_name() -> None:
    assert AI4I.slice_column == "type"
    assert AI4I.model_name == "ai4i-failure-classifier"


def test_code_version_follows_the_named_code_only(tmp_path: Path) -> None:
    from mlplatform.defs.common import code_version

    module = tmp_path / "assets.py"
    module.write_text("def a():\n    return 1\n\n\ndef b():\n    return 2\n")
    before = code_version(str(module), "a")
    assert code_version(str(module), "a") == before  # deterministic
    module.write_text("def a():\n    return 1\n\n\ndef b():\n    return 3\n")
    assert code_version(str(module), "a") == before  # b changed, not a
    module.write_text("def a():\n    return 10\n\n\ndef b():\n    return 3\n")
    assert code_version(str(module), "a") != before
    with pytest.raises(ValueError, match="defines no"):
        code_version(str(module), "c")


def test_every_asset_has_kinds_an_owner_and_a_code_version() -> None:
    from mlplatform.definitions import build_definitions
    from mlplatform.paths import StatePaths

    graph = build_definitions(StatePaths(Path("/unused"))).resolve_asset_graph()
    # ingestion and inference are defined in modules this change does not touch; their
    # code versions are reported to their owners (see docs/ui-metadata notes)
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.kinds, key
        assert node.owners, key
    versioned = {
        k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).code_version
    }
    assert {
        "feature_table",
        "train_test_split",
        "candidate_model",
        "model_evaluation",
        "gate_decision",
        "registered_model",
        "champion_model",
    } <= versioned
