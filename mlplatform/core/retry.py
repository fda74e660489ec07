"""Retry a call to an external service with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["RetriesExhausted", "backoff_delays", "call_with_retry"]

T = TypeVar("T")


class RetriesExhausted(RuntimeError):
    """Every attempt failed; the message names the call, the attempts and the last error."""


def backoff_delays(attempts: int, base: float, cap: float) -> list[float]:
    """The waits between ``attempts`` tries: ``base``, ``2 * base``, ... at most ``cap``."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    return [min(cap, base * 2**i) for i in range(attempts - 1)]


def call_with_retry(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int = 4,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    transient: Callable[[BaseException], bool] = lambda exc: isinstance(exc, OSError),
    log: logging.Logger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried after transient errors with exponential backoff.

    An error ``transient`` rejects is raised at once (retrying a bad request does
    not help). After the last attempt, :class:`RetriesExhausted` names ``what``,
    the number of attempts and the last error.
    """
    delays = backoff_delays(attempts, base_delay, max_delay)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            if attempt == attempts:
                raise RetriesExhausted(
                    f"{what}: failed {attempts} times; last error: {type(exc).__name__}: {exc}"
                ) from exc
            wait = delays[attempt - 1]
            if log is not None:
                log.warning(
                    f"{what}: attempt {attempt} of {attempts} failed ({exc}); "
                    f"retrying in {wait:g} s"
                )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
