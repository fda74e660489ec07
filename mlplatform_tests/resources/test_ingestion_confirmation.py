"""Ingestion stores nothing on the fast row evaluation's word alone.

The rows a chunk quarantines are found by the vectorized evaluation of the
schema's suite while Great Expectations validates the same chunk on a worker
thread; :func:`~mlplatform.resources.ingestion.ingest_batch` commits only once GX
agrees. These tests break the evaluation on purpose (a bug that misses the range
check) and check that GX's verdict wins and nothing wrong is ever visible.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform.core import expectations as expectations_module
from mlplatform.core.expectations import ExpectationDef
from mlplatform.core.generator import generate_ai4i
from mlplatform.defs.common import DATASET
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.files import TMP_PREFIX
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.landing import LandingArea

BETWEEN = "expect_column_values_to_be_between"
ROWS = 300
OUT_OF_RANGE = [5, 150]  # 0-based positions; rows 6 and 151 of the file


def _land(tmp_path: Path) -> tuple[LandingArea, FeatureStore]:
    landing = LandingArea(
        landing_dir=str(tmp_path / "landing"),
        archive_dir=str(tmp_path / "archive"),
        rejected_dir=str(tmp_path / "rejected"),
    )
    store = FeatureStore(root=str(tmp_path / "store"))
    (tmp_path / "landing").mkdir(parents=True)
    frame = generate_ai4i(ROWS, seed=3)
    frame.loc[OUT_OF_RANGE, "Torque [Nm]"] = -4.0  # below 0 Nm
    frame.to_csv(tmp_path / "landing" / "torque.csv", index=False)
    return landing, store


def _ingest(landing: LandingArea, store: FeatureStore, chunk_rows: int) -> None:
    found = discover([landing], store)
    assert len(found.new) == 1
    ingest_batch(found.new[0], landing, store, DATASET, chunk_rows=chunk_rows)


def _outcome(store: FeatureStore) -> tuple[int, list[int], list[str]]:
    [manifest] = store.manifests()
    quarantine = store.read_quarantine()
    return (
        len(store.as_of(DATASET)),
        sorted(quarantine["row_number"].unique().tolist()),
        manifest.validation["failures"],
    )


@pytest.mark.parametrize("chunk_rows", [1_000, 100], ids=["one-chunk", "three-chunks"])
def test_a_wrong_row_evaluation_is_overruled_by_great_expectations(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    chunk_rows: int,
) -> None:
    honest_landing, honest_store = _land(tmp_path / "honest")
    _ingest(honest_landing, honest_store, chunk_rows)
    expected = _outcome(honest_store)
    assert expected[0] == ROWS - len(OUT_OF_RANGE)
    assert expected[1] == [p + 1 for p in OUT_OF_RANGE]

    real = expectations_module._failing

    def misses_ranges(series: pd.Series, e: ExpectationDef) -> np.ndarray:
        if e.type == BETWEEN:
            return np.zeros(len(series), dtype=bool)
        return real(series, e)

    monkeypatch.setattr(expectations_module, "_failing", misses_ranges)
    landing, store = _land(tmp_path / "broken")
    with caplog.at_level(logging.WARNING):
        _ingest(landing, store, chunk_rows)
    assert "again with Great Expectations' rows" in caplog.text
    # the same store as with a correct evaluation: one version, the same rows and reasons
    assert _outcome(store) == expected
    assert len(store.manifests()) == 1
    leftovers = [p for p in (tmp_path / "broken" / "store").rglob("*") if TMP_PREFIX in p.name]
    assert leftovers == []
    archived = [p.name for p in (tmp_path / "broken" / "archive").iterdir()]
    assert len(archived) == 1 and archived[0].endswith("torque.csv")


def test_a_correct_evaluation_is_confirmed_without_a_second_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    landing, store = _land(tmp_path)
    with caplog.at_level(logging.WARNING):
        _ingest(landing, store, 100)
    assert "Great Expectations" not in caplog.text
    rows, quarantined, failures = _outcome(store)
    assert rows == ROWS - len(OUT_OF_RANGE)
    assert quarantined == [p + 1 for p in OUT_OF_RANGE]
    assert any(BETWEEN in f and "torque_nm" in f for f in failures)
