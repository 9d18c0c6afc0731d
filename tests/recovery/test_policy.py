"""The built-in strategies that decide without the storage."""

from __future__ import annotations

import logging

import pytest
from recovery_fakes import ScriptableStorage, no_functions, refused

from sliding_window_throttler import Decision, ManualClock, MemoryStorage, Throttle
from sliding_window_throttler.errors import (
    ConfigurationError,
    RedisFunctionError,
    SecurityViolationError,
    StorageError,
    StorageUnavailableError,
)
from sliding_window_throttler.recovery import (
    ErrorRecoveryManager,
    FailClosed,
    FailOpen,
    RecoveryContext,
    ScriptsFallback,
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


# Functions -> EVALSHA.


def test_scripts_fallback_switches_once_and_decides_through_scripts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = ScriptableStorage(MemoryStorage())
    storage.fail(no_functions)
    fallback = ScriptsFallback(storage)
    manager = ErrorRecoveryManager([fallback, FailOpen()])

    def call() -> Decision:
        return storage.hit("c", (API,), 1)

    context = RecoveryContext("c", (API,), call=call)
    results = [manager.recover(no_functions(), context) for _ in range(2)]

    assert storage.scripts
    assert [(r.strategy, r.degraded) for r in results] == [
        ("scripts-fallback", False),
        ("scripts-fallback", False),
    ]
    assert storage.inner.peek("c", (API,), 0).records[0].total_hits == 2
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_scripts_fallback_ignores_other_function_errors() -> None:
    fallback = ScriptsFallback(ScriptableStorage())

    assert not fallback.can_recover(RedisFunctionError("x", "load_failed"))
    assert not fallback.can_recover(RedisFunctionError("x", "execution_failed"))
    assert fallback.can_recover(no_functions())


def test_scripts_fallback_without_a_call_declines_after_switching() -> None:
    storage = ScriptableStorage()

    result = ScriptsFallback(storage).recover(no_functions(), CONTEXT)

    assert storage.scripts
    assert not result.recovered
