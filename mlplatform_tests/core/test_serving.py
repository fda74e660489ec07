"""Unit tests of serving checks and batch scoring (mlplatform.core.serving)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlplatform.core.features import build_feature_table, model_inputs
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.models import TrainedModel, build_pipeline, train_candidate
from mlplatform.core.schema import AI4I
from mlplatform.core.serving import (
    BATCH_PREDICTION_COLUMNS,
    BATCH_PREDICTION_SCHEMA,
    HISTOGRAM_BINS,
    ScoringSummary,
    ServingInputError,
    TrainingReference,
    check_serving_input,
    missing_value_counts,
    out_of_range_counts,
    pipeline_threshold,
    score_batch,
)

SCORED_AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
LINEAGE: dict[str, Any] = {
    "model_name": "ai4i-failure",
    "model_version": "7",
    "alias": "champion",
    "run_id": "run-123",
    "scored_at": SCORED_AT,
}


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    # Generated rows carry the declared dtypes already; typing them through the
    # validation suite would only add its import time.
    observations = generate_ai4i(1_500, seed=5, burn_in=500).rename(columns=AI4I.source_to_name)
    table = build_feature_table(observations, AI4I)
    return table.iloc[:1_200].reset_index(drop=True), table.iloc[1_200:].reset_index(drop=True)


@pytest.fixture(scope="module")
def model(split: tuple[pd.DataFrame, pd.DataFrame]) -> TrainedModel:
    # a threshold far from 0.5, so a label taken at 0.5 would differ somewhere
    return train_candidate(
        split[0],
        AI4I,
        model_name="hist_gradient_boosting",
        params={"max_iter": 30},
        threshold=0.05,
    )


@pytest.fixture(scope="module")
def reference(split: tuple[pd.DataFrame, pd.DataFrame]) -> TrainingReference:
    return TrainingReference.from_frame(split[0], AI4I)


def _score(model: TrainedModel, rows: pd.DataFrame, **overrides: Any) -> pd.DataFrame:
    options: dict[str, Any] = {**LINEAGE, "threshold": model.threshold, **overrides}
    return score_batch(model.pipeline, rows, AI4I, **options)


# --- training reference ------------------------------------------------------------------


def test_reference_from_frame_describes_every_model_feature(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    train = split[0]
    assert reference.dataset == AI4I.name
    assert reference.n_rows == len(train)
    assert reference.features == AI4I.model_features
    torque = reference.numeric["torque_nm"]
    assert torque.min == train["torque_nm"].min()
    assert torque.max == train["torque_nm"].max()
    assert len(torque.deciles) == 9
    assert torque.min <= torque.deciles[0]
    assert list(torque.deciles) == sorted(torque.deciles)
    assert torque.deciles[-1] <= torque.max
    assert torque.deciles[4] == pytest.approx(train["torque_nm"].median())
    kind = reference.categorical["type"]
    assert kind.categories == ("H", "L", "M")
    assert sum(kind.shares) == pytest.approx(1.0)
    assert kind.shares[1] == pytest.approx((train["type"] == "L").mean())


def test_reference_survives_a_json_round_trip(reference: TrainingReference) -> None:
    text = json.dumps(reference.to_dict())
    assert TrainingReference.from_dict(json.loads(text)) == reference


def test_reference_rejects_an_unknown_format(reference: TrainingReference) -> None:
    data = {**reference.to_dict(), "format": 99}
    with pytest.raises(ValueError, match="format 99"):
        TrainingReference.from_dict(data)


def test_reference_names_missing_training_features(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    with pytest.raises(KeyError, match="power_w"):
        TrainingReference.from_frame(split[0].drop(columns=["power_w"]), AI4I)


def test_reference_of_no_rows_is_an_error(split: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    with pytest.raises(ValueError, match="no rows"):
        TrainingReference.from_frame(split[0].iloc[:0], AI4I)


# --- input checks --------------------------------------------------------------------------


def _schema(frame: pd.DataFrame) -> pa.Schema:
    return pa.Schema.from_pandas(frame, preserve_index=False)


def test_full_feature_table_is_scorable_and_extra_columns_are_listed(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    test = split[1].assign(event_time=pd.Timestamp("2024-01-01", tz="UTC"))
    check = check_serving_input(_schema(test), AI4I, reference)
    assert check.ok
    check.raise_if_errors()
    # derived features are computed from the raw ones when scored, never read
    derived = [d.name for d in AI4I.derived]
    raw = [f for f in AI4I.model_features if f not in derived]
    assert check.extra == (*derived, "machine_failure")
    assert check.columns == ("udi", *raw, "event_time")


def test_missing_columns_are_errors_naming_each(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    test = split[1].drop(columns=["torque_nm", "type", "udi"])
    check = check_serving_input(_schema(test), AI4I, reference)
    assert check.missing == ("udi", "torque_nm", "type")
    assert not check.ok
    with pytest.raises(ServingInputError) as raised:
        check.raise_if_errors()
    assert isinstance(raised.value, ValueError)
    for column in ("'udi'", "'torque_nm'", "'type'"):
        assert column in str(raised.value)


def test_mistyped_column_is_an_error_naming_column_and_types(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    test = split[1].assign(torque_nm=split[1]["torque_nm"].astype(str))
    check = check_serving_input(_schema(test), AI4I, reference)
    assert list(check.mistyped) == ["torque_nm"]
    with pytest.raises(ServingInputError, match=r"'torque_nm' has type .*string.*a number"):
        check.raise_if_errors()


@pytest.mark.parametrize(
    ("column", "dtype"),
    [
        ("type", pa.float64()),
        ("udi", pa.float64()),
        ("event_time", pa.string()),
        ("torque_nm", pa.bool_()),
    ],
)
def test_types_that_cannot_be_scored(
    column: str, dtype: pa.DataType, reference: TrainingReference
) -> None:
    schema = {c: pa.float64() for c in AI4I.numeric_features}
    schema |= {"udi": pa.int64(), "type": pa.string(), "event_time": pa.timestamp("us")}
    schema[column] = dtype
    check = check_serving_input(schema, AI4I, reference)
    assert list(check.mistyped) == [column]


def test_pandas_dtypes_and_castable_types_are_accepted(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    test = split[1].assign(
        air_temperature_k=split[1]["air_temperature_k"].round().astype("int32"),
        type=split[1]["type"].astype("category"),
    )
    check = check_serving_input(test.dtypes.to_dict(), AI4I)
    assert check.ok, check.errors
    dictionary = _schema(test).field("type").type
    assert pa.types.is_dictionary(dictionary)
    assert check_serving_input(_schema(test), AI4I).ok


def test_reference_of_another_dataset_is_rejected(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    other = TrainingReference(dataset="other", n_rows=1, numeric=reference.numeric, categorical={})
    with pytest.raises(ValueError, match="'other'"):
        check_serving_input(_schema(split[1]), AI4I, other)


def test_out_of_range_counts_per_feature(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    rows = split[1].iloc[:5].copy()
    torque = reference.numeric["torque_nm"]
    rows.loc[rows.index[0], "torque_nm"] = torque.max + 1.0
    rows.loc[rows.index[1], "torque_nm"] = torque.min - 1.0
    rows.loc[rows.index[2], "torque_nm"] = np.nan  # missing, not out of range
    rows["type"] = rows["type"].astype("object")
    rows.loc[rows.index[3], "type"] = "X"
    rows.loc[rows.index[4], "type"] = None
    counts = out_of_range_counts(rows, reference)
    assert set(counts) == set(AI4I.model_features)
    assert counts["torque_nm"] == 2
    assert counts["type"] == 1
    missing = missing_value_counts(rows, reference.features)
    assert missing["torque_nm"] == 1
    assert missing["type"] == 1


def test_training_rows_are_never_out_of_range(
    split: tuple[pd.DataFrame, pd.DataFrame], reference: TrainingReference
) -> None:
    assert set(out_of_range_counts(split[0], reference).values()) == {0}


# --- scoring -------------------------------------------------------------------------------


def test_score_batch_columns_lineage_and_dtypes(
    model: TrainedModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    rows = split[1]
    out = _score(model, rows)
    assert list(out.columns) == BATCH_PREDICTION_COLUMNS
    assert len(out) == len(rows)
    assert out["entity_id"].tolist() == rows["udi"].tolist()
    assert out["event_time"].isna().all()  # no event time in the input
    assert (out["model_name"] == "ai4i-failure").all()
    assert (out["model_version"] == "7").all()
    assert (out["alias"] == "champion").all()
    assert (out["dagster_run_id"] == "run-123").all()
    assert (out["threshold"] == model.threshold).all()
    assert (out["scored_at"] == pd.Timestamp(SCORED_AT)).all()
    table = pa.Table.from_pandas(out, schema=BATCH_PREDICTION_SCHEMA, preserve_index=False)
    assert table.schema.equals(BATCH_PREDICTION_SCHEMA)


def test_label_equals_pipeline_predict_from_one_predict_proba(
    model: TrainedModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    rows = split[1]
    x = model_inputs(rows, AI4I)
    assert pipeline_threshold(model.pipeline) == model.threshold == 0.05
    pipeline = copy.deepcopy(model.pipeline)

    def _not_called(*args: object, **kwargs: object) -> None:
        raise AssertionError("score_batch must not call pipeline.predict")

    pipeline.predict = _not_called
    out = score_batch(pipeline, rows, AI4I, threshold=model.threshold, **LINEAGE)
    expected = model.pipeline.predict(x)
    np.testing.assert_array_equal(out["predicted_failure"].to_numpy(), expected)
    np.testing.assert_array_equal(
        out["failure_probability"].to_numpy(), model.pipeline.predict_proba(x)[:, 1]
    )
    # the low threshold matters: labelling at 0.5 would give fewer positives
    assert out["predicted_failure"].sum() > (out["failure_probability"] >= 0.5).sum()


def test_pipeline_without_threshold_step_is_labelled_by_predict(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = split
    bare = build_pipeline(AI4I, LogisticRegression(max_iter=500), 0.5)
    plain = Pipeline([("preprocess", bare[0]), ("classifier", LogisticRegression(max_iter=500))])
    plain.fit(model_inputs(train, AI4I), train[AI4I.target])
    assert pipeline_threshold(plain) is None
    out = score_batch(plain, test, AI4I, threshold=0.5, **LINEAGE)
    np.testing.assert_array_equal(
        out["predicted_failure"].to_numpy(), plain.predict(model_inputs(test, AI4I))
    )


def test_event_time_is_carried_in_utc(
    model: TrainedModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    rows = split[1].iloc[:3].copy()
    rows["event_time"] = pd.to_datetime(
        ["2024-01-01T00:00:00", "2024-01-01T01:00:00", "2024-01-02T00:00:00"]
    ).tz_localize("Europe/Berlin")
    out = _score(model, rows)
    assert str(out["event_time"].dtype) == "datetime64[us, UTC]"
    assert out["event_time"].iloc[0] == pd.Timestamp("2023-12-31T23:00:00", tz="UTC")


def test_threshold_other_than_the_pipelines_is_rejected(
    model: TrainedModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    with pytest.raises(ValueError, match=r"threshold 0\.3 given"):
        _score(model, split[1], threshold=0.3)


def test_naive_scored_at_is_rejected(
    model: TrainedModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _score(model, split[1], scored_at=datetime(2024, 6, 1))


def test_no_rows_give_an_empty_frame_with_every_column(
    model: TrainedModel, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    out = _score(model, split[1].iloc[:0])
    assert list(out.columns) == BATCH_PREDICTION_COLUMNS
    assert out.empty


# --- summary -------------------------------------------------------------------------------


def _predictions(probabilities: list[float], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"failure_probability": probabilities, "predicted_failure": labels})


def test_summary_of_batches_merges_counts() -> None:
    first = ScoringSummary.of_batch(
        _predictions([0.0, 0.04, 0.5], [0, 0, 1]), {"torque_nm": 1}, {"torque_nm": 0}
    )
    second = ScoringSummary.of_batch(
        _predictions([0.97, 1.0], [1, 1]), {"torque_nm": 2, "type": 1}, {"torque_nm": 3}
    )
    total = ScoringSummary().merge(first).merge(second)
    assert total.rows == 5
    assert total.positives == 3
    assert total.batches == 2
    assert total.positive_rate == pytest.approx(0.6)
    assert len(total.histogram) == HISTOGRAM_BINS
    assert total.histogram[0] == 2
    assert total.histogram[10] == 1
    assert total.histogram[-1] == 2  # 0.97 and 1.0: the last bin includes 1
    assert total.out_of_range == {"torque_nm": 3, "type": 1}
    assert total.missing_values == {"torque_nm": 3}
    data = json.loads(json.dumps(total.as_dict()))
    assert data["rows"] == 5
    assert len(data["probability_histogram"]["edges"]) == HISTOGRAM_BINS + 1
    assert sum(data["probability_histogram"]["counts"]) == 5


def test_empty_summary() -> None:
    empty = ScoringSummary()
    assert empty.rows == 0
    assert empty.positive_rate == 0.0
    assert sum(empty.histogram) == 0


def test_bin_counts_and_drift_report_find_a_shifted_feature_only() -> None:
    from mlplatform.core.serving import drift_report, feature_bin_counts

    # two random halves of one sample: the same distribution (the generator's
    # temperatures are random walks, so separate samples differ for real)
    whole = _drift_frame(seed=1)
    order = np.random.default_rng(0).permutation(len(whole))
    train, other = whole.iloc[order[:4000]], whole.iloc[order[4000:]]
    reference = TrainingReference.from_frame(train, AI4I)
    same = feature_bin_counts(other, reference)
    assert sum(same["torque_nm"]) == len(other)
    assert len(same["type"]) == len(reference.categorical["type"].categories) + 1
    calm = drift_report(same, reference)
    assert not calm["drifted"].any()
    assert (calm["psi"] < 0.1).all()

    moved = other.copy()
    moved["torque_nm"] += 15.0
    report = drift_report(feature_bin_counts(moved, reference), reference).set_index("feature")
    assert report.loc["torque_nm", "drifted"]
    assert report.loc["torque_nm", "psi"] > 0.2
    assert report.loc["torque_nm", "p_value"] < 1e-6
    assert not report.loc["air_temperature_k", "drifted"]


def _drift_frame(seed: int) -> pd.DataFrame:
    from mlplatform.core.ingest import type_and_validate

    raw = generate_ai4i(8000, seed=seed, start_udi=1 + seed * 10_000)
    return build_feature_table(type_and_validate(raw, AI4I, "drift.csv").valid, AI4I)
