"""Fixtures shared by the core unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread() -> Iterator[None]:
    """One BLAS/OpenMP thread: on a busy small machine, spinning threads make fits crawl."""
    with threadpool_limits(limits=1):
        yield
