"""Shared fixtures: a temp state folder, its resources, the real AI4I file."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlplatform.paths import StatePaths
from mlplatform_tests.real_data import require_real_ai4i

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def state(tmp_path: Path) -> StatePaths:
    """A fresh, empty state folder."""
    paths = StatePaths(tmp_path / "state")
    paths.ensure()
    return paths


@pytest.fixture
def resources(state: StatePaths) -> dict[str, Any]:
    """Every resource rooted at the temp state folder (embedded SQLite MLflow)."""
    from mlplatform.defs.resources import build_resources

    return build_resources(state)


@pytest.fixture(scope="session")
def real_ai4i() -> Path:
    """The real AI4I 2020 file beside the checkout; skips when it is absent."""
    return require_real_ai4i()


@pytest.fixture(autouse=True)
def _no_leaked_dagster_instance() -> Iterator[None]:
    """Fail the test that leaves a Dagster instance set as the current one.

    Dagster keeps the entered instance's state storage in a context variable. A sensor
    or schedule context built with resources, but not used in a ``with`` block, enters
    an instance and never leaves it; once that instance is garbage-collected, every
    later definitions load in the session fails with "Attempted to resolve undefined
    DagsterInstance weakref", far from the test at fault. This names the culprit and
    restores the variable so the tests after it are unaffected.
    """
    from dagster._core.storage.defs_state import base

    before = base.DefsStateStorage.get()
    yield
    if base.DefsStateStorage.get() is not before:
        base._current_storage.set(before)
        pytest.fail(
            "this test left a Dagster instance entered: use sensor and schedule "
            "evaluation contexts in a `with` block",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _mlflow_uris_restored() -> Iterator[None]:
    """Give every test the MLflow tracking and registry URIs the session started with.

    ``MlflowRegistry`` sets MLflow's process-wide URIs (its fluent logging API needs
    them) and MLflow exports them as environment variables. Left behind, they point a
    later test's ``MlflowClient`` without an explicit registry URI, and every server
    or daemon a later test starts, at an earlier test's store.
    """
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    environment = {name: os.environ.get(name) for name in names}
    yield
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "mlflow" in sys.modules:  # imported by this or an earlier test: reset its globals
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        tracking_utils._tracking_uri = None
        registry_utils._registry_uri = None
