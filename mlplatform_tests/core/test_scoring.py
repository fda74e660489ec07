"""Unit tests of batch scoring (mlplatform.core.scoring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from mlplatform.core.features import model_inputs
from mlplatform.core.models import TrainedModel, train_candidate
from mlplatform.core.schema import AI4I
from mlplatform.core.scoring import PREDICTION_COLUMNS, newest_rows, score_rows

from ._frames import train_test

SCORED_AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    _, test = train_test(600, seed=3, test_size=0.2, split_seed=0)
    return test.reset_index(drop=True)


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    train, _ = train_test(600, seed=3, test_size=0.2, split_seed=0)
    return train_candidate(train, AI4I, model_name="logistic_regression", threshold=0.35)


def _score(model: TrainedModel, rows: pd.DataFrame, **kwargs: object) -> pd.DataFrame:
    options: dict[str, object] = {
        "model_name": "ai4i-failure",
        "model_version": "7",
        "scored_at": SCORED_AT,
    }
    options.update(kwargs)
    return score_rows(model.pipeline, rows, AI4I, **options)  # type: ignore[arg-type]


def test_output_columns_and_lineage_on_every_row(model: TrainedModel, rows: pd.DataFrame) -> None:
    out = _score(model, rows)
    assert list(out.columns) == PREDICTION_COLUMNS
    assert len(out) == len(rows)
    assert out["entity_id"].tolist() == rows["udi"].tolist()
    assert (out["model_name"] == "ai4i-failure").all()
    assert (out["model_version"] == "7").all()
    assert (out["scored_at"] == pd.Timestamp(SCORED_AT)).all()
    assert out[PREDICTION_COLUMNS].notna().all().all()


def test_output_dtypes(model: TrainedModel, rows: pd.DataFrame) -> None:
    out = _score(model, rows)
    assert out["failure_probability"].dtype == "float64"
    assert out["predicted_failure"].dtype == "int64"
    assert out["model_name"].dtype == "string"
    assert out["model_version"].dtype == "string"
    assert str(out["scored_at"].dtype) == "datetime64[us, UTC]"


def test_probabilities_and_labels_match_the_pipeline_threshold(
    model: TrainedModel, rows: pd.DataFrame
) -> None:
    out = _score(model, rows)
    expected = model.pipeline.predict_proba(model_inputs(rows, AI4I))[:, 1]
    np.testing.assert_allclose(out["failure_probability"], expected)
    assert out["failure_probability"].between(0.0, 1.0).all()
    np.testing.assert_array_equal(
        out["predicted_failure"].to_numpy(), (expected >= model.threshold).astype("int64")
    )
    assert set(out["predicted_failure"]) == {0, 1}


def test_scored_at_in_another_zone_is_stored_in_utc(
    model: TrainedModel, rows: pd.DataFrame
) -> None:
    cest = timezone(timedelta(hours=2))
    out = _score(model, rows.head(3), scored_at=datetime(2024, 6, 1, 10, 30, tzinfo=cest))
    assert (out["scored_at"] == pd.Timestamp("2024-06-01T08:30:00Z")).all()


def test_rows_with_a_non_default_index_and_extra_columns(
    model: TrainedModel, rows: pd.DataFrame
) -> None:
    shuffled = rows.sample(frac=1.0, random_state=0)
    shuffled["twf"] = 1  # leakage must not change anything
    out = _score(model, shuffled)
    assert out.index.tolist() == list(range(len(rows)))
    assert out["entity_id"].tolist() == shuffled["udi"].tolist()
    by_id = _score(model, rows).set_index("entity_id")["failure_probability"]
    np.testing.assert_allclose(
        out["failure_probability"].to_numpy(), by_id.loc[out["entity_id"]].to_numpy()
    )


def test_zero_rows_give_an_empty_frame_with_the_columns(
    model: TrainedModel, rows: pd.DataFrame
) -> None:
    out = _score(model, rows.iloc[:0])
    assert out.empty
    assert list(out.columns) == PREDICTION_COLUMNS
    assert out["failure_probability"].dtype == "float64"
    assert out["predicted_failure"].dtype == "int64"


def test_missing_feature_column_raises_key_error(model: TrainedModel, rows: pd.DataFrame) -> None:
    with pytest.raises(KeyError, match="torque_nm"):
        _score(model, rows.drop(columns=["torque_nm"]))


# --- newest_rows -----------------------------------------------------------------------------


def _batches() -> pd.DataFrame:
    t0 = pd.Timestamp("2024-06-01T00:00:00Z")
    return pd.DataFrame(
        {
            "udi": [1, 2, 3, 4, 5, 6],
            "ingested_at": [
                t0,
                t0,
                t0 + pd.Timedelta(hours=2),
                t0 + pd.Timedelta(hours=1),
                t0 + pd.Timedelta(hours=2),
                t0,
            ],
        }
    )


def test_newest_rows_are_those_of_the_latest_ingestion() -> None:
    newest = newest_rows(_batches())
    assert newest["udi"].tolist() == [3, 5]
    assert (newest["ingested_at"] == pd.Timestamp("2024-06-01T02:00:00Z")).all()


def test_newest_rows_by_another_column() -> None:
    table = _batches().assign(batch=[1, 1, 3, 2, 3, 1])
    assert newest_rows(table, column="batch")["udi"].tolist() == [3, 5]


def test_newest_rows_without_the_column_returns_every_row() -> None:
    table = _batches().drop(columns=["ingested_at"])
    pd.testing.assert_frame_equal(newest_rows(table), table)


def test_newest_rows_of_an_empty_table() -> None:
    empty = _batches().iloc[:0]
    out = newest_rows(empty)
    assert out.empty
    assert list(out.columns) == ["udi", "ingested_at"]


def test_newest_rows_single_ingestion_keeps_everything() -> None:
    table = _batches().assign(ingested_at=pd.Timestamp("2024-01-01T00:00:00Z"))
    assert newest_rows(table)["udi"].tolist() == [1, 2, 3, 4, 5, 6]
