"""Shared fixtures: a temp state folder, its resources, the real AI4I file."""

from __future__ import annotations

import os
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
