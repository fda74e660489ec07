"""Hostile input in the labels inbox (``landing/labels``), through the real monitoring asset.

The labels inbox has the landing area's guarantees, by the same code:

* Malformed labels files: wrong or doubled columns, a wrong delimiter, Latin-1 and
  UTF-16 text, an empty file, a header only, no header, an unterminated quote, binary
  bytes, a gzip bomb named ``.csv``, a ``.csv.gz``, a ``.txt``, a Parquet file of lists
  or a decompression bomb, a line longer than the read block: each is moved to
  ``monitoring/outcomes/_rejected/`` beside a reason naming the file (and the column),
  and fails the run after the rest is counted. Bad rows (text, NaN, ``inf``, 2,
  spreadsheet formulas, a ragged line, a 3 MiB cell, an entity given twice) are
  refused with row, column and reason (values clipped, formulas stored literally)
  while the file's good rows count.
* Names and links: symbolic links out of the inbox (to a labels file, a folder,
  a FIFO, nowhere, themselves, through ``..``) are rejected and moved as links,
  never read; a name that is not UTF-8 is rejected and kept byte for byte; a newline,
  ``$(touch pwned)``, ``-rf``, right-to-left override and 250-byte names are
  received; ``x.csv.reason.txt`` beside ``x.csv`` overwrites no reason; a FIFO, a
  folder and hidden names are left alone unopened.
* Nothing else changes: the champion (alias, version, model bytes, dataset digest)
  and the live metrics are what they were, although every rejected file and every
  link target holds outcomes that would change them; nothing outside the inbox and
  ``monitoring/`` changes (the whole temp tree compared).
* Memory: labels files of 1 KB lines (a wide text column) are read in chunks: the
  reading process grows by the same ~170 MB for 190 MB as for 580 MB of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
import pyarrow.parquet as pq
import pytest

from mlplatform.core.ingest import MAX_TEXT_CHARS
from mlplatform.core.monitoring import OUTCOME_PROBLEM_COLUMNS
from mlplatform.defs.automation import new_outcome_labels
from mlplatform.defs.common import DATASET
from mlplatform.defs.resources import build_resources
from mlplatform.paths import StatePaths
from mlplatform.resources.landing import REASON_SUFFIX
from mlplatform.resources.monitoring import MonitoringStore
from mlplatform_tests.corpus import Rejection, build_corpus, gzip_bomb, parquet_bomb
from mlplatform_tests.defs.helpers import ASSETS, land_sample, materialize_all
from mlplatform_tests.defs.test_hostile_input import (
    CHAMPION_CONFIG,
    _assert_champion_untouched,
    _changed,
    _model_digest,
    _sha,
    _tree,
)

ID_COLUMN, OUTCOME_COLUMN = "udi", "machine_failure"
NOT_WHOLE, NOT_0_OR_1 = "entity id is not a whole number", "outcome is not 0 or 1"
HEADER = "UDI,Machine failure\n"
GIANT_CELL = 3 << 20


def _labels(pairs: list[tuple[object, object]], header: str = HEADER) -> bytes:
    return (header + "".join(f"{i},{o}\n" for i, o in pairs)).encode()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A champion, its predictions of 2,000 entities, and live metrics from their outcomes."""
    root = tmp_path_factory.mktemp("labels")
    state = StatePaths(root / "state")
    state.ensure()
    resources = build_resources(state)
    land_sample(resources, 2000, seed=15)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_all(resources, CHAMPION_CONFIG, instance=instance)
    assert result.success
    registry = resources["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    [batch] = [m.key for m in resources["feature_store"].latest()]
    predicted = resources["prediction_store"].read(batch, champion.version)
    scored = predicted.set_index("entity_id")["predicted_failure"].sort_index()
    truth = scored.copy()
    truth.iloc[::7] = 1 - truth.iloc[::7]  # a champion right most of the time
    (state.labels_inbox / "outcomes_1.csv").write_bytes(_labels(list(truth.items())))
    first = _evaluate(resources, instance)
    assert first.success
    metrics = resources["monitoring"].live_metrics()
    assert len(metrics) and metrics["rows"].sum() == len(truth)
    yield {
        "root": root,
        "state": state,
        "resources": resources,
        "instance": instance,
        "champion": champion,
        "digest": _model_digest(registry, champion),
        "dataset_digest": registry.dataset_digest(champion),
        # outcomes that would change the live metrics if they were ever counted
        "flipped": [(int(i), int(1 - o)) for i, o in truth.items()],
    }


def _evaluate(resources: dict[str, Any], instance: dg.DagsterInstance) -> Any:
    return dg.materialize(
        ASSETS,
        instance=instance,
        resources=resources,
        selection=["live_performance"],
        raise_on_error=False,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data
    assert data.user_failure_data is not None, f"not a dg.Failure: {data.error}"
    return data.user_failure_data.description or ""


def _messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(e.user_message for e in instance.all_logs(run_id))


def _parquet(table: pa.Table) -> Any:
    def write(path: Path) -> None:
        pq.write_table(table, path)

    return write


# -- the inbox ------------------------------------------------------------------------------


def _hostile_inbox(inbox: Path, outside: Path, flipped: list[tuple[int, int]]) -> dict[str, Any]:
    """Land every hostile file, name and link; what each must become."""
    flip = _labels(flipped)
    rejected: dict[str, tuple[str, str | None]] = {  # name -> (reason starts with, column)
        "wrong_columns.csv": (
            "labels file lacks the column(s) 'udi' (or 'UDI'), 'machine_failure' (or "
            "'Machine failure')",
            None,
        ),
        "both_names.csv": ("the column is given 2 times ('UDI' and 'udi')", ID_COLUMN),
        "repeated_header.csv": ("the column appears twice in the header", "UDI"),
        "semicolons.csv": ("wrong delimiter: the header is one column", "UDI;Machine failure"),
        "latin1.csv": ("not UTF-8 text", None),
        "utf16.csv": ("not UTF-8 text (byte 0: invalid start byte)", None),
        "empty.csv": ("the file is empty (0 bytes)", None),
        "header_only.csv": ("no data rows (a header only)", None),
        "no_header.csv": ("no header: the first line looks like data", None),
        "unterminated.csv": ("unterminated quote in data row 1: its last field runs to", None),
        "unterminated_big.csv": (
            "unterminated quote in data row 1: its last field runs to the end of the file, "
            "so the 699,998 line(s) after it would not be counted",
            None,
        ),
        "binary.csv": ("not UTF-8 text (byte 0: invalid start byte)", None),
        "bomb.csv": ("not UTF-8 text (byte 1: invalid start byte)", None),
        "labels.csv.gz": ("unsupported file type '.gz'", None),
        "notes.txt": ("unsupported file type '.txt'", None),
        "lists.parquet": ("column 'UDI' holds list<element: int64> values", ID_COLUMN),
        "bomb.parquet": ("a decompression bomb", None),
        "bad.csv": ("labels file lacks the column(s) 'machine_failure'", None),
        # the same bytes: a file of its own here, rejected for its name's type
        f"bad.csv{REASON_SUFFIX}": ("unsupported file type '.txt'", None),
    }
    latin = (
        "UDI,Machine failure,note\n" + "".join(f"{i},{o},ok\n" for i, o in flipped[:500])
    ).encode() + b"999999,1,caf\xe9\n"
    payloads: dict[str, Any] = {
        "wrong_columns.csv": _labels(flipped, header="id,label\n"),
        "both_names.csv": _labels(
            [(i, f"{i},{o}") for i, o in flipped], "UDI,udi,Machine failure\n"
        ),
        "repeated_header.csv": _labels(
            [(i, f"{i},{o}") for i, o in flipped], "UDI,UDI,Machine failure\n"
        ),
        "semicolons.csv": flip.replace(b",", b";"),
        "latin1.csv": latin,
        "utf16.csv": flip.decode().encode("utf-16"),
        "empty.csv": b"",
        "header_only.csv": HEADER.encode(),
        "no_header.csv": flip.split(b"\n", 1)[1],
        "unterminated.csv": HEADER.encode() + b'1,"0\n' + flip.split(b"\n", 1)[1],
        "unterminated_big.csv": HEADER.encode()
        + b'1,"0\n'
        + _labels([(i, i % 2) for i in range(2, 700_000)], header=""),
        "binary.csv": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16,
        "bomb.csv": gzip_bomb(64),
        "labels.csv.gz": zlib.compress(flip, wbits=31),
        "notes.txt": flip,
        "lists.parquet": _parquet(
            pa.table({"UDI": [[i] for i, _ in flipped], "Machine failure": [o for _, o in flipped]})
        ),
        "bomb.parquet": parquet_bomb(200_000, 10_000),
        "bad.csv": _labels(flipped, header="UDI,failure\n"),
        f"bad.csv{REASON_SUFFIX}": _labels(flipped, header="UDI,failure\n"),
    }
    # received, with refused rows: (value, reason, column) by row; ids no prediction has
    refused: dict[str, tuple[list[tuple[object, object]], dict[int, tuple[str, str, str]]]] = {
        "bad_types.csv": (
            [(900_001, 1), ("abc", 0), (900_003, "yes"), (900_004, 2), (900_005, "1.0"), (1.5, 1)],
            {
                2: ("abc", NOT_WHOLE, ID_COLUMN),
                3: ("yes", NOT_0_OR_1, OUTCOME_COLUMN),
                4: ("2", NOT_0_OR_1, OUTCOME_COLUMN),
                6: ("1.5", NOT_WHOLE, ID_COLUMN),
            },
        ),
        "nan.csv": (
            [("NaN", 1), ("", 0), (900_013, "nan"), ("inf", 1), (900_015, 0), (900_016, "")],
            {
                1: ("NaN", NOT_WHOLE, ID_COLUMN),
                2: ("<missing>", NOT_WHOLE, ID_COLUMN),
                3: ("nan", NOT_0_OR_1, OUTCOME_COLUMN),
                4: ("inf", NOT_WHOLE, ID_COLUMN),
                6: ("<missing>", NOT_0_OR_1, OUTCOME_COLUMN),
            },
        ),
        "duplicates.csv": (
            [(900_021, 0), (900_022, 1), (900_021, 1), (900_021, 1)],
            {
                1: ("900021", "superseded by row 4, the last line for this entity id", ID_COLUMN),
                3: ("900021", "superseded by row 4, the last line for this entity id", ID_COLUMN),
            },
        ),
        "formulas.csv": (
            [
                ('"=HYPERLINK(""http://x.example"",""x"")"', 1),
                (900_032, "+cmd|' /C calc'!A0"),
                ("@SUM(1)", 0),
                ("-2+3", 1),
                (900_035, "=1"),
                (900_036, 1),
            ],
            {
                1: ('=HYPERLINK("http://x.example","x")', NOT_WHOLE, ID_COLUMN),
                2: ("+cmd|' /C calc'!A0", NOT_0_OR_1, OUTCOME_COLUMN),
                3: ("@SUM(1)", NOT_WHOLE, ID_COLUMN),
                4: ("-2+3", NOT_WHOLE, ID_COLUMN),
                5: ("=1", NOT_0_OR_1, OUTCOME_COLUMN),
            },
        ),
        "ragged.csv": (
            [(900_041, 1), (900_042, "0,extra"), (900_043, 0)],
            {2: ("900042,0,extra", "expected 2 fields, found 3", "<row>")},
        ),
        "giant_cell.csv": (
            [(900_051, 1), ("9" * GIANT_CELL, 0), (900_053, 0)],
            {
                2: (
                    "9" * MAX_TEXT_CHARS + f"... ({GIANT_CELL:,} characters)",
                    NOT_WHOLE,
                    ID_COLUMN,
                )
            },
        ),
    }
    for name, (rows, _) in refused.items():
        payloads[name] = _labels(rows)
    long_name = "x" * 246 + ".csv"
    received = {
        "-rf.csv": _labels([(900_101, 1)]),
        "a\nb.csv": _labels([(900_102, 0)]),
        "$(touch pwned).csv": _labels([(900_103, 1)]),
        "café 機械 \u202ecsv.csv": _labels([(900_104, 0)]),
        long_name: _labels([(900_105, 1)]),
    }
    payloads.update(received)
    payloads["typed.parquet"] = _parquet(
        pa.table({"udi": pa.array([900_201, 900_202]), "machine_failure": [True, False]})
    )
    for name, payload in payloads.items():
        if isinstance(payload, bytes):
            (inbox / name).write_bytes(payload)
        else:
            payload(inbox / name)
    # names and links: every link leads out of the inbox to outcomes that would count
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.csv").write_bytes(flip)
    os.mkfifo(outside / "pipe")  # reading it would block forever
    links = {
        "link_file.csv": str(outside / "secret.csv"),
        "link_relative.csv": os.path.relpath(outside / "secret.csv", inbox),
        "link_dir.csv": str(outside / "dir"),
        "link_fifo.csv": str(outside / "pipe"),
        "link_broken.csv": str(outside / "nowhere.csv"),
        "link_loop.csv": "link_loop.csv",
    }
    for name, target in links.items():
        os.symlink(target, inbox / name)
    assert (inbox / "link_relative.csv").read_bytes() == flip  # it does lead out
    with open(os.fsencode(inbox) + b"/caf\xe9.csv", "wb") as fh:
        fh.write(flip)
    (inbox / ".hidden.csv").write_bytes(flip)
    (inbox / "folder.csv").mkdir()
    os.mkfifo(inbox / "pipe.csv")
    return {
        "rejected": rejected,
        "refused": refused,
        "received": {**received, **{n: payloads[n] for n in refused}},
        "links": links,
        "long_name": long_name,
        "left_alone": [".hidden.csv", "folder.csv", "pipe.csv"],
    }


@pytest.mark.slow
def test_hostile_labels_are_rejected_refused_or_left_alone_never_followed_nor_counted(
    live: dict[str, Any],
) -> None:
    state: StatePaths = live["state"]
    resources, instance = live["resources"], live["instance"]
    monitoring: MonitoringStore = resources["monitoring"]
    metrics_before = monitoring.live_metrics()
    root: Path = live["root"]
    landed = _hostile_inbox(state.labels_inbox, root / "outside", live["flipped"])
    before = _tree(root)

    # the sensor lists the inbox without following or opening anything
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        request = new_outcome_labels(context)
    assert isinstance(request, dg.RunRequest)
    started = time.perf_counter()
    run = _evaluate(resources, instance)
    seconds = time.perf_counter() - started

    assert not run.success
    assert seconds < 120, seconds  # bombs refused at once, nothing expanded
    failure = _failure(run)
    outcomes = state.monitoring / "outcomes"
    rejected_area = outcomes / "_rejected"
    kept = {os.fsencode(p.name): p for p in rejected_area.iterdir()}

    for name, (reason, column) in landed["rejected"].items():
        # a name ending like a reason file is stored with a "_": it never takes one's place
        stored = f"__{name}_" if name.endswith(REASON_SUFFIX) else f"__{name}"
        [path] = [p for n, p in kept.items() if n.endswith(stored.encode())]
        text = path.with_name(path.name + REASON_SUFFIX).read_text()
        assert text.startswith(f"{name}: {reason}"), (name, text)
        assert text.endswith(f" (column {column!r})") if column else "(column" not in text, text
        assert text in failure, name
    prefix = _sha(_labels(live["flipped"], header="UDI,failure\n"))[:16]
    # the two names of one content: two files, two reasons, none overwritten
    assert (rejected_area / f"{prefix}__bad.csv").is_file()
    assert (rejected_area / f"{prefix}__bad.csv{REASON_SUFFIX}_").is_file()
    for name, target in landed["links"].items():
        [link] = [p for n, p in kept.items() if n.endswith(f"__{name}".encode())]
        assert link.is_symlink() and os.readlink(link) == target  # moved as a link
        reason = link.with_name(link.name + REASON_SUFFIX).read_text()
        assert reason.startswith(f"{name}: a symbolic link"), reason
        assert "the link was not followed" in reason
    [latin] = [p for n, p in kept.items() if n.endswith(b"__caf\xe9.csv")]
    assert latin.read_bytes() == _labels(live["flipped"])  # kept byte for byte
    latin_reason = latin.with_name(latin.name + REASON_SUFFIX).read_text()
    assert latin_reason.startswith("caf\\xe9.csv: the file name is not UTF-8")

    # received byte for byte, hostile names too (a long one shortened to fit)
    received = {p.name: p for p in outcomes.iterdir() if p.is_file()}
    shortened = f"{_sha(landed['received'][landed['long_name']])[:16]}__{'x' * 221}~.csv"
    assert received[shortened].read_bytes() == landed["received"][landed["long_name"]]
    kept_as: dict[str, Path] = {}
    for name, data in landed["received"].items():
        if name != landed["long_name"]:
            [kept_as[name]] = [p for n, p in received.items() if n.endswith(f"__{name}")]
            assert kept_as[name].read_bytes() == data, name
    assert [n for n in received if n.endswith("__typed.parquet")]
    assert not list(root.rglob("pwned"))

    # refused rows: exactly these rows, columns and reasons; values clipped, formulas literal
    for name, (rows, expected) in landed["refused"].items():
        [path] = (outcomes / "_refused").glob(f"*__{name}.parquet")
        stored = pd.read_parquet(path)
        assert list(stored.columns) == OUTCOME_PROBLEM_COLUMNS
        assert (stored["source_file"] == name).all()
        got = {
            int(r.row_number): (r.value, r.reason, r.column) for r in stored.itertuples(index=False)
        }
        assert got == expected, name
        # every line accounted for: an outcome or refused
        valid = monitoring.read_outcomes(kept_as[name], DATASET).valid
        assert len(rows) == len(expected) + len(valid), name

    # left alone, unopened: the FIFO, the folder and the hidden file (each logged)
    assert sorted(p.name for p in state.labels_inbox.iterdir()) == landed["left_alone"]
    messages = _messages(instance, run.run_id)
    assert "labels inbox: 'pipe.csv' is a FIFO (named pipe), not a file: left alone" in messages
    assert "labels inbox: 'folder.csv' is a folder, not a file: left alone" in messages
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        assert isinstance(new_outcome_labels(context), dg.SkipReason)  # nothing waits

    # nothing outside the inbox and monitoring/ changed; links' targets untouched
    after = _tree(root)
    allowed = tuple(
        os.fsencode(os.path.relpath(d, root)) for d in (state.labels_inbox, state.monitoring)
    )
    assert sorted(k for k in _changed(before, after) if not k.startswith(allowed)) == []
    for untouched in landed["left_alone"]:
        entry = os.fsencode(os.path.relpath(state.labels_inbox / untouched, root))
        assert after[entry] == before[entry], untouched

    # no rejected file and no link target counted: the live metrics are what they were
    pd.testing.assert_frame_equal(monitoring.live_metrics(), metrics_before)
    _assert_champion_untouched(live)


# -- the landing area's corpus ------------------------------------------------------------

# rejected by the landing area for a column labels do not need
_NEEDS_FEATURES = {
    "missing_required_column",
    "parquet_missing_column",
    "source_and_canonical_header",
}


def test_every_corpus_file_dropped_as_labels_is_received_or_rejected_never_lost(
    state: StatePaths, resources: dict[str, Any]
) -> None:
    corpus = build_corpus()
    landed = {case.filename: case.write(state.labels_inbox).read_bytes() for case in corpus}

    run = _evaluate(resources, dg.DagsterInstance.ephemeral())

    assert not run.success  # some are rejected: the run says so, after counting the rest
    assert list(state.labels_inbox.iterdir()) == []
    outcomes = state.monitoring / "outcomes"
    reasons = {}
    for name, data in landed.items():
        stored = f"{_sha(data)[:16]}__{name}"
        rejected = outcomes / "_rejected" / stored
        places = [(outcomes / stored).is_file(), rejected.is_file()]
        assert places.count(True) == 1, name  # kept once, byte for byte, or moved aside
        assert (outcomes / stored if places[0] else rejected).read_bytes() == data, name
        if places[1]:
            reasons[name] = rejected.with_name(rejected.name + REASON_SUFFIX).read_text()
            assert reasons[name].startswith(f"{name}: "), reasons[name]
    # every file the landing area rejects for how it reads is rejected here, for that reason
    for case in corpus:
        if case.rejected and case.id not in _NEEDS_FEATURES:
            assert isinstance(case.expected, Rejection)
            assert case.expected.reason.split(" (")[0] in reasons.get(case.filename, ""), case.id
    assert set(reasons) <= {c.filename for c in corpus if c.rejected}, reasons


# -- memory ---------------------------------------------------------------------------------

_READ_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    def peak_mb():
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(l for l in status if l.startswith("VmHWM")).split()[1]) // 1024
    from mlplatform.defs.common import DATASET
    from mlplatform.resources.monitoring import MonitoringStore
    store = MonitoringStore(root=sys.argv[2], labels_inbox=sys.argv[2])
    before = peak_mb()
    parsed = store.read_outcomes(Path(sys.argv[1]), DATASET)
    print(json.dumps({
        "rows": parsed.rows, "valid": len(parsed.valid), "refused": parsed.rows_refused,
        "grown_mb": peak_mb() - before,
    }))
    """
)
NOTE_CHARS = 1000  # a wide column a whole-file read would hold; never converted here


def _wide_labels(path: Path, rows: int) -> float:
    """A labels file of ``rows`` lines of about 1 KB; returns its size in MB."""
    block = pd.DataFrame(
        {
            "UDI": np.arange(1, 50_001),
            "note": "n" * NOTE_CHARS,
            "Machine failure": np.arange(50_000) % 2,
        }
    )
    with open(path, "w") as fh:
        for start in range(0, rows, len(block)):
            block.assign(UDI=block["UDI"] + start).to_csv(fh, index=False, header=start == 0)
    return path.stat().st_size / (1 << 20)


def _read_in_a_child(path: Path, tmp_path: Path) -> dict[str, int]:
    child = subprocess.run(
        [sys.executable, "-c", _READ_CHILD, str(path), str(tmp_path / "monitoring")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report: dict[str, int] = json.loads(child.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.slow
@pytest.mark.heavy  # ~25 s: the GitHub workflow's heavy step runs it; .ci/run leaves it out
def test_a_large_labels_file_is_read_in_chunks_in_bounded_memory(tmp_path: Path) -> None:
    # the same lines, three times as many: the process must not grow with the file
    grown = {}
    sizes = {}
    for rows in (200_000, 600_000):
        path = tmp_path / f"labels_{rows}.csv"
        sizes[rows] = _wide_labels(path, rows)
        report = _read_in_a_child(path, tmp_path)
        path.unlink()
        assert (report["rows"], report["valid"], report["refused"]) == (rows, rows, 0)
        grown[rows] = report["grown_mb"]
    print(f"labels files of {sizes} MB grew the reader by {grown} MB")
    assert grown[600_000] < sizes[600_000] / 3, (sizes, grown)
    # the valid outcomes it must hold (13 bytes a row) and nothing of the text
    assert grown[600_000] - grown[200_000] < 0.1 * (sizes[600_000] - sizes[200_000])
