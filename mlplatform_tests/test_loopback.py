"""The servers the platform starts listen on loopback only, unless told otherwise.

``mlplatform ui`` (``dagster dev``: the webserver, the daemon and the code server it
spawns) and the MLflow UI command the README gives are started with their defaults:
the host is never given (only a free port, so parallel tests do not collide, and one
MLflow worker, to start faster). Every listening TCP socket held by any process of
either (found through ``/proc/<pid>/fd`` and ``/proc/net/tcp{,6}``) must be bound to a
loopback address: nothing of an unauthenticated UI, its GraphQL API or the code server
is reachable from the network. ``dagster dev``'s code server listens on a Unix domain
socket, which is checked to exist (and is not reachable from the network).
The production containers bind 0.0.0.0 inside their own network namespace; their
published ports are checked to be loopback-only in
``mlplatform_tests/deploy/test_compose_files.py``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO

import pytest

from mlplatform_tests.deploy.topology import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TCP_LISTEN = "0A"
UNIX_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's flags: a listening socket
START_SECONDS = 240.0


def _address(hex_address: str) -> tuple[str, int]:
    """``0100007F:1F90`` (``/proc/net/tcp``) or its IPv6 form -> ('127.0.0.1', 8080)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # the kernel prints each 32-bit word in host (little-endian) order
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port, 16)


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of this network namespace: inode -> (address, port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)  # header
            for line in fh:
                fields = line.split()
                if fields[3] == TCP_LISTEN:
                    found[int(fields[9])] = _address(fields[1])
    return found


def listening_unix_sockets() -> dict[int, str]:
    """Every listening Unix domain socket: inode -> path (not reachable from the network)."""
    found = {}
    with open("/proc/net/unix") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            if int(fields[3], 16) & UNIX_ACCEPTING:
                found[int(fields[6])] = fields[7] if len(fields) > 7 else ""
    return found


def session_pids(leader: int) -> list[int]:
    """The processes of the session ``leader`` started (``start_new_session``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after the command (which may hold spaces), from the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == leader:  # field 6: session id
            pids.append(int(entry.name))
    return pids


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def listeners_of(leader: int) -> dict[int, list[tuple[str, int]]]:
    """pid -> the (address, port) of each TCP socket it listens on, for ``leader``'s session."""
    listening = listening_sockets()
    return {
        pid: sorted(listening[i] for i in socket_inodes(pid) if i in listening)
        for pid in session_pids(leader)
    }


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """A test server on a temp state: a short grace period, then killed, children too."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in session_pids(proc.pid):  # any child that left the process group
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bytes(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _code_location_loaded(port: int) -> bool:
    """Whether the webserver reaches the code server (its assets are listed)."""
    body = json.dumps({"query": "{ assetNodes { id } }"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bool(json.loads(response.read())["data"]["assetNodes"])
    except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, TypeError):
        return False


class _Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the server and every process it spawns: one session
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[_Server, int]]]:
    """``mlplatform ui`` and the README's ``mlflow ui``, default host, started together."""
    root = tmp_path_factory.mktemp("loopback")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DAGSTER_", "MLFLOW_", "MLPLATFORM_"))
    }
    env.update(MLPLATFORM_HOME=str(root / "state"), MLPLATFORM_AUTOMATION="off")
    ui_port, mlflow_port = free_port(), free_port()
    started = {
        "dagster": (
            _Server(
                "mlplatform ui",
                [str(BIN / "mlplatform"), "ui", "--port", str(ui_port)],
                env,
                root / "dagster-dev.log",
            ),
            ui_port,
        ),
        "mlflow": (
            _Server(
                "mlflow ui",
                [
                    str(BIN / "mlflow"),
                    "ui",
                    "--backend-store-uri",
                    f"sqlite:///{root / 'mlflow.db'}",
                    "--port",
                    str(mlflow_port),
                    # one worker, not four: the binding is the same, the start cheaper
                    "--workers",
                    "1",
                ],
                env,
                root / "mlflow.log",
            ),
            mlflow_port,
        ),
    }
    try:
        deadline = time.monotonic() + START_SECONDS
        waiting = {"dagster", "mlflow"}
        while waiting:
            if "mlflow" in waiting and _get(f"http://127.0.0.1:{mlflow_port}/health"):
                waiting.discard("mlflow")
            if "dagster" in waiting and _code_location_loaded(ui_port):
                waiting.discard("dagster")
            for name in waiting:
                started[name][0].check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{sorted(waiting)} not up after {START_SECONDS:.0f} s")
            time.sleep(0.5)
        yield started
    finally:
        for server, _ in started.values():
            server.stop()


@pytest.mark.parametrize("name", ["dagster", "mlflow"])
def test_every_listening_socket_is_on_loopback(
    servers: dict[str, tuple[_Server, int]], name: str
) -> None:
    server, port = servers[name]
    listeners = listeners_of(server.proc.pid)
    bound = [(pid, addr, p) for pid, sockets in listeners.items() for addr, p in sockets]
    # the check has something to check: the served port is among them
    assert any(p == port for _, _, p in bound), f"nothing of {server.name} listens on {port}"
    if name == "dagster":
        # dagster dev's code server answers on a Unix domain socket, not a TCP port
        unix = listening_unix_sockets()
        held = [unix[i] for pid in listeners for i in socket_inodes(pid) if i in unix]
        assert held, f"no code server socket among the processes of {server.name}"
    print(f"{server.name}: listening (pid, address, port) {bound}")
    exposed = [(pid, addr, p) for pid, addr, p in bound if not is_loopback(addr)]
    assert not exposed, f"{server.name} listens beyond loopback: {exposed}"


def test_the_address_check_flags_an_open_bind() -> None:
    # the check itself: a socket on 0.0.0.0 (and on ::) is found and is not loopback
    for family, wildcard in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family) as s:
            s.bind((wildcard, 0))
            s.listen()
            port = s.getsockname()[1]
            mine = listeners_of(os.getsid(0)).get(os.getpid(), [])
            assert (wildcard, port) in mine
            assert not is_loopback(wildcard)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
