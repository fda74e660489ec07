"""The dependency audit of ``scripts/dev.py test``: one clear line, never a false all-clear.

``summarize`` reads pip-audit's JSON report (its ``--format json`` layout); ``audit``
probes the vulnerability service first and, where it cannot be reached, reports the
audit as skipped without failing the command. CI runs pip-audit as a step of its own
(checked in ``mlplatform_tests/test_deploy_files.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mlplatform_tests.deploy.topology import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_mlplatform_dev_audit", REPO / "scripts/dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(name: str, version: str, *vulns: tuple[str, list[str]]) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "vulns": [
            {"id": vid, "fix_versions": fixes, "aliases": [], "description": ""}
            for vid, fixes in vulns
        ],
    }


def _skipped(name: str) -> dict[str, Any]:
    return {"name": name, "skip_reason": f"Dependency not found on PyPI: {name}"}


def test_known_vulnerabilities_are_counted_and_listed(dev: ModuleType) -> None:
    report = {
        "dependencies": [
            _package("jinja2", "3.1.2", ("GHSA-h5c8-rqwp-cp95", ["3.1.3"])),
            _package("urllib3", "2.0.0", ("PYSEC-2023-192", ["2.0.6"]), ("GHSA-x", [])),
            _package("pandas", "3.1.1"),
            _skipped("private-tool"),
        ],
        "fixes": [],
    }
    assert dev.summarize(report) == [
        "pip-audit: 3 known vulnerabilities in 2 of 3 packages (1 could not be looked up)",
        "  jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)",
        "  urllib3 2.0.0: PYSEC-2023-192 (fixed in 2.0.6)",
        "  urllib3 2.0.0: GHSA-x (no fix yet)",
    ]


def test_none_known_is_said_so(dev: ModuleType) -> None:
    report = {"dependencies": [_package("pandas", "3.1.1"), _package("numpy", "2.3.0")]}
    assert dev.summarize(report) == ["pip-audit: 0 known vulnerabilities in 0 of 2 packages"]


def test_nothing_looked_up_is_unreachable_not_clean(dev: ModuleType) -> None:
    # what pip-audit reports behind a mirror without PyPI's JSON API: every package
    # skipped, and "No known vulnerabilities found" on its own output
    report = {"dependencies": [_skipped("pandas"), _skipped("numpy")], "fixes": []}
    [line] = dev.summarize(report)
    assert "unreachable" in line and "skipped" in line and "0 known" not in line


def test_an_unreachable_service_skips_the_audit_without_failing(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    closed = f"http://127.0.0.1:{free_port()}/pypi/pip/24.0/json"  # nothing listens there
    assert dev.service_problem(closed) is not None
    [line] = dev.audit(probe=closed)
    assert line.startswith("pip-audit: vulnerability service unreachable (")
    assert line.endswith("), skipped")
    assert f"[dev] {line}" in capsys.readouterr().out


def test_in_ci_the_audit_is_left_to_its_own_step(
    dev: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert dev.audit(probe="http://127.0.0.1:9/") == ["pip-audit: runs as its own step in CI"]
