"""Reading the deployment files as Docker Compose and Dagster read them.

Shared by the static checks (``mlplatform_tests/test_deploy_files.py``) and the
topology test (``test_topology.py``), so both look at the same parse of
``deploy/docker-compose.yaml``, ``deploy/dagster.yaml`` and ``deploy/workspace.yaml``:
compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``,
``$$``), its short volume syntax, commands in list or string form, environments in
mapping or list form, and the ``{env: VAR}`` references of Dagster's settings.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"
DAGSTER_YAML = DEPLOY / "dagster.yaml"
WORKSPACE_YAML = DEPLOY / "workspace.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DATABASES_SQL = DEPLOY / "postgres" / "create-databases.sql"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is unset, as compose would refuse."""


def load_yaml(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path.name} is not a mapping"
    return doc


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with compose's variable syntax replaced from ``env``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        spec = _BRACED.fullmatch(match["braced"])
        if spec is None:
            raise InterpolationError(f"invalid interpolation ${{{match['braced']}}}")
        name, op, arg = spec["name"], spec["op"], spec["arg"] or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return interpolate(arg, env) if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"{name}: {interpolate(arg, env)}")
            return str(value)
        if op in (":+", "+"):
            return "" if missing else interpolate(arg, env)
        return "" if value is None else value

    return _VARIABLE.sub(replace, text)


def interpolate_tree(value: Any, env: Mapping[str, str]) -> Any:
    """Every string in a parsed document, interpolated (keys too, as compose does)."""
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, dict):
        return {interpolate_tree(k, env): interpolate_tree(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate_tree(v, env) for v in value]
    return value


def variables(text: str) -> set[str]:
    """Names of the variables a compose string refers to."""
    names = set()
    for match in _VARIABLE.finditer(text):
        if match["named"]:
            names.add(match["named"])
        elif match["braced"] is not None:
            spec = _BRACED.fullmatch(match["braced"])
            if spec:
                names.add(spec["name"])
                names |= variables(spec["arg"] or "")
    return names


def strings(value: Any) -> Iterator[str]:
    """Every string value (and key) of a parsed document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict) and found, "the compose file has no services"
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment``, mapping or ``KEY=value`` list form, values as strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: Mapping[str, Any]) -> list[str]:
    """A service's ``command`` as argv (a string is split as a shell would)."""
    value = service.get("command")
    assert value is not None, "the service has no command"
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def option(argv: list[str], *names: str) -> str | None:
    """The value after the first of ``names`` in ``argv`` (``--name value`` or ``--name=value``)."""
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                return argv[i + 1]
            if word.startswith(f"{name}="):
                return word.split("=", 1)[1]
    return None


class Mount(NamedTuple):
    source: str
    target: str
    read_only: bool

    @property
    def is_named_volume(self) -> bool:
        return not self.source.startswith(("/", ".", "~"))


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    """A service's volumes, short (``src:dst[:mode]``) or long syntax."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            found.append(
                Mount(
                    str(entry.get("source", "")), str(entry["target"]), bool(entry.get("read_only"))
                )
            )
            continue
        parts = str(entry).split(":")
        assert len(parts) in (2, 3), f"volume {entry!r} is not source:target[:mode]"
        mode = parts[2].split(",") if len(parts) == 3 else []
        found.append(Mount(parts[0], parts[1], "ro" in mode))
    return found


def under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def volume_names(compose: Mapping[str, Any]) -> dict[str, str]:
    """Compose volume key -> the Docker volume's name (``name:`` or ``<project>_<key>``)."""
    project = compose.get("name", "")
    return {
        key: (spec or {}).get("name") or f"{project}_{key}"
        for key, spec in (compose.get("volumes") or {}).items()
    }


def network_names(compose: Mapping[str, Any]) -> dict[str, str]:
    """Compose network key -> the Docker network's name."""
    project = compose.get("name", "")
    return {
        key: (spec or {}).get("name") or f"{project}_{key}"
        for key, spec in (compose.get("networks") or {}).items()
    }


def service_networks(service: Mapping[str, Any]) -> list[str]:
    nets = service.get("networks") or ["default"]
    return list(nets) if isinstance(nets, (list, dict)) else [str(nets)]


def dagster_env_refs(value: Any) -> set[str]:
    """Names of the environment variables a Dagster settings tree reads (``{env: NAME}``)."""
    refs: set[str] = set()
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            return {value["env"]}
        for v in value.values():
            refs |= dagster_env_refs(v)
    elif isinstance(value, list):
        for v in value:
            refs |= dagster_env_refs(v)
    return refs


def created_databases(sql: str) -> list[str]:
    """Databases a ``CREATE DATABASE`` script makes (comments ignored)."""
    code = re.sub(r"--[^\n]*", "", sql)
    return re.findall(r"CREATE\s+DATABASE\s+\"?([A-Za-z_][A-Za-z0-9_]*)\"?", code, re.IGNORECASE)


def grpc_locations(workspace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``grpc_server`` entries of a workspace."""
    return [
        entry["grpc_server"]
        for entry in workspace.get("load_from", [])
        if isinstance(entry, dict) and "grpc_server" in entry
    ]
