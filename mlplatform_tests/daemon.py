"""A real ``dagster-daemon`` on a temp state: the harness of the end-to-end automation test
and of ``benchmarks/continuous_training.py``.

The daemon loads the code location from the repository's ``workspace.yaml`` (it
starts the code server itself), with ``DAGSTER_HOME`` and ``MLPLATFORM_HOME`` in a
temp folder and the instance settings of the repository's ``dagster.yaml``
(queued runs, run monitoring). Runs it launches are separate processes, as in
production. Everything is stopped by :meth:`LocalDaemon.stop`, process group and
all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg

from mlplatform.paths import StatePaths

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class LocalDaemon:
    """``dagster-daemon run`` for the repository's workspace, on ``home``."""

    def __init__(
        self,
        home: Path,
        *,
        sensor_interval: int = 5,
        env: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.paths = StatePaths(home)
        self.paths.ensure()
        shutil.copyfile(REPO / "dagster.yaml", self.paths.dagster_home / "dagster.yaml")
        self.log_path = home / "daemon.log"
        self.sensor_interval = sensor_interval
        self.env = {
            **os.environ,
            "MLPLATFORM_HOME": str(home),
            "DAGSTER_HOME": str(self.paths.dagster_home),
            "MLPLATFORM_AUTOMATION": "on",
            "MLPLATFORM_SENSOR_INTERVAL": str(sensor_interval),
            "GX_ANALYTICS_ENABLED": "false",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.env.pop("MLFLOW_TRACKING_URI", None)
        if run_config is not None:
            config_path = home / "automated_run_config.json"
            config_path.write_text(json.dumps(run_config))
            self.env["MLPLATFORM_AUTOMATED_RUN_CONFIG"] = str(config_path)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the daemon (it loads the code location and runs every running sensor)."""
        # create the instance's SQLite storage first: two processes creating its tables
        # at once collide ("table runs already exists")
        self.instance().get_run_records(limit=1)
        daemon = Path(sys.executable).with_name("dagster-daemon")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(daemon), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self) -> None:
        """Stop the daemon, its code server and any run it launched (the process group)."""
        if self.process is None:
            return
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None

    def alive(self) -> bool:
        """Whether the daemon process is still running."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The end of the daemon's log (for failure messages)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def instance(self) -> dg.DagsterInstance:
        """The daemon's instance, read from this process (SQLite storage in DAGSTER_HOME)."""
        previous = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.paths.dagster_home)
        try:
            return dg.DagsterInstance.get()
        finally:
            if previous is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = previous

    def wait_for(
        self, what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0
    ) -> T:
        """Poll ``probe`` until it returns something; fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"daemon exited while waiting for {what}:\n{self.log_tail()}")
            found = probe()
            if found is not None:
                return found
            time.sleep(every)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_tail()}"
        )


def runs(
    instance: dg.DagsterInstance, job: str, tags: Mapping[str, str] | None = None
) -> list[dg.RunRecord]:
    """Run records of ``job`` (with ``tags``), oldest first."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job, tags=dict(tags or {})))
    return sorted(records, key=lambda r: r.create_timestamp)


def finished(records: list[dg.RunRecord]) -> list[dg.RunRecord]:
    """Records of runs that ended (succeeded, failed or were canceled)."""
    return [r for r in records if r.dagster_run.is_finished]
