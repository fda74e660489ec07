"""Load: 200 landing files at once, each requested and ingested exactly once.

The ``new_source_batches`` sensor is evaluated tick by tick on a real (temp-folder)
instance, the way the daemon does: each tick with the previous tick's cursor, its
dynamic partitions added before the next. Every tick is timed (a sensor tick that
runs too long is cut off by the daemon). Then the requested partitions are ingested
by the real asset, one in-process run per partition as the sensor's runs would,
while the process's resident memory is watched.

An in-process ingestion run costs 1-4 s on two cores (two Great Expectations
validations and Dagster's run bookkeeping), so CI ingests the first
:data:`CI_INGESTED` of the 200 batches; ``MLPLATFORM_TEST_LOAD=1`` ingests all 200
(measured: 856 s under a load average of ~10; ticks 0.15-1.6 s; resident memory grew
22 MB over the 199 runs after the first).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlplatform.core.automation_settings import AutomationSettings
from mlplatform.core.batches import file_batch_key
from mlplatform.core.generator import generate_ai4i
from mlplatform.core.triggers import TRIGGER_TAG
from mlplatform.defs.common import DATASET
from mlplatform.defs.ingestion import SOURCE_BATCHES_NAME, new_source_batches
from mlplatform.paths import StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.landing import _sha256
from mlplatform_tests.defs.helpers import ASSETS, INGESTION_ASSET

pytestmark = pytest.mark.slow

LOAD_ENV = "MLPLATFORM_TEST_LOAD"
FULL = os.environ.get(LOAD_ENV) == "1"
FILES = 200
ROWS_PER_FILE = 50
CI_INGESTED = 6
MAX_TICK_SECONDS = 5.0
# the most resident memory may grow over the runs after the first (measured: 22 MB over
# 199 runs): a leak of a few hundred KB per run fails the full run
MAX_RSS_GROWTH_MB = 100.0

_STATUS = Path("/proc/self/status")


def _rss_mb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in {_STATUS}")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real temp-folder instance (SQLite run, event and schedule storage)."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _land_files(state: StatePaths) -> dict[str, int]:
    """200 CSV files of generated rows, distinct ids; batch key -> rows in the file."""
    rows = generate_ai4i(FILES * ROWS_PER_FILE, seed=9, burn_in=5_000)
    keys = {}
    for i in range(FILES):
        path = state.landing / f"line_{i:03d}.csv"
        rows.iloc[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE].to_csv(path, index=False)
        keys[file_batch_key(_sha256(path))] = ROWS_PER_FILE
    assert len(keys) == FILES  # every file's content is distinct
    return keys


def _tick(
    instance: dg.DagsterInstance, resources: dict[str, Any], cursor: str | None
) -> tuple[dg.SensorResult, float]:
    """One evaluation, as the daemon runs it; then the partitions it asked for are added."""
    started = time.perf_counter()
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as ctx:
        result = new_source_batches(ctx)
    seconds = time.perf_counter() - started
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result, seconds


def test_two_hundred_files_at_once_are_requested_and_ingested_once(
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    state: StatePaths,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLPLATFORM_SENSOR_MAX_RUNS_PER_TICK", raising=False)
    per_tick = AutomationSettings.from_env().max_runs_per_tick  # the default: 50
    landed = _land_files(state)

    # tick by tick until a tick requests nothing new
    requested: list[str] = []
    tags: dict[str, dict[str, str]] = {}
    pages: list[int] = []
    seconds: list[float] = []
    cursor: str | None = None
    while True:
        result, took = _tick(instance, resources, cursor)
        seconds.append(took)
        page = [r for r in result.run_requests or [] if isinstance(r, dg.RunRequest)]
        assert result.cursor is not None
        cursor = result.cursor
        if not page:
            break
        assert all(r.run_key == r.partition_key for r in page)
        assert {r.tags[TRIGGER_TAG] for r in page} == {"new-data"}
        requested += [str(r.partition_key) for r in page]
        tags.update({str(r.partition_key): dict(r.tags) for r in page})
        pages.append(len(page))
        assert len(pages) <= FILES, "the sensor keeps requesting"
    # paged: never more than a tick's worth; the cursor carries the rest over
    assert pages == [per_tick] * (FILES // per_tick) + (
        [FILES % per_tick] if FILES % per_tick else []
    )
    assert len(requested) == len(set(requested)) == FILES, "a file was requested twice"
    assert set(requested) == set(landed)
    assert sorted(json.loads(cursor)["requested"]) == sorted(requested)
    assert set(instance.get_dynamic_partitions(SOURCE_BATCHES_NAME)) == set(landed)
    assert max(seconds) < MAX_TICK_SECONDS, f"tick seconds {[round(s, 2) for s in seconds]}"

    # ingest them as the sensor's runs would: one run of the real asset per partition.
    # The first run imports Great Expectations and fills its caches; the memory of the
    # runs after it is what must not grow with the number of files.
    to_ingest = requested if FULL else requested[:CI_INGESTED]

    def ingest(key: str) -> None:
        run = dg.materialize(
            ASSETS,
            instance=instance,
            resources=resources,
            partition_key=key,
            selection=[INGESTION_ASSET],
            tags=tags[key],  # the run the sensor requested: new-data
        )
        assert run.success

    ingest(to_ingest[0])
    with suppress(OSError):  # reset the high-water mark: only what follows is measured
        Path("/proc/self/clear_refs").write_text("5")
    rss_before = _rss_mb("VmRSS")
    started = time.perf_counter()
    for key in to_ingest[1:]:
        ingest(key)
    ingest_seconds = time.perf_counter() - started
    growth = _rss_mb("VmHWM") - rss_before

    # each file stored once: one batch, one version, every row
    store: FeatureStore = resources["feature_store"]
    manifests = store.manifests()
    assert sorted(m.key for m in manifests) == sorted(to_ingest), "a batch stored twice or lost"
    assert sum(m.rows_stored for m in manifests) == sum(landed[k] for k in to_ingest)
    assert all(m.rows_quarantined == 0 for m in manifests)
    assert len(store.as_of(DATASET)) == len(to_ingest) * ROWS_PER_FILE
    archived = {p.name.split("__", 1)[1] for p in state.archive.iterdir()}
    assert len(archived) == len(to_ingest)

    # nothing requested again: with the cursor, nor (for the stored ones) without it
    again, _ = _tick(instance, resources, cursor)
    assert not again.run_requests
    fresh, _ = _tick(instance, resources, None)
    waiting = [str(r.partition_key) for r in fresh.run_requests or []]
    assert not set(waiting) & set(to_ingest), "a stored batch was requested again"
    if FULL:
        assert waiting == []
    assert growth < MAX_RSS_GROWTH_MB, f"resident memory grew {growth:.0f} MB"
    print(
        f"ticks {[round(s, 2) for s in seconds]} s; ingested {len(to_ingest)} batches, the "
        f"last {len(to_ingest) - 1} in {ingest_seconds:.1f} s; RSS growth {growth:.0f} MB "
        f"over them (from {rss_before:.0f} MB)"
    )
