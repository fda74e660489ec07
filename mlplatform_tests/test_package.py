"""Process-wide defaults the package sets on import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import mlplatform, pyarrow; print(pyarrow.default_memory_pool().backend_name)"


def _pool(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_arrow_allocates_from_the_system_allocator_once_the_package_is_imported() -> None:
    assert _pool() == "system"


@pytest.mark.parametrize("chosen", ["mimalloc", "jemalloc"])
def test_an_allocator_chosen_in_the_environment_wins(chosen: str) -> None:
    import pyarrow as pa

    available = {"mimalloc": pa.mimalloc_memory_pool, "jemalloc": pa.jemalloc_memory_pool}
    try:
        available[chosen]()
    except NotImplementedError:
        pytest.skip(f"this pyarrow build has no {chosen}")
    assert _pool(ARROW_DEFAULT_MEMORY_POOL=chosen) == chosen


def test_the_declared_default_is_the_one_the_package_sets() -> None:
    from mlplatform.settings import ENVIRONMENT

    declared = next(s for s in ENVIRONMENT if s.name == "ARROW_DEFAULT_MEMORY_POOL")
    assert declared.default == _pool()
