"""The circuit breaker state machine, fed an injected time."""

from __future__ import annotations

import pytest

from sliding_window_throttler.errors import ConfigurationError
from sliding_window_throttler.recovery import (
    BreakerState,
    BreakerStats,
    CircuitBreaker,
    Permit,
    Transition,
)

S = 1_000_000
REFUSED = Permit(False, 0, None)
CALL = Permit(True, 0, None)


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
    assert breaker.allow(S) == REFUSED


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

    assert breaker.allow(5 * S - 1) == REFUSED
    probe = breaker.allow(5 * S)
    assert probe == Permit(
        True, 1, Transition(BreakerState.OPEN, BreakerState.HALF_OPEN, 3)
    )
    assert breaker.allow(5 * S + 1) == REFUSED

    closing = breaker.record_success(probe.probe)

    assert closing == Transition(BreakerState.HALF_OPEN, BreakerState.CLOSED, 0)
    assert breaker.allow(5 * S + 2) == CALL


def test_failed_probe_opens_for_another_cool_down() -> None:
    breaker = opened(cool_down=5)
    probe = breaker.allow(5 * S)

    transition = breaker.record_failure(6 * S, probe.probe)

    assert transition == Transition(BreakerState.HALF_OPEN, BreakerState.OPEN, 4)
    assert breaker.allow(11 * S - 1) == REFUSED
    assert breaker.allow(11 * S) == Permit(
        True, 2, Transition(BreakerState.OPEN, BreakerState.HALF_OPEN, 4)
    )
    assert breaker.stats(11 * S).opened_total == 1


def test_probe_that_never_reports_is_replaced_after_a_cool_down() -> None:
    breaker = opened(cool_down=5)
    first = breaker.allow(5 * S)

    assert breaker.allow(10 * S - 1) == REFUSED
    second = breaker.allow(10 * S)
    assert second == Permit(True, 2, None)

    assert breaker.record_success(first.probe) is None
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.record_success(second.probe) is not None
    assert breaker.state is BreakerState.CLOSED


def test_a_stale_success_does_not_close_an_open_breaker() -> None:
    breaker = opened(cool_down=5)

    # Calls that began while it was closed answer after it opened.
    assert [breaker.record_success() for _ in range(50)] == [None] * 50

    assert breaker.state is BreakerState.OPEN
    assert breaker.allow(1 * S) == REFUSED
    assert breaker.stats(1 * S) == BreakerStats(BreakerState.OPEN, 3, 1, 4.0)


def test_stale_answers_do_not_move_a_half_open_breaker() -> None:
    breaker = opened(cool_down=5)
    probe = breaker.allow(5 * S)

    assert breaker.record_success() is None
    assert breaker.record_failure(5 * S + 1) is None

    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow(5 * S + 2) == REFUSED
    assert breaker.record_success(probe.probe) == Transition(
        BreakerState.HALF_OPEN, BreakerState.CLOSED, 0
    )


def test_a_reopened_breaker_ignores_the_old_probe_ticket() -> None:
    breaker = opened(cool_down=5)
    probe = breaker.allow(5 * S)
    breaker.record_failure(5 * S, probe.probe)

    assert breaker.record_success(probe.probe) is None
    assert breaker.record_failure(6 * S, probe.probe) is None

    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after(6 * S) == 4.0


def test_a_released_probe_lets_the_next_caller_probe_at_once() -> None:
    breaker = opened(cool_down=5)
    first = breaker.allow(5 * S)

    breaker.release(first.probe)

    assert breaker.state is BreakerState.HALF_OPEN
    second = breaker.allow(5 * S + 1)
    assert second == Permit(True, 2, None)
    breaker.release(first.probe)  # stale: the second probe still runs
    assert breaker.allow(5 * S + 2) == REFUSED


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
