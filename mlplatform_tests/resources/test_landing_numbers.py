"""Numbers parsed while a CSV file is read give exactly what typing its text gives.

The landing area parses the dataset's numeric columns while it reads a CSV file (on
all cores): integer columns as int64, the others as float64, instead of handing
their text to typing. Nothing may change for it: for every value, the typed values
and typing failures, the rows stored and the quarantine (values and records as the
file wrote them) are those of reading every column as text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import TypedRows, type_rows
from mlplatform.defs.common import DATASET
from mlplatform.resources import landing as landing_module
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.landing import LandingArea, read_landed_file

ROWS = 20
BAD_ROW = 13  # 1-based data row that gets the tricky value

# (column header, value as written in the file)
TRICKY = [
    ("Torque [Nm]", "40.5"),
    ("Torque [Nm]", " 40.5 "),
    ("Torque [Nm]", "+40.5"),
    ("Torque [Nm]", "4.05e1"),
    ("Torque [Nm]", ".5"),
    ("Torque [Nm]", "5."),
    ("Torque [Nm]", "-0"),
    ("Torque [Nm]", "-4.0"),
    ("Torque [Nm]", "nan"),
    ("Torque [Nm]", "NaN"),
    ("Torque [Nm]", "inf"),
    ("Torque [Nm]", "-Infinity"),
    ("Torque [Nm]", "1e400"),
    ("Torque [Nm]", "1e-400"),
    ("Torque [Nm]", '"40.5"'),
    ("Torque [Nm]", '""'),
    ("Torque [Nm]", ""),
    ("Torque [Nm]", " "),
    ("Torque [Nm]", "40,5"),
    ("Torque [Nm]", "0x10"),
    ("Torque [Nm]", "1_0"),
    ("Torque [Nm]", "abc"),
    ("Torque [Nm]", "NULL"),
    ("Torque [Nm]", "\u22121"),  # a minus sign that is not ASCII
    ("Torque [Nm]", "\u0664\u0665"),  # Arabic-Indic digits
    ("Rotational speed [rpm]", "1500.0"),
    ("Rotational speed [rpm]", "1500.5"),
    ("Rotational speed [rpm]", "1.5e3"),
    ("Rotational speed [rpm]", "99999999999999999999"),
    ("UDI", "9007199254740993"),
    ("UDI", "3"),  # repeats an earlier row's id
    ("UDI", "-1"),
    ("Machine failure", "2"),
    ("Machine failure", "1.0"),
]


def _csv(path: Path, column: str, value: str) -> Path:
    frame = generate_ai4i(ROWS, seed=5).astype(str)
    lines = frame.to_csv(index=False).splitlines()
    header = lines[0].split(",")
    fields = lines[BAD_ROW].split(",")
    fields[header.index(column)] = value
    lines[BAD_ROW] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ingest(root: Path, source: Path, *, numbers: bool, chunk_rows: int) -> FeatureStore:
    landing = LandingArea(
        landing_dir=str(root / "landing"),
        archive_dir=str(root / "archive"),
        rejected_dir=str(root / "rejected"),
        numeric_columns=DATASET.numeric_headers if numbers else [],
        integer_columns=DATASET.integer_headers if numbers else [],
    )
    (root / "landing").mkdir(parents=True)
    (root / "landing" / source.name).write_bytes(source.read_bytes())
    store = FeatureStore(root=str(root / "store"))
    [plan] = discover([landing], store).new
    ingest_batch(plan, landing, store, DATASET, chunk_rows=chunk_rows)
    return store


def _outcome(store: FeatureStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = store.as_of(DATASET).drop(columns=["ingested_at", "event_time", "batch_id"])
    quarantine = store.read_quarantine().drop(columns=["ingested_at", "batch_id"], errors="ignore")
    return rows, quarantine.sort_values(["row_number", "column"]).reset_index(drop=True)


def _typed(path: Path, numeric: frozenset[str], integers: frozenset[str]) -> TypedRows:
    [chunk] = read_landed_file(path, path.name, 1_000, numeric=numeric, integers=integers)
    return type_rows(chunk.table, DATASET, path.name, row_numbers=chunk.row_numbers)


def _stored(typed: TypedRows) -> pd.DataFrame | None:
    try:
        return typed.stored()
    except ValueError:  # a missing required integer: the chunk cannot be stored whole
        return None


@pytest.mark.parametrize(("column", "value"), TRICKY)
def test_parsed_numbers_type_as_their_text_does(tmp_path: Path, column: str, value: str) -> None:
    source = _csv(tmp_path / "tricky.csv", column, value)
    parsed = _typed(source, frozenset(DATASET.numeric_headers), frozenset(DATASET.integer_headers))
    floats = _typed(source, frozenset(DATASET.numeric_headers), frozenset())
    text = _typed(source, frozenset(), frozenset())
    # the same typed values (NaN where missing or not typeable), integers read as such
    # kept as int64 (the same numbers) ...
    for typed in (parsed, floats):
        assert list(typed.values) == list(text.values)
        for name, values in text.values.items():
            got, want = pd.Series(typed.values[name]), pd.Series(values)
            if got.dtype.kind == "i":
                assert DATASET.column(name).dtype == "int64"
                got = got.astype("float64")
            pd.testing.assert_series_equal(got, want)
        # ... and the same rows to store, in their storage types
        stored, expected = _stored(typed), _stored(text)
        assert (stored is None) == (expected is None)
        if stored is not None and expected is not None:
            pd.testing.assert_frame_equal(stored, expected)

    # ... and the same typing failures: rows, columns, reasons
    def failures(typed: TypedRows) -> list[tuple[int, str, str]]:
        return sorted(
            (int(r), str(c), str(why))
            for f in typed.problems
            for r, c, why in zip(f["row_number"], f["column"], f["reason"], strict=True)
        )

    assert failures(parsed) == failures(floats) == failures(text)


@pytest.mark.parametrize(
    ("column", "value", "chunk_rows"),
    [
        ("Torque [Nm]", "-4.0", 1_000),  # out of range: the quarantine keeps "-4.0", not -4
        ("Torque [Nm]", "-4.0", 7),  # in the second of three chunks (one GX run each)
        ("Rotational speed [rpm]", "1500.5", 1_000),  # not an integer
        ("Torque [Nm]", "1e400", 1_000),  # not finite
        ("UDI", "3", 1_000),  # repeats an id of an earlier row
        ("Torque [Nm]", "abc", 1_000),  # no number: read as text from the start
    ],
)
def test_parsed_numbers_store_and_quarantine_what_text_does(
    tmp_path: Path, column: str, value: str, chunk_rows: int
) -> None:
    source = _csv(tmp_path / "tricky.csv", column, value)
    parsed = _outcome(_ingest(tmp_path / "parsed", source, numbers=True, chunk_rows=chunk_rows))
    text = _outcome(_ingest(tmp_path / "text", source, numbers=False, chunk_rows=chunk_rows))
    pd.testing.assert_frame_equal(parsed[0], text[0])
    pd.testing.assert_frame_equal(parsed[1], text[1])
    [entry] = parsed[1].itertuples()
    assert (entry.row_number, entry.column) == (BAD_ROW, column)
    assert entry.value == value and f'"{column}": "{value}"' in entry.record


def test_a_clean_file_is_parsed_while_read_and_a_dirty_one_goes_on_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    numeric = frozenset(DATASET.numeric_headers)
    clean = _csv(tmp_path / "clean.csv", "Torque [Nm]", "40.5")
    [chunk] = read_landed_file(clean, "clean.csv", 1_000, numeric=numeric)
    assert chunk.parsed == frozenset(h for h in numeric if h in chunk.table.column_names)
    assert chunk.table.schema.field("Torque [Nm]").type == pa.float64()
    assert chunk.table.schema.field("Type").type == pa.string()
    [chunk] = read_landed_file(
        clean, "clean.csv", 1_000, numeric=numeric, integers=frozenset(DATASET.integer_headers)
    )
    assert chunk.table.schema.field("UDI").type == pa.int64()
    assert chunk.table.schema.field("Torque [Nm]").type == pa.float64()

    # a file of several byte ranges (1 MiB each here) with a value that is no number
    # near its end: the chunks before it are handed out parsed, the rest as text
    monkeypatch.setattr(landing_module, "_RANGE_BYTES", 1 << 20)
    rows = 80_000
    frame = generate_ai4i(rows, seed=6)
    frame["Torque [Nm]"] = frame["Torque [Nm]"].astype(str)
    frame.loc[rows - 100, "Torque [Nm]"] = "abc"
    dirty = tmp_path / "dirty.csv"
    frame.to_csv(dirty, index=False)
    assert dirty.stat().st_size > 3 * (1 << 20)
    chunks = list(read_landed_file(dirty, "dirty.csv", 10_000, numeric=numeric))
    parsed = [bool(c.parsed) for c in chunks]
    assert parsed[0] and not parsed[-1] and parsed == sorted(parsed, reverse=True)
    numbers = np.concatenate([c.row_numbers for c in chunks])
    assert np.array_equal(numbers, np.arange(1, rows + 1))
    assert all(c.table.num_rows == 10_000 for c in chunks)
    last = chunks[-1].table.column("Torque [Nm]").to_pylist()
    assert last[-100] == "abc" and last[0] == frame.loc[70_000, "Torque [Nm]"]
