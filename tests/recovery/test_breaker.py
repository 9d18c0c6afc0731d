"""The circuit breaker state machine, fed an injected time."""

from __future__ import annotations

import pytest

from sliding_window_throttler.errors import ConfigurationError
from sliding_window_throttler.recovery import BreakerState, CircuitBreaker

S = 1_000_000


def opened(threshold: int = 3, cool_down: float = 5) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold, cool_down)
    for _ in range(threshold):
        breaker.record_failure(0)

    return breaker


def test_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cool_down=5)

    transitions = [breaker.record_failure(0) for _ in range(3)]

    assert transitions[:2] == [None, None]
    assert transitions[2] is not None
    assert (transitions[2].old, transitions[2].new) == (
        BreakerState.CLOSED,
        BreakerState.OPEN,
    )
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow(S) == (False, None)


def test_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    breaker.record_failure(0)
    breaker.record_failure(0)

    breaker.record_success()
    breaker.record_failure(0)
    breaker.record_failure(0)

    assert breaker.state is BreakerState.CLOSED


def test_one_probe_after_the_cool_down_and_its_success_closes() -> None:
    breaker = opened(cool_down=5)

    assert breaker.allow(5 * S - 1) == (False, None)
    allowed, transition = breaker.allow(5 * S)
    assert allowed and transition is not None
    assert transition.new is BreakerState.HALF_OPEN
    assert breaker.allow(5 * S + 1) == (False, None)

    closing = breaker.record_success()

    assert closing is not None and closing.new is BreakerState.CLOSED
    assert breaker.allow(5 * S + 2) == (True, None)


def test_failed_probe_opens_for_another_cool_down() -> None:
    breaker = opened(cool_down=5)
    breaker.allow(5 * S)

    transition = breaker.record_failure(6 * S)

    assert transition is not None
    assert (transition.old, transition.new) == (
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
    )
    assert breaker.allow(11 * S - 1) == (False, None)
    assert breaker.allow(11 * S)[0]
    assert breaker.stats(11 * S).opened_total == 1


def test_probe_that_never_reports_is_replaced_after_a_cool_down() -> None:
    breaker = opened(cool_down=5)
    breaker.allow(5 * S)

    assert breaker.allow(10 * S - 1) == (False, None)
    assert breaker.allow(10 * S) == (True, None)


def test_failures_while_open_change_nothing() -> None:
    breaker = opened(cool_down=5)

    assert breaker.record_failure(4 * S) is None
    assert breaker.retry_after(1 * S) == pytest.approx(4.0)


def test_stats_and_operator_reset() -> None:
    breaker = opened(threshold=2, cool_down=5)
    stats = breaker.stats(2 * S)

    assert stats.state is BreakerState.OPEN
    assert stats.consecutive_failures == 2
    assert stats.retry_after == pytest.approx(3.0)

    breaker.reset()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.stats(2 * S).retry_after == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"failure_threshold": True}, "failure_threshold"),
        ({"cool_down": 0}, "cool_down"),
        ({"cool_down": "soon"}, "cool_down"),
    ],
)
def test_refuses_bad_settings(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]

    assert info.value.field == field


def test_cool_down_takes_duration_strings() -> None:
    assert CircuitBreaker(cool_down="250ms").cool_down_us == 250_000
