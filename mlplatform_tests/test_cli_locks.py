"""Two commands at once on one state folder take turns where they would collide.

``mlplatform generate`` reads the highest entity id (store, landing, SQL table) and
writes rows after it: two at once would pick the same ids. They take turns on
``DAGSTER_HOME/generate.lock``. (The training lock is proven with two real training
runs in ``test_registry_faults.py``.)
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.cli import GENERATE_LOCK, _turn_lock, prepare_state
from mlplatform.paths import StatePaths

BIN = Path(sys.executable).parent
ROWS = 400

pytestmark = [pytest.mark.slow]


def _env(state: Path) -> dict[str, str]:
    env = {**os.environ, "MLPLATFORM_HOME": str(state)}
    for name in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "MLPLATFORM_SQL_URL"):
        env.pop(name, None)
    return env


def test_two_generate_commands_at_once_take_turns_and_never_share_entity_ids(
    tmp_path: Path,
) -> None:
    state = StatePaths(tmp_path / "state")
    prepare_state(state)
    logs = [tmp_path / f"generate-{i}.log" for i in range(2)]
    children = []
    waiting = f"waiting for another sample generation (pid {os.getpid()}) to finish"
    with _turn_lock(state.dagster_home / GENERATE_LOCK, "sample generation"):
        for log in logs:
            with log.open("wb") as out:
                children.append(
                    subprocess.Popen(
                        [str(BIN / "mlplatform"), "generate", "--rows", str(ROWS)],
                        env=_env(state.root),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        while not all(waiting in log.read_text() for log in logs):
            for child, log in zip(children, logs, strict=True):
                assert child.poll() is None, f"exited {child.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            time.sleep(0.1)
        # nothing was generated while the lock was held
        assert list(state.landing.glob("*.csv")) == []
    codes = [child.wait(timeout=120) for child in children]
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], outputs
    # one of them waited for the other once the test let go
    assert sum("waiting for another sample generation" in o for o in outputs) == 2
    assert any("going on" in o for o in outputs)

    files = sorted(state.landing.glob("*.csv"))
    assert len(files) == 2, files
    file_ids = [pd.read_csv(f, usecols=["UDI"])["UDI"] for f in files]
    with sqlite3.connect(state.root / "sources.db") as db:
        sql_ids = pd.read_sql("SELECT udi FROM machine_readings", db)["udi"]
    every = pd.concat([*file_ids, sql_ids], ignore_index=True)
    assert len(every) == 2 * ROWS
    assert every.is_unique, every[every.duplicated()].head().tolist()
    # each command's rows are one contiguous block after the other's
    assert sorted(every.tolist()) == list(range(1, 2 * ROWS + 1))
