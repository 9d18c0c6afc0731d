"""The built-in strategies that decide without the storage."""

from __future__ import annotations

import logging

import pytest
from recovery_fakes import refused

from sliding_window_throttler import ManualClock, Throttle
from sliding_window_throttler.errors import (
    ConfigurationError,
    SecurityViolationError,
    StorageError,
    StorageUnavailableError,
)
from sliding_window_throttler.recovery import (
    FailClosed,
    FailOpen,
    RecoveryContext,
    SecurityLockdown,
)

API = Throttle("api", 10, 60)
BURST = Throttle("burst", 3, 1)
CONTEXT = RecoveryContext("client-1", (API, BURST))


# Fail-open and fail-closed.


def test_fail_open_admits_every_throttle_marked_degraded() -> None:
    result = FailOpen().recover(refused(), RecoveryContext("c", (API, BURST), cost=2))

    decision = result.decision
    assert decision is not None
    assert decision.allowed and decision.degraded
    assert decision.strategy == "fail-open"
    assert decision.retry_after == 0
    assert [(r.name, r.total_hits, r.remaining) for r in decision.records] == [
        ("api", 2, 8),
        ("burst", 2, 1),
    ]
    assert all(r.time_to_block_expire == -1 for r in decision.records)


def test_fail_closed_raises_unavailable_from_the_storage_error() -> None:
    error = refused()

    with pytest.raises(StorageUnavailableError) as info:
        FailClosed().recover(error, CONTEXT)

    assert info.value.__cause__ is error
    assert info.value.strategy == "fail-closed"
    assert isinstance(info.value, StorageError)
    assert info.value.get_recovery_suggestion()


def test_fail_closed_keeps_the_breaker_retry_after() -> None:
    open_error = StorageUnavailableError("breaker open", retry_after=4.5)

    with pytest.raises(StorageUnavailableError) as info:
        FailClosed().recover(open_error, CONTEXT)

    assert info.value.retry_after == 4.5


def test_fail_closed_asks_for_its_own_wait_when_the_error_gives_none() -> None:
    with pytest.raises(StorageUnavailableError) as plain:
        FailClosed().recover(refused(), CONTEXT)

    with pytest.raises(StorageUnavailableError) as given:
        FailClosed(retry_after=0.3).recover(
            StorageUnavailableError("probe running", retry_after=0.0), CONTEXT
        )

    assert plain.value.retry_after == 1.0
    assert plain.value.context["retry_after"] == 1.0
    assert given.value.retry_after == 0.3


@pytest.mark.parametrize("retry_after", [0, -1, float("inf"), float("nan"), True])
def test_fail_closed_refuses_a_wait_that_is_not_above_zero(retry_after: float) -> None:
    with pytest.raises(ConfigurationError) as info:
        FailClosed(retry_after=retry_after)

    assert info.value.field == "retry_after"


# Security lockdown.


def test_lockdown_refuses_the_client_until_the_block_ends() -> None:
    clock = ManualClock()
    lockdown = SecurityLockdown(60, clock=clock)
    lockdown.recover(SecurityViolationError("abuse", "rate_abuse"), CONTEXT)

    clock.advance(59)
    decision = lockdown.check("client-1", (API,))
    other = lockdown.check("client-2", (API,))

    assert decision is not None and not decision.allowed
    assert decision.retry_after == pytest.approx(1)
    assert other is None

    clock.advance(1)
    assert lockdown.check("client-1", (API,)) is None
    assert not lockdown.is_locked("client-1")


def test_lockdown_release_lifts_the_block() -> None:
    lockdown = SecurityLockdown()
    lockdown.recover(SecurityViolationError("abuse", "rate_abuse"), CONTEXT)
    assert lockdown.is_locked("client-1")

    lockdown.release("client-1")

    assert lockdown.check("client-1", (API,)) is None


def test_lockdown_table_stays_bounded() -> None:
    clock = ManualClock()
    lockdown = SecurityLockdown(10, clock=clock, max_clients=2)
    violation = SecurityViolationError("abuse", "rate_abuse")
    for name in ("a", "b", "c"):
        clock.advance(1)
        lockdown.recover(violation, RecoveryContext(name, (API,)))

    assert [lockdown.is_locked(n) for n in ("a", "b", "c")] == [False, True, True]


def test_lockdown_logs_to_the_security_logger_without_the_identifier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    SecurityLockdown().recover(SecurityViolationError("x", "rate_abuse"), CONTEXT)

    (record,) = caplog.records
    assert record.name == "sliding_window_throttler.security"
    assert record.violation_type == "rate_abuse"  # type: ignore[attr-defined]
    assert "client-1" not in record.getMessage()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"block_duration": 0}, "block_duration"), ({"max_clients": 0}, "max_clients")],
)
def test_lockdown_refuses_bad_settings(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SecurityLockdown(**kwargs)  # type: ignore[arg-type]

    assert info.value.field == field
