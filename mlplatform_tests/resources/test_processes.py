"""Process stamps: only a process that is certainly gone is declared dead (real processes)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplatform.resources.processes import ProcessStamp, provably_dead, this_process

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="start times are read from Linux's /proc"
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def _stamp_of(pid: int) -> ProcessStamp:
    """What ``this_process`` would have stamped inside ``pid`` (read from /proc, as it does)."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    raw = Path(f"/proc/{pid}/stat").read_text()
    ticks = raw[raw.rindex(")") + 2 :].split()[19]
    return ProcessStamp(socket.gethostname(), pid, f"{boot}:{ticks}")


def test_this_process_is_alive_and_stamped_with_its_start() -> None:
    me = this_process()
    assert (me.host, me.pid) == (socket.gethostname(), os.getpid())
    assert me == _stamp_of(os.getpid())
    assert not provably_dead(me)


def test_a_killed_process_is_dead_once_reaped_and_while_a_zombie(
    sleeper: subprocess.Popen[bytes],
) -> None:
    stamp = _stamp_of(sleeper.pid)
    assert not provably_dead(stamp)
    os.kill(sleeper.pid, signal.SIGKILL)
    # not reaped yet: a zombie, which will never write again
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)
    assert Path(f"/proc/{sleeper.pid}").exists()
    assert provably_dead(stamp)
    sleeper.wait()
    assert provably_dead(stamp)
    # a stamp written without a start time: a pid that does not exist is proof enough
    assert provably_dead(ProcessStamp(stamp.host, sleeper.pid, None))


def test_a_reused_pid_or_a_reboot_since_is_proof_but_nothing_else_is(
    sleeper: subprocess.Popen[bytes],
) -> None:
    live = _stamp_of(sleeper.pid)
    boot, _, ticks = str(live.started).partition(":")
    # the pid now runs another process (different start time), or the machine rebooted
    assert provably_dead(ProcessStamp(live.host, live.pid, f"{boot}:{int(ticks) + 1}"))
    assert provably_dead(ProcessStamp(live.host, live.pid, f"another-boot:{ticks}"))
    # never proof: another host (even with a pid that does not exist here), a live
    # process without a start time, a start time that cannot be read
    assert not provably_dead(ProcessStamp("another-host", 2**22 + 1, None))
    assert not provably_dead(ProcessStamp(live.host, live.pid, None))
    assert not provably_dead(ProcessStamp(live.host, live.pid, "garbled"))


@pytest.mark.parametrize(
    ("host", "pid", "started"),
    [(None, "12", None), ("", "12", None), ("h", None, None), ("h", "x", None), ("h", "0", None)],
)
def test_a_missing_or_malformed_stamp_is_no_stamp(
    host: str | None, pid: str | None, started: str | None
) -> None:
    assert ProcessStamp.parse(host, pid, started) is None


def test_a_stamp_round_trips_from_its_recorded_strings() -> None:
    me = this_process()
    assert ProcessStamp.parse(me.host, str(me.pid), me.started) == me
    assert ProcessStamp.parse("h", "12", "") == ProcessStamp("h", 12, None)
