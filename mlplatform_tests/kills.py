"""SIGKILL a child process at the moment it reports: the fault-injection tests' common part."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def kill_when_marked(
    argv: list[str],
    marker: Path,
    *,
    env: Mapping[str, str],
    what: str,
    timeout: float = 300.0,
) -> None:
    """Start ``argv`` (output to ``marker``'s ``.log``), wait until it writes ``marker``,
    then SIGKILL it there; fails naming ``what`` if it exits or stalls before."""
    log = marker.with_suffix(".log")
    with log.open("wb") as out:
        child = subprocess.Popen(
            argv, cwd=REPO, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert child.poll() is None, f"exited {child.returncode} before {what}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"{what} not reached in {timeout} s:\n{_tail(log)}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
