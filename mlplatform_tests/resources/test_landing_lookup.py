"""Finding a planned file in the landing folder costs one file hashed, not every file waiting.

Each ingestion run of the daemon is a process of its own: whatever the sensor hashed
when it planned the batch is not remembered there. Before, ``locate`` and ``finish``
hashed every pending file to find the plan's one, so ingesting N waiting files one
run each read N^2 files. The plans here are made by another process (as the sensor
makes them), and every file this process opens in the landing folder is counted with
a Python audit hook (``open`` events): the real calls, nothing replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlplatform.core.batches import BatchPlan
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.ingest import FileRejected
from mlplatform.paths import StatePaths
from mlplatform.resources.landing import LandingArea

PENDING = 200
_COUNTERS: list[list[str]] = []
_HOOKED: list[bool] = []


def _on_audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _COUNTERS and isinstance(args[0], str | bytes | os.PathLike):
        _COUNTERS[-1].append(os.fsdecode(args[0]))


@contextmanager
def _opened_in(folder: Path) -> Iterator[list[str]]:
    """The names of the files under ``folder`` that this process opens meanwhile."""
    if not _HOOKED:  # an audit hook cannot be removed: one for the session, idle outside
        sys.addaudithook(_on_audit)
        _HOOKED.append(True)
    seen: list[str] = []
    _COUNTERS.append(seen)
    opened: list[str] = []
    try:
        yield opened
    finally:
        _COUNTERS.remove(seen)
        prefix = f"{folder}{os.sep}"
        opened += [Path(p).name for p in seen if p.startswith(prefix)]


_PLAN_ELSEWHERE = textwrap.dedent(
    """
    import json, sys
    from mlplatform.resources.landing import LandingArea
    area = LandingArea(landing_dir=sys.argv[1], archive_dir=sys.argv[2], rejected_dir=sys.argv[3])
    print(json.dumps([plan.to_json() for plan in area.plan_new([])]))
    """
)


def _plans_made_by_another_process(state: StatePaths) -> dict[str, BatchPlan]:
    argv = [sys.executable, "-c", _PLAN_ELSEWHERE]
    argv += [str(state.landing), str(state.archive), str(state.rejected)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return {p.label: p for p in map(BatchPlan.from_json, json.loads(done.stdout))}


@pytest.fixture
def landed(state: StatePaths) -> tuple[LandingArea, dict[str, BatchPlan]]:
    """200 files waiting (each a different size), a copy of one, and their plans."""
    rows = generate_ai4i(PENDING, seed=1)
    for i in range(PENDING):
        rows.head(i + 1).to_csv(state.landing / f"batch_{i:03d}.csv", index=False)
    (state.landing / "copy_of_batch_005.csv").write_bytes(
        (state.landing / "batch_005.csv").read_bytes()
    )
    area = LandingArea(
        landing_dir=str(state.landing),
        archive_dir=str(state.archive),
        rejected_dir=str(state.rejected),
    )
    plans = _plans_made_by_another_process(state)
    assert len(plans) == PENDING  # the copy is the same batch as batch_005.csv
    return area, plans


def test_finishing_a_batch_hashes_its_file_not_every_file_waiting(
    state: StatePaths, landed: tuple[LandingArea, dict[str, BatchPlan]]
) -> None:
    area, plans = landed

    # an ingestion run: locate and read the file, then finish it; one file is hashed
    plan = plans["batch_150.csv"]
    with _opened_in(state.landing) as opened:
        path = area.locate(plan)
        area.finish(plan, None)
    assert path == state.landing / "batch_150.csv"
    assert opened == ["batch_150.csv"]
    assert (state.archive / f"{plan.ref['sha256'][:16]}__batch_150.csv").is_file()

    # a run that only finishes (a rejection): one file hashed, moved with its reason
    plan = plans["batch_020.csv"]
    with _opened_in(state.landing) as opened:
        area.finish(plan, "batch_020.csv: a reason")
    assert opened == ["batch_020.csv"]
    kept = state.rejected / f"{plan.ref['sha256'][:16]}__batch_020.csv"
    assert kept.with_name(kept.name + ".reason.txt").read_text() == "batch_020.csv: a reason"

    # the same bytes under another name go with it: only files of its size are hashed
    plan = plans["batch_005.csv"]
    with _opened_in(state.landing) as opened:
        area.finish(plan, None)
    assert sorted(opened) == ["batch_005.csv", "copy_of_batch_005.csv"]
    archived = sorted(p.name for p in state.archive.iterdir() if "batch_005" in p.name)
    assert [n.split("__", 1)[1] for n in archived] == ["batch_005.csv", "copy_of_batch_005.csv"]
    assert len(area.pending()) == PENDING + 1 - 4


def test_a_renamed_or_rewritten_file_is_found_by_content_or_not_at_all(
    state: StatePaths, landed: tuple[LandingArea, dict[str, BatchPlan]]
) -> None:
    area, plans = landed
    # renamed after planning: the landed name is gone, so every waiting file is hashed
    (state.landing / "batch_030.csv").rename(state.landing / "renamed.csv")
    with _opened_in(state.landing) as opened:
        assert area.locate(plans["batch_030.csv"]) == state.landing / "renamed.csv"
    assert "renamed.csv" in opened and len(opened) > PENDING // 2
    area.finish(plans["batch_030.csv"], None)
    assert not (state.landing / "renamed.csv").exists()

    # other bytes under the planned name: never taken for the planned file
    (state.landing / "batch_040.csv").write_text("UDI,Type\n1,L\n")
    with pytest.raises(FileRejected, match=r"no file with sha256 [0-9a-f]{16}\.\.\. in landing"):
        area.locate(plans["batch_040.csv"])
    area.finish(plans["batch_040.csv"], None)
    assert (state.landing / "batch_040.csv").read_text() == "UDI,Type\n1,L\n"  # not moved
