"""The compose file agrees with the instance settings, the workspace and the image.

Static (no Docker needed): ``deploy/docker-compose.yaml``, ``deploy/dagster.yaml``,
``deploy/workspace.yaml``, the ``Dockerfile`` and ``deploy/.env.example`` are parsed
and checked against each other and against the code (the training job's tag, the
automation's settings), never against a list kept here. Each check is a function of
the parsed files; the tests at the end feed it broken variants, so every check is
shown to fail on the breakage it is there for.
"""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from mlplatform.core.automation_settings import AUTOMATION_ENV
from mlplatform.defs.jobs import KIND_TAG, TRAINING_KIND, train_and_score_job
from mlplatform_tests.deploy import compose as c
from mlplatform_tests.test_deploy_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    SECRET_KEY,
    URL_CREDENTIALS,
    copy_sources,
    dockerignored,
    env_of,
    exec_form,
    from_image,
    runs,
    runtime_user,
    stages,
    workdir_of,
    workspace_module,
)

# Variables the instance reads that a run's container need not get: it rebuilds the
# instance from the settings the launcher sends it (an InstanceRef), not from a
# DAGSTER_HOME; and the image to launch is the code server's own business.
NOT_FORWARDED = {"DAGSTER_HOME", "DAGSTER_CURRENT_IMAGE"}


@dataclass(frozen=True)
class DeployFiles:
    compose: dict[str, Any]
    dagster: dict[str, Any]
    workspace: dict[str, Any]
    dockerfile: str
    env_example: str
    databases_sql: str


def real_files() -> DeployFiles:
    return DeployFiles(
        compose=c.load_yaml(c.COMPOSE_FILE),
        dagster=c.load_yaml(c.DAGSTER_YAML),
        workspace=c.load_yaml(c.WORKSPACE_YAML),
        dockerfile=DOCKERFILE.read_text(),
        env_example=c.ENV_EXAMPLE.read_text(),
        databases_sql=c.DATABASES_SQL.read_text(),
    )


# ---------------------------------------------------------------- helpers


def required_variables(compose: dict[str, Any]) -> set[str]:
    """Variables compose refuses to start without (``${VAR:?...}``)."""
    return {
        m[1]
        for text in c.strings(compose)
        for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text)
    }


def resolved(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would show it with only the
    required variables set (to placeholders) and every default in force."""
    env = {name: f"placeholder-{name.lower()}" for name in required_variables(compose)}
    resolved_doc: dict[str, Any] = c.interpolate_tree(compose, env)
    return resolved_doc


def service_running(compose: dict[str, Any], *argv_prefix: str) -> tuple[str, dict[str, Any]]:
    """The one service whose command starts with ``argv_prefix``."""
    found = [
        (name, spec)
        for name, spec in c.services(compose).items()
        if spec.get("command") is not None and c.command(spec)[: len(argv_prefix)] == [*argv_prefix]
    ]
    assert len(found) == 1, f"expected one service running {' '.join(argv_prefix)}, got {found}"
    return found[0]


def code_server(compose: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return service_running(compose, "dagster", "api", "grpc")


def dagster_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that open the Dagster instance: code server, webserver, daemon."""
    return dict(
        [
            code_server(compose),
            service_running(compose, "dagster-webserver"),
            service_running(compose, "dagster-daemon", "run"),
        ]
    )


def database_service(compose: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [
        (name, spec)
        for name, spec in c.services(compose).items()
        if str(spec.get("image", "")).split(":")[0] == "postgres"
    ]
    assert len(found) == 1, f"expected one postgres service, got {[n for n, _ in found]}"
    return found[0]


def launcher_config(dagster: dict[str, Any]) -> dict[str, Any]:
    launcher = dagster.get("run_launcher", {})
    assert launcher.get("class") == "DockerRunLauncher", "runs do not get containers of their own"
    assert launcher.get("module") == "dagster_docker"
    config: dict[str, Any] = launcher.get("config", {})
    return config


def forwarded(dagster: dict[str, Any]) -> set[str]:
    """Variables the launcher passes to each run's container (``NAME`` or ``NAME=value``)."""
    return {str(v).split("=", 1)[0] for v in launcher_config(dagster).get("env_vars", [])}


def launcher_mounts(dagster: dict[str, Any]) -> list[c.Mount]:
    volumes = launcher_config(dagster).get("container_kwargs", {}).get("volumes", [])
    return c.mounts({"volumes": volumes})


def image_env(dockerfile: str) -> dict[str, str]:
    return env_of(stages(dockerfile)[-1], {})


def image_path(dockerfile: str, repo_path: str) -> str:
    """Where a file of the checkout ends up in the final image (through the builder)."""
    all_stages = stages(dockerfile)
    for stage in all_stages:
        workdir = workdir_of(stage)
        for ins in stage:
            if ins.keyword != "COPY" or repo_path not in copy_sources(ins):
                continue
            dest = shlex.split(ins.args)[-1]
            dest = posixpath.join(workdir, dest)
            if dest.endswith("/") or len(copy_sources(ins)) > 1:
                dest = posixpath.join(dest, posixpath.basename(repo_path))
            dest = posixpath.normpath(dest)
            if stage is all_stages[-1]:
                return dest
            name = from_image(stage[0])[1]
            for final in all_stages[-1]:
                words = shlex.split(final.args)
                if final.keyword == "COPY" and f"--from={name}" in words:
                    src, dst = words[-2], words[-1]
                    if c.under(dest, src):
                        return posixpath.normpath(dst + dest[len(src) :])
            raise AssertionError(f"{repo_path} is copied into stage {name} but not into the image")
    raise AssertionError(f"the Dockerfile never copies {repo_path}")


def owned_dirs(dockerfile: str) -> set[str]:
    """Folders the final stage creates owned by the runtime user (``install -d -o user``)."""
    final = stages(dockerfile)[-1]
    env = image_env(dockerfile)
    users = runtime_user(dockerfile)
    dirs: set[str] = set()
    for ins in runs(final):
        for command in ins.args.split("&&"):
            words = shlex.split(command)
            if words[:2] != ["install", "-d"] or "-o" not in words:
                continue
            if words[words.index("-o") + 1] not in users:
                continue
            for word in words[2:]:
                expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], m[0]), word)
                if expanded.startswith("/"):
                    dirs.add(expanded)
    return dirs


def symlinks(dockerfile: str) -> dict[str, str]:
    """link -> target of every ``ln -s`` in the final stage."""
    links = {}
    for ins in runs(stages(dockerfile)[-1]):
        for command in ins.args.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["ln", "-s"]:
                links[words[3]] = words[2]
    return links


def postgres_urls(compose: dict[str, Any]) -> list[str]:
    return [s for s in c.strings(compose) if s.startswith("postgresql")]


# ---------------------------------------------------------------- checks


def check_code_location(d: DeployFiles) -> None:
    """The workspace's gRPC server is the code server service, serving the package."""
    [location] = c.grpc_locations(d.workspace)
    name, spec = code_server(d.compose)
    assert location["host"] == name, f"the workspace loads {location['host']}, not {name}"
    argv = c.command(spec)
    assert c.option(argv, "--module-name", "-m") == workspace_module(), "another module is served"
    assert c.option(argv, "--port", "-p") == str(location["port"]), "gRPC port differs"
    assert c.option(argv, "--host", "-h") == "0.0.0.0", "the code server is unreachable"
    assert location["location_name"] == "mlplatform"
    for other, other_spec in dagster_services(d.compose).items():
        if other == name:
            continue
        path = c.option(c.command(other_spec), "--workspace", "-w")
        assert path == image_path(d.dockerfile, "deploy/workspace.yaml"), (
            f"{other} does not load the production workspace ({path})"
        )
        depends = other_spec.get("depends_on") or {}
        assert name in depends, f"{other} starts before the code server"


def check_one_image(d: DeployFiles) -> None:
    """Every platform service runs the image built from the Dockerfile, runs too."""
    _, spec = code_server(d.compose)
    build = spec.get("build") or {}
    context = (c.COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    assert context == DOCKERFILE.parent.resolve(), f"the image builds from {context}"
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE.resolve()
    image = spec.get("image")
    assert image, "the code server's image has no name (the launcher needs one)"
    db, _ = database_service(d.compose)
    for other, other_spec in c.services(d.compose).items():
        if other != db:
            assert other_spec.get("image") == image, f"{other} runs {other_spec.get('image')}"
    # DockerRunLauncher starts each run in the image the code server reports
    assert c.environment(spec).get("DAGSTER_CURRENT_IMAGE") == image, "runs get another image"


def check_instance_settings(d: DeployFiles) -> None:
    """DAGSTER_HOME is the image's copy of deploy/dagster.yaml; its variables are all set."""
    settings = image_path(d.dockerfile, "deploy/dagster.yaml")
    refs = c.dagster_env_refs(d.dagster)
    assert refs, "deploy/dagster.yaml reads nothing from the environment"
    for name, spec in dagster_services(d.compose).items():
        env = c.environment(spec)
        home = env.get("DAGSTER_HOME")
        assert home, f"{name} has no DAGSTER_HOME: it would use the local settings"
        assert symlinks(d.dockerfile).get(posixpath.join(home, "dagster.yaml")) == settings, (
            f"{name}'s DAGSTER_HOME {home} does not hold deploy/dagster.yaml"
        )
        assert home in owned_dirs(d.dockerfile), f"{home} is not writable by the runtime user"
        missing = refs - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}, read by deploy/dagster.yaml"


def check_runs_get_the_code_servers_environment(d: DeployFiles) -> None:
    """Each run's container gets what the code server has, from the daemon that starts it."""
    _, spec = code_server(d.compose)
    expected = set(c.environment(spec)) - NOT_FORWARDED
    sent = forwarded(d.dagster)
    assert expected - sent == set(), f"runs never get {sorted(expected - sent)}"
    assert sent - expected == set(), f"runs get {sorted(sent - expected)}, the code server not"
    assert c.dagster_env_refs(d.dagster) <= sent, "runs cannot rebuild the instance"
    _, daemon = service_running(d.compose, "dagster-daemon", "run")
    daemon_env = set(c.environment(daemon))
    assert sent <= daemon_env, f"the daemon cannot forward {sorted(sent - daemon_env)}"
    # the automation's settings reach the sensors (code server) and the runs alike
    for setting in AUTOMATION_ENV:
        value = c.environment(spec).get(setting.name)
        assert value is not None, f"{setting.name} is not passed to the code server"
        assert re.fullmatch(rf"\$\{{{setting.name}:?-\}}", value), (
            f"{setting.name}={value!r}: pass it through from the environment (empty: default)"
        )


def check_network(d: DeployFiles) -> None:
    """Runs join the compose network, where every service they talk to is."""
    network = launcher_config(d.dagster).get("network")
    names = c.network_names(d.compose)
    keys = [k for k, v in names.items() if v == network]
    assert keys, f"the launcher's network {network!r} is not the compose network ({names})"
    attached = {
        name for name, spec in c.services(d.compose).items() if keys[0] in c.service_networks(spec)
    }
    _, spec = code_server(d.compose)
    # what runs connect to: the database host and every http(s)/db URL host
    env_values = c.environment(spec)
    hosts = {env_values.get("PGHOST")} | {
        urlsplit(v).hostname for v in env_values.values() if re.match(r"\w[\w+.-]*://", v)
    }
    hosts -= {None, ""}
    assert hosts, "runs connect to nothing?"
    assert hosts <= attached, f"runs reach {sorted(hosts - attached)} off the network"
    assert code_server(d.compose)[0] in attached


def check_state_volume(d: DeployFiles) -> None:
    """Runs mount the code server's state volume at MLPLATFORM_HOME; the UI sees step logs."""
    state = image_env(d.dockerfile)["MLPLATFORM_HOME"]
    name, spec = code_server(d.compose)
    volume_names = c.volume_names(d.compose)
    user_code = {m.target: m for m in c.mounts(spec) if m.is_named_volume}
    assert state in user_code, f"{name} has no volume at MLPLATFORM_HOME={state}"
    state_volume = volume_names[user_code[state].source]
    run_mounts = {m.target: m.source for m in launcher_mounts(d.dagster)}
    assert run_mounts.get(state) == state_volume, (
        f"runs mount {run_mounts.get(state)!r} at {state}, the code server {state_volume!r}"
    )
    assert state in owned_dirs(d.dockerfile), "the state volume is not the runtime user's"
    logs = c.environment(spec).get("DAGSTER_COMPUTE_LOGS_DIR", "")
    assert c.under(logs, state), f"step logs ({logs}) are not on the state volume"
    _, webserver = service_running(d.compose, "dagster-webserver")
    shown = {m.target: volume_names.get(m.source) for m in c.mounts(webserver)}
    assert shown.get(state) == state_volume, "the webserver cannot show the steps' output"


def check_mlflow_server(d: DeployFiles) -> None:
    """MLflow: Postgres backend store, proxied artifacts on a volume, reachable as named."""
    _, spec = code_server(d.compose)
    tracking = urlsplit(c.environment(spec)["MLFLOW_TRACKING_URI"])
    assert tracking.scheme == "http" and tracking.hostname in c.services(d.compose)
    server = c.services(d.compose)[tracking.hostname]
    argv = c.command(server)
    assert argv[:2] == ["mlflow", "server"], f"{tracking.hostname} is not an MLflow server"
    assert c.option(argv, "--port", "-p") == str(tracking.port), "MLflow listens elsewhere"
    assert c.option(argv, "--host", "-h") == "0.0.0.0"
    store = c.option(argv, "--backend-store-uri") or ""
    assert store.startswith("postgresql"), f"backend store {store!r} is not PostgreSQL"
    assert "--serve-artifacts" in argv and "--no-serve-artifacts" not in argv
    assert c.option(argv, "--default-artifact-root") is None, "clients would write artifacts"
    destination = c.option(argv, "--artifacts-destination") or ""
    volume = [m for m in c.mounts(server) if m.is_named_volume and c.under(destination, m.target)]
    assert volume, f"artifacts ({destination}) are not on a volume"
    assert volume[0].target in owned_dirs(d.dockerfile), "the artifact volume is not writable"
    allowed = c.option(argv, "--allowed-hosts") or ""
    assert tracking.netloc in allowed.split(","), f"MLflow refuses Host {tracking.netloc}"
    env = c.environment(server)
    assert {"PGHOST", "PGUSER", "PGPASSWORD"} <= set(env), "MLflow cannot log in to PostgreSQL"


def check_databases(d: DeployFiles) -> None:
    """Every database the services name is created by the init script, which postgres runs."""
    created = set(c.created_databases(d.databases_sql))
    assert created, "the init script creates no database"
    named = {sa.make_url(url).database for url in postgres_urls(d.compose)}
    db_vars = c.dagster_env_refs(d.dagster["storage"]["postgres"]["postgres_db"]["db_name"])
    for spec in dagster_services(d.compose).values():
        named |= {c.environment(spec)[v] for v in db_vars}
    assert named <= created, f"{sorted(named - created)} are never created"
    _, postgres = database_service(d.compose)
    scripts = [m for m in c.mounts(postgres) if m.target.startswith("/docker-entrypoint-initdb.d/")]
    assert [(c.COMPOSE_FILE.parent / m.source).resolve() for m in scripts] == [
        c.DATABASES_SQL.resolve()
    ], "postgres does not run the init script"
    assert "healthcheck" in postgres, "postgres has no health check"


def check_credentials_from_environment(d: DeployFiles) -> None:
    """No credential in a file: every Postgres setting of Dagster and every password is a
    required variable, and no URL carries a user or password."""
    pg = d.dagster["storage"]["postgres"]["postgres_db"]
    for key in ("hostname", "port", "username", "password", "db_name"):
        assert c.dagster_env_refs(pg.get(key)), f"storage postgres_db.{key} is not from the env"
    for text in c.strings(d.compose):
        assert not URL_CREDENTIALS.search(text), f"a URL with a password: {text}"
    for url in postgres_urls(d.compose):
        parsed = sa.make_url(url)
        assert parsed.username is None and parsed.password is None, f"{url} names a user"
        assert parsed.host is None, f"{url} names a host: use PGHOST"
    for spec in c.services(d.compose).values():
        for key, value in c.environment(spec).items():
            if SECRET_KEY.search(key) or key == "PGPASSWORD":
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", value), (
                    f"{key}={value!r} is not a required variable without a default"
                )
    # the example names every required variable, with no value for a secret
    example = dict(
        line.split("=", 1)
        for line in d.env_example.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    required = required_variables(d.compose)
    assert required <= set(example), f"{sorted(required - set(example))} not in .env.example"
    for key, value in example.items():
        if SECRET_KEY.search(key):
            assert not value.strip(), f".env.example gives {key} a value"
    assert dockerignored("deploy/.env", DOCKERIGNORE.read_text())
    gitignore = (c.DEPLOY / ".gitignore").read_text().split()
    assert ".env" in gitignore, "deploy/.env could be committed"


def check_published_ports(d: DeployFiles) -> None:
    """Only the UIs are published, on loopback unless configured, at the ports served."""
    published = {}
    for name, spec in resolved(d.compose)["services"].items():
        for entry in spec.get("ports", []):
            host_ip, _, container_port = str(entry).rpartition(":")
            ip = host_ip.rpartition(":")[0]
            assert ip == "127.0.0.1", f"{name} publishes {entry} beyond loopback by default"
            published[name] = container_port
            argv = c.command(spec)
            assert c.option(argv, "--port", "-p") == container_port, f"{name} serves elsewhere"
    assert set(published) == {
        service_running(d.compose, "dagster-webserver")[0],
        service_running(d.compose, "mlflow", "server")[0],
    }, f"published: {sorted(published)}"
    for name, spec in c.services(d.compose).items():
        for entry in spec.get("ports", []):
            assert re.match(r"\$\{\w+:-127\.0\.0\.1\}:", str(entry)), (
                f"{name}: the bind address of {entry} is not configurable"
            )


def check_health_and_order(d: DeployFiles) -> None:
    """A service waited on is healthy by its own check; platform services that are not the
    code server replace the image's check (it probes the gRPC port only that one serves)."""
    services = c.services(d.compose)
    code, _ = code_server(d.compose)
    health_in_image = any(i.keyword == "HEALTHCHECK" for i in stages(d.dockerfile)[-1])
    for name, spec in services.items():
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert cond.get("condition") == "service_healthy", f"{name} waits on {dep} starting"
            assert "healthcheck" in services[dep] or (dep == code and health_in_image), (
                f"{name} waits on {dep}, which has no health check"
            )
        if spec.get("image") == services[code].get("image") and name != code:
            assert "healthcheck" in spec, f"{name} inherits the code server's health check"
        assert spec.get("restart") == "unless-stopped", f"{name} is not restarted"
    image_check = next(i for i in stages(d.dockerfile)[-1] if i.keyword == "HEALTHCHECK")
    probe = exec_form(image_check)
    assert probe[probe.index("--port") + 1] == c.option(c.command(services[code]), "--port")
    # a run's container serves no gRPC port: the image's check is off for it
    run_check = launcher_config(d.dagster).get("container_kwargs", {}).get("healthcheck", {})
    assert run_check.get("test") == ["NONE"], "every run's container would turn unhealthy"


def check_queue_and_monitoring(d: DeployFiles) -> None:
    """Runs queue, training one at a time (the job's own tag), and are monitored."""
    coordinator = d.dagster.get("run_coordinator", {})
    assert coordinator.get("class") == "QueuedRunCoordinator"
    limits = coordinator.get("config", {}).get("tag_concurrency_limits", [])
    assert train_and_score_job.tags[KIND_TAG] == TRAINING_KIND
    assert {"key": KIND_TAG, "value": TRAINING_KIND, "limit": 1} in limits, (
        "training runs are not serialized"
    )
    monitoring = d.dagster.get("run_monitoring", {})
    assert monitoring.get("enabled") is True, "a dead run would stay STARTED forever"
    assert monitoring.get("max_runtime_seconds", 0) > 0, "a hung run is never cancelled"
    storage = d.dagster.get("storage", {})
    assert set(storage) == {"postgres"}, "runs and events are not in PostgreSQL"
    # psycopg2 is the driver the project installs (SQLAlchemy 2.1 defaults to psycopg 3)
    assert storage["postgres"]["postgres_db"].get("scheme") == "postgresql+psycopg2"
    assert all(u.startswith("postgresql+psycopg2://") for u in postgres_urls(d.compose))


CHECKS = [
    check_code_location,
    check_one_image,
    check_instance_settings,
    check_runs_get_the_code_servers_environment,
    check_network,
    check_state_volume,
    check_mlflow_server,
    check_databases,
    check_credentials_from_environment,
    check_published_ports,
    check_health_and_order,
    check_queue_and_monitoring,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_deploy_files(check: Callable[[DeployFiles], None]) -> None:
    check(real_files())


def test_compose_resolves_like_compose() -> None:
    # required variables refuse to default; everything else has a default
    with pytest.raises(c.InterpolationError, match="POSTGRES_PASSWORD"):
        c.interpolate_tree(c.load_yaml(c.COMPOSE_FILE), {"DOCKER_GID": "999"})
    doc = resolved(c.load_yaml(c.COMPOSE_FILE))
    _, spec = code_server(doc)
    assert c.environment(spec)["PGPASSWORD"] == "placeholder-postgres_password"
    assert c.interpolate("a$$b ${X:-d} ${Y-e} ${X:+f}", {"Y": ""}) == "a$b d  "


# ---------------------------------------------------------------- the checks can fail


def _svc(d: DeployFiles, command_start: str) -> dict[str, Any]:
    return next(
        spec
        for spec in d.compose["services"].values()
        if spec.get("command") and c.command(spec)[0] == command_start
    )


def _code(d: DeployFiles) -> dict[str, Any]:
    return code_server(d.compose)[1]


def _env(spec: dict[str, Any]) -> dict[str, Any]:
    spec["environment"] = dict(spec["environment"])
    env: dict[str, Any] = spec["environment"]
    return env


def _set_option(spec: dict[str, Any], name: str, value: str) -> None:
    argv = c.command(spec)
    argv[argv.index(name) + 1] = value
    spec["command"] = argv


def _drop_env(service_start: str, key: str) -> Callable[[DeployFiles], None]:
    return lambda d: _env(_svc(d, service_start)).pop(key)


def _launcher(d: DeployFiles) -> dict[str, Any]:
    return launcher_config(d.dagster)


def _text(field_name: str, old: str, new: str) -> Callable[[DeployFiles], DeployFiles]:
    def mutate(d: DeployFiles) -> DeployFiles:
        text = getattr(d, field_name)
        assert old in text, old
        return replace(d, **{field_name: text.replace(old, new)})

    return mutate


Mutant = tuple[str, Callable[[DeployFiles], None], Callable[[DeployFiles], Any]]

MUTANTS: list[Mutant] = [
    (
        "ws-host",
        check_code_location,
        lambda d: d.workspace["load_from"][0]["grpc_server"].update(host="code"),
    ),
    (
        "ws-port",
        check_code_location,
        lambda d: d.workspace["load_from"][0]["grpc_server"].update(port=4001),
    ),
    ("grpc-port", check_code_location, lambda d: _set_option(_code(d), "--port", "4001")),
    ("grpc-loopback", check_code_location, lambda d: _set_option(_code(d), "--host", "127.0.0.1")),
    ("grpc-module", check_code_location, lambda d: _set_option(_code(d), "--module-name", "x.y")),
    (
        "ui-local-workspace",
        check_code_location,
        lambda d: _set_option(_svc(d, "dagster-webserver"), "--workspace", "/app/workspace.yaml"),
    ),
    (
        "daemon-first",
        check_code_location,
        lambda d: _svc(d, "dagster-daemon").pop("depends_on"),
    ),
    ("no-build", check_one_image, lambda d: _code(d).pop("build")),
    (
        "other-context",
        check_one_image,
        lambda d: _code(d).update(build={"context": ".", "dockerfile": "Dockerfile"}),
    ),
    (
        "webserver-image",
        check_one_image,
        lambda d: _svc(d, "dagster-webserver").update(image="dagster/webserver:1.13"),
    ),
    (
        "mlflow-image",
        check_one_image,
        lambda d: _svc(d, "mlflow").update(image="ghcr.io/mlflow/mlflow:v3"),
    ),
    (
        "current-image",
        check_one_image,
        lambda d: _env(_code(d)).update(DAGSTER_CURRENT_IMAGE="mlplatform:old"),
    ),
    (
        "local-home",
        check_instance_settings,
        lambda d: _env(_svc(d, "dagster-daemon")).update(DAGSTER_HOME="/var/lib/mlplatform"),
    ),
    ("no-home", check_instance_settings, _drop_env("dagster-webserver", "DAGSTER_HOME")),
    (
        "unlinked",
        check_instance_settings,
        _text("dockerfile", "ln -s /app/deploy/dagster.yaml", "ln -s /app/dagster.yaml"),
    ),
    (
        "home-not-owned",
        check_instance_settings,
        _text("dockerfile", ' "$DAGSTER_HOME" /opt/dagster/home', ' "$DAGSTER_HOME"'),
    ),
    (
        "new-setting",
        check_instance_settings,
        lambda d: d.dagster["storage"]["postgres"]["postgres_db"].update(
            sslmode={"env": "PGSSLMODE"}
        ),
    ),
    ("no-db-var", check_instance_settings, _drop_env("dagster-daemon", "DAGSTER_POSTGRES_DB")),
    (
        "not-forwarded",
        check_runs_get_the_code_servers_environment,
        lambda d: _launcher(d).update(
            env_vars=[v for v in _launcher(d)["env_vars"] if v != "MLFLOW_TRACKING_URI"]
        ),
    ),
    (
        "forwards-extra",
        check_runs_get_the_code_servers_environment,
        lambda d: _launcher(d)["env_vars"].append("AWS_SECRET_ACCESS_KEY"),
    ),
    (
        "code-only-var",
        check_runs_get_the_code_servers_environment,
        lambda d: _env(_code(d)).update(EXTRA_SETTING="1"),
    ),
    (
        "daemon-lacks",
        check_runs_get_the_code_servers_environment,
        _drop_env("dagster-daemon", "MLPLATFORM_LEDGER_URL"),
    ),
    (
        "automation-fixed",
        check_runs_get_the_code_servers_environment,
        lambda d: [
            _env(s).update(MLPLATFORM_AUTOMATION="on") for s in dagster_services(d.compose).values()
        ],
    ),
    (
        "automation-missing",
        check_runs_get_the_code_servers_environment,
        lambda d: (
            _env(_code(d)).pop(AUTOMATION_ENV[-1].name),
            _launcher(d)["env_vars"].remove(AUTOMATION_ENV[-1].name),
        ),
    ),
    ("network", check_network, lambda d: _launcher(d).update(network="bridge")),
    (
        "mlflow-off-net",
        check_network,
        lambda d: _svc(d, "mlflow").update(networks=["other"]),
    ),
    (
        "unnamed-network",
        check_network,
        lambda d: d.compose["networks"]["mlplatform"].pop("name"),
    ),
    (
        "run-volume",
        check_state_volume,
        lambda d: _launcher(d)["container_kwargs"].update(volumes=["state:/var/lib/mlplatform"]),
    ),
    (
        "run-path",
        check_state_volume,
        lambda d: _launcher(d)["container_kwargs"].update(volumes=["mlplatform_state:/data"]),
    ),
    (
        "renamed-volume",
        check_state_volume,
        lambda d: d.compose["volumes"]["state"].update(name="state"),
    ),
    (
        "logs-in-container",
        check_state_volume,
        lambda d: [
            _env(s).update(DAGSTER_COMPUTE_LOGS_DIR="/tmp/logs")
            for s in dagster_services(d.compose).values()
        ],
    ),
    (
        "ui-no-state",
        check_state_volume,
        lambda d: _svc(d, "dagster-webserver").update(
            volumes=["/var/run/docker.sock:/var/run/docker.sock"]
        ),
    ),
    (
        "sqlite-store",
        check_mlflow_server,
        lambda d: _set_option(_svc(d, "mlflow"), "--backend-store-uri", "sqlite:///m.db"),
    ),
    (
        "artifacts-in-container",
        check_mlflow_server,
        lambda d: _set_option(_svc(d, "mlflow"), "--artifacts-destination", "/tmp/a"),
    ),
    (
        "no-proxy",
        check_mlflow_server,
        lambda d: _svc(d, "mlflow").update(
            command=[w for w in c.command(_svc(d, "mlflow")) if w != "--serve-artifacts"]
            + ["--no-serve-artifacts"]
        ),
    ),
    ("mlflow-port", check_mlflow_server, lambda d: _set_option(_svc(d, "mlflow"), "--port", "80")),
    (
        "host-refused",
        check_mlflow_server,
        lambda d: _set_option(_svc(d, "mlflow"), "--allowed-hosts", "localhost:*"),
    ),
    (
        "tracking-elsewhere",
        check_mlflow_server,
        lambda d: _env(_code(d)).update(MLFLOW_TRACKING_URI="http://mlflow-server:5000"),
    ),
    (
        "mlflow-no-password",
        check_mlflow_server,
        lambda d: _env(_svc(d, "mlflow")).pop("PGPASSWORD"),
    ),
    (
        "unknown-db",
        check_databases,
        lambda d: _set_option(
            _svc(d, "mlflow"), "--backend-store-uri", "postgresql+psycopg2:///tracking"
        ),
    ),
    (
        "dagster-db",
        check_databases,
        lambda d: [
            _env(s).update(DAGSTER_POSTGRES_DB="dagster_prod")
            for s in dagster_services(d.compose).values()
        ],
    ),
    (
        "no-init",
        check_databases,
        _text("databases_sql", "CREATE DATABASE mlflow;", "-- CREATE DATABASE mlflow;"),
    ),
    (
        "init-unmounted",
        check_databases,
        lambda d: database_service(d.compose)[1].update(
            volumes=["postgres_data:/var/lib/postgresql/data"]
        ),
    ),
    (
        "literal-user",
        check_credentials_from_environment,
        lambda d: d.dagster["storage"]["postgres"]["postgres_db"].update(username="mlplatform"),
    ),
    (
        "password-default",
        check_credentials_from_environment,
        lambda d: database_service(d.compose)[1]["environment"].update(
            POSTGRES_PASSWORD="${POSTGRES_PASSWORD:-postgres}"
        ),
    ),
    (
        "literal-password",
        check_credentials_from_environment,
        lambda d: _env(_svc(d, "mlflow")).update(PGPASSWORD="hunter2"),
    ),
    (
        "url-password",
        check_credentials_from_environment,
        lambda d: _env(_code(d)).update(
            MLPLATFORM_LEDGER_URL="postgresql+psycopg2://u:hunter2@postgres/mlplatform"
        ),
    ),
    (
        "url-host",
        check_credentials_from_environment,
        lambda d: _env(_code(d)).update(
            MLPLATFORM_LEDGER_URL="postgresql+psycopg2://postgres/mlplatform"
        ),
    ),
    (
        "example-secret",
        check_credentials_from_environment,
        _text("env_example", "POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=changeme\n"),
    ),
    (
        "example-incomplete",
        check_credentials_from_environment,
        _text("env_example", "DOCKER_GID=\n", "\n"),
    ),
    (
        "public-ui",
        check_published_ports,
        lambda d: _svc(d, "dagster-webserver").update(ports=["3000:3000"]),
    ),
    (
        "public-default",
        check_published_ports,
        lambda d: _svc(d, "mlflow").update(ports=["${MLFLOW_BIND:-0.0.0.0}:5000:5000"]),
    ),
    (
        "wrong-port",
        check_published_ports,
        lambda d: _svc(d, "mlflow").update(ports=["${MLFLOW_BIND:-127.0.0.1}:5000:5001"]),
    ),
    (
        "db-published",
        check_published_ports,
        lambda d: database_service(d.compose)[1].update(ports=["${PG_BIND:-127.0.0.1}:5432:5432"]),
    ),
    (
        "no-health",
        check_health_and_order,
        lambda d: _svc(d, "mlflow").pop("healthcheck"),
    ),
    (
        "started-only",
        check_health_and_order,
        lambda d: _svc(d, "dagster-webserver").update(
            depends_on={"user-code": {"condition": "service_started"}}
        ),
    ),
    (
        "no-restart",
        check_health_and_order,
        lambda d: _svc(d, "dagster-daemon").pop("restart"),
    ),
    (
        "health-port",
        check_health_and_order,
        _text(
            "dockerfile",
            '"grpc-health-check", "--port", "4000"',
            '"grpc-health-check", "--port", "4001"',
        ),
    ),
    (
        "run-health",
        check_health_and_order,
        lambda d: _launcher(d)["container_kwargs"].pop("healthcheck"),
    ),
    (
        "unlimited-training",
        check_queue_and_monitoring,
        lambda d: d.dagster["run_coordinator"]["config"].pop("tag_concurrency_limits"),
    ),
    (
        "unmonitored",
        check_queue_and_monitoring,
        lambda d: d.dagster["run_monitoring"].update(enabled=False),
    ),
    (
        "sqlite-storage",
        check_queue_and_monitoring,
        lambda d: d.dagster.update(storage={"sqlite": {"base_dir": "/tmp"}}),
    ),
    (
        "psycopg3",
        check_queue_and_monitoring,
        lambda d: d.dagster["storage"]["postgres"]["postgres_db"].pop("scheme"),
    ),
    (
        "default-launcher",
        check_network,
        lambda d: d.dagster.update(
            run_launcher={"module": "dagster", "class": "DefaultRunLauncher"}
        ),
    ),
]


@pytest.mark.parametrize(
    ("check", "mutate"),
    [pytest.param(check, mutate, id=f"{check.__name__}-{name}") for name, check, mutate in MUTANTS],
)
def test_check_fails_on_breakage(
    check: Callable[[DeployFiles], None], mutate: Callable[[DeployFiles], Any]
) -> None:
    files = copy.deepcopy(real_files())
    result = mutate(files)
    broken = result if isinstance(result, DeployFiles) else files
    assert broken != real_files(), "the mutation changed nothing"
    with pytest.raises(AssertionError):
        check(broken)
