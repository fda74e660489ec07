"""Serving-time checks and scoring of one batch with a registered pipeline.

Batch inference reads feature rows of any size in batches; this module holds what
each batch needs and nothing that touches a file:

- :class:`TrainingReference`: what the training rows looked like (per numeric
  feature its range and deciles, per categorical one its categories and shares),
  built once from the training split and stored as plain JSON beside the model;
- :func:`check_serving_input`: whether an input schema can be scored at all
  (missing or mistyped model columns are errors naming the column, extra columns
  are listed), decided before a single row is read;
- :func:`out_of_range_counts`: per feature, values outside the training range or
  categories never seen in training;
- :func:`score_batch`: one ``predict_proba`` per batch, the label derived from the
  pipeline's own decision threshold, plus lineage on every row;
- :class:`ScoringSummary`: rows, positives, probability histogram and input
  counts, merged across batches in constant memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline

from mlplatform.core.features import model_inputs
from mlplatform.core.schema import DatasetSpec

__all__ = [
    "BATCH_PREDICTION_COLUMNS",
    "BATCH_PREDICTION_SCHEMA",
    "HISTOGRAM_BINS",
    "CategoricalReference",
    "NumericReference",
    "ScoringSummary",
    "ServingCheck",
    "ServingInputError",
    "TrainingReference",
    "check_serving_input",
    "missing_value_counts",
    "out_of_range_counts",
    "pipeline_threshold",
    "score_batch",
]

BATCH_PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.int64()),
        pa.field("event_time", pa.timestamp("us", tz="UTC")),
        pa.field("failure_probability", pa.float64()),
        pa.field("predicted_failure", pa.int64()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("alias", pa.string()),
        pa.field("threshold", pa.float64()),
        pa.field("dagster_run_id", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""Arrow schema of every prediction part, so all parts of a partition agree."""

BATCH_PREDICTION_COLUMNS: list[str] = BATCH_PREDICTION_SCHEMA.names

HISTOGRAM_BINS = 20
"""Equal-width bins of the failure-probability histogram on [0, 1]."""

_HISTOGRAM_EDGES = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
_DECILES = tuple(q / 10 for q in range(1, 10))
NATURAL_WINDOW_ROWS = 500
"""Rows per window when measuring how far consecutive training rows stray by themselves."""
SKETCH_POINTS = 1001
"""Quantiles kept per numeric feature (0 %, 0.1 %, ..., 100 %): the training
distribution to within 0.1 % of its rows, enough for a Kolmogorov-Smirnov test."""
_SKETCH_LEVELS = np.linspace(0.0, 1.0, SKETCH_POINTS)
_REFERENCE_FORMAT = 1
_PSI_EPS = 1e-4


# --- training reference ----------------------------------------------------------------


@dataclass(frozen=True)
class NumericReference:
    """Range and deciles of one numeric feature on the training rows.

    Parameters
    ----------
    min, max : float
        Smallest and largest training value.
    deciles : tuple of float
        The 9 cut points at the 10 %, 20 %, ..., 90 % quantiles: with ``min`` and
        ``max`` they bound 10 bins holding a tenth of the training rows each, the
        reference a drift statistic (e.g. PSI) compares serving rows with.
    quantiles : tuple of float
        The :data:`SKETCH_POINTS` quantiles at 0 %, 0.1 %, ..., 100 % (a sketch of
        the whole distribution, for the Kolmogorov-Smirnov test of
        :mod:`mlplatform.core.monitoring`); empty in references stored before it.
    """

    min: float
    max: float
    deciles: tuple[float, ...]
    quantiles: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "min": self.min,
            "max": self.max,
            "deciles": list(self.deciles),
            "quantiles": list(self.quantiles),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericReference:
        """Inverse of :meth:`to_dict` (``quantiles`` may be absent: older references)."""
        return cls(
            min=float(data["min"]),
            max=float(data["max"]),
            deciles=tuple(float(v) for v in data["deciles"]),
            quantiles=tuple(float(v) for v in data.get("quantiles", ())),
        )


@dataclass(frozen=True)
class CategoricalReference:
    """Categories of one categorical feature seen in training, and their shares."""

    categories: tuple[str, ...]
    shares: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"categories": list(self.categories), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalReference:
        """Inverse of :meth:`to_dict`."""
        return cls(
            categories=tuple(str(c) for c in data["categories"]),
            shares=tuple(float(s) for s in data["shares"]),
        )


@dataclass(frozen=True)
class TrainingReference:
    """What every model feature looked like on the training rows.

    Build it with :meth:`from_frame` from the training split only (the rows the
    pipeline was fitted on); store it with :meth:`to_dict` as JSON.

    Parameters
    ----------
    dataset : str
        Name of the :class:`~mlplatform.core.schema.DatasetSpec`.
    n_rows : int
        Training rows it was computed from.
    numeric : mapping of str to NumericReference
        One entry per numeric model feature (raw and derived).
    categorical : mapping of str to CategoricalReference
        One entry per categorical model feature.
    natural_psi : mapping of str to float
        Per feature, the largest PSI of any window of ``natural_window`` consecutive
        training rows against the whole training set: how far a stretch of rows
        strays by itself (a slow random walk, like AI4I's temperatures, strays far).
        A drift monitor should not call a recent window drifted for straying less.
        Empty when the training rows were too few (fewer than two windows).
    natural_window : int
        Rows per window of ``natural_psi`` (0: not computed).
    """

    dataset: str
    n_rows: int
    numeric: Mapping[str, NumericReference]
    categorical: Mapping[str, CategoricalReference]
    natural_psi: Mapping[str, float] = field(default_factory=dict)
    natural_window: int = 0

    @property
    def features(self) -> list[str]:
        """Every feature the reference describes: numeric first, then categorical."""
        return [*self.numeric, *self.categorical]

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, spec: DatasetSpec, natural_window: int = NATURAL_WINDOW_ROWS
    ) -> TrainingReference:
        """The reference of the training rows ``frame`` for the model features of ``spec``.

        Missing values are ignored. ``natural_psi`` is measured over windows of
        ``natural_window`` consecutive rows in ``frame``'s order (give the rows in the
        order they arrived: the feature table keeps ingestion order).

        Raises
        ------
        KeyError
            Naming the model features ``frame`` lacks.
        ValueError
            When ``frame`` has no rows, or a feature has no value at all.
        """
        missing = [c for c in spec.model_features if c not in frame.columns]
        if missing:
            raise KeyError(f"training frame lacks the model features {missing}")
        if frame.empty:
            raise ValueError("training frame has no rows: no reference to build")
        numeric: dict[str, NumericReference] = {}
        for name in spec.numeric_features:
            values = pd.to_numeric(frame[name], errors="raise").to_numpy("float64", na_value=np.nan)
            values = values[~np.isnan(values)]
            if values.size == 0:
                raise ValueError(f"training feature {name!r} has no values")
            cuts = np.quantile(values, _DECILES)
            sketch = np.quantile(values, _SKETCH_LEVELS, method="inverted_cdf")
            numeric[name] = NumericReference(
                min=float(values.min()),
                max=float(values.max()),
                deciles=tuple(float(v) for v in cuts),
                quantiles=tuple(float(v) for v in sketch),
            )
        categorical: dict[str, CategoricalReference] = {}
        for name in spec.categorical_features:
            counts = frame[name].dropna().astype(str).value_counts()
            if counts.empty:
                raise ValueError(f"training feature {name!r} has no values")
            counts = counts.sort_index()
            total = float(counts.sum())
            categorical[name] = CategoricalReference(
                categories=tuple(str(c) for c in counts.index),
                shares=tuple(float(n) / total for n in counts.to_numpy()),
            )
        reference = cls(
            dataset=spec.name, n_rows=len(frame), numeric=numeric, categorical=categorical
        )
        natural = natural_window_psi(frame, reference, natural_window)
        if not natural:
            return reference
        return replace(reference, natural_psi=natural, natural_window=natural_window)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse: :meth:`from_dict`)."""
        return {
            "format": _REFERENCE_FORMAT,
            "dataset": self.dataset,
            "n_rows": self.n_rows,
            "numeric": {k: v.to_dict() for k, v in self.numeric.items()},
            "categorical": {k: v.to_dict() for k, v in self.categorical.items()},
            "natural_psi": dict(self.natural_psi),
            "natural_window": self.natural_window,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingReference:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            When ``data`` was written in an unknown format.
        """
        if data.get("format") != _REFERENCE_FORMAT:
            raise ValueError(
                f"training reference format {data.get('format')!r} is not supported "
                f"(expected {_REFERENCE_FORMAT})"
            )
        return cls(
            dataset=str(data["dataset"]),
            n_rows=int(data["n_rows"]),
            numeric={k: NumericReference.from_dict(v) for k, v in data["numeric"].items()},
            categorical={
                k: CategoricalReference.from_dict(v) for k, v in data["categorical"].items()
            },
            natural_psi={k: float(v) for k, v in data.get("natural_psi", {}).items()},
            natural_window=int(data.get("natural_window", 0)),
        )


# --- input checks ----------------------------------------------------------------------


class ServingInputError(ValueError):
    """Serving input that cannot be scored; the message names every faulty column."""


@dataclass(frozen=True)
class ServingCheck:
    """Whether an input schema can be scored, decided before any row is read.

    Parameters
    ----------
    dataset : str
        Name of the dataset spec checked against.
    missing : tuple of str
        Required columns (entity id and every model feature) the input lacks.
    mistyped : mapping of str to str
        Column to a description of its wrong type ("string, expected a number").
    extra : tuple of str
        Input columns that are neither read nor an error.
    columns : tuple of str
        The columns to read: entity id, event time when present, model features.
    """

    dataset: str
    missing: tuple[str, ...]
    mistyped: Mapping[str, str]
    extra: tuple[str, ...]
    columns: tuple[str, ...]

    @property
    def errors(self) -> list[str]:
        """One message per faulty column; empty when the input can be scored."""
        return [f"missing column {c!r}" for c in self.missing] + [
            f"column {c!r} has type {why}" for c, why in self.mistyped.items()
        ]

    @property
    def ok(self) -> bool:
        """Whether the input can be scored."""
        return not self.errors

    def raise_if_errors(self) -> None:
        """Raise :class:`ServingInputError` naming every faulty column, if any.

        Raises
        ------
        ServingInputError
            When a required column is missing or has a type that cannot be scored.
        """
        if self.errors:
            raise ServingInputError(
                f"serving input cannot be scored for dataset {self.dataset!r}: "
                + "; ".join(self.errors)
            )


def _arrow_kind(dtype: pa.DataType) -> str:
    if pa.types.is_dictionary(dtype):
        return _arrow_kind(dtype.value_type)
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if (
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    ):
        return "string"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_null(dtype):
        return "null"
    return "other"


def _pandas_kind(dtype: Any) -> str:
    dtype = pd.api.types.pandas_dtype(dtype)
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_kind(dtype.pyarrow_dtype)
    if isinstance(dtype, pd.CategoricalDtype):
        return _pandas_kind(dtype.categories.dtype)
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    if isinstance(dtype, pd.StringDtype):
        return "string"
    if dtype == np.dtype("object"):
        # pandas' text columns before the string dtype; anything else in an object
        # column fails in the model with its own error
        return "object"
    return "other"


# What each declared dtype accepts, and how to say it. Numeric features accept any
# number (the model scales them as floats); an integer id must stay an integer.
_FEATURE_ACCEPTS = {
    "int64": ({"integer", "float"}, "a number"),
    "float64": ({"integer", "float"}, "a number"),
    "string": ({"string", "object"}, "text"),
    "timestamp": ({"timestamp"}, "a timestamp"),
}
_ID_ACCEPTS = {**_FEATURE_ACCEPTS, "int64": ({"integer"}, "an integer")}


def check_serving_input(
    schema: pa.Schema | Mapping[str, Any],
    spec: DatasetSpec,
    reference: TrainingReference | None = None,
) -> ServingCheck:
    """Check that ``schema`` carries every column scoring needs, with usable types.

    Parameters
    ----------
    schema : pyarrow.Schema or mapping of str to dtype
        The input's columns and types: an Arrow schema (of a Parquet dataset), or
        column to a pandas / numpy dtype or ``pyarrow.DataType`` (e.g.
        ``frame.dtypes.to_dict()``).
    spec : DatasetSpec
        Declares the entity id, the event time and the model features.
    reference : TrainingReference, optional
        When given, it must be of the same dataset and describe every model
        feature (a reference of another model is an error, not a silent mismatch).

    Returns
    -------
    ServingCheck
        Required columns are the entity id and every raw model feature; the event
        time is read when present (it must then be a timestamp). Derived features
        are computed from the raw ones when rows are scored
        (:func:`~mlplatform.core.features.add_derived`), as for training: a column of
        a derived feature's name is not read. Other columns are listed in ``extra``;
        they are not read.

    Raises
    ------
    ValueError
        When ``reference`` does not belong to ``spec``.
    """
    if reference is not None:
        unknown = sorted(set(spec.model_features) ^ set(reference.features))
        if reference.dataset != spec.name or unknown:
            raise ValueError(
                f"training reference of dataset {reference.dataset!r} does not match "
                f"{spec.name!r}: features differ in {unknown}"
            )
    if isinstance(schema, pa.Schema):
        kinds = {f.name: (_arrow_kind(f.type), str(f.type)) for f in schema}
    else:
        kinds = {
            name: (_arrow_kind(t), str(t))
            if isinstance(t, pa.DataType)
            else (_pandas_kind(t), str(t))
            for name, t in schema.items()
        }
    derived = {d.name for d in spec.derived}
    required = [spec.entity_id, *(f for f in spec.model_features if f not in derived)]
    optional = [spec.event_time] if spec.event_time is not None else []
    missing = tuple(c for c in required if c not in kinds)
    mistyped: dict[str, str] = {}
    for name in [*required, *optional]:
        if name not in kinds:
            continue
        accepts = _ID_ACCEPTS if name == spec.entity_id else _FEATURE_ACCEPTS
        allowed, wanted = accepts[_declared_dtype(spec, name)]
        kind, shown = kinds[name]
        if kind not in allowed:
            mistyped[name] = f"{shown}, expected {wanted}"
    read = [c for c in [*required, *optional] if c in kinds]
    extra = tuple(c for c in kinds if c not in read)
    return ServingCheck(
        dataset=spec.name,
        missing=missing,
        mistyped=mistyped,
        extra=extra,
        columns=tuple(dict.fromkeys(read)),
    )


def _declared_dtype(spec: DatasetSpec, name: str) -> str:
    """Declared dtype of column or derived feature ``name`` (derived ones are float64)."""
    if name in {d.name for d in spec.derived}:
        return "float64"
    return spec.column(name).dtype


def out_of_range_counts(frame: pd.DataFrame, reference: TrainingReference) -> dict[str, int]:
    """Per feature, values outside the training range or categories unseen in training.

    Missing values are not counted (see :func:`missing_value_counts`).

    Raises
    ------
    KeyError
        Naming the reference features ``frame`` lacks.
    """
    absent = [c for c in reference.features if c not in frame.columns]
    if absent:
        raise KeyError(f"frame lacks the reference features {absent}")
    counts: dict[str, int] = {}
    for name, num in reference.numeric.items():
        values = frame[name].to_numpy("float64", na_value=np.nan)
        counts[name] = int(np.count_nonzero((values < num.min) | (values > num.max)))
    for name, cat in reference.categorical.items():
        column = frame[name]
        unseen = column.notna().to_numpy(bool) & ~column.isin(cat.categories).to_numpy(bool)
        counts[name] = int(np.count_nonzero(unseen))
    return counts


def missing_value_counts(frame: pd.DataFrame, features: list[str]) -> dict[str, int]:
    """Per feature in ``features``, the number of missing values in ``frame``."""
    return {name: int(frame[name].isna().sum()) for name in features}


def feature_bin_counts(frame: pd.DataFrame, reference: TrainingReference) -> dict[str, list[int]]:
    """Per feature, serving rows per reference bin (the drift statistics' input).

    Numeric: the 10 bins the training deciles cut (outside values go to the end
    bins). Categorical: one bin per training category, then one for unseen ones.
    Missing values are not counted.
    """
    counts: dict[str, list[int]] = {}
    for name, num in reference.numeric.items():
        values = frame[name].to_numpy("float64", na_value=np.nan)
        values = values[~np.isnan(values)]
        bins = np.searchsorted(np.asarray(num.deciles, dtype="float64"), values, side="right")
        counts[name] = np.bincount(bins, minlength=len(num.deciles) + 1).tolist()
    for name, cat in reference.categorical.items():
        column = frame[name].dropna().astype(str)
        seen = column.value_counts()
        known = [int(seen.get(c, 0)) for c in cat.categories]
        counts[name] = [*known, int(len(column) - sum(known))]
    return counts


def reference_shares(reference: TrainingReference, feature: str) -> list[float]:
    """Training share of each bin of :func:`feature_bin_counts` for ``feature``."""
    if feature in reference.numeric:
        num = reference.numeric[feature]
        n = len(num.deciles) + 1
        if not num.quantiles:
            return [1.0 / n] * n
        # a tenth per bin holds for continuous values only: where ties make deciles
        # equal (a feature that is mostly 0), the sketch gives each bin's real share
        cuts = np.asarray(num.deciles, dtype="float64")
        sketch = np.asarray(num.quantiles, dtype="float64")
        counts = np.bincount(np.searchsorted(cuts, sketch, side="right"), minlength=n)
        return (counts / sketch.size).tolist()
    shares = list(reference.categorical[feature].shares)
    return [*shares, 0.0]


def _bin_index(frame: pd.DataFrame, reference: TrainingReference, name: str) -> np.ndarray:
    """Each row's bin of :func:`feature_bin_counts` for ``name`` (-1: missing)."""
    if name in reference.numeric:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy("float64", na_value=np.nan)
        cuts = np.asarray(reference.numeric[name].deciles, dtype="float64")
        index = np.searchsorted(cuts, values, side="right")
        return np.where(np.isnan(values), -1, index)
    categories = list(reference.categorical[name].categories)
    column = frame[name]
    codes = pd.Categorical(column.astype("string"), categories=categories).codes
    return np.where(column.isna().to_numpy(), -1, np.where(codes < 0, len(categories), codes))


def natural_window_psi(
    frame: pd.DataFrame, reference: TrainingReference, window: int
) -> dict[str, float]:
    """Per feature, the largest PSI of a window of ``window`` consecutive rows of ``frame``.

    Windows start every ``window // 2`` rows. Empty when ``frame`` holds fewer than
    two windows.
    """
    n = len(frame)
    if window < 1 or n < 2 * window:
        return {}
    starts = np.arange(0, n - window + 1, max(1, window // 2))
    out: dict[str, float] = {}
    for name in reference.features:
        index = _bin_index(frame, reference, name)
        expected = np.clip(np.asarray(reference_shares(reference, name)), _PSI_EPS, None)
        cumulative = np.zeros((n + 1, expected.size), dtype="int32")
        for b in range(expected.size):
            cumulative[1:, b] = np.cumsum(index == b)
        counts = cumulative[starts + window] - cumulative[starts]
        totals = counts.sum(axis=1, keepdims=True)
        actual = np.clip(counts / np.maximum(totals, 1), _PSI_EPS, None)
        psi = np.sum((actual - expected) * np.log(actual / expected), axis=1)
        out[name] = float(psi[totals[:, 0] > 0].max()) if (totals > 0).any() else 0.0
    return out


def drift_report(
    bins: Mapping[str, Sequence[int]],
    reference: TrainingReference,
    *,
    alpha: float = 0.01,
    psi_threshold: float = 0.2,
) -> pd.DataFrame:
    """Per feature: PSI and a chi-squared test of the serving bins against training.

    A feature drifts when its chi-squared p-value is below ``alpha`` divided by the
    number of features (Bonferroni: many features are tested at once) and its PSI
    is at least ``psi_threshold`` (a large effect, not only a significant one).
    """
    from scipy import stats

    rows = []
    tested = [f for f in reference.features if f in bins]
    for name in tested:
        observed = np.asarray(bins[name], dtype="float64")
        total = observed.sum()
        expected_share = np.asarray(reference_shares(reference, name), dtype="float64")
        if total == 0:
            rows.append((name, 0, float("nan"), float("nan"), float("nan"), False))
            continue
        eps = 1e-4
        actual = np.clip(observed / total, eps, None)
        expected = np.clip(expected_share, eps, None)
        psi = float(np.sum((actual - expected) * np.log(actual / expected)))
        expected_counts = expected / expected.sum() * total
        chi2, p_value = stats.chisquare(observed, expected_counts)
        drifted = bool(p_value < alpha / max(1, len(tested)) and psi >= psi_threshold)
        rows.append((name, int(total), psi, float(chi2), float(p_value), drifted))
    return pd.DataFrame(rows, columns=["feature", "rows", "psi", "chi2", "p_value", "drifted"])


# --- scoring -----------------------------------------------------------------------------


def pipeline_threshold(pipeline: Pipeline) -> float | None:
    """The decision threshold on ``predict_proba`` of ``pipeline``'s final step.

    None when the final step is not a :class:`FixedThresholdClassifier` thresholding
    the positive class's probability with a number (its labels then come from
    ``pipeline.predict``).
    """
    final = pipeline.steps[-1][1]
    if not isinstance(final, FixedThresholdClassifier):
        return None
    if final.response_method not in {"predict_proba", "auto"} or final.pos_label is not None:
        return None
    if not hasattr(getattr(final, "estimator_", final.estimator), "predict_proba"):
        return None
    if isinstance(final.threshold, str):  # "auto": 0.5 on probabilities
        return 0.5
    return float(final.threshold)


def _constant(value: str, n: int) -> pd.Series:
    # pandas' default text dtype: what reading the Parquet parts back gives
    return pd.Series(value, index=pd.RangeIndex(n), dtype=str)


def _utc_stamps(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
    return stamps.reset_index(drop=True)


def score_batch(
    pipeline: Pipeline,
    frame: pd.DataFrame,
    spec: DatasetSpec,
    *,
    model_name: str,
    model_version: str,
    alias: str,
    threshold: float,
    run_id: str,
    scored_at: datetime,
) -> pd.DataFrame:
    """Failure probability and label for every row of ``frame``, with lineage.

    ``predict_proba`` runs once; the label is derived from it with the pipeline's
    own threshold, exactly as ``pipeline.predict`` would (``probability >=
    threshold``), so no row is scored twice. A pipeline without a numeric
    probability threshold (see :func:`pipeline_threshold`) is labelled by
    ``pipeline.predict``.

    Parameters
    ----------
    pipeline : Pipeline
        The fitted, registered pipeline; never refitted here.
    frame : DataFrame
        Rows with the entity id and every model feature (extra columns ignored);
        the event time is carried when present.
    spec : DatasetSpec
        Declares the entity id, the event time and the model features.
    model_name, model_version, alias : str
        The registered model the pipeline was loaded as.
    threshold : float
        The decision threshold the model was registered with; must equal the
        pipeline's own.
    run_id : str
        The Dagster run that scores.
    scored_at : datetime
        When the scoring run started (timezone-aware).

    Returns
    -------
    DataFrame
        Columns :data:`BATCH_PREDICTION_COLUMNS`, one row per input row, in order.

    Raises
    ------
    ValueError
        When ``threshold`` differs from the pipeline's threshold.
    KeyError
        Naming the model features ``frame`` lacks.
    """
    stamp = pd.Timestamp(scored_at)
    if stamp.tzinfo is None:
        raise ValueError(f"scored_at must be timezone-aware, got {scored_at!r}")
    own = pipeline_threshold(pipeline)
    if own is not None and not math.isclose(own, threshold, rel_tol=0.0, abs_tol=1e-12):
        raise ValueError(
            f"model {model_name!r} v{model_version}: threshold {threshold!r} given, but the "
            f"pipeline decides at {own!r}"
        )
    n = len(frame)
    x = model_inputs(frame, spec)
    if n:
        proba_all = pipeline.predict_proba(x)
        probability = np.asarray(proba_all[:, 1], dtype="float64")
        if own is not None:
            classes = pipeline.classes_
            labels = classes[(probability >= own).astype(np.intp)]
        else:
            labels = pipeline.predict(x)
    else:
        probability = np.empty(0, dtype="float64")
        labels = np.empty(0, dtype="int64")
    if spec.event_time is not None and spec.event_time in frame.columns:
        event_time = _utc_stamps(frame[spec.event_time])
    else:
        event_time = pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    out = pd.DataFrame(
        {
            "entity_id": frame[spec.entity_id].to_numpy(),
            "event_time": event_time,
            "failure_probability": probability,
            "predicted_failure": np.asarray(labels).astype("int64"),
            "model_name": _constant(model_name, n),
            "model_version": _constant(model_version, n),
            "alias": _constant(alias, n),
            "threshold": np.full(n, threshold if own is None else own, dtype="float64"),
            "dagster_run_id": _constant(run_id, n),
            "scored_at": pd.Series(stamp, index=range(n), dtype="datetime64[us, UTC]"),
        }
    )
    return out[BATCH_PREDICTION_COLUMNS]


# --- summary -----------------------------------------------------------------------------


def _merge_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}


@dataclass(frozen=True)
class ScoringSummary:
    """Totals of a scoring run, built per batch and merged, in constant memory.

    Parameters
    ----------
    rows, positives, batches : int
        Rows scored, rows labelled positive, batches merged.
    histogram : tuple of int
        Counts of failure probabilities in :data:`HISTOGRAM_BINS` equal bins on
        [0, 1] (the last bin includes 1).
    out_of_range : mapping of str to int
        Per feature, values outside the training range or unseen categories.
    missing_values : mapping of str to int
        Per feature, missing values.
    """

    rows: int = 0
    positives: int = 0
    batches: int = 0
    histogram: tuple[int, ...] = (0,) * HISTOGRAM_BINS
    out_of_range: Mapping[str, int] = field(default_factory=dict)
    missing_values: Mapping[str, int] = field(default_factory=dict)
    bins: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def of_batch(
        cls,
        predictions: pd.DataFrame,
        out_of_range: Mapping[str, int] | None = None,
        missing_values: Mapping[str, int] | None = None,
        bins: Mapping[str, Sequence[int]] | None = None,
    ) -> ScoringSummary:
        """The summary of one batch of :func:`score_batch` output."""
        probability = predictions["failure_probability"].to_numpy("float64")
        counts, _ = np.histogram(probability, bins=_HISTOGRAM_EDGES)
        return cls(
            rows=len(predictions),
            positives=int(predictions["predicted_failure"].to_numpy().sum()),
            batches=1,
            histogram=tuple(int(c) for c in counts),
            out_of_range=dict(out_of_range or {}),
            missing_values=dict(missing_values or {}),
            bins={k: tuple(int(x) for x in v) for k, v in (bins or {}).items()},
        )

    def merge(self, other: ScoringSummary) -> ScoringSummary:
        """The summary of both: counts added."""
        return ScoringSummary(
            rows=self.rows + other.rows,
            positives=self.positives + other.positives,
            batches=self.batches + other.batches,
            histogram=tuple(a + b for a, b in zip(self.histogram, other.histogram, strict=True)),
            out_of_range=_merge_counts(self.out_of_range, other.out_of_range),
            missing_values=_merge_counts(self.missing_values, other.missing_values),
            bins={
                k: tuple(
                    a + b
                    for a, b in zip(
                        self.bins.get(k, (0,) * len(v)),
                        other.bins.get(k, (0,) * len(v)),
                        strict=True,
                    )
                )
                for k, v in {**self.bins, **other.bins}.items()
            },
        )

    @property
    def positive_rate(self) -> float:
        """Share of rows labelled positive (0.0 when nothing was scored)."""
        return self.positives / self.rows if self.rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, e.g. for asset metadata."""
        return {
            "rows": self.rows,
            "positives": self.positives,
            "positive_rate": self.positive_rate,
            "batches": self.batches,
            "probability_histogram": {
                "edges": [float(e) for e in _HISTOGRAM_EDGES],
                "counts": list(self.histogram),
            },
            "out_of_range": dict(self.out_of_range),
            "missing_values": dict(self.missing_values),
        }
