"""Unit tests of retries with backoff (mlplatform.core.retry); waits are recorded, not slept."""

from __future__ import annotations

import logging

import pytest

from mlplatform.core.retry import RetriesExhausted, backoff_delays, call_with_retry


class Flaky:
    """A call that raises the given errors in turn, then returns ``result``."""

    def __init__(self, errors: list[Exception], result: str = "done") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.mark.parametrize(
    ("attempts", "base", "cap", "delays"),
    [
        (1, 1.0, 30.0, []),
        (2, 1.0, 30.0, [1.0]),
        (4, 1.0, 30.0, [1.0, 2.0, 4.0]),
        (6, 5.0, 12.0, [5.0, 10.0, 12.0, 12.0, 12.0]),
        (3, 0.25, 30.0, [0.25, 0.5]),
        (3, 0.0, 30.0, [0.0, 0.0]),
    ],
)
def test_backoff_delays(attempts: int, base: float, cap: float, delays: list[float]) -> None:
    assert backoff_delays(attempts, base, cap) == delays


def test_backoff_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1, got 0"):
        backoff_delays(0, 1.0, 30.0)


def test_transient_errors_are_retried_after_the_backoff_delays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waits: list[float] = []
    call = Flaky([ConnectionError("refused"), TimeoutError("slow")])
    log = logging.getLogger("test_retry")
    with caplog.at_level(logging.WARNING, logger="test_retry"):
        result = call_with_retry(
            call, what="register model", base_delay=0.5, log=log, sleep=waits.append
        )
    assert result == "done"
    assert call.calls == 3
    assert waits == [0.5, 1.0]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("register model: attempt 1 of 4 failed (refused)")
    assert "retrying in 0.5 s" in messages[0]
    assert messages[1].startswith("register model: attempt 2 of 4 failed (slow)")


def test_success_at_once_neither_waits_nor_logs(caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float] = []
    with caplog.at_level(logging.DEBUG):
        assert call_with_retry(Flaky([]), what="x", log=logging.getLogger("r"), sleep=waits.append)
    assert waits == []
    assert not caplog.records


def test_non_transient_error_is_raised_at_once() -> None:
    waits: list[float] = []
    call = Flaky([ValueError("bad request"), OSError("never reached")])
    with pytest.raises(ValueError, match="bad request"):
        call_with_retry(call, what="post alert", sleep=waits.append)
    assert call.calls == 1
    assert waits == []


def test_a_custom_transient_predicate_decides_what_is_retried() -> None:
    class Busy(Exception):
        pass

    waits: list[float] = []
    call = Flaky([Busy(), Busy()])
    assert (
        call_with_retry(call, what="x", transient=lambda e: isinstance(e, Busy), sleep=waits.append)
        == "done"
    )
    assert waits == [1.0, 2.0]
    # and an OSError is then not transient
    with pytest.raises(OSError):
        call_with_retry(
            Flaky([OSError("disk")]),
            what="x",
            transient=lambda e: isinstance(e, Busy),
            sleep=waits.append,
        )
    assert waits == [1.0, 2.0]


def test_exhaustion_names_what_the_attempts_and_the_last_error() -> None:
    waits: list[float] = []
    last = ConnectionResetError("peer reset")
    call = Flaky([OSError("first"), OSError("second"), OSError("third"), last, OSError("extra")])
    with pytest.raises(RetriesExhausted) as error:
        call_with_retry(call, what="mlflow: set alias", max_delay=3.0, sleep=waits.append)
    assert str(error.value) == (
        "mlflow: set alias: failed 4 times; last error: ConnectionResetError: peer reset"
    )
    assert error.value.__cause__ is last
    assert call.calls == 4
    assert waits == [1.0, 2.0, 3.0]  # capped, and no wait after the last attempt


def test_a_single_attempt_never_waits() -> None:
    waits: list[float] = []
    with pytest.raises(RetriesExhausted, match="x: failed 1 times"):
        call_with_retry(Flaky([OSError("down")]), what="x", attempts=1, sleep=waits.append)
    assert waits == []


def test_keyboard_interrupt_is_not_retried() -> None:
    waits: list[float] = []

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_retry(interrupted, what="x", transient=lambda e: True, sleep=waits.append)
    assert waits == []


def test_zero_attempts_is_an_error_before_any_call() -> None:
    call = Flaky([])
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        call_with_retry(call, what="x", attempts=0, sleep=lambda s: None)
    assert call.calls == 0
