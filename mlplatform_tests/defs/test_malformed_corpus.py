"""Every kind of malformed landed file, through the real ingestion asset.

Each corpus case (:mod:`mlplatform_tests.corpus`) is landed next to a good file
and ingested as the sensor and ``mlplatform run`` do: one Dagster run per
partition. A rejected file fails its run with a message naming the file (and
column), moves byte for byte to the rejected area with its reason and leaves the
store untouched; a quarantining file succeeds, quarantines exactly the expected
rows and accounts for every data row it holds. The good file flows regardless.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlplatform.core.batches import file_batch_key
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import FileRejected
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import COUNT_INVARIANT_CHECK, STORED_ROWS_CHECK
from mlplatform.paths import StatePaths
from mlplatform.resources import landing as landing_module
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.files import TMP_PREFIX
from mlplatform.resources.landing import REASON_SUFFIX
from mlplatform_tests.corpus import CorpusCase, Ingestion, Rejection, build_corpus
from mlplatform_tests.defs.helpers import ingest_pending

CORPUS = build_corpus()
GOOD_ROWS = 20
PARTITION_TAG = "dagster/partition"


def _landed_files(state: StatePaths) -> list[Path]:
    """Files waiting in the landing folder (its labels inbox is a folder, not a landed file)."""
    return [p for p in state.landing.iterdir() if p.is_file()]


def _param(case: CorpusCase) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.known_bug)] if case.known_bug else []
    return pytest.param(case, id=case.id, marks=marks)


def _key(data: bytes) -> str:
    return file_batch_key(hashlib.sha256(data).hexdigest())


def _land_good(landing: Path, name: str, start_udi: int, seed: int) -> bytes:
    data = generate_ai4i(GOOD_ROWS, seed=seed, start_udi=start_udi).to_csv(index=False).encode()
    (landing / name).write_bytes(data)
    return data


def _by_partition(results: list[dg.ExecuteInProcessResult]) -> dict[str, dg.ExecuteInProcessResult]:
    return {r.dagster_run.tags[PARTITION_TAG]: r for r in results}


def _temp_files(state: StatePaths) -> list[Path]:
    roots = [state.feature_store, state.landing, state.archive, state.rejected]
    return [p for root in roots if root.exists() for p in root.rglob(f"{TMP_PREFIX}*")]


def _stored_in(folder: Path, data: bytes, name: str) -> Path:
    """The one file in ``folder`` stored from landed ``name`` with content ``data``."""
    sha = hashlib.sha256(data).hexdigest()
    path = folder / f"{sha[:16]}__{name}"
    assert path.is_file(), f"{name} not in {folder}: {sorted(p.name for p in folder.iterdir())}"
    assert path.read_bytes() == data, f"{path.name} is not byte-identical to what was landed"
    return path


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


def _assert_rejected(
    case: CorpusCase,
    expected: Rejection,
    result: dg.ExecuteInProcessResult,
    landed: bytes,
    state: StatePaths,
    store: FeatureStore,
) -> None:
    assert not result.success, f"{case.id}: the run should fail"
    [failure] = [e for e in result.all_events if e.is_step_failure]
    data = failure.step_failure_data
    assert data.user_failure_data is not None, f"not a dg.Failure: {data.error}"
    description = data.user_failure_data.description or ""
    metadata = {k: v.value for k, v in data.user_failure_data.metadata.items()}
    assert description.startswith(f"{case.filename}: ")
    assert expected.reason in description
    assert metadata["file"] == case.filename
    assert expected.reason in str(metadata["reason"])
    if expected.column is None:
        assert metadata["column"] == ""
        assert "(column " not in description
    else:
        assert metadata["column"] == expected.column
        assert description.endswith(f"(column {expected.column!r})")

    kept = _stored_in(state.rejected, landed, case.filename)
    reason = kept.with_name(kept.name + REASON_SUFFIX)
    assert reason.read_text() == description
    assert not list(state.archive.glob(f"*__{case.filename}"))

    key = _key(landed)
    assert store.manifests(key) == []
    batch_folder = Path(store.root) / "batches" / key
    assert not batch_folder.exists() or not any(batch_folder.iterdir())
    quarantine = store.read_quarantine()
    assert case.filename not in set(quarantine["source_file"])


def _assert_ingested(
    case: CorpusCase,
    expected: Ingestion,
    result: dg.ExecuteInProcessResult,
    landed: bytes,
    state: StatePaths,
    store: FeatureStore,
) -> None:
    assert result.success, f"{case.id}: the run failed"
    checks = _checks(result)
    assert checks[COUNT_INVARIANT_CHECK] and checks[STORED_ROWS_CHECK], checks

    key = _key(landed)
    [manifest] = store.manifests(key)
    counts = (manifest.rows_landed, manifest.rows_stored, manifest.rows_quarantined)
    assert counts == (expected.rows_landed, expected.rows_stored, expected.rows_quarantined)
    assert manifest.rows_landed == manifest.rows_stored + manifest.rows_quarantined
    assert manifest.rows_landed == case.data_rows
    if case.chunk_rows is not None and manifest.rows_stored:
        assert len(manifest.parts) > 1, "the case must span chunks"

    quarantine = store.read_quarantine(key)
    assert set(quarantine["source_file"]) <= {case.filename}
    assert quarantine["record"].notna().all()
    got = sorted(
        zip(quarantine["row_number"], quarantine["column"], quarantine["expectation"], strict=True)
    )
    want = sorted((e.row_number, e.column, e.expectation) for e in expected.entries)
    assert got == want
    reasons = {
        (r, c, e): reason
        for r, c, e, reason in zip(
            quarantine["row_number"],
            quarantine["column"],
            quarantine["expectation"],
            quarantine["reason"],
            strict=True,
        )
    }
    for entry in expected.entries:
        reason = reasons[(entry.row_number, entry.column, entry.expectation)]
        assert entry.reason in reason, f"row {entry.row_number}: {reason!r}"

    stored = store.read_batch(key)
    if manifest.rows_stored:
        assert (stored["source_file"] == case.filename).all()
        stored = stored.sort_values("source_row")
    stored_rows = stored["source_row"].tolist() if manifest.rows_stored else []
    assert stored_rows == sorted(set(range(1, case.data_rows + 1)) - expected.quarantined_rows)
    for column, values in expected.stored_values.items():
        assert tuple(stored[column].tolist()) == values, column
    for column in expected.dropped_columns:
        assert column not in stored.columns

    _stored_in(state.archive, landed, case.filename)
    assert not list(state.rejected.glob(f"*__{case.filename}*"))


@pytest.mark.parametrize("case", [_param(c) for c in CORPUS])
def test_malformed_file_is_rejected_or_quarantined_and_good_data_flows(
    case: CorpusCase, resources: dict[str, Any], state: StatePaths
) -> None:
    landed = case.write(state.landing).read_bytes()
    good = _land_good(state.landing, "good_batch.csv", start_udi=900_001, seed=7)
    instance = dg.DagsterInstance.ephemeral()

    runs = _by_partition(ingest_pending(resources, instance, case.run_config()))

    assert set(runs) == {_key(landed), _key(good)}
    assert runs[_key(good)].success
    store: FeatureStore = resources["feature_store"]
    result = runs[_key(landed)]
    if isinstance(case.expected, Rejection):
        _assert_rejected(case, case.expected, result, landed, state, store)
        stored_here = 0
    else:
        _assert_ingested(case, case.expected, result, landed, state, store)
        stored_here = case.expected.rows_stored

    rows = store.as_of(DATASET)
    assert len(rows) == GOOD_ROWS + stored_here
    assert (rows["source_file"] == "good_batch.csv").sum() == GOOD_ROWS
    _stored_in(state.archive, good, "good_batch.csv")
    assert not _landed_files(state)
    assert _temp_files(state) == []


def test_corpus_covers_enough_kinds() -> None:
    assert len(CORPUS) >= 20
    assert sum(case.malformed for case in CORPUS) >= 15
    assert {case.rejected for case in CORPUS} == {True, False}


def test_whole_corpus_at_once_loses_nothing(resources: dict[str, Any], state: StatePaths) -> None:
    """Every file lands together with good files: each is rejected with a reason or counted."""
    landed = {case.filename: case.write(state.landing).read_bytes() for case in CORPUS}
    for i in range(2):
        name = f"good_{i}.csv"
        landed[name] = _land_good(state.landing, name, start_udi=900_001 + 1000 * i, seed=70 + i)
    assert len({_key(data) for data in landed.values()}) == len(landed)
    instance = dg.DagsterInstance.ephemeral()

    runs = _by_partition(ingest_pending(resources, instance))

    assert set(runs) == {_key(data) for data in landed.values()}
    store: FeatureStore = resources["feature_store"]
    expected = {case.filename: case for case in CORPUS}
    for name, data in landed.items():
        result = runs[_key(data)]
        case = expected.get(name)
        sha = hashlib.sha256(data).hexdigest()[:16]
        rejected = state.rejected / f"{sha}__{name}"
        archived = state.archive / f"{sha}__{name}"
        assert rejected.is_file() != archived.is_file(), f"{name}: lost or kept twice"
        if rejected.is_file():
            assert not result.success, name
            assert rejected.read_bytes() == data
            reason = rejected.with_name(rejected.name + REASON_SUFFIX).read_text()
            assert reason.startswith(f"{name}: ") and len(reason) > len(name) + 2
            assert store.manifests(_key(data)) == []
        else:
            assert result.success, name
            assert archived.read_bytes() == data
            [manifest] = store.manifests(_key(data))
            assert manifest.rows_landed == manifest.rows_stored + manifest.rows_quarantined
            checks = _checks(result)
            assert checks[COUNT_INVARIANT_CHECK] and checks[STORED_ROWS_CHECK], (name, checks)
        if case is not None and case.known_bug is None:
            # outside its own chunk size a case may quarantine differently, never flip kind
            assert rejected.is_file() == case.rejected, name
            if not case.rejected:
                assert store.manifests(_key(data))[0].rows_landed == case.data_rows, name
    assert not _landed_files(state)
    assert _temp_files(state) == []
    stored = store.as_of(DATASET)
    assert (stored["source_file"].str.startswith("good_")).sum() == 2 * GOOD_ROWS


# --- the fast CSV reader against the careful one -----------------------------------------------


def _read_all(path: Path, chunk_rows: int, *, fast: bool) -> Any:
    """Every chunk the reader hands out (table, row numbers, rejected rows), or its rejection."""
    try:
        return [
            (c.table, c.row_numbers.tolist(), c.rejected)
            for c in landing_module._read_csv(path, path.name, chunk_rows, fast=fast)
        ]
    except FileRejected as exc:
        return (str(exc), exc.column)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return bool(a == b)
    return len(a) == len(b) and all(
        x[0].equals(y[0]) and x[1:] == y[1:] for x, y in zip(a, b, strict=True)
    )


CSV_CASES = [c for c in CORPUS if c.filename.endswith(".csv")]


@pytest.mark.parametrize("chunk_rows", [1, 7, 1_000_000])
def test_fast_and_careful_csv_readers_agree_on_every_corpus_file(
    chunk_rows: int, tmp_path: Path
) -> None:
    for case in CSV_CASES:
        path = case.write(tmp_path)
        fast, careful = (_read_all(path, chunk_rows, fast=f) for f in (True, False))
        assert _same(fast, careful), case.id


def test_fast_reader_hands_over_to_the_careful_one_at_the_first_invalid_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # several of the fast reader's byte ranges (1 MiB here), invalid rows only in the
    # last ones
    monkeypatch.setattr(landing_module, "_RANGE_BYTES", 1 << 20)
    lines = generate_ai4i(60_000, seed=5).to_csv(index=False, lineterminator="\n").splitlines()
    lines[50_000] = ",".join(lines[50_000].split(",")[:5])  # too few fields
    lines[55_000] = ""  # a blank line
    lines[59_990] += ",7"  # too many
    path = tmp_path / "late_trouble.csv"
    path.write_text("\n".join(lines) + "\n")
    handed_out: list[int] = []
    fast_reader = landing_module._read_csv_fast

    def spy(*args: Any, **kwargs: Any) -> Any:
        for chunk in fast_reader(*args, **kwargs):
            handed_out.append(chunk.table.num_rows)
            yield chunk

    monkeypatch.setattr(landing_module, "_read_csv_fast", spy)

    fast = _read_all(path, 10_000, fast=True)

    assert sum(handed_out) >= 20_000  # the fast reader did part of the file
    assert _same(fast, _read_all(path, 10_000, fast=False))
    assert [len(c[1]) for c in fast] == [10_000] * 5 + [9_997]  # exactly chunk_rows each
    # a blank line is no data row: rows after it are numbered one less than their line
    assert [r.row_number for c in fast for r in c[2]] == [50_000, 59_989]
    assert fast[-1][1][-1] == 59_999
