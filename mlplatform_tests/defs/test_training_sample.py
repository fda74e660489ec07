"""Training reads only what it needs: the training columns of a stratified sample.

``train_test_split`` gets the stored feature table unread (``StoredTable``); it reads
the target column, draws a stratified sample of at most ``max_rows`` rows, and reads
only those rows' training columns. The memory this saves on a 10,000,000-row table is
measured by ``benchmarks/training_memory.py`` (run small in
``mlplatform_tests/test_benchmarks_training_memory.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.core.features import AS_OF_ATTR, DIGEST_ATTR, LINEAGE
from mlplatform.core.split import SPLIT_COLUMN, stratified_split
from mlplatform.defs.common import DATASET
from mlplatform.defs.features import feature_table as feature_table_asset
from mlplatform.defs.training import train_test_split, training_columns
from mlplatform.paths import StatePaths
from mlplatform.resources import feature_tables
from mlplatform.resources.feature_tables import ParquetTable
from mlplatform.resources.files import write_parquet_atomic
from mlplatform_tests.core._frames import feature_table

ROWS = 3_000
ATTRS = {AS_OF_ATTR: "2026-11-20T12:00:00+00:00", DIGEST_ATTR: "d" * 64}


def _stored_table(state: StatePaths, rows: int = ROWS) -> pd.DataFrame:
    """A feature table with lineage columns, stored where the feature_table asset writes it."""
    table = feature_table(rows, seed=11)
    table["event_time"] = pd.Timestamp("2026-11-20", tz="UTC") + pd.to_timedelta(
        np.arange(rows), unit="min"
    )
    table["ingested_at"] = pd.Timestamp("2026-11-21", tz="UTC")
    table["batch_id"] = "file-0123456789abcdef"
    table["source_file"] = "readings.csv"
    table.attrs.update(ATTRS)
    write_parquet_atomic(table, state.feature_store / "feature_table.parquet")
    return table


def _split(
    resources: dict[str, Any], config: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    result = dg.materialize(
        [feature_table_asset, train_test_split],
        selection=["train_test_split"],
        resources=resources,
        run_config={"ops": {"train_test_split": {"config": config}}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    [event] = result.asset_materializations_for_node("train_test_split")
    return result.output_for_node("train_test_split"), {
        k: v.value for k, v in event.metadata.items()
    }


def test_a_table_over_max_rows_is_split_as_a_stratified_sample_of_training_columns(
    resources: dict[str, Any], state: StatePaths
) -> None:
    table = _stored_table(state)
    split, metadata = _split(resources, {"max_rows": 1_000, "seed": 5})

    # only the columns training uses: no lineage read, none carried on
    assert list(split.columns) == [*training_columns(DATASET), SPLIT_COLUMN]
    assert not set(LINEAGE) & set(split.columns)
    # a sample of 1,000 rows with the table's share of failures, in table order
    assert len(split) == 1_000
    share = table[DATASET.target].mean()
    assert abs(int(split[DATASET.target].sum()) - share * 1_000) <= 1
    ids = split[DATASET.entity_id]
    assert ids.is_unique and ids.is_monotonic_increasing
    # each sampled row is the stored row, value for value
    stored = table.set_index(DATASET.entity_id).loc[ids, training_columns(DATASET)[1:]]
    pd.testing.assert_frame_equal(
        split.drop(columns=[DATASET.entity_id, SPLIT_COLUMN]),
        stored.reset_index(drop=True),
    )
    # then split 70/30 as always, and the record says it was sampled
    assert (split[SPLIT_COLUMN] == "train").sum() == 700
    assert metadata["feature_table_rows"] == ROWS and metadata["sampled"] is True
    assert metadata["train_rows"] == 700 and metadata["test_rows"] == 300
    assert metadata["feature_as_of"] == ATTRS[AS_OF_ATTR]
    assert split.attrs == ATTRS

    # the same seed draws the same sample; the draw is part of the reproducible split
    again, _ = _split(resources, {"max_rows": 1_000, "seed": 5})
    pd.testing.assert_frame_equal(again, split)


def test_a_table_within_max_rows_is_split_whole(
    resources: dict[str, Any], state: StatePaths
) -> None:
    table = _stored_table(state)
    split, metadata = _split(resources, {})  # the default cap: 1,000,000 rows
    assert metadata["sampled"] is False and len(split) == ROWS
    # exactly the split of the whole table's training columns
    expected, _ = stratified_split(
        table[training_columns(DATASET)], DATASET.target, test_size=0.3, seed=42
    )
    pd.testing.assert_frame_equal(split, expected)
    uncapped, _ = _split(resources, {"max_rows": None})
    pd.testing.assert_frame_equal(uncapped, expected)


def test_a_stored_table_reads_chosen_rows_across_batches_and_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = feature_table(500, seed=12)
    table.attrs.update(ATTRS)
    path = tmp_path / "table.parquet"
    write_parquet_atomic(table, path)
    # several row groups and many small batches: every boundary is crossed
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata(pq.read_schema(path).metadata)
    pq.write_table(arrow, path, row_group_size=64)
    monkeypatch.setattr(feature_tables, "_READ_BATCH_ROWS", 7)
    stored = ParquetTable(path)
    assert stored.num_rows == 500 and stored.attrs == ATTRS
    assert pq.ParquetFile(path).metadata.num_row_groups == 8

    rows = np.sort(np.random.default_rng(0).choice(500, size=120, replace=False))
    rows = np.r_[0, rows[(rows > 0) & (rows < 499)], 499]
    columns = ["type", DATASET.target, DATASET.entity_id]
    read = stored.read(columns, rows)
    expected = pd.read_parquet(path, columns=columns).take(rows).reset_index(drop=True)
    pd.testing.assert_frame_equal(read, expected)
    assert read.attrs == ATTRS
    assert np.array_equal(stored.read_column(DATASET.target), table[DATASET.target].to_numpy())

    with pytest.raises(KeyError, match="no columns"):
        stored.read(["no_such_column"])
    with pytest.raises(ValueError, match="increasing"):
        stored.read(columns, np.array([5, 3]))
    with pytest.raises(IndexError, match="beyond"):
        stored.read(columns, np.array([500]))
