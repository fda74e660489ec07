"""How the platform writes Parquet (mlplatform.resources.files.write_parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.core.batches import BatchPlan, add_lineage, lineage_constants
from mlplatform.core.ingest import type_and_validate
from mlplatform.core.schema import AI4I
from mlplatform.resources.files import write_parquet
from mlplatform_tests.core._frames import raw_text

PLAN = BatchPlan("file-0123456789abcdef", "landing", "machines.csv", {})
STAMP = pd.Timestamp("2026-01-02T03:04:05.123456Z")


def _valid(rows: int = 40) -> pd.DataFrame:
    batch = type_and_validate(raw_text(rows, seed=5), AI4I, "landing/machines.csv")
    assert batch.rows_quarantined == 0
    return batch.valid


def _encodings(path: Path, column: str) -> set[str]:
    meta = pq.read_metadata(path).row_group(0)
    [chunk] = [
        meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column
    ]
    return set(chunk.encodings)


def test_constant_columns_give_the_file_the_materialized_columns_give(tmp_path: Path) -> None:
    valid = _valid()
    full = add_lineage(valid, AI4I, plan=PLAN, ingested_at=STAMP)
    rows = add_lineage(valid, AI4I, plan=PLAN, ingested_at=STAMP, constants=False)
    constant = pa.Table.from_pandas(lineage_constants(PLAN, STAMP), preserve_index=False)
    every_row, once = tmp_path / "every_row.parquet", tmp_path / "once.parquet"

    write_parquet(pa.Table.from_pandas(full, preserve_index=False), every_row)
    write_parquet(pa.Table.from_pandas(rows, preserve_index=False), once, constant=constant)

    # the same Arrow schema (types, pandas metadata) and footer metadata ...
    assert pq.read_schema(once).equals(pq.read_schema(every_row), check_metadata=True)
    assert pq.read_metadata(once).metadata == pq.read_metadata(every_row).metadata
    # ... so the same rows, types and pandas dtypes come back, whole or by column
    assert pq.read_table(once).equals(pq.read_table(every_row))
    pd.testing.assert_frame_equal(pd.read_parquet(once), full)
    pd.testing.assert_frame_equal(
        pd.read_parquet(once, columns=["udi", "batch_id", "ingested_at"]),
        full[["udi", "batch_id", "ingested_at"]],
    )
    # the constant is one dictionary entry and its indices, as Parquet stores repeats
    assert "RLE_DICTIONARY" in _encodings(once, "batch_id")


def test_constant_columns_need_one_row(tmp_path: Path) -> None:
    table = pa.table({"x": [1, 2]})
    two = pa.table({"batch_id": ["a", "b"]})
    with pytest.raises(ValueError, match="exactly one row, got 2"):
        write_parquet(table, tmp_path / "x.parquet", constant=two)
    assert not (tmp_path / "x.parquet").exists()


def test_plain_columns_are_written_without_a_dictionary(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(_valid(), preserve_index=False)
    path = tmp_path / "plain.parquet"

    write_parquet(table, path, plain=("udi", "source_row"))

    assert pq.read_table(path).equals(table)
    for column in ("udi", "source_row"):
        assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & _encodings(path, column), column
    assert "RLE_DICTIONARY" in _encodings(path, "type")  # the others keep theirs
