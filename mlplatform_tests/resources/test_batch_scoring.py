"""Tests of batch inference on disk (mlplatform.resources.batch_scoring)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from mlplatform.core.features import build_feature_table
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.models import TrainedModel, train_candidate
from mlplatform.core.schema import AI4I
from mlplatform.core.serving import (
    BATCH_PREDICTION_SCHEMA,
    ServingInputError,
    TrainingReference,
    score_batch,
)
from mlplatform.resources import batch_scoring
from mlplatform.resources.batch_scoring import score_dataset

SCORED_AT = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
EPOCH = pd.Timestamp("2024-01-01", tz="UTC")


def _feature_rows(n_rows: int, seed: int, start_udi: int = 1) -> pd.DataFrame:
    """Generated feature rows with an event time (generated rows are already typed)."""
    observations = generate_ai4i(n_rows, seed=seed, start_udi=start_udi, burn_in=200)
    table = build_feature_table(observations.rename(columns=AI4I.source_to_name), AI4I)
    table["event_time"] = EPOCH + pd.to_timedelta(table["udi"], unit="min")
    return table


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    return train_candidate(
        _feature_rows(2_000, seed=1),
        AI4I,
        model_name="hist_gradient_boosting",
        params={"max_iter": 20},
        threshold=0.2,
    )


@pytest.fixture(scope="module")
def reference() -> TrainingReference:
    return TrainingReference.from_frame(_feature_rows(2_000, seed=1), AI4I)


@pytest.fixture(scope="module")
def rows_50k() -> pd.DataFrame:
    return _feature_rows(50_000, seed=2, start_udi=100_000)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def _run(
    model: TrainedModel,
    reference: TrainingReference,
    source: Any,
    out_dir: Path,
    partition: str = "2024-06-01",
    **options: Any,
) -> Any:
    return score_dataset(
        source,
        model.pipeline,
        AI4I,
        reference,
        out_dir=out_dir,
        partition=partition,
        model_name="ai4i-failure",
        model_version=options.pop("model_version", "3"),
        alias="champion",
        threshold=model.threshold,
        run_id=options.pop("run_id", "run-1"),
        scored_at=SCORED_AT,
        **options,
    )


def _read(folder: Path) -> pd.DataFrame:
    return ds.dataset(folder, format="parquet").to_table().to_pandas()


def _expected(model: TrainedModel, rows: pd.DataFrame, run_id: str = "run-1") -> pd.DataFrame:
    return score_batch(
        model.pipeline,
        rows.reset_index(drop=True),
        AI4I,
        model_name="ai4i-failure",
        model_version="3",
        alias="champion",
        threshold=model.threshold,
        run_id=run_id,
        scored_at=SCORED_AT,
    )


def _visible(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir() if not p.name.startswith((".", "_")))


def test_ten_rows(model: TrainedModel, reference: TrainingReference, tmp_path: Path) -> None:
    rows = _feature_rows(10, seed=3)
    source = _write(rows, tmp_path / "in" / "rows.parquet")
    summary = _run(model, reference, source, tmp_path / "out")
    assert summary.rows == 10
    assert summary.batches == 1
    assert summary.positives == int(_expected(model, rows)["predicted_failure"].sum())
    assert sum(summary.histogram) == 10
    assert set(summary.out_of_range) == set(AI4I.model_features)
    table = pq.read_table(tmp_path / "out" / "2024-06-01")
    assert table.schema.equals(BATCH_PREDICTION_SCHEMA)
    pd.testing.assert_frame_equal(table.to_pandas(), _expected(model, rows))
    assert table.column("event_time").to_pylist()[0] == rows["event_time"].iloc[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["2024-06-01"]


def test_small_batches_give_the_same_predictions_as_one_batch(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    # two files, read in batches of 4,096 rows, written in parts of 16,384 rows
    _write(rows_50k.iloc[:30_000], tmp_path / "in" / "a.parquet")
    _write(rows_50k.iloc[30_000:], tmp_path / "in" / "b.parquet")
    out = tmp_path / "out"
    summary = _run(model, reference, tmp_path / "in", out, batch_rows=4_096, rows_per_part=16_384)
    parts = sorted((out / "2024-06-01").iterdir())
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))]
    assert len(parts) >= 3
    for part in parts:  # a part closes once it reaches 16,384 rows
        assert pq.ParquetFile(part).metadata.num_rows < 16_384 + 4_096
    scored = _read(out / "2024-06-01").sort_values("entity_id", ignore_index=True)
    expected = _expected(model, rows_50k)
    pd.testing.assert_frame_equal(scored, expected)
    assert summary.rows == 50_000
    assert summary.batches >= 50_000 // 4_096
    assert summary.positives == int(expected["predicted_failure"].sum())
    counts, _ = np.histogram(expected["failure_probability"], bins=20, range=(0.0, 1.0))
    assert list(summary.histogram) == counts.tolist()


def test_an_in_memory_dataset_is_scored_too(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    rows = rows_50k.iloc[:3_000]
    dataset = ds.dataset(pa.Table.from_pandas(rows, preserve_index=False))
    summary = _run(model, reference, dataset, tmp_path / "out", batch_rows=1_000)
    assert summary.batches == 3
    pd.testing.assert_frame_equal(_read(tmp_path / "out" / "2024-06-01"), _expected(model, rows))


def test_event_time_is_optional_per_file(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    _write(rows_50k.iloc[:100].drop(columns=["event_time"]), tmp_path / "in" / "a.parquet")
    _write(rows_50k.iloc[100:200], tmp_path / "in" / "b.parquet")
    _run(model, reference, tmp_path / "in", tmp_path / "out")
    scored = _read(tmp_path / "out" / "2024-06-01").sort_values("entity_id", ignore_index=True)
    assert scored["event_time"].iloc[:100].isna().all()
    stamps = rows_50k["event_time"].iloc[100:200].to_numpy()
    assert (scored["event_time"].iloc[100:].to_numpy() == stamps).all()


def test_rerunning_a_partition_replaces_it(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = _write(rows_50k.iloc[:1_000], tmp_path / "in" / "first.parquet")
    second = _write(rows_50k.iloc[1_000:1_300], tmp_path / "in" / "second.parquet")
    _run(model, reference, first, out, run_id="run-1")
    _run(model, reference, first, out, partition="2024-06-02", run_id="run-1")
    _run(model, reference, second, out, run_id="run-2")
    again = _read(out / "2024-06-01")
    assert len(again) == 300
    assert set(again["dagster_run_id"]) == {"run-2"}
    assert len(_read(out / "2024-06-02")) == 1_000  # other partitions untouched
    assert sorted(p.name for p in out.iterdir()) == ["2024-06-01", "2024-06-02"]
    assert len(_read(out)) == 1_300


def test_crash_mid_write_keeps_the_previous_partition(
    model: TrainedModel,
    reference: TrainingReference,
    rows_50k: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    source = _write(rows_50k.iloc[:20_000], tmp_path / "in" / "rows.parquet")
    _run(model, reference, source, out, run_id="run-1", batch_rows=5_000)
    before = _read(out / "2024-06-01")

    original = batch_scoring._PartWriter.write
    calls: list[int] = []

    def _fail_after_first_part(self: Any, table: pa.Table) -> None:
        if calls:
            raise OSError("disk full")
        calls.append(table.num_rows)
        original(self, table)

    monkeypatch.setattr(batch_scoring._PartWriter, "write", _fail_after_first_part)
    with pytest.raises(OSError, match="disk full"):
        _run(model, reference, source, out, run_id="run-2", batch_rows=5_000, rows_per_part=1)
    assert calls == [5_000]
    pd.testing.assert_frame_equal(_read(out / "2024-06-01"), before)
    assert sorted(p.name for p in out.iterdir()) == ["2024-06-01"]  # temp folder removed
    assert len(_read(out)) == len(before)


def test_interrupted_publish_is_restored_on_the_next_run(
    model: TrainedModel,
    reference: TrainingReference,
    rows_50k: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "out"
    source = _write(rows_50k.iloc[:2_000], tmp_path / "in" / "rows.parquet")
    _run(model, reference, source, out)
    # a crash between the two renames: the old partition moved aside, the new not in
    (out / "2024-06-01").rename(out / ".old-2024-06-01-deadbeef")
    assert _visible(out) == []

    def _crash(self: Any, table: pa.Table) -> None:
        raise OSError("killed")

    monkeypatch.setattr(batch_scoring._PartWriter, "write", _crash)
    with pytest.raises(OSError, match="killed"):
        _run(model, reference, source, out, run_id="run-2")
    assert sorted(p.name for p in out.iterdir()) == ["2024-06-01"]
    assert set(_read(out / "2024-06-01")["dagster_run_id"]) == {"run-1"}


def test_leftovers_of_a_similarly_named_partition_are_not_restored(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    source = _write(rows_50k.iloc[:100], tmp_path / "in" / "rows.parquet")
    _run(model, reference, source, out, partition="2024-06-01-b")
    (out / "2024-06-01-b").rename(out / ".old-2024-06-01-b-deadbeef")
    _run(model, reference, source, out, partition="2024-06-01")
    assert _visible(out) == ["2024-06-01"]
    assert (out / ".old-2024-06-01-b-deadbeef").is_dir()  # not this partition's to touch
    _run(model, reference, source, out, partition="2024-06-01-b")
    assert sorted(p.name for p in out.iterdir()) == ["2024-06-01", "2024-06-01-b"]


def test_missing_column_writes_nothing_and_names_the_column(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    source = _write(rows_50k.iloc[:100].drop(columns=["torque_nm"]), tmp_path / "in" / "x.parquet")
    out = tmp_path / "out"
    with pytest.raises(ServingInputError, match="'torque_nm'"):
        _run(model, reference, source, out)
    assert not out.exists()


def test_a_later_file_missing_a_column_is_named_with_its_file(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    # a dataset takes its schema from the first file; the second would read as nulls
    _write(rows_50k.iloc[:100], tmp_path / "in" / "a.parquet")
    _write(rows_50k.iloc[100:200].drop(columns=["type"]), tmp_path / "in" / "b.parquet")
    out = tmp_path / "out"
    _run(model, reference, tmp_path / "in" / "a.parquet", out)
    with pytest.raises(ServingInputError, match=r"b\.parquet: missing column 'type'"):
        _run(model, reference, tmp_path / "in", out)
    assert len(_read(out / "2024-06-01")) == 100


def test_mistyped_column_in_memory_dataset(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    rows = rows_50k.iloc[:50].assign(torque_nm=lambda f: f["torque_nm"].astype(str))
    dataset = ds.dataset(pa.Table.from_pandas(rows, preserve_index=False))
    with pytest.raises(ServingInputError, match=r"'torque_nm' has type"):
        _run(model, reference, dataset, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_derived_features_are_computed_never_read_from_the_input(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    rows = rows_50k.iloc[:200]
    derived = [d.name for d in AI4I.derived]
    _run(model, reference, _write(rows, tmp_path / "in" / "full.parquet"), tmp_path / "a")
    # stored rows carry no derived feature; a stale or broken one in the input is not read
    raw = rows.drop(columns=derived)
    _run(model, reference, _write(raw, tmp_path / "raw" / "raw.parquet"), tmp_path / "b")
    stale = rows.assign(power_w="stale", overstrain_ratio=-1.0)
    stale_table = pa.Table.from_pandas(stale, preserve_index=False)
    _run(model, reference, ds.dataset(stale_table), tmp_path / "c")
    expected = _read(tmp_path / "a" / "2024-06-01")["failure_probability"]
    for out in ("b", "c"):
        got = _read(tmp_path / out / "2024-06-01")["failure_probability"]
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())


def test_empty_input_publishes_an_empty_partition_with_the_schema(
    model: TrainedModel, reference: TrainingReference, rows_50k: pd.DataFrame, tmp_path: Path
) -> None:
    source = _write(rows_50k.iloc[:0], tmp_path / "in" / "empty.parquet")
    summary = _run(model, reference, source, tmp_path / "out")
    assert summary.rows == 0
    table = ds.dataset(tmp_path / "out" / "2024-06-01", format="parquet").to_table()
    assert table.num_rows == 0
    assert table.schema.equals(BATCH_PREDICTION_SCHEMA)


@pytest.mark.parametrize("partition", ["", ".hidden", "_meta", "a/b", "x" * 129])
def test_invalid_partition_names_are_rejected(
    model: TrainedModel, reference: TrainingReference, partition: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="invalid partition"):
        _run(model, reference, tmp_path / "nowhere", tmp_path / "out", partition=partition)
