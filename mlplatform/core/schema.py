"""Declared schema of a dataset: every column's type, unit, allowed values and role.

The schema is declared once and drives typing of landed files, row validation,
feature selection and the model signature. Identifier and leakage columns are
declared here and are never handed to a model.

:data:`AI4I` is declared in code (its derived features are functions); any other
dataset can be declared in a YAML, TOML or JSON file and loaded with
:func:`load_dataset_spec` (``MLPLATFORM_DATASET`` names that file; see
``docs/examples/new-dataset.md``).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "AI4I",
    "DATASET_FILE_SUFFIXES",
    "ColumnSpec",
    "DatasetSpec",
    "DatasetSpecError",
    "DerivedFeature",
    "Role",
    "dataset_spec_from_mapping",
    "load_dataset_spec",
]


DTYPES = frozenset({"int64", "float64", "string", "timestamp"})


class Role(StrEnum):
    """What a column is for."""

    FEATURE = "feature"
    TARGET = "target"
    IDENTIFIER = "identifier"
    LEAKAGE = "leakage"


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a landed file.

    Parameters
    ----------
    name : str
        Canonical (snake_case) name used in the feature store and by models.
    source : str
        Column header in landed files.
    dtype : {"int64", "float64", "string", "timestamp"}
        Storage type (``timestamp``: ISO-8601 text or a Parquet timestamp, stored in UTC).
    role : Role
        Feature, target, identifier or leakage.
    unit : str, optional
        Physical unit, for documentation and plots.
    min_value, max_value : float, optional
        Inclusive range from the column's physical meaning.
    allowed : tuple of str, optional
        Allowed values of a categorical column.
    required : bool
        Whether a landed file must carry the column.
    """

    name: str
    source: str
    dtype: str
    role: Role
    unit: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    allowed: tuple[str, ...] | None = None
    required: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name!r}: unsupported dtype {self.dtype!r}")
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.min_value > self.max_value
        ):
            raise ValueError(
                f"column {self.name!r}: min_value {self.min_value} > max_value {self.max_value}"
            )

    @property
    def is_numeric(self) -> bool:
        """Whether the column holds numbers."""
        return self.dtype in {"int64", "float64"}


@dataclass(frozen=True)
class DerivedFeature:
    """A feature computed from other columns of the same row.

    ``expression`` is set when the feature was declared in a spec file (a pandas
    ``DataFrame.eval`` expression over feature columns); ``compute`` then evaluates it.
    """

    name: str
    unit: str
    description: str
    compute: Callable[[pd.DataFrame], pd.Series]
    expression: str | None = None

    @classmethod
    def from_expression(
        cls, name: str, expression: str, unit: str = "", description: str = ""
    ) -> DerivedFeature:
        """A derived feature computed as ``frame.eval(expression)`` (float64)."""

        def compute(frame: pd.DataFrame) -> pd.Series:
            values = frame.eval(expression, engine="python")
            if not isinstance(values, pd.Series):  # a constant expression
                values = pd.Series(values, index=frame.index)
            return pd.Series(
                np.asarray(values, dtype="float64"), index=frame.index, name=name, dtype="float64"
            )

        return cls(name, unit, description, compute, expression)


@dataclass(frozen=True)
class DatasetSpec:
    """The full declaration of a dataset the platform trains on."""

    name: str
    columns: tuple[ColumnSpec, ...]
    entity_id: str
    target: str
    derived: tuple[DerivedFeature, ...] = field(default=())
    event_time: str | None = None
    slice_column: str | None = None
    """Categorical feature whose values are the evaluation's slices (the gate judges
    recall in each); None: no slices."""
    registered_model_name: str | None = None
    """Name of the model in the MLflow registry; None: ``<name>-classifier``."""
    description: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset {self.name!r}: duplicate column names in {names}")
        if self.entity_id not in names:
            raise ValueError(f"dataset {self.name!r}: entity id {self.entity_id!r} not declared")
        if self.target not in names:
            raise ValueError(f"dataset {self.name!r}: target {self.target!r} not declared")
        if self.column(self.target).role is not Role.TARGET:
            raise ValueError(f"dataset {self.name!r}: {self.target!r} must have role 'target'")
        if self.column(self.entity_id).role is not Role.IDENTIFIER:
            raise ValueError(
                f"dataset {self.name!r}: entity id {self.entity_id!r} must have role "
                "'identifier' (identifiers never reach a model)"
            )
        if self.event_time is not None:
            if self.event_time not in names:
                raise ValueError(
                    f"dataset {self.name!r}: event time {self.event_time!r} not declared"
                )
            if self.column(self.event_time).dtype != "timestamp":
                raise ValueError(
                    f"dataset {self.name!r}: event time {self.event_time!r} must be a timestamp"
                )
            if self.column(self.event_time).role is not Role.IDENTIFIER:
                raise ValueError(
                    f"dataset {self.name!r}: event time {self.event_time!r} must have role "
                    "'identifier' (a timestamp is never a model input)"
                )
        derived = [d.name for d in self.derived]
        if len(set(derived)) != len(derived):
            raise ValueError(f"dataset {self.name!r}: duplicate derived features in {derived}")
        for d in self.derived:
            if d.name in names:
                raise ValueError(f"dataset {self.name!r}: derived {d.name!r} shadows a column")
        if self.slice_column is not None and self.slice_column not in self.names(Role.FEATURE):
            raise ValueError(
                f"dataset {self.name!r}: slice column {self.slice_column!r} must be a declared "
                f"feature (one of {self.names(Role.FEATURE)})"
            )

    def for_scoring(self) -> DatasetSpec:
        """The same dataset with the target and leakage columns optional.

        Rows to be scored need the entity id and the features, not the label.
        """
        optional = {Role.TARGET, Role.LEAKAGE}
        columns = tuple(
            replace(c, required=False) if c.role in optional else c for c in self.columns
        )
        return replace(self, columns=columns)

    @property
    def model_name(self) -> str:
        """The registered model's name in MLflow."""
        return self.registered_model_name or f"{self.name}-classifier"

    def column(self, name: str) -> ColumnSpec:
        """The spec of column ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"dataset {self.name!r} has no column {name!r}")

    def names(self, role: Role) -> list[str]:
        """Canonical names of the columns with ``role``, in declared order."""
        return [c.name for c in self.columns if c.role is role]

    @property
    def excluded_from_model(self) -> list[str]:
        """Identifier and leakage columns: never model inputs."""
        return self.names(Role.IDENTIFIER) + self.names(Role.LEAKAGE)

    @property
    def required_columns(self) -> list[str]:
        """Canonical names of the columns every landed batch must carry."""
        return [c.name for c in self.columns if c.required]

    @property
    def categorical_features(self) -> list[str]:
        """Raw feature columns of string type (one-hot encoded by the model)."""
        return [c.name for c in self.columns if c.role is Role.FEATURE and not c.is_numeric]

    @property
    def numeric_features(self) -> list[str]:
        """Raw numeric feature columns followed by the derived features (scaled)."""
        raw = [c.name for c in self.columns if c.role is Role.FEATURE and c.is_numeric]
        return raw + [d.name for d in self.derived]

    @property
    def model_features(self) -> list[str]:
        """Every column a model sees, in a fixed order."""
        return self.numeric_features + self.categorical_features

    @property
    def numeric_headers(self) -> list[str]:
        """Headers a landed file may give the numeric columns: source and canonical names."""
        return list(
            dict.fromkeys(n for c in self.columns if c.is_numeric for n in (c.source, c.name))
        )

    @property
    def integer_headers(self) -> list[str]:
        """Headers a landed file may give the integer columns: source and canonical names."""
        return list(
            dict.fromkeys(n for c in self.columns if c.dtype == "int64" for n in (c.source, c.name))
        )

    @property
    def source_to_name(self) -> dict[str, str]:
        """Map from landed-file headers to canonical names."""
        return {c.source: c.name for c in self.columns}


def _values(df: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as float64 values (NaN where missing), without a copy where possible."""
    return df[name].to_numpy(dtype="float64", na_value=np.nan)


def _series(values: np.ndarray, df: pd.DataFrame, name: str) -> pd.Series:
    return pd.Series(values, index=df.index, dtype="float64", name=name)


def _temperature_difference(df: pd.DataFrame) -> pd.Series:
    gap = _values(df, "process_temperature_k") - _values(df, "air_temperature_k")
    return _series(gap, df, "temp_diff_k")


def _power(df: pd.DataFrame) -> np.ndarray:
    omega = _values(df, "rotational_speed_rpm") * (2.0 * np.pi / 60.0)
    return _values(df, "torque_nm") * omega


def _mechanical_power(df: pd.DataFrame) -> pd.Series:
    return _series(_power(df), df, "power_w")


def _strain(df: pd.DataFrame) -> np.ndarray:
    return _values(df, "tool_wear_min") * _values(df, "torque_nm")


def _tool_strain(df: pd.DataFrame) -> pd.Series:
    return _series(_strain(df), df, "strain_min_nm")


# Documented limits of the AI4I process (the dataset's description of its failure
# modes): features relative to them turn each limit into a single split at 0 or 1,
# which a model otherwise has to learn per product type or from two sides.
OVERSTRAIN_LIMIT_MIN_NM = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}
POWER_BAND_W = (3_500.0, 9_000.0)
HEAT_DISSIPATION_LIMITS = (8.6, 1_380.0)  # temperature gap [K], rotational speed [rpm]


def _overstrain_ratio(df: pd.DataFrame) -> pd.Series:
    # each row's limit by one hash lookup of its type (a map through Python objects
    # costs ~0.1 s a million rows); NaN for a type without a limit
    kinds = pa.array(df["type"], from_pandas=True)
    found = pc.index_in(kinds, value_set=pa.array(list(OVERSTRAIN_LIMIT_MIN_NM), kinds.type))
    limits = np.append(np.fromiter(OVERSTRAIN_LIMIT_MIN_NM.values(), "float64"), np.nan)
    index = pc.fill_null(found, len(OVERSTRAIN_LIMIT_MIN_NM)).to_numpy(zero_copy_only=False)
    return _series(_strain(df) / limits[index], df, "overstrain_ratio")


def _power_margin(df: pd.DataFrame) -> pd.Series:
    power = _power(df)
    low, high = POWER_BAND_W
    return _series(np.minimum(power - low, high - power), df, "power_margin_w")


def _heat_dissipation_margin(df: pd.DataFrame) -> pd.Series:
    max_gap, max_speed = HEAT_DISSIPATION_LIMITS
    gap = (_values(df, "process_temperature_k") - _values(df, "air_temperature_k")) / max_gap
    speed = _values(df, "rotational_speed_rpm") / max_speed
    return _series(np.maximum(gap - 1.0, speed - 1.0), df, "heat_dissipation_margin")


AI4I = DatasetSpec(
    name="ai4i2020",
    entity_id="udi",
    target="machine_failure",
    event_time="event_time",
    slice_column="type",
    registered_model_name="ai4i-failure-classifier",
    description="AI4I 2020 predictive maintenance (UCI): will this machine fail?",
    columns=(
        ColumnSpec(
            "udi",
            "UDI",
            "int64",
            Role.IDENTIFIER,
            min_value=0,
            description="Row id; unique per observation.",
        ),
        ColumnSpec(
            "event_time",
            "Timestamp",
            "timestamp",
            Role.IDENTIFIER,
            required=False,
            description="When the observation was made (UTC); a batch without it is "
            "stamped with its ingestion time.",
        ),
        ColumnSpec(
            "product_id",
            "Product ID",
            "string",
            Role.IDENTIFIER,
            description="Quality letter and serial number.",
        ),
        ColumnSpec(
            "type",
            "Type",
            "string",
            Role.FEATURE,
            allowed=("L", "M", "H"),
            description="Product quality variant: low, medium, high.",
        ),
        ColumnSpec(
            "air_temperature_k",
            "Air temperature [K]",
            "float64",
            Role.FEATURE,
            unit="K",
            min_value=250.0,
            max_value=350.0,
            description="Ambient air temperature.",
        ),
        ColumnSpec(
            "process_temperature_k",
            "Process temperature [K]",
            "float64",
            Role.FEATURE,
            unit="K",
            min_value=250.0,
            max_value=400.0,
            description="Process temperature.",
        ),
        ColumnSpec(
            "rotational_speed_rpm",
            "Rotational speed [rpm]",
            "int64",
            Role.FEATURE,
            unit="rpm",
            min_value=0,
            max_value=10_000,
            description="Spindle speed.",
        ),
        ColumnSpec(
            "torque_nm",
            "Torque [Nm]",
            "float64",
            Role.FEATURE,
            unit="Nm",
            min_value=0.0,
            max_value=200.0,
            description="Torque; never negative.",
        ),
        ColumnSpec(
            "tool_wear_min",
            "Tool wear [min]",
            "int64",
            Role.FEATURE,
            unit="min",
            min_value=0,
            max_value=1_000,
            description="Minutes the tool has been used.",
        ),
        ColumnSpec(
            "machine_failure",
            "Machine failure",
            "int64",
            Role.TARGET,
            allowed=None,
            min_value=0,
            max_value=1,
            description="1 if any failure mode occurred.",
        ),
        ColumnSpec(
            "twf",
            "TWF",
            "int64",
            Role.LEAKAGE,
            min_value=0,
            max_value=1,
            required=False,
            description="Tool wear failure (leaks the target).",
        ),
        ColumnSpec(
            "hdf",
            "HDF",
            "int64",
            Role.LEAKAGE,
            min_value=0,
            max_value=1,
            required=False,
            description="Heat dissipation failure (leaks the target).",
        ),
        ColumnSpec(
            "pwf",
            "PWF",
            "int64",
            Role.LEAKAGE,
            min_value=0,
            max_value=1,
            required=False,
            description="Power failure (leaks the target).",
        ),
        ColumnSpec(
            "osf",
            "OSF",
            "int64",
            Role.LEAKAGE,
            min_value=0,
            max_value=1,
            required=False,
            description="Overstrain failure (leaks the target).",
        ),
        ColumnSpec(
            "rnf",
            "RNF",
            "int64",
            Role.LEAKAGE,
            min_value=0,
            max_value=1,
            required=False,
            description="Random failure (leaks the target).",
        ),
    ),
    derived=(
        DerivedFeature(
            "temp_diff_k",
            "K",
            "Process minus air temperature (heat dissipation).",
            _temperature_difference,
        ),
        DerivedFeature(
            "power_w", "W", "Torque times angular speed (power failure).", _mechanical_power
        ),
        DerivedFeature(
            "strain_min_nm", "min·Nm", "Tool wear times torque (overstrain).", _tool_strain
        ),
        DerivedFeature(
            "overstrain_ratio",
            "1",
            "Tool strain over the product type's overstrain limit (11,000 / 12,000 / "
            "13,000 min·Nm for L / M / H); above 1 is overstrained.",
            _overstrain_ratio,
        ),
        DerivedFeature(
            "power_margin_w",
            "W",
            "Distance of the power inside the 3,500-9,000 W band; negative outside it.",
            _power_margin,
        ),
        DerivedFeature(
            "heat_dissipation_margin",
            "1",
            "The larger relative margin below the heat-dissipation limits (temperature gap "
            "8.6 K, speed 1,380 rpm); negative when both are below.",
            _heat_dissipation_margin,
        ),
    ),
)


# --- datasets declared in a file ----------------------------------------------------------

DATASET_FILE_SUFFIXES = (".yaml", ".yml", ".toml", ".json")

_SPEC_KEYS = {
    "name",
    "entity_id",
    "target",
    "columns",
    "derived",
    "event_time",
    "slice_column",
    "registered_model_name",
    "description",
}
_COLUMN_KEYS = {f.name for f in fields(ColumnSpec)} - {"min_value", "max_value"} | {"min", "max"}
_DERIVED_KEYS = {"name", "expression", "unit", "description"}


class DatasetSpecError(ValueError):
    """A dataset spec file that cannot be used; the message names the file and the key."""


def _read_spec_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in DATASET_FILE_SUFFIXES:
        raise DatasetSpecError(
            f"{path}: unsupported dataset spec format {suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(DATASET_FILE_SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetSpecError(f"{path}: dataset spec file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetSpecError(f"{path}: cannot read the dataset spec: {exc}") from exc
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
        import yaml

        return yaml.safe_load(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise DatasetSpecError(f"{path}: not valid {suffix[1:].upper()}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError: yaml is imported lazily
        raise DatasetSpecError(f"{path}: not valid YAML: {exc}") from exc


def _unknown_keys(where: str, given: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise DatasetSpecError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def _column_from(where: str, data: Any) -> ColumnSpec:
    if not isinstance(data, Mapping):
        raise DatasetSpecError(f"{where}: expected a mapping with name, dtype and role")
    _unknown_keys(where, data, _COLUMN_KEYS)
    missing = [k for k in ("name", "dtype", "role") if k not in data]
    if missing:
        raise DatasetSpecError(f"{where}: missing {missing}")
    try:
        role = Role(str(data["role"]))
    except ValueError as exc:
        raise DatasetSpecError(
            f"{where}: role {data['role']!r} is not one of {[r.value for r in Role]}"
        ) from exc
    allowed = data.get("allowed")
    try:
        return ColumnSpec(
            name=str(data["name"]),
            source=str(data.get("source", data["name"])),
            dtype=str(data["dtype"]),
            role=role,
            unit=None if data.get("unit") is None else str(data["unit"]),
            min_value=None if data.get("min") is None else float(data["min"]),
            max_value=None if data.get("max") is None else float(data["max"]),
            allowed=None if allowed is None else tuple(str(v) for v in allowed),
            required=bool(data.get("required", True)),
            description=str(data.get("description", "")),
        )
    except (TypeError, ValueError) as exc:
        raise DatasetSpecError(f"{where}: {exc}") from exc


def _derived_from(where: str, data: Any, columns: tuple[ColumnSpec, ...]) -> DerivedFeature:
    if not isinstance(data, Mapping):
        raise DatasetSpecError(f"{where}: expected a mapping with name and expression")
    _unknown_keys(where, data, _DERIVED_KEYS)
    if "name" not in data or "expression" not in data:
        raise DatasetSpecError(f"{where}: needs name and expression")
    derived = DerivedFeature.from_expression(
        str(data["name"]),
        str(data["expression"]),
        unit=str(data.get("unit", "")),
        description=str(data.get("description", "")),
    )
    # Evaluated on one made-up row of feature columns only: a derived feature that
    # reads the target, an identifier or a leakage column would leak it into the model.
    probe = pd.DataFrame(
        {
            c.name: pd.Series(["x"] if c.dtype == "string" else [1], dtype="object").astype(
                "string" if c.dtype == "string" else "float64"
            )
            for c in columns
            if c.role is Role.FEATURE
        }
    )
    try:
        derived.compute(probe)
    except Exception as exc:  # pandas raises many kinds for a bad expression
        features = [c.name for c in columns if c.role is Role.FEATURE]
        raise DatasetSpecError(
            f"{where}: expression {derived.expression!r} cannot be computed from the feature "
            f"columns {features}: {exc}"
        ) from exc
    return derived


def dataset_spec_from_mapping(data: Any, source: str = "<dataset spec>") -> DatasetSpec:
    """A :class:`DatasetSpec` from plain data (a parsed spec file).

    Parameters
    ----------
    data : mapping
        Keys ``name``, ``entity_id``, ``target``, ``columns`` (a list of mappings
        with ``name``, ``dtype``, ``role`` and optionally ``source``, ``unit``,
        ``min``, ``max``, ``allowed``, ``required``, ``description``) and optionally
        ``event_time``, ``slice_column``, ``registered_model_name``, ``description``
        and ``derived`` (a list of ``name``, ``expression``, ``unit``, ``description``;
        ``expression`` is a pandas ``DataFrame.eval`` expression over feature columns).
    source : str
        Where the data came from, named in every error.

    Raises
    ------
    DatasetSpecError
        Naming the file, the entry and the key at fault.
    """
    if not isinstance(data, Mapping):
        raise DatasetSpecError(f"{source}: expected a mapping at the top level")
    _unknown_keys(source, data, _SPEC_KEYS)
    missing = [k for k in ("name", "entity_id", "target", "columns") if k not in data]
    if missing:
        raise DatasetSpecError(f"{source}: missing {missing}")
    raw_columns = data["columns"]
    if not isinstance(raw_columns, list) or not raw_columns:
        raise DatasetSpecError(f"{source}: 'columns' must be a non-empty list")
    columns = tuple(
        _column_from(
            f"{source}: columns[{i}] ({c.get('name', '?') if isinstance(c, Mapping) else c!r})", c
        )
        for i, c in enumerate(raw_columns)
    )
    raw_derived = data.get("derived") or []
    if not isinstance(raw_derived, list):
        raise DatasetSpecError(f"{source}: 'derived' must be a list")
    derived = tuple(
        _derived_from(f"{source}: derived[{i}]", d, columns) for i, d in enumerate(raw_derived)
    )
    try:
        return DatasetSpec(
            name=str(data["name"]),
            columns=columns,
            entity_id=str(data["entity_id"]),
            target=str(data["target"]),
            derived=derived,
            event_time=None if data.get("event_time") is None else str(data["event_time"]),
            slice_column=None if data.get("slice_column") is None else str(data["slice_column"]),
            registered_model_name=(
                None
                if data.get("registered_model_name") is None
                else str(data["registered_model_name"])
            ),
            description=str(data.get("description", "")),
        )
    except ValueError as exc:
        raise DatasetSpecError(f"{source}: {exc}") from exc


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """The dataset declared in a YAML, TOML or JSON file (see :func:`dataset_spec_from_mapping`).

    Raises
    ------
    DatasetSpecError
        When the file is missing, unreadable, malformed or declares an invalid dataset.
    """
    path = Path(path).expanduser()
    return dataset_spec_from_mapping(_read_spec_file(path), str(path))
