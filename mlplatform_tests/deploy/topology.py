"""The services of ``deploy/docker-compose.yaml`` as processes on loopback.

No Docker engine runs here, so the production topology is started as the processes
its containers would run: each platform service's ``command`` and ``environment``
from the compose file (interpolated as compose does), the image's environment from
the ``Dockerfile``, and ``deploy/dagster.yaml`` / ``deploy/workspace.yaml`` as the
instance settings and code location. Only what a container network provides is
rewritten, by rules rather than by hand:

- a service name (``postgres``, ``mlflow:5000``) becomes a loopback address, and each
  listening port a free port on 127.0.0.1 (servers never bind other interfaces);
- the PostgreSQL service is the machine's server, with a fresh database for each
  database ``deploy/postgres/create-databases.sql`` creates;
- each named volume is a temp folder, at every path a service mounts it;
- the run launcher: ``DockerRunLauncher`` needs a Docker engine, so the derived
  ``dagster.yaml`` uses Dagster's default launcher (the code server starts each run
  in a subprocess); every other setting is the production file's.

Readiness is each service's own health check (compose ``healthcheck`` or the image's
``HEALTHCHECK``), rewritten by the same rules.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
import yaml

from mlplatform_tests.deploy import compose as c
from mlplatform_tests.test_deploy_files import DOCKERFILE, env_of, exec_form, stages

BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"
DEFAULT_RUN_LAUNCHER = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
# What a test process must not pass on to the services: they get their settings from
# the compose file alone.
_SCRUBBED = re.compile(r"^(DAGSTER_|MLFLOW_|MLPLATFORM_|PG[A-Z]+$)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def loopback_dagster_yaml(production: Mapping[str, Any]) -> dict[str, Any]:
    """The production instance settings with Dagster's default run launcher."""
    derived = copy.deepcopy(dict(production))
    assert derived["run_launcher"]["class"] == "DockerRunLauncher"
    derived["run_launcher"] = dict(DEFAULT_RUN_LAUNCHER)
    return derived


@dataclass(frozen=True)
class Postgres:
    """The machine's PostgreSQL server, as the ``postgres`` service."""

    host: str
    port: int
    user: str
    password: str
    databases: Mapping[str, str]  # production name -> this run's fresh database


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    health: list[str]
    depends_on: list[str]
    log_path: Path
    port: int | None = None  # where it listens, if anywhere
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[str] | None = field(default=None, repr=False)

    def start(self, cwd: Path) -> None:
        self.close_log()
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed by close_log()
        self._log.write(f"\n--- start {' '.join(self.argv)}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its children
        )

    def listening(self) -> bool:
        """Whether its port accepts connections (a cheap probe before its health check)."""
        if self.port is None:
            return True
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex((LOOPBACK, self.port)) == 0

    def healthy(self, cwd: Path) -> bool:
        if not self.listening():
            return False
        check = subprocess.run(
            self.health, cwd=cwd, env=self.env, capture_output=True, timeout=60, check=False
        )
        return check.returncode == 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, as a crashed container."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def signal(self, sig: int, *, even_if_exited: bool = False) -> None:
        """Signal the process group (``even_if_exited``: also when its leader has exited,
        for children it left behind)."""
        if self.proc is not None and (even_if_exited or self.proc.poll() is None):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> bool:
        """Whether the process has exited within ``timeout`` seconds."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=max(timeout, 0.01))
            return True
        except subprocess.TimeoutExpired:
            return False

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""


class Topology:
    """Every platform service of the compose file, rendered for loopback."""

    def __init__(self, root: Path, postgres: Postgres, secrets: Mapping[str, str]) -> None:
        self.root = root
        self.postgres = postgres
        self.compose = c.interpolate_tree(c.load_yaml(c.COMPOSE_FILE), secrets)
        self.services_spec = c.services(self.compose)
        self.image_env = env_of(stages(DOCKERFILE.read_text())[-1], {})
        self.image_health = next(
            exec_form(ins)
            for ins in stages(DOCKERFILE.read_text())[-1]
            if ins.keyword == "HEALTHCHECK"
        )
        database_service = next(
            name
            for name, spec in self.services_spec.items()
            if str(spec.get("image", "")).split(":")[0] == "postgres"
        )
        self.database_service = database_service
        # (service, container port) -> loopback port; the database is the machine's
        self.ports: dict[tuple[str, str], str] = {(database_service, "5432"): str(postgres.port)}
        self.hosts = {database_service: postgres.host}
        for name, spec in self.services_spec.items():
            if name == database_service:
                continue
            self.hosts[name] = LOOPBACK
            port = c.option(c.command(spec), "--port", "-p")
            if port is not None:
                self.ports[(name, port)] = str(free_port())
        # each named volume is one folder, wherever it is mounted
        self.paths: dict[str, Path] = {}
        for spec in self.services_spec.values():
            for mount in c.mounts(spec):
                if mount.is_named_volume:
                    self.paths[mount.target] = root / "volumes" / mount.source
        for folder in self.paths.values():
            folder.mkdir(parents=True, exist_ok=True)
        self.dagster_home = root / "dagster_home"
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        production = c.load_yaml(c.DAGSTER_YAML)
        # the variables naming a database in the instance settings (db_name: {env: ...})
        self.database_vars = c.dagster_env_refs(
            production["storage"]["postgres"]["postgres_db"]["db_name"]
        )
        (self.dagster_home / "dagster.yaml").write_text(
            yaml.safe_dump(loopback_dagster_yaml(production), sort_keys=False)
        )
        self.workspace = root / "workspace.yaml"
        self.workspace.write_text(yaml.safe_dump(self._loopback_workspace(), sort_keys=False))
        self.services = {
            name: self._service(name, spec)
            for name, spec in self.services_spec.items()
            if name != database_service
        }

    # ------------------------------------------------------------ rewriting rules

    def port_of(self, service: str) -> int:
        [port] = [int(p) for (name, _), p in self.ports.items() if name == service]
        return port

    def _loopback_workspace(self) -> dict[str, Any]:
        workspace = c.load_yaml(c.WORKSPACE_YAML)
        for location in c.grpc_locations(workspace):
            service = str(location["host"])
            location["host"] = self.hosts[service]
            location["port"] = int(self.ports[(service, str(location["port"]))])
        return workspace

    def rewrite(self, text: str, own: str | None = None) -> str:
        """A value as a container sees it -> the same value on loopback."""
        for (service, port), local in self.ports.items():
            text = re.sub(
                rf"(?<![\w.-]){re.escape(service)}:{port}(?!\d)",
                f"{self.hosts[service]}:{local}",
                text,
            )
            if service == own:
                text = re.sub(
                    rf"(?<![\w.-])(?:127\.0\.0\.1|localhost|0\.0\.0\.0):{port}(?!\d)",
                    f"{LOOPBACK}:{local}",
                    text,
                )
        for target, folder in sorted(self.paths.items(), key=lambda t: -len(t[0])):
            text = re.sub(rf"(?<![\w/]){re.escape(target)}(?=/|$)", str(folder), text)
        if text.startswith("postgresql"):
            url = sa.make_url(text)
            if url.database in self.postgres.databases:
                url = url.set(database=self.postgres.databases[url.database])
                text = url.render_as_string(hide_password=False)
        return text

    def _argv(self, argv: list[str], own: str) -> list[str]:
        out = []
        for i, word in enumerate(argv):
            before = argv[i - 1] if i else ""
            if before in ("--host", "-h") and word == "0.0.0.0":
                word = LOOPBACK  # bind loopback only
            elif before in ("--port", "-p") and (own, word) in self.ports:
                word = self.ports[(own, word)]
            elif before in ("--workspace", "-w"):
                word = str(self.workspace)
            else:
                word = self.rewrite(word, own)
            out.append(word)
        return out

    def _env(self, service_env: Mapping[str, str], own: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _SCRUBBED.match(k)}
        merged = {**self.image_env, **service_env}
        pg_host = merged.get("PGHOST", "")
        for key, value in merged.items():
            if key == "PATH":
                continue
            if key == "PGHOST" and value in self.hosts:  # libpq's server: a service name
                value = self.hosts[value]
            elif key == "PGPORT" and pg_host in self.hosts:
                value = self.ports[(pg_host, value)]
            elif key in self.database_vars and value in self.postgres.databases:
                value = self.postgres.databases[value]
            else:
                value = self.rewrite(value, own)
            env[key] = value
        env["DAGSTER_HOME"] = str(self.dagster_home)
        env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return env

    def _service(self, name: str, spec: Mapping[str, Any]) -> Service:
        env = self._env(c.environment(spec), name)
        check = spec.get("healthcheck", {}).get("test") or ["CMD", *self.image_health]
        if check[0] == "CMD-SHELL":
            health = ["sh", "-c", self.rewrite(" ".join(check[1:]), name)]
        else:
            assert check[0] == "CMD", f"{name}: health check {check}"
            health = self._argv([str(w) for w in check[1:]], name)
        depends = spec.get("depends_on") or []
        ports = [int(p) for (service, _), p in self.ports.items() if service == name]
        return Service(
            name=name,
            argv=self._argv(c.command(spec), name),
            env=env,
            health=health,
            depends_on=[d for d in depends if d != self.database_service],
            log_path=self.root / f"{name}.log",
            port=ports[0] if ports else None,
        )

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 180) -> None:
        """Start every service once its dependencies are healthy, as compose does."""
        healthy: set[str] = set()
        while len(healthy) < len(self.services):
            wave = [
                s
                for s in self.services.values()
                if s.name not in healthy and set(s.depends_on) <= healthy
            ]
            assert wave, f"dependency cycle among {set(self.services) - healthy}"
            for service in wave:
                service.start(c.REPO)
            for service in wave:
                self.wait_healthy(service, timeout)
                healthy.add(service.name)

    def wait_healthy(self, service: Service, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not service.healthy(c.REPO):
            if not service.running():
                raise AssertionError(f"{service.name} exited:\n{service.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{service.name} never became healthy:\n{service.log_tail()}")
            time.sleep(1)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM every service's process group at once, SIGKILL what is left after ``grace``."""
        services = list(self.services.values())
        for service in services:
            service.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for service in services:
            if not service.wait(deadline - time.monotonic()):
                service.signal(signal.SIGKILL)
                service.wait(20)
            # children that outlived their leader (a run worker) go with the group
            service.signal(signal.SIGKILL, even_if_exited=True)
            service.close_log()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``docker compose exec user-code mlplatform ...``: the CLI in the code server's env."""
        code_server = next(s for s in self.services.values() if "grpc" in s.argv)
        return subprocess.run(
            [str(BIN / "mlplatform"), *args],
            cwd=c.REPO,
            env=code_server.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def graphql(port: int, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        payload: dict[str, Any] = json.loads(response.read())
    assert "errors" not in payload, payload
    data: dict[str, Any] = payload["data"]
    return data


def wait_for(
    what: str, poll: Any, *, timeout: float, interval: float = 1.0, diagnostics: Any = None
) -> Any:
    """Call ``poll`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = poll()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnostics()}" if diagnostics else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def url_error_free(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
