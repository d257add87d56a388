"""Circuit breakers: what opens them, cooldown, half-open probes, Retry-After."""

from __future__ import annotations

import pytest

from steadyflow.core.vocabulary import ErrorKind
from steadyflow.providers.breaker import NEUTRAL, OPENS, CircuitBreaker
from steadyflow.spec.resilience import BreakerSpec


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(**spec: float) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(BreakerSpec(**spec), clock), clock


def test_consecutive_failures_open_then_cooldown_then_probe_closes() -> None:
    breaker, clock = _breaker(consecutive_failures=3, cooldown_s=10)
    for _ in range(3):
        assert breaker.allow()
        breaker.record(ErrorKind.SERVER_ERROR)
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 10
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one probe at a time
    breaker.record(None)
    assert breaker.state == "closed" and breaker.allow()


def test_a_failed_probe_opens_again() -> None:
    breaker, clock = _breaker(consecutive_failures=1, cooldown_s=5)
    breaker.record(ErrorKind.TIMEOUT)
    clock.now += 5
    assert breaker.allow()
    breaker.record(ErrorKind.TIMEOUT)
    assert breaker.state == "open" and breaker.opened == 2 and not breaker.allow()


def test_failure_rate_over_the_window() -> None:
    breaker, _ = _breaker(consecutive_failures=100, failure_rate=0.5, window=10, min_calls=10)
    for i in range(9):
        breaker.record(ErrorKind.SERVER_ERROR if i % 2 else None)
    assert breaker.state == "closed"  # 4 of 9: below min_calls anyway
    breaker.record(ErrorKind.RATE_LIMITED)
    assert breaker.state == "open"  # 5 of 10


@pytest.mark.parametrize("kind", sorted(NEUTRAL))
def test_the_callers_faults_and_bad_answers_never_open_it(kind: ErrorKind) -> None:
    breaker, _ = _breaker(consecutive_failures=1)
    for _ in range(20):
        breaker.record(kind)
    assert breaker.state == "closed" and breaker.allow()


def test_which_errors_open_is_explicit() -> None:
    assert {
        ErrorKind.RATE_LIMITED,
        ErrorKind.SERVER_ERROR,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.EMPTY,
    } == set(OPENS)
    assert ErrorKind.CLIENT_ERROR in NEUTRAL and ErrorKind.INVALID_OUTPUT in NEUTRAL


def test_retry_after_holds_the_endpoint() -> None:
    breaker, clock = _breaker(consecutive_failures=50)
    breaker.record(ErrorKind.RATE_LIMITED, retry_after=3)
    assert breaker.state == "closed" and breaker.hold_s() == 3
    clock.now += 3
    assert breaker.hold_s() == 0 and breaker.allow()


def test_a_disabled_breaker_never_opens_or_holds() -> None:
    breaker, _ = _breaker(enabled=False, consecutive_failures=1)
    for _ in range(10):
        breaker.record(ErrorKind.SERVER_ERROR)
        breaker.record(ErrorKind.RATE_LIMITED, retry_after=5)
    assert breaker.allow() and breaker.hold_s() == 0
