"""Throwaway PostgreSQL databases on the local server, for tests against a real database.

:func:`fresh_database` creates a uniquely named database, yields its URL and drops
it afterwards (ending any connection a test left open). When the server cannot be
reached, or psycopg2 is missing, the calling test is skipped with the reason.

The server is found at ``$MLPLATFORM_TEST_POSTGRES_URL``, by default
``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres`` (a superuser, trust
authentication). For the unix socket use e.g.
``postgresql+psycopg2://postgres@/postgres?host=/var/run/postgresql``.

:func:`private_postgres` starts a server of the test's own instead (:class:`PrivatePostgres`),
for tests that stop or restart PostgreSQL: the machine's server is shared with other tests.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "ADMIN_URL_ENV",
    "PrivatePostgres",
    "admin_url",
    "connections_to",
    "fresh_database",
    "postgres_bindir",
    "private_postgres",
]

ADMIN_URL_ENV = "MLPLATFORM_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DATABASE_PREFIX = "mlplatform_test"
LOOPBACK_HOST = "127.0.0.1"


def admin_url() -> str:
    """URL of a superuser connection to the maintenance database."""
    return os.environ.get(ADMIN_URL_ENV, DEFAULT_ADMIN_URL)


def _admin_engine(url_text: str | None = None) -> Engine:
    import sqlalchemy as sa

    url = sa.make_url(url_text or admin_url())
    connect_args = {"connect_timeout": 5} if url.get_backend_name() == "postgresql" else {}
    return sa.create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool, connect_args=connect_args
    )


@contextmanager
def fresh_database(
    prefix: str = DATABASE_PREFIX, *, server_url: str | None = None
) -> Iterator[str]:
    """A new, empty database named ``<prefix>_<random>``; yields its URL, then drops it.

    ``server_url``: a superuser URL of another server (e.g. a :class:`PrivatePostgres`);
    by default the machine's server (:func:`admin_url`). Skips the calling test when
    the server is unreachable or psycopg2 is missing.
    """
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed: PostgreSQL tests need it")
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(server_url)
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        except sa.exc.OperationalError as exc:
            reason = " ".join(str(exc.orig).split())[:300]
            pytest.skip(
                f"PostgreSQL is not reachable at {admin.url.render_as_string()} "
                f"(set {ADMIN_URL_ENV} to use another server): {reason}"
            )
        try:
            yield admin.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
    finally:
        admin.dispose()


def connections_to(database_url: str) -> int:
    """How many sessions (other than this query's) are connected to ``database_url``'s database."""
    import sqlalchemy as sa

    database = sa.make_url(database_url).database
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            count = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).scalar_one()
        return int(count)
    finally:
        admin.dispose()


# ---------------------------------------------------------------- a private server

_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_isready")


def postgres_bindir() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl, postgres), if installed.

    ``pg_config --bindir`` first (a client-only install names a folder without them), then
    the newest Debian/Ubuntu ``/usr/lib/postgresql/<version>/bin``, then ``PATH``.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=30
        )
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip()))

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", folder.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in _BINARIES):
            return folder
    return None


def _server_account() -> tuple[int, int]:
    """The (uid, gid) the server runs as: this user, or an unprivileged one under root.

    PostgreSQL refuses to run as root (initdb and postgres both), so as root the server
    runs as the ``postgres`` system user, or ``nobody`` where there is none.
    """
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return account.pw_uid, account.pw_gid
    pytest.skip("running as root with neither a postgres nor a nobody user to run PostgreSQL as")


def _reachable_by(folder: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` may traverse every folder from / down to ``folder``."""
    for part in [folder, *folder.parents]:
        info = part.stat()
        if info.st_uid == uid:
            mask = stat.S_IXUSR
        elif info.st_gid == gid:
            mask = stat.S_IXGRP
        else:
            mask = stat.S_IXOTH
        if not info.st_mode & mask:
            return False
    return True


class PrivatePostgres:
    """A PostgreSQL server of a test's own, to stop and restart at will.

    ``initdb`` into a new folder, trust authentication, listening on ``127.0.0.1:<port>``
    only (and a unix socket inside its folder). The machine's shared server is never
    touched, so a test may take this one down while others run. A stop is a real
    shutdown (``-m fast`` ends every session at once; nothing answers on the port until
    the next start). ``fsync = off``: the files are thrown away at the end, so
    durability across a machine crash is moot. Use :func:`private_postgres`, which
    skips the test when the server programs are not installed and removes everything
    afterwards.
    """

    superuser = "postgres"

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.uid, self.gid = _server_account()
        base = next(
            (
                Path(folder)
                for folder in (tempfile.gettempdir(), "/tmp", "/var/tmp")
                if Path(folder).is_dir() and _reachable_by(Path(folder), self.uid, self.gid)
            ),
            None,
        )
        if base is None:
            pytest.skip(f"no temp folder the PostgreSQL server's user (uid {self.uid}) can reach")
        self.root = Path(tempfile.mkdtemp(prefix="mlplatform-pg-", dir=base))
        os.chown(self.root, self.uid, self.gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    # ------------------------------------------------------------ commands

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(self.root), LC_ALL="C")
        as_other = os.geteuid() != self.uid
        return subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]],
            cwd=self.root,
            env=env,
            user=self.uid if as_other else None,
            group=self.gid if as_other else None,
            extra_groups=[] if as_other else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            raise RuntimeError(
                f"{what} failed ({done.returncode}): {done.stdout}{done.stderr}\n{self.log_tail()}"
            )

    def init(self) -> None:
        """Create the cluster: a ``postgres`` superuser, trust authentication, loopback only."""
        self._check(
            self._run(
                "initdb",
                "--pgdata",
                str(self.data),
                "--username",
                self.superuser,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ),
            "initdb",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "off",
            "max_connections": "200",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{key} = {value}\n" for key, value in settings.items()))

    def start(self, timeout: int = 60) -> None:
        """Start the server and wait until it accepts connections."""
        self._check(
            self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                str(timeout),
            ),
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        """Shut down: ``fast`` ends every session at once (what a container stop does),
        ``immediate`` does not even write a checkpoint (a crash, recovered at the next start)."""
        self._check(
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(timeout)),
            f"pg_ctl stop -m {mode}",
        )

    def restart(self, down_for: float = 0.0) -> float:
        """Stop (``-m fast``), stay down ``down_for`` seconds, start again; returns how
        long the server refused connections, in seconds."""
        began = time.monotonic()
        self.stop("fast")
        time.sleep(down_for)
        self.start()
        return time.monotonic() - began

    def accepting(self) -> bool:
        """Whether the server accepts connections now (``pg_isready``)."""
        ready = self._run("pg_isready", "-h", LOOPBACK_HOST, "-p", str(self.port), timeout=30)
        return ready.returncode == 0

    def pid(self) -> int | None:
        """The postmaster's process id, while it runs."""
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.superuser}@{LOOPBACK_HOST}:{self.port}/{database}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def remove(self) -> None:
        """Stop the server if it runs (no checkpoint: its files go next) and delete them."""
        pid = self.pid()
        if pid is not None:
            stopped = self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
            if stopped.returncode != 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres(port: int) -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres` on ``port``; stopped and deleted afterwards.

    Skips the calling test when PostgreSQL's server programs are not installed.
    """
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL's server programs (initdb, pg_ctl, postgres) are not installed: "
            "a private server cannot be started (Debian/Ubuntu: apt-get install postgresql)"
        )
    server = PrivatePostgres(bindir, port)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()
