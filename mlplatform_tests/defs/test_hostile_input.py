"""Hostile input that does not fit the corpus's shape, through the real ingestion asset.

* Names and links landed together: symbolic links out of the landing folder (to a
  file, a folder, nowhere, themselves, through ``..``), a FIFO, hidden names, a name
  that is not UTF-8, 250 bytes long, with a newline, a shell command, and a name that
  collides with the reason-file naming. Each ends ingested, rejected with a reason or
  (hidden names, folders, FIFOs) left alone, and nothing anywhere in the temp tree
  outside the landing, archive, rejected and feature-store folders changes.
* Bombs and giants: a 10 GiB gzip bomb disguised as ``.csv`` is refused at once, in
  bounded memory; pyarrow would decompress a ``.gz`` (so the extension gate matters);
  a Parquet file of zeros that decodes to 100 times its size is refused; a 50 MB cell
  is quarantined and clipped (the quarantine and the run's metadata stay small); a
  line longer than the reader's block rejects the file with a reason that says so.
* The champion is untouched: a champion is trained once (module scope); the whole
  corpus is landed and ingested; training on single-class rows, and on a batch whose
  every row was quarantined, is attempted against the same registry and ledger and
  refuses; the champion alias points at the same version with the same model bytes.
  The same champion scores a file with formula cells: its invalid-rows CSV carries no
  cell a spreadsheet would run.
* A CSV larger than the memory ingestion may use (opt-in, ``MLPLATFORM_TEST_HUGE=1``):
  ~3 GB (54 million rows) ingested in chunks in a child process, with the count
  invariant, its resident peak under 2 GB and two thirds of the file's size.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from dagster._serdes import serialize_value

from mlplatform.core.batches import file_batch_key
from mlplatform.core.generator import AI4I_COLUMNS, generate_ai4i
from mlplatform.core.ingest import MAX_TEXT_CHARS, TYPE_EXPECTATION, FileRejected
from mlplatform.core.serving import TrainingReference, pipeline_threshold
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import COUNT_INVARIANT_CHECK, register_new_batches
from mlplatform.defs.registry import TRAINING_REFERENCE_DOC
from mlplatform.defs.resources import SQL_URL_ENV, build_resources
from mlplatform.paths import StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.file_scoring import score_file
from mlplatform.resources.ingestion import discover, ingest_batch
from mlplatform.resources.landing import REASON_SUFFIX
from mlplatform.resources.mlflow_registry import MlflowRegistry, ModelVersionRef
from mlplatform_tests.corpus import FORMULA_IDS, FORMULA_TYPES, build_corpus, gzip_bomb
from mlplatform_tests.defs.helpers import (
    ASSETS,
    DOWNSTREAM,
    INGESTION_ASSET,
    gate_config,
    ingest_pending,
    land_sample,
    materialize_all,
)

HUGE_ENV = "MLPLATFORM_TEST_HUGE"
HUGE_BYTES = 3_000_000_000
# RLIMIT_AS caps address space, not memory: threads' and allocators' reservations take
# ~2.5 GB of it before any row is read (1.5 GB aborts at start-up), so the cap is a
# safety net and the proof is the resident peak, far below the file's size
HUGE_ADDRESS_SPACE = 4 << 30
HUGE_CHUNK_ROWS = 100_000
HUGE_PEAK_RSS_MB = 2048  # benchmarks/ingestion.py's memory target

# A champion in seconds: one fast candidate, no search, a gate any model passes (so a
# training attempt that is not refused would promote: the refusal is what keeps it).
CHAMPION_CONFIG: dict[str, Any] = {
    "ops": {
        **gate_config(
            min_recall=0.0, min_precision=0.0, max_recall_drop_vs_champion=1.0, min_slice_recall=0.0
        )["ops"],
        "candidate_model": {
            "config": {"candidates": ["logistic_regression"], "search_iterations": 0}
        },
        "model_evaluation": {"config": {"bootstrap_resamples": 200, "importance_repeats": 0}},
    }
}


# -- helpers ------------------------------------------------------------------------------


def _entry(path: Path) -> tuple[object, ...]:
    """What a path is, without following it: kind, link target or content digest, mtime."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return ("dir",)
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as fh:
            return ("file", hashlib.file_digest(fh, "sha256").hexdigest(), info.st_mtime_ns)
    return ("special", stat.S_IFMT(info.st_mode), info.st_mtime_ns)


def _tree(root: Path) -> dict[bytes, tuple[object, ...]]:
    """Every entry under ``root`` (names as bytes: some are not UTF-8), links not followed."""
    out: dict[bytes, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(os.fsencode(root)):
        for name in [*dirs, *files]:
            full = os.path.join(folder, name)
            out[os.path.relpath(full, os.fsencode(root))] = _entry(Path(os.fsdecode(full)))
    return out


def _changed(before: dict[bytes, Any], after: dict[bytes, Any]) -> set[bytes]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _good_csv(rows: int, start_udi: int, seed: int) -> bytes:
    return generate_ai4i(rows, seed=seed, start_udi=start_udi).to_csv(index=False).encode()


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The description of a failed ingestion run's dg.Failure."""
    [event] = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data
    assert data.user_failure_data is not None, f"not a dg.Failure: {data.error}"
    return data.user_failure_data.description or ""


def _errors(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        str(e.step_failure_data.error) + str(e.step_failure_data.user_failure_data)
        for e in result.all_events
        if e.is_step_failure
    )


def _model_digest(registry: MlflowRegistry, ref: ModelVersionRef) -> str:
    """sha256 over the registered model's files (path and bytes), as MLflow serves them."""
    import mlflow.artifacts

    registry._client()
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=tmp))
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(local)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# -- names and links ------------------------------------------------------------------------


def test_hostile_names_and_links_are_ingested_rejected_or_left_alone_never_followed(
    tmp_path: Path, state: StatePaths, resources: dict[str, Any]
) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    secret = _good_csv(10, start_udi=70_001, seed=1)
    (outside / "secret.csv").write_bytes(secret)
    (outside / "dir" / "inside.csv").write_bytes(_good_csv(5, start_udi=71_001, seed=2))
    landing = state.landing
    links = {
        "link_file.csv": str(outside / "secret.csv"),
        "link_relative.csv": "../../outside/secret.csv",  # a path through '..'
        "link_dir.csv": str(outside / "dir"),
        "link_broken.csv": str(tmp_path / "nowhere.csv"),
        "link_loop.csv": "link_loop.csv",
    }
    for name, target in links.items():
        os.symlink(target, landing / name)
    assert (landing / "link_relative.csv").read_bytes() == secret  # it does lead out
    long_name = "x" * 246 + ".csv"
    ingested = {
        "-rf.csv": _good_csv(5, 1, seed=3),
        "a\nb.csv": _good_csv(5, 101, seed=4),
        "$(touch pwned).csv": _good_csv(5, 201, seed=5),
        "café 機械 \u202ecsv.csv": _good_csv(5, 301, seed=6),
        long_name: _good_csv(5, 401, seed=7),
    }
    for name, data in ingested.items():
        (landing / name).write_bytes(data)
    bad = generate_ai4i(5, seed=8).drop(columns=["Torque [Nm]"]).to_csv(index=False).encode()
    # the same bytes under a name ending like the reason file of the first
    (landing / "bad.csv").write_bytes(bad)
    (landing / f"bad.csv{REASON_SUFFIX}").write_bytes(bad)
    latin_name = os.fsencode(landing) + b"/caf\xe9.csv"
    latin = _good_csv(5, 501, seed=9)
    with open(latin_name, "wb") as fh:
        fh.write(latin)
    hidden = {"..csv": _good_csv(5, 601, seed=10), ".hidden.csv": _good_csv(5, 701, seed=11)}
    for name, data in hidden.items():
        (landing / name).write_bytes(data)
    (landing / "folder.csv").mkdir()
    os.mkfifo(landing / "pipe.csv")  # reading it would block forever
    before = _tree(tmp_path)

    runs = ingest_pending(resources, dg.DagsterInstance.ephemeral())

    # every link, the bad file (once for both names), the latin-1 name, the good files
    assert len(runs) == len(links) + 1 + 1 + len(ingested)
    by_label = {r.dagster_run.tags["dagster/partition"]: r for r in runs}
    store: FeatureStore = resources["feature_store"]
    for name, data in ingested.items():
        key = file_batch_key(_sha(data))
        assert by_label[key].success, name
        [manifest] = store.manifests(key)
        assert (manifest.rows_landed, manifest.rows_stored) == (5, 5), name
    stored = store.as_of(DATASET)
    assert sorted(stored["source_file"].unique()) == sorted(ingested)
    assert not (stored["udi"] >= 70_001).any()  # nothing read through a link

    archived = {p.name: p for p in state.archive.iterdir()}
    for data in ingested.values():
        [path] = [p for n, p in archived.items() if n.startswith(_sha(data)[:16])]
        assert path.read_bytes() == data
        assert len(os.fsencode(path.name)) + len(REASON_SUFFIX) <= 255
    shortened = f"{_sha(ingested[long_name])[:16]}__{'x' * 221}~.csv"
    assert len(shortened) + len(REASON_SUFFIX) == 255
    assert archived[shortened].read_bytes() == ingested[long_name]

    rejected = {os.fsencode(p.name): p for p in state.rejected.iterdir()}
    for name, target in links.items():
        [link] = [p for n, p in rejected.items() if n.endswith(f"__{name}".encode())]
        assert link.is_symlink() and os.readlink(link) == target  # moved as a link
        reason = link.with_name(link.name + REASON_SUFFIX).read_text()
        assert reason.startswith(f"{name}: a symbolic link"), reason
        assert "was not followed" in reason
    prefix = _sha(bad)[:16]
    first_reason = state.rejected / f"{prefix}__bad.csv{REASON_SUFFIX}"
    assert first_reason.read_text().startswith("bad.csv: missing required column")
    assert (state.rejected / f"{prefix}__bad.csv").read_bytes() == bad
    assert (state.rejected / f"{prefix}__bad.csv{REASON_SUFFIX}_").read_bytes() == bad
    second_reason = state.rejected / f"{prefix}__bad.csv{REASON_SUFFIX}_{REASON_SUFFIX}"
    assert second_reason.read_text().startswith("bad.csv: missing required column")
    [latin_kept] = [p for n, p in rejected.items() if n.endswith(b"__caf\xe9.csv")]
    assert latin_kept.read_bytes() == latin
    latin_reason = latin_kept.with_name(latin_kept.name + REASON_SUFFIX).read_text()
    assert latin_reason.startswith("caf\\xe9.csv: the file name is not UTF-8")

    # hidden names, the folder and the FIFO are left where they were, untouched
    left = sorted(p.name for p in landing.iterdir())
    assert left == sorted([*hidden, "folder.csv", "labels", "pipe.csv"])
    after = _tree(tmp_path)
    allowed = tuple(
        os.fsencode(os.path.relpath(d, tmp_path))
        for d in (state.landing, state.archive, state.rejected, state.feature_store)
    )
    outside_changes = sorted(k for k in _changed(before, after) if not k.startswith(allowed))
    assert outside_changes == []
    for untouched in (*hidden, "folder.csv", "pipe.csv"):
        entry = os.fsencode(os.path.relpath(landing / untouched, tmp_path))
        assert after[entry] == before[entry], untouched
    assert not list(tmp_path.rglob("pwned"))

    # nothing is left to wedge the next discovery
    again = register_new_batches(
        dg.DagsterInstance.ephemeral(), resources["sources"], resources["feature_store"]
    )
    assert again.to_ingest == [] and again.errors == []

    # the same link to a folder landed again (its stored name is taken by the first, a
    # link to that folder): rejected again, and nothing lands inside the folder
    os.symlink(links["link_dir.csv"], landing / "link_dir.csv")
    [rerun] = ingest_pending(resources, dg.DagsterInstance.ephemeral())
    assert _failure(rerun).startswith("link_dir.csv: a symbolic link")
    assert sorted(p.name for p in (outside / "dir").iterdir()) == ["inside.csv"]
    final = _tree(tmp_path)
    assert sorted(k for k in _changed(before, final) if not k.startswith(allowed)) == []


def test_sample_generation_of_mlplatform_run_skips_hostile_landed_files(
    state: StatePaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlplatform.cli import _generate

    monkeypatch.delenv(SQL_URL_ENV, raising=False)
    outside = tmp_path / "outside.csv"
    outside.write_bytes(_good_csv(5, start_udi=9_000_001, seed=18))
    os.symlink(outside, state.landing / "link.csv")  # never read: its ids must not count
    landed = {
        "bomb.csv": gzip_bomb(64),
        "good.csv": _good_csv(5, start_udi=1001, seed=19),
        "latin1.csv": _good_csv(5, start_udi=501, seed=20).replace(b"\n503,", b"\n503,\xe9", 1),
        "no_udi.csv": generate_ai4i(5, seed=21).drop(columns=["UDI"]).to_csv().encode(),
        "text_udi.csv": b"UDI,Type\nabc,L\n",
    }
    for name, data in landed.items():
        (state.landing / name).write_bytes(data)

    [written, *_] = _generate(state, 50, seed=22)

    sample = pd.read_csv(written)
    assert sample["UDI"].tolist() == list(range(1006, 1006 + 40))  # after good.csv's ids
    assert Path(written).parent == state.landing


# -- bombs and giants -----------------------------------------------------------------------


def test_a_gzip_bomb_named_csv_is_refused_at_once_in_bounded_memory(
    state: StatePaths, resources: dict[str, Any]
) -> None:
    bomb = gzip_bomb(10 << 10)
    # a real bomb: its first MB expands to over 100 MB
    assert len(zlib.decompressobj(31).decompress(bomb[: 1 << 20], 200 << 20)) > 100 << 20
    assert len(bomb) < 11 << 20
    (state.landing / "bomb.csv").write_bytes(bomb)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()

    [run] = ingest_pending(resources, dg.DagsterInstance.ephemeral())

    seconds = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert not run.success
    assert _failure(run) == "bomb.csv: not UTF-8 text (byte 1: invalid start byte)"
    assert seconds < 20, seconds  # expanding 10 GiB takes minutes
    assert grown_mb < 200, grown_mb
    written = sum(p.stat().st_size for p in Path(state.root).rglob("*") if p.is_file())
    assert written < len(bomb) + (2 << 20)  # the bomb (moved, not copied) and little else


def test_pyarrow_would_decompress_a_gz_so_compressed_names_never_reach_it(
    tmp_path: Path, state: StatePaths, resources: dict[str, Any]
) -> None:
    data = _good_csv(5, 1, seed=12)
    compressed = tmp_path / "rows.csv.gz"
    with open(compressed, "wb") as fh:
        fh.write(zlib.compress(data, wbits=31))
    # the danger the extension gate keeps out: pyarrow decompresses by file extension
    assert pacsv.read_csv(compressed).num_rows == 5
    for name in ("rows.csv.gz", "rows.csv.bz2", "rows.csv.zst", "rows.CSV.GZ"):
        (state.landing / name).write_bytes(compressed.read_bytes() + name.encode())

    runs = ingest_pending(resources, dg.DagsterInstance.ephemeral())

    assert len(runs) == 4 and not any(r.success for r in runs)
    reasons = sorted(_failure(r).split(": ", 1)[1] for r in runs)
    assert all(r.startswith("unsupported file type '.") for r in reasons), reasons
    assert resources["feature_store"].manifests() == []


def test_a_parquet_file_of_zeros_decoding_to_gigabytes_is_refused(
    state: StatePaths, resources: dict[str, Any]
) -> None:
    rows, groups = 1_000_000, 5
    zeros = pa.array(np.zeros(rows, dtype="int64"))
    table = pa.table({name: zeros for name in AI4I_COLUMNS})
    path = state.landing / "zeros.parquet"
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for _ in range(groups):
            writer.write_table(table)
    decoded, size = rows * groups * len(AI4I_COLUMNS) * 8, path.stat().st_size
    assert decoded > 100 * size + (256 << 20)
    started = time.perf_counter()

    [run] = ingest_pending(resources, dg.DagsterInstance.ephemeral())

    assert not run.success
    # refused from its footer: not one row was decoded, typed or validated
    assert _failure(run) == (
        f"zeros.parquet: a decompression bomb: its {rows * groups:,} rows decode to at least "
        f"{decoded:,} bytes, more than 100 times the file's {size:,} bytes"
    )
    assert time.perf_counter() - started < 20
    assert resources["feature_store"].manifests() == []


def test_a_50_mb_cell_is_quarantined_clipped_and_kept_out_of_run_metadata(
    state: StatePaths, resources: dict[str, Any]
) -> None:
    frame = generate_ai4i(20, seed=13).astype(object)
    frame.loc[4, "Product ID"] = "M" * (50 << 20)
    data = frame.to_csv(index=False).encode()
    (state.landing / "giant_cell.csv").write_bytes(data)
    instance = dg.DagsterInstance.ephemeral()

    [run] = ingest_pending(resources, instance)

    assert run.success
    checks = {c.check_name: c.passed for c in run.get_asset_check_evaluations()}
    assert checks[COUNT_INVARIANT_CHECK]
    store: FeatureStore = resources["feature_store"]
    [manifest] = store.manifests()
    assert (manifest.rows_landed, manifest.rows_stored, manifest.rows_quarantined) == (20, 19, 1)
    [entry] = store.read_quarantine().to_dict(orient="records")
    assert (entry["row_number"], entry["column"], entry["expectation"]) == (
        5,
        "Product ID",
        TYPE_EXPECTATION,
    )
    assert entry["reason"] == f"text longer than {MAX_TEXT_CHARS:,} characters"
    assert entry["value"] == "M" * MAX_TEXT_CHARS + f"... ({50 << 20:,} characters)"
    record = json.loads(entry["record"])
    assert len(record["Product ID"]) < MAX_TEXT_CHARS + 40
    assert store.as_of(DATASET)["product_id"].str.len().max() < 10
    quarantine_bytes = sum(
        p.stat().st_size for p in Path(store.root).rglob("*.parquet") if "quarantine" in str(p)
    )
    assert 0 < quarantine_bytes < 1 << 20
    events = "".join(serialize_value(e) for e in instance.all_logs(run.run_id))
    assert "M" * MAX_TEXT_CHARS in events
    assert len(events) < 1 << 20  # the run's metadata holds the clipped value, not 50 MB


def test_a_line_longer_than_the_read_block_rejects_the_file_with_its_reason(
    state: StatePaths, resources: dict[str, Any]
) -> None:
    frame = generate_ai4i(2000, seed=14).astype(object)
    frame.loc[1899, "Product ID"] = "M" * (16 << 20)  # data row 1900, past the sampled start
    (state.landing / "giant_line.csv").write_bytes(frame.to_csv(index=False).encode())
    chunked = {"ops": {INGESTION_ASSET: {"config": {"chunk_rows": 1000}}}}

    [run] = ingest_pending(resources, dg.DagsterInstance.ephemeral(), chunked)

    assert not run.success
    reason = _failure(run)
    assert re.fullmatch(
        r"giant_line\.csv: a line longer than 4,194,304 bytes after data row [\d,]+ \(.*\): "
        r"cannot be read in chunks of 1,000 rows",
        reason,
    ), reason
    assert "a giant field, or a quote that never closes" in reason
    assert resources["feature_store"].manifests() == []
    [kept] = [p for p in state.rejected.iterdir() if p.name.endswith("__giant_line.csv")]
    assert kept.with_name(kept.name + REASON_SUFFIX).read_text() == reason


@pytest.mark.parametrize("row", [3, 80_000], ids=["first-block", "later-block"])
def test_a_quote_opened_in_the_last_column_rejects_the_file_no_line_is_swallowed(
    state: StatePaths, resources: dict[str, Any], row: int
) -> None:
    # a quote opened in the last field parses as one long field, not as a ragged row:
    # the rest of the block (the fast reader) or file (the careful one) vanished into it,
    # rows lost while the count invariant held (a quoted line break that closes is fine:
    # corpus case quoted_comma_and_newline)
    lines = _good_csv(100_000, start_udi=1, seed=21).decode().splitlines(keepends=True)
    assert sum(len(line) for line in lines) > 2 * (1 << 21)  # more than two read blocks
    head, _, last = lines[row].rpartition(",")
    lines[row] = f'{head},"{last}'
    (state.landing / "open_quote.csv").write_text("".join(lines))

    [run] = ingest_pending(resources, dg.DagsterInstance.ephemeral())

    assert not run.success
    assert _failure(run) == (
        f"open_quote.csv: unterminated quote in data row {row:,}: its last field runs to the "
        f"end of the file, so the {100_000 - row:,} line(s) after it would not be counted"
    )
    assert resources["feature_store"].manifests() == []
    [kept] = [p for p in state.rejected.iterdir() if p.name.endswith("__open_quote.csv")]
    assert kept.read_text() == "".join(lines)


# -- the champion is untouched --------------------------------------------------------------


@pytest.fixture(scope="module")
def champion_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A state folder whose registry has a champion (a fast model), trained once."""
    state = StatePaths(tmp_path_factory.mktemp("champion") / "state")
    state.ensure()
    resources = build_resources(state)
    land_sample(resources, 2000, seed=15)
    result = materialize_all(resources, CHAMPION_CONFIG, selection=[INGESTION_ASSET, *DOWNSTREAM])
    assert result.success, [_errors(r) for r in result.runs if not r.success]
    registry: MlflowRegistry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    yield {
        "state": state,
        "resources": resources,
        "champion": champion,
        "digest": _model_digest(registry, champion),
        "dataset_digest": registry.dataset_digest(champion),
    }


def _assert_champion_untouched(setup: dict[str, Any]) -> None:
    registry: MlflowRegistry = setup["resources"]["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None and champion == setup["champion"]
    assert _model_digest(registry, champion) == setup["digest"]
    assert registry.dataset_digest(champion) == setup["dataset_digest"]


@pytest.mark.slow
def test_the_hostile_corpus_and_training_on_it_leave_the_champion_untouched(
    champion_state: dict[str, Any], tmp_path: Path
) -> None:
    setup = champion_state
    state: StatePaths = setup["state"]
    resources = setup["resources"]
    registry: MlflowRegistry = resources["mlflow_registry"]
    versions = registry.versions()
    corpus = {case.id: case for case in build_corpus()}
    landed = {case.filename: case.write(state.landing).read_bytes() for case in corpus.values()}

    # the functions the ingestion asset runs (test_malformed_corpus runs the corpus through
    # the asset itself), without a Dagster run per file: the champion is what is checked
    store: FeatureStore = resources["feature_store"]
    found = discover(resources["sources"], store)
    assert len(found.to_ingest) == len({_sha(data) for data in landed.values()})
    outcomes = []
    for plan in found.to_ingest:
        try:
            manifest = ingest_batch(plan, resources["landing"], store, DATASET).manifest
        except FileRejected:
            outcomes.append("rejected")
            continue
        assert manifest.rows_landed == manifest.rows_stored + manifest.rows_quarantined
        outcomes.append("ingested")
    assert outcomes.count("rejected") == sum(case.rejected for case in corpus.values())
    for name, data in landed.items():
        stored_name = f"{_sha(data)[:16]}__{name}"
        places = [(state.archive / stored_name).is_file(), (state.rejected / stored_name).is_file()]
        assert places.count(True) == 1, name
    _assert_champion_untouched(setup)

    # training on what a single-class file, or a file of nothing but bad rows, leaves:
    # another state's data, the same registry and ledger (a deployment's shared ones)
    refusals = {}
    for case_id in ("single_class", "every_row_bad"):
        other = StatePaths(tmp_path / case_id)
        other.ensure()
        shared = build_resources(
            other, tracking_uri=state.mlflow_tracking_uri, ledger_url=state.ledger_url
        )
        corpus[case_id].write(other.landing)
        instance = dg.DagsterInstance.ephemeral()
        assert [r.success for r in ingest_pending(shared, instance)] == [True]
        attempt = dg.materialize(
            ASSETS,
            instance=instance,
            resources=shared,
            selection=DOWNSTREAM,
            run_config=CHAMPION_CONFIG,
            raise_on_error=False,
        )
        assert not attempt.success, case_id
        refusals[case_id] = _errors(attempt)
        materialized = {
            e.asset_key.to_user_string()
            for e in attempt.get_asset_materialization_events()
            if e.asset_key is not None
        }
        assert not materialized & {"candidate_model", "registered_model", "champion_model"}
        _assert_champion_untouched(setup)
    assert registry.versions() == versions  # nothing new was even registered
    assert "each class needs at least 2 rows" in refusals["single_class"], refusals
    assert "no rows" in refusals["every_row_bad"].lower(), refusals


@pytest.mark.slow
def test_the_invalid_rows_file_of_a_scored_file_runs_no_formula(
    champion_state: dict[str, Any], tmp_path: Path
) -> None:
    registry: MlflowRegistry = champion_state["resources"]["mlflow_registry"]
    champion: ModelVersionRef = champion_state["champion"]
    frame = generate_ai4i(12, seed=16, start_udi=900_001).drop(
        columns=["Machine failure", "TWF", "HDF", "PWF", "OSF", "RNF"]
    )
    frame = frame.astype({"Type": object, "Product ID": object, "Torque [Nm]": object})
    frame.loc[0:3, "Type"] = FORMULA_TYPES
    frame.loc[4:8, "Product ID"] = FORMULA_IDS  # valid rows: scored, ids never written
    frame.loc[9, "Torque [Nm]"] = "-5.5"  # out of range: a number, kept as one
    source = tmp_path / "=SUM(1,2)+cmd|calc.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scored.csv"
    document = registry.load_document(champion, TRAINING_REFERENCE_DOC)
    assert document is not None
    pipeline = registry.load(champion)
    threshold = pipeline_threshold(pipeline)

    result = score_file(
        source,
        out,
        pipeline,
        DATASET,
        TrainingReference.from_dict(document),
        model_name=champion.name,
        model_version=champion.version,
        alias="champion",
        threshold=float("nan") if threshold is None else threshold,
        run_id="hostile-formulas",
    )

    assert (result.rows_read, result.rows_invalid) == (12, 5)
    assert result.invalid_rows_file is not None
    text = result.invalid_rows_file.read_text()
    cells = [c for line in text.splitlines()[1:] for c in _csv_fields(line)]
    running = [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert running == ["-5.5"], running  # only the number
    invalid = pd.read_csv(result.invalid_rows_file, keep_default_na=False)
    assert invalid["value"].tolist() == [*("'" + t for t in FORMULA_TYPES), "-5.5"]
    assert set(invalid["source_file"]) == {"'" + source.name}
    assert len(pd.read_csv(out)) == 7


def _csv_fields(line: str) -> list[str]:
    import csv

    return next(csv.reader([line]))


# -- a file far larger than memory (opt-in) -----------------------------------------------------


def _write_huge_csv(path: Path, target_bytes: int) -> int:
    """Generated rows repeated, with increasing UDI, until ``target_bytes``; returns rows."""
    block = pa.Table.from_pandas(generate_ai4i(100_000, seed=17), preserve_index=False)
    udi = block.schema.get_field_index("UDI")
    rows = 0
    with open(path, "wb") as fh:
        while fh.tell() < target_bytes:
            ids = pa.array(np.arange(rows + 1, rows + 1 + block.num_rows, dtype="int64"))
            sink = pa.BufferOutputStream()
            pacsv.write_csv(
                block.set_column(udi, "UDI", ids),
                sink,
                pacsv.WriteOptions(include_header=rows == 0, quoting_style="none"),
            )
            fh.write(sink.getvalue().to_pybytes())
            rows += block.num_rows
    return rows


_HUGE_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    from pathlib import Path
    limit, csv, state = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    chunk_rows = int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from mlplatform.defs.common import DATASET
    from mlplatform.resources.feature_store import FeatureStore
    from mlplatform.resources.ingestion import discover, ingest_batch
    from mlplatform.resources.landing import LandingArea
    landing = LandingArea(
        landing_dir=str(state / "landing"),
        archive_dir=str(state / "archive"),
        rejected_dir=str(state / "rejected"),
    )
    store = FeatureStore(root=str(state / "feature_store"))
    (state / "landing").mkdir(parents=True)
    os.link(csv, state / "landing" / "huge.csv")
    started = time.perf_counter()
    [plan] = discover([landing], store).new
    m = ingest_batch(plan, landing, store, DATASET, chunk_rows=chunk_rows).manifest
    status = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines())
    print(json.dumps({
        "seconds": time.perf_counter() - started,
        "landed": m.rows_landed, "stored": m.rows_stored, "quarantined": m.rows_quarantined,
        "parts": len(m.parts),
        "peak_rss_mb": int(status["VmHWM"].split()[0]) // 1024,
        "peak_address_space_mb": int(status["VmPeak"].split()[0]) // 1024,
    }))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get(HUGE_ENV) != "1",
    reason=f"writes a ~3 GB CSV and ingests it for minutes: set {HUGE_ENV}=1 to run",
)
def test_a_csv_larger_than_the_memory_allowed_is_ingested_in_chunks(tmp_path: Path) -> None:
    csv = tmp_path / "huge.csv"
    rows = _write_huge_csv(csv, HUGE_BYTES)
    size_mb = csv.stat().st_size / (1 << 20)

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _HUGE_CHILD,
            str(HUGE_ADDRESS_SPACE),
            str(csv),
            str(tmp_path / "state"),
            str(HUGE_CHUNK_ROWS),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )

    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"huge ingestion: {csv.stat().st_size:,} bytes, {report}")
    assert (report["landed"], report["stored"], report["quarantined"]) == (rows, rows, 0)
    assert report["parts"] >= rows // HUGE_CHUNK_ROWS
    assert report["peak_rss_mb"] < min(HUGE_PEAK_RSS_MB, size_mb / 1.5), report
