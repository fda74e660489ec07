"""SIGKILL inside the platform's writes: the feature store, the feature table, predictions.

Each test runs the real write in a child process (``write_kill_child``), which stalls
right after the first Parquet row group of a temporary file reached the disk; the
test SIGKILLs it there (no ``finally``, no cleanup runs). Afterwards:

- every store is readable and shows exactly what it showed before: no partial file is
  visible to any reader (the half-written file is hidden, never renamed);
- the champion alias still points at a complete, loadable model;
- a re-run completes the work, and a leftover older than an hour is swept by the next
  write of its folder.

(The same for MLflow's logging, registering and alias move: ``test_registry_faults.py``.)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlplatform.core.features import add_derived, model_inputs
from mlplatform.defs.common import DATASET
from mlplatform.defs.resources import build_resources
from mlplatform.paths import StatePaths
from mlplatform.resources.feature_store import FeatureStore
from mlplatform.resources.mlflow_registry import MlflowRegistry
from mlplatform_tests.defs.helpers import (
    LENIENT,
    land_sample,
    materialize_all,
    read_feature_table,
)
from mlplatform_tests.kills import kill_when_marked

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CHILD = "mlplatform_tests.write_kill_child"
FAST = {
    "ops": {
        **LENIENT["ops"],
        "candidate_model": {"config": {"model_name": "logistic_regression"}},
        "model_evaluation": {"config": {"bootstrap_resamples": 200, "importance_repeats": 0}},
    }
}
HOUR_AND_A_BIT = 3700


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> StatePaths:
    """A state folder after one whole cycle: a batch stored, the feature table written,
    a champion promoted, the batch's predictions written."""
    paths = StatePaths(tmp_path_factory.mktemp("served") / "state")
    paths.ensure()
    resources = build_resources(paths)
    land_sample(resources, 1500, seed=5)
    assert materialize_all(resources, FAST).success
    return paths


def _copy(served: StatePaths, root: Path) -> StatePaths:
    shutil.copytree(served.root, root)
    return StatePaths(root)


def _kill_inside(write: str, state: StatePaths, tmp_path: Path) -> dict[str, Any]:
    """Run ``write`` in a child and SIGKILL it inside its first temporary file."""
    marker = tmp_path / f"{write}.marker"
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "MLFLOW_ENABLE_TELEMETRY": "false"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLPLATFORM_LEDGER_URL"):
        env.pop(name, None)
    argv = [sys.executable, "-m", CHILD, write, str(state.root), str(marker)]
    kill_when_marked(argv, marker, env=env, what=f"the {write} write")
    facts: dict[str, Any] = json.loads(marker.read_text())
    half = Path(facts["file"])
    assert half.is_file() and half.stat().st_size > 0, facts  # the kill left it half written
    if half.suffix == ".json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(half.read_text())
    else:
        with pytest.raises(Exception, match=r"(?i)parquet|footer|magic|size"):
            pq.read_table(half)
    return facts


def _leftover(facts: dict[str, Any], root: Path) -> Path:
    """The outermost hidden temporary entry holding the half-written file."""
    half = Path(facts["file"])
    for part in [half, *half.parents]:
        if part.name.startswith(".tmp-"):
            leftover = part
        if part == root:
            break
    return leftover


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (then, then))


def _champion_loads(state: StatePaths, rows: pd.DataFrame) -> str:
    registry: MlflowRegistry = build_resources(state)["mlflow_registry"]
    champion = registry.champion()
    assert champion is not None
    features = model_inputs(add_derived(rows, DATASET), DATASET)
    scores = registry.load(champion).predict_proba(features)[:, 1]
    assert len(scores) == len(rows) and ((scores >= 0) & (scores <= 1)).all()
    return champion.version


def test_sigkill_while_ingesting_leaves_the_store_as_it_was(
    served: StatePaths, tmp_path: Path
) -> None:
    state = _copy(served, tmp_path / "state")
    resources = build_resources(state)
    store: FeatureStore = resources["feature_store"]
    before = store.as_of(DATASET)
    manifests = [m.key for m in store.manifests()]
    land_sample(resources, 700, seed=6, start_udi=1501)
    landed = sorted(p.name for p in state.landing.glob("*.csv"))
    version = _champion_loads(state, before.head(50))

    facts = _kill_inside("ingest", state, tmp_path)

    leftover = _leftover(facts, state.feature_store)
    assert leftover.exists() and leftover.name.startswith(".tmp-")
    pd.testing.assert_frame_equal(store.as_of(DATASET), before)
    assert [m.key for m in store.manifests()] == manifests
    # the landed file is not lost: it waits in landing, not archived, not rejected
    assert sorted(p.name for p in state.landing.glob("*.csv")) == landed
    assert _champion_loads(state, before.head(50)) == version

    _age(leftover, HOUR_AND_A_BIT)  # the next write of the batch's folder sweeps it
    again = materialize_all(resources, selection=["raw_observations"])
    assert again.success and len(again.ingest) == 1
    after = store.as_of(DATASET)
    assert len(after) == len(before) + 700
    assert not leftover.exists()
    assert list(state.landing.glob("*.csv")) == []


def test_sigkill_while_writing_the_feature_table_leaves_the_previous_table(
    served: StatePaths, tmp_path: Path
) -> None:
    state = _copy(served, tmp_path / "state")
    resources = build_resources(state)
    snapshot_path = state.feature_store / "feature_table.snapshot.json"
    before_bytes = snapshot_path.read_bytes()
    before = read_feature_table(state)
    land_sample(resources, 700, seed=7, start_udi=1501)
    assert materialize_all(resources, selection=["raw_observations"]).success
    version = _champion_loads(state, before.head(50))

    facts = _kill_inside("feature_table", state, tmp_path)

    leftover = _leftover(facts, state.feature_store)
    assert leftover.parent == state.feature_store and leftover.name.startswith(".tmp-")
    assert snapshot_path.read_bytes() == before_bytes  # the previous table, whole
    # the leftover is hidden (a dot file), and read by name by nothing
    visible = sorted(p.name for p in state.feature_store.iterdir() if not p.name.startswith("."))
    assert snapshot_path.name in visible and leftover.name not in visible
    pd.testing.assert_frame_equal(read_feature_table(state), before)
    # the next step reads the table through the IO manager: the previous one, whole
    assert materialize_all(resources, selection=["train_test_split"]).success
    split = pd.read_parquet(state.asset_storage / "train_test_split.parquet")
    assert sorted(split[DATASET.entity_id]) == sorted(before[DATASET.entity_id])
    assert _champion_loads(state, before.head(50)) == version

    _age(leftover, HOUR_AND_A_BIT)
    assert materialize_all(resources, selection=["feature_table"]).success
    after = read_feature_table(state)
    assert len(after) == len(before) + 700
    assert not leftover.exists()


def test_sigkill_while_writing_predictions_leaves_the_previous_ones(
    served: StatePaths, tmp_path: Path
) -> None:
    state = _copy(served, tmp_path / "state")
    resources = build_resources(state)
    store: FeatureStore = resources["feature_store"]
    files = sorted(p.relative_to(state.predictions) for p in resources["prediction_store"].files())
    assert files, "the cycle wrote predictions"
    before = {f: pd.read_parquet(state.predictions / f) for f in files}
    version = _champion_loads(state, store.as_of(DATASET).head(50))

    facts = _kill_inside("predictions", state, tmp_path)

    leftover = _leftover(facts, state.predictions)
    assert leftover.name.startswith(".tmp-")
    now = sorted(p.relative_to(state.predictions) for p in resources["prediction_store"].files())
    assert now == files  # the half-written part is not among the visible files
    for f, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(state.predictions / f), frame)
    assert _champion_loads(state, store.as_of(DATASET).head(50)) == version

    _age(leftover, HOUR_AND_A_BIT)
    again = materialize_all(resources, selection=["batch_predictions"])
    assert again.success
    rescored = sorted(
        p.relative_to(state.predictions) for p in resources["prediction_store"].files()
    )
    assert rescored, "the re-run wrote predictions"
    scored_rows = sum(len(pd.read_parquet(state.predictions / f)) for f in rescored)
    assert scored_rows == sum(len(f) for f in before.values())
    assert not leftover.exists()
