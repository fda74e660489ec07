"""Which process is this, and is the process that left a record provably gone?

A record (an MLflow run, say) is stamped with the host, pid and start time of the
process writing it. Later, another process may treat the record as abandoned only when
that process is *provably* dead: the stamp names this host, and the pid is not running,
or is a zombie, or runs a different process (its start time differs: the pid was
reused), or the machine has rebooted since. Anything else (another host, a live
process, a stamp that cannot be read) is not proof, and the record is left alone.

The start time is Linux's: ``/proc/<pid>/stat`` field 22 (clock ticks since boot), with
the boot id (``/proc/sys/kernel/random/boot_id``) so that ticks of two boots are never
compared. Without ``/proc`` only "no such pid" proves a death. The host name must
identify one pid namespace: true of a machine, and of containers (Docker gives each its
own host name unless told otherwise).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessStamp", "provably_dead", "this_process"]

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys" / "kernel" / "random" / "boot_id"


@dataclass(frozen=True)
class ProcessStamp:
    """A process, as recorded: host name, pid and start (``<boot id>:<ticks>``, or None)."""

    host: str
    pid: int
    started: str | None

    @classmethod
    def parse(cls, host: str | None, pid: str | None, started: str | None) -> ProcessStamp | None:
        """A stamp from recorded strings; None when host or pid is missing or malformed."""
        if not host or not pid or not pid.isdigit() or int(pid) <= 0:
            return None
        return cls(host, int(pid), started or None)

    def describe(self) -> str:
        """E.g. ``pid 4242 on host worker-1``."""
        return f"pid {self.pid} on host {self.host}"


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start ticks) of ``pid`` from ``/proc``; None when there is no such process."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after
    # its last ")"; the start time is field 22, the 20th after the name
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], fields[19]


def _started(pid: int) -> str | None:
    boot = _boot_id()
    if boot is None:
        return None
    try:
        stat = _stat(pid)
    except OSError:
        return None
    return f"{boot}:{stat[1]}" if stat else None


def this_process() -> ProcessStamp:
    """The stamp of the calling process."""
    pid = os.getpid()
    return ProcessStamp(socket.gethostname(), pid, _started(pid))


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def provably_dead(stamp: ProcessStamp) -> bool:
    """Whether the stamped process is certainly gone (see the module docstring)."""
    if stamp.host != socket.gethostname():
        return False
    boot = _boot_id()
    stamped_boot, _, ticks = (stamp.started or "").partition(":")
    if stamped_boot and ticks.isdigit() and boot is not None:
        if stamped_boot != boot:
            return True  # stamped before this machine last booted
        try:
            stat = _stat(stamp.pid)
        except OSError:
            return False
        if stat is None:
            return True
        state, started = stat
        return state == "Z" or started != ticks  # exited (unreaped), or the pid was reused
    return not _pid_exists(stamp.pid)
