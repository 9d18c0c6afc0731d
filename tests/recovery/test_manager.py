"""The recovery manager, and the three unit cases of the seed document."""

from __future__ import annotations

import asyncio

import pytest

from sliding_window_throttler import ManualClock, Throttle
from sliding_window_throttler.errors import (
    ConfigurationError,
    RedisConnectionError,
    SecurityViolationError,
    StorageError,
    ThrottlerError,
)
from sliding_window_throttler.recovery import (
    ErrorRecoveryManager,
    FailOpen,
    RecoveryContext,
    RecoveryResult,
    SecurityLockdown,
)

API = Throttle("api", 10, 60)
BURST = Throttle("burst", 3, 1)
CONTEXT = RecoveryContext("client-1", (API, BURST))


def seed_manager(clock: ManualClock | None = None) -> ErrorRecoveryManager:
    """The recovery setup of the seed document's error handler."""
    return ErrorRecoveryManager([FailOpen(), SecurityLockdown(3600, clock=clock)])


# The three unit cases of the seed document.


def test_connection_error_with_fail_open_recovers_unblocked() -> None:
    error = RedisConnectionError("Connection failed")
    error.__cause__ = ConnectionRefusedError("ECONNREFUSED")

    result = seed_manager().recover(error, CONTEXT)

    assert result.recovered
    assert result.degraded
    assert not result.is_blocked
    assert result.strategy == "fail-open"
    assert result.decision is not None and result.decision.allowed


def test_security_violation_with_lockdown_recovers_blocked_for_an_hour() -> None:
    error = SecurityViolationError("Suspicious pattern detected", "rate_abuse")

    result = seed_manager().recover(error, RecoveryContext("suspicious-client", (API,)))

    assert result.recovered
    assert result.is_blocked
    assert result.strategy == "security-lockdown"
    assert result.time_to_block_expire == 3600
    assert result.retry_after == 3600
    assert result.decision is not None
    assert result.decision.records[0].time_to_block_expire == 3600


def test_non_recoverable_error_is_raised_unchanged() -> None:
    error = ThrottlerError("Non-recoverable error", "TEST_ERROR", False)

    with pytest.raises(ThrottlerError, match="Non-recoverable error") as info:
        seed_manager().recover(error, CONTEXT)

    assert info.value is error


# The manager.


def test_foreign_exception_is_raised_unchanged() -> None:
    error = KeyError("boom")

    with pytest.raises(KeyError) as info:
        seed_manager().recover(error)

    assert info.value is error


def test_recoverable_error_no_strategy_handles_is_raised_unchanged() -> None:
    error = RedisConnectionError("down")
    manager = ErrorRecoveryManager([SecurityLockdown()])

    with pytest.raises(RedisConnectionError) as info:
        manager.recover(error, CONTEXT)

    assert info.value is error


def test_available_strategies_are_those_that_can_recover() -> None:
    fail_open, lockdown = FailOpen(), SecurityLockdown()
    manager = ErrorRecoveryManager([fail_open])
    manager.add_strategy(lockdown)

    assert manager.get_available_strategies(RedisConnectionError("x")) == [fail_open]
    assert manager.get_available_strategies(SecurityViolationError("x", "y")) == [
        lockdown
    ]
    assert manager.get_available_strategies(ValueError()) == []
    assert manager.get_available_strategies() == [fail_open, lockdown]


class Declining:
    """Declines every storage error, handing a newer error on."""

    name = "declining"

    def __init__(self) -> None:
        self.seen: list[ThrottlerError] = []

    def can_recover(self, error: ThrottlerError) -> bool:
        return isinstance(error, StorageError)

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        self.seen.append(error)
        return RecoveryResult(False, self.name, error=RedisConnectionError("newer"))


def test_declined_error_passes_to_the_next_strategy() -> None:
    declining = Declining()
    seen: list[str] = []

    class Recording(FailOpen):
        def recover(
            self, error: ThrottlerError, context: RecoveryContext
        ) -> RecoveryResult:
            seen.append(error.message)
            return super().recover(error, context)

    manager = ErrorRecoveryManager([declining, Recording()])

    result = manager.recover(RedisConnectionError("first"), CONTEXT)

    assert result.strategy == "fail-open"
    assert [e.message for e in declining.seen] == ["first"]
    assert seen == ["newer"]


def test_last_error_is_raised_when_every_strategy_declines() -> None:
    manager = ErrorRecoveryManager([Declining()])

    with pytest.raises(RedisConnectionError, match="newer"):
        manager.recover(RedisConnectionError("first"), CONTEXT)


def test_strategy_without_recover_is_refused() -> None:
    class Nameless:
        name = "nameless"

        def can_recover(self, error: ThrottlerError) -> bool:
            return True

    with pytest.raises(ConfigurationError, match="no recover"):
        ErrorRecoveryManager([Nameless()])  # type: ignore[list-item]


class AsyncFailOpen:
    """A user's async-only strategy."""

    name = "async-fail-open"

    def can_recover(self, error: ThrottlerError) -> bool:
        return True

    async def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        await asyncio.sleep(0)
        return FailOpen().recover(error, context)


def test_async_only_strategy_is_awaited_by_arecover() -> None:
    manager = ErrorRecoveryManager([AsyncFailOpen()])

    result = asyncio.run(manager.arecover(RedisConnectionError("x"), CONTEXT))

    assert result.recovered and result.decision is not None
    assert result.decision.allowed


def test_async_only_strategy_is_refused_by_sync_recover() -> None:
    manager = ErrorRecoveryManager([AsyncFailOpen()])

    with pytest.raises(ConfigurationError, match="async only"):
        manager.recover(RedisConnectionError("x"), CONTEXT)


def test_arecover_runs_sync_strategies_and_reraises_like_recover() -> None:
    manager = seed_manager()
    error = ThrottlerError("fatal")

    result = asyncio.run(manager.arecover(RedisConnectionError("x"), CONTEXT))
    assert result.strategy == "fail-open"

    with pytest.raises(ThrottlerError) as info:
        asyncio.run(manager.arecover(error, CONTEXT))

    assert info.value is error
