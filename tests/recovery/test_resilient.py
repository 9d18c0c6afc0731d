"""ResilientStorage and AsyncResilientStorage around a storage that fails."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from recovery_fakes import (
    AsyncFlakyStorage,
    FlakyStorage,
    out_of_memory,
    pool_full,
    refused,
    timed_out,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

from sliding_window_throttler import (
    AsyncMemoryStorage,
    AsyncThrottler,
    Decision,
    ManualClock,
    MemoryStorage,
    RedisStorage,
    Throttle,
    Throttler,
)
from sliding_window_throttler.errors import (
    ConfigurationError,
    RedisConnectionError,
    RedisFunctionError,
    SecurityViolationError,
    StorageError,
    StorageOperationError,
    StorageUnavailableError,
    ThrottlerError,
)
from sliding_window_throttler.recovery import (
    AsyncResilientStorage,
    BreakerState,
    CircuitBreaker,
    ExponentialBackoff,
    FailOpen,
    LocalFallback,
    RecoveryContext,
    RecoveryResult,
    ResilientStorage,
    RetryWithBackoff,
    SecurityLockdown,
    make_failure_strategy,
)
from sliding_window_throttler.storage.base import StorageHealth

API = Throttle("api", 10, 60)
FIVE = Throttle("five", "5/minute")
NO_RETRY = ExponentialBackoff(max_attempts=1)
THROTTLES = (API,)


def make(
    strategy: str = "fail-open",
    *,
    storage: FlakyStorage | None = None,
    retry: ExponentialBackoff | RetryWithBackoff = NO_RETRY,
    lockdown: SecurityLockdown | None = None,
) -> tuple[FlakyStorage, ResilientStorage, ManualClock]:
    clock = ManualClock()
    storage = (
        storage if storage is not None else FlakyStorage(MemoryStorage(clock=clock))
    )
    resilient = ResilientStorage(
        storage,
        failure_strategy=strategy,
        breaker=CircuitBreaker(failure_threshold=3, cool_down=5),
        retry=retry,
        lockdown=lockdown,
        clock=clock,
    )
    return storage, resilient, clock


def hits(resilient: ResilientStorage, count: int, who: str = "c") -> list[Decision]:
    return [resilient.hit(who, THROTTLES, 1) for _ in range(count)]


def test_healthy_storage_decides_unmarked() -> None:
    storage, resilient, _ = make()

    decisions = hits(resilient, 11)

    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert not any(d.degraded for d in decisions)
    assert storage.calls == 11
    assert resilient.stats().degraded_total == 0


def test_fail_open_admits_and_marks_every_decision_while_down() -> None:
    storage, resilient, _ = make("fail-open")
    storage.fail(refused)

    decisions = hits(resilient, 20)

    assert all(d.allowed and d.degraded for d in decisions)
    assert {d.strategy for d in decisions} == {"fail-open"}
    stats = resilient.stats()
    assert stats.degraded_total == 20
    assert stats.degraded_by_strategy == {"fail-open": 20}
    assert stats.errors_by_code == {"REDIS_CONNECTION_FAILED": 3}
    assert stats.breaker.state is BreakerState.OPEN


def test_open_breaker_stops_calling_the_storage() -> None:
    storage, resilient, clock = make()
    storage.fail(refused)

    hits(resilient, 3)
    hits(resilient, 50)
    clock.advance(4.9)
    hits(resilient, 50)

    assert storage.calls == 3


def test_probe_after_the_cool_down_restores_normal_decisions() -> None:
    storage, resilient, clock = make()
    storage.fail(refused)
    hits(resilient, 5)
    storage.heal()

    assert hits(resilient, 1)[0].degraded
    clock.advance(5)
    decision = resilient.hit("c", THROTTLES, 1)

    assert not decision.degraded
    assert resilient.breaker.state is BreakerState.CLOSED
    assert not any(d.degraded for d in hits(resilient, 3))


def test_failed_probe_keeps_the_breaker_open_for_another_cool_down() -> None:
    storage, resilient, clock = make()
    storage.fail(refused)
    hits(resilient, 3)

    clock.advance(5)
    hits(resilient, 10)
    clock.advance(4.9)
    hits(resilient, 10)

    assert storage.calls == 4
    assert resilient.breaker.state is BreakerState.OPEN


def test_state_changes_are_logged_once_and_requests_never_above_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="sliding_window_throttler")
    storage, resilient, clock = make()
    storage.fail(refused)
    hits(resilient, 100)
    for _ in range(3):
        clock.advance(5)
        hits(resilient, 100)

    storage.heal()
    clock.advance(5)
    hits(resilient, 100)

    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno > 10]
    assert [level for level, _ in loud] == ["WARNING", "WARNING", "INFO", "INFO"]
    assert "decisions now follow the 'fail-open' strategy" in loud[0][1]
    assert "circuit breaker open after 3 consecutive" in loud[1][1]
    assert "circuit breaker closed" in loud[2][1]
    assert "after 400 degraded decisions" in loud[3][1]


def test_fail_closed_refuses_with_a_503_error() -> None:
    storage, resilient, _ = make("fail-closed")
    storage.fail(refused)

    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert isinstance(info.value.__cause__, RedisConnectionError)
    assert info.value.strategy == "fail-closed"


def test_fail_closed_while_open_says_when_to_retry() -> None:
    storage, resilient, clock = make("fail-closed")
    storage.fail(refused)
    for _ in range(3):
        with pytest.raises(StorageUnavailableError):
            resilient.hit("c", THROTTLES, 1)

    clock.advance(1)
    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert info.value.retry_after == 4.0
    breaker_error = info.value.__cause__
    assert isinstance(breaker_error, StorageUnavailableError)
    assert breaker_error.context["reason"] == "circuit_open"
    assert isinstance(breaker_error.__cause__, RedisConnectionError)
    assert storage.calls == 3
    assert resilient.stats().refused_total == 4


def test_fail_closed_retry_after_is_the_time_left_in_the_cool_down() -> None:
    storage, resilient, clock = make("fail-closed")
    storage.fail(refused)
    for _ in range(3):
        with pytest.raises(StorageUnavailableError):
            resilient.hit("c", THROTTLES, 1)

    waits = []
    for step in (2.71, 1.29, 0.999):
        clock.advance(step)
        with pytest.raises(StorageUnavailableError) as info:
            resilient.hit("c", THROTTLES, 1)

        waits.append(info.value.retry_after)

    assert waits == [2.29, 1.0, 0.001]
    assert storage.calls == 3


def test_fail_closed_before_the_breaker_opens_asks_for_one_second() -> None:
    storage, resilient, _ = make("fail-closed")
    storage.fail(refused, times=1)

    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert info.value.retry_after == 1.0
    assert info.value.context["retry_after"] == 1.0
    assert resilient.breaker.state is BreakerState.CLOSED


def test_first_failure_wait_is_at_most_the_cool_down() -> None:
    storage = FlakyStorage()
    resilient = ResilientStorage(
        storage,
        failure_strategy="fail-closed",
        breaker=CircuitBreaker(cool_down="300ms"),
        retry=NO_RETRY,
    )
    storage.fail(refused)

    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert info.value.retry_after == 0.3


def test_fail_closed_while_a_probe_runs_asks_for_one_second() -> None:
    storage, resilient, clock = make("fail-closed")
    storage.fail(refused)
    for _ in range(3):
        with pytest.raises(StorageUnavailableError):
            resilient.hit("c", THROTTLES, 1)

    clock.advance(5)
    probe = resilient.breaker.allow(clock.now_us())  # another caller's probe
    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert probe.probe > 0
    assert resilient.breaker.state is BreakerState.HALF_OPEN
    assert info.value.retry_after == 1.0
    assert storage.calls == 3


def test_local_fallback_keeps_enforcing_then_hands_back() -> None:
    storage, resilient, clock = make("local")
    hits(resilient, 4)
    storage.fail(refused)

    down = hits(resilient, 12)

    assert [d.allowed for d in down] == [True] * 10 + [False] * 2
    assert all(d.degraded and d.strategy == "local" for d in down)

    storage.heal()
    clock.advance(5)
    back = hits(resilient, 7)

    assert [d.allowed for d in back] == [True] * 6 + [False]
    assert not any(d.degraded for d in back)


def test_timed_out_hit_is_not_retried_nor_counted_twice() -> None:
    clock = ManualClock()
    storage = FlakyStorage(MemoryStorage(clock=clock))
    retry = RetryWithBackoff(ExponentialBackoff(3), sleep=clock.advance)
    _, resilient, _ = make(storage=storage, retry=retry)
    storage.fail(timed_out, times=1)
    storage.counted_then = True

    decision = resilient.hit("c", THROTTLES, 1)

    assert decision.degraded
    assert storage.calls == 1
    assert storage.inner.peek("c", THROTTLES, 0).records[0].total_hits == 1


def test_refused_connection_is_retried_to_a_normal_decision() -> None:
    clock = ManualClock()
    storage = FlakyStorage(MemoryStorage(clock=clock))
    retry = RetryWithBackoff(ExponentialBackoff(3), sleep=clock.advance)
    _, resilient, _ = make(storage=storage, retry=retry)
    storage.fail(refused, times=1)

    decision = resilient.hit("c", THROTTLES, 1)

    assert not decision.degraded
    assert storage.calls == 2
    assert storage.inner.peek("c", THROTTLES, 0).records[0].total_hits == 1


def test_retries_stop_when_the_breaker_opens() -> None:
    clock = ManualClock()
    storage = FlakyStorage(MemoryStorage(clock=clock))
    retry = RetryWithBackoff(
        ExponentialBackoff(10, 0.001, 0.001, 0, attempt_timeout=0.001),
        sleep=clock.advance,
    )
    _, resilient, _ = make(storage=storage, retry=retry)
    storage.fail(refused)

    decision = resilient.hit("c", THROTTLES, 1)

    assert decision.degraded
    assert storage.calls == 3


def test_operation_error_goes_to_the_strategy_without_opening_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage, resilient, _ = make()
    storage.fail(out_of_memory)

    decisions = hits(resilient, 10)

    assert all(d.degraded for d in decisions)
    assert storage.calls == 10
    assert resilient.breaker.state is BreakerState.CLOSED
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "maxmemory" in warnings[0].getMessage()


def test_a_full_pool_between_failures_leaves_the_breaker_count_as_it_was() -> None:
    # While Redis stalls, calls that find the pool full say nothing of Redis:
    # they must not reset the count of the calls that timed out.
    storage, resilient, _ = make()
    for failure in (timed_out, timed_out, pool_full, pool_full):
        storage.fail(failure)
        assert resilient.hit("c", THROTTLES, 1).degraded

    assert resilient.breaker.state is BreakerState.CLOSED
    storage.fail(timed_out)
    resilient.hit("c", THROTTLES, 1)

    assert resilient.breaker.state is BreakerState.OPEN


def test_non_recoverable_storage_error_reaches_the_caller_unchanged() -> None:
    error = RedisFunctionError("bad reply", "execution_failed")
    storage, resilient, _ = make()
    storage.fail(lambda: error)

    with pytest.raises(RedisFunctionError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert info.value is error
    assert resilient.stats().refused_total == 1


def test_peek_follows_the_strategy_too() -> None:
    storage, resilient, _ = make()
    storage.fail(refused)

    decision = resilient.peek("c", THROTTLES, 1)

    assert decision.allowed and decision.degraded


def test_lockdown_refuses_the_client_before_the_storage() -> None:
    clock = ManualClock()
    storage = FlakyStorage(MemoryStorage(clock=clock))
    lockdown = SecurityLockdown(60, clock=clock)
    _, resilient, _ = make(storage=storage, lockdown=lockdown)
    violation = SecurityViolationError("abuse", "rate_abuse")

    result = resilient.recovery.recover(violation, RecoveryContext("bad", THROTTLES))
    refused_hit = resilient.hit("bad", THROTTLES, 1)
    other = resilient.hit("good", THROTTLES, 1)

    assert result.is_blocked
    assert not refused_hit.allowed
    assert refused_hit.strategy == "security-lockdown"
    assert other.allowed
    assert storage.calls == 1

    resilient.reset("bad")
    assert resilient.hit("bad", THROTTLES, 1).allowed


def test_reset_is_refused_while_the_breaker_is_open() -> None:
    storage, resilient, _ = make()
    storage.fail(refused)
    hits(resilient, 3)

    with pytest.raises(StorageUnavailableError):
        resilient.reset("c")

    assert storage.calls == 3


def test_reset_errors_are_raised_and_counted() -> None:
    storage, resilient, _ = make()
    storage.fail(out_of_memory)

    with pytest.raises(StorageOperationError):
        resilient.reset("c", THROTTLES)

    assert resilient.stats().errors_by_code == {"STORAGE_OPERATION_FAILED": 1}


def test_reset_also_forgets_local_hits() -> None:
    storage, resilient, _ = make("local")
    storage.fail(refused, times=2)
    hits(resilient, 2)

    resilient.reset("c")

    local = resilient.failure_strategy
    assert isinstance(local, LocalFallback)
    assert local.stats().pairs == 0


def test_close_closes_the_primary() -> None:
    storage, resilient, _ = make()

    resilient.close()

    assert storage.closed


def test_unknown_failure_strategy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        make_failure_strategy("fail-sometimes")

    assert info.value.field == "failure_strategy"
    assert "fail-open, fail-closed, local" in info.value.message


def test_strategy_objects_are_accepted_as_they_are() -> None:
    strategy = FailOpen()

    assert make_failure_strategy(strategy) is strategy


def test_from_settings_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "local")
    monkeypatch.setenv("SWT_APP_SERVERS", "5")
    monkeypatch.setenv("SWT_BREAKER_FAILURE_THRESHOLD", "2")
    monkeypatch.setenv("SWT_BREAKER_COOL_DOWN", "250ms")

    resilient = ResilientStorage.from_settings(FlakyStorage())

    local = resilient.failure_strategy
    assert isinstance(local, LocalFallback) and local.app_servers == 5
    assert resilient.breaker.failure_threshold == 2
    assert resilient.breaker.cool_down_us == 250_000


# The facades.


def test_throttler_wraps_the_storage_when_asked() -> None:
    storage = FlakyStorage()
    throttler = Throttler(storage, failure_strategy="fail-open")
    storage.fail(refused)

    decision = throttler.hit("c", API)

    assert isinstance(throttler.storage, ResilientStorage)
    assert decision.allowed and decision.degraded


def test_throttler_wraps_a_storage_that_can_fail_by_default() -> None:
    storage = FlakyStorage()
    storage.fail(refused)
    throttler = Throttler(storage)

    with pytest.raises(StorageUnavailableError) as info:
        throttler.hit("c", API)

    wrapped = throttler.storage
    assert isinstance(wrapped, ResilientStorage)
    assert wrapped.primary is storage
    assert wrapped.failure_strategy.name == "fail-closed"
    assert (wrapped.breaker.failure_threshold, wrapped.breaker.cool_down_us) == (
        5,
        5_000_000,
    )
    assert info.value.retry_after == 1.0
    assert isinstance(info.value.__cause__, RedisConnectionError)


def test_throttler_takes_its_failure_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "local")
    monkeypatch.setenv("SWT_APP_SERVERS", "3")
    monkeypatch.setenv("SWT_BREAKER_FAILURE_THRESHOLD", "2")
    monkeypatch.setenv("SWT_BREAKER_COOL_DOWN", "250ms")
    monkeypatch.setenv("SWT_RETRY_ATTEMPTS", "1")
    storage = FlakyStorage()
    storage.fail(refused)
    throttler = Throttler(storage)

    allowed = [throttler.hit("c", FIVE).allowed for _ in range(3)]

    wrapped = throttler.storage
    assert isinstance(wrapped, ResilientStorage)
    local = wrapped.failure_strategy
    assert isinstance(local, LocalFallback) and local.app_servers == 3
    assert (wrapped.breaker.failure_threshold, wrapped.breaker.cool_down_us) == (
        2,
        250_000,
    )
    assert allowed == [True, True, False]
    assert storage.calls == 2


def test_fail_open_from_the_environment_wraps_a_bare_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-open")
    storage = FlakyStorage()
    storage.fail(refused)

    decision = Throttler(storage).hit("c", API)

    assert (decision.allowed, decision.degraded, decision.strategy) == (
        True,
        True,
        "fail-open",
    )


def test_explicit_arguments_win_and_their_variables_are_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-sometimes")
    monkeypatch.setenv("SWT_APP_SERVERS", "0")
    monkeypatch.setenv("SWT_BREAKER_COOL_DOWN", "soon")
    monkeypatch.setenv("SWT_DEADLINE", "soon")
    monkeypatch.setenv("SWT_RETRY_ATTEMPTS", "many")
    monkeypatch.setenv("SWT_COMMAND_TIMEOUT", "-1")

    throttler = Throttler(
        FlakyStorage(),
        failure_strategy="local",
        app_servers=4,
        breaker=CircuitBreaker(2, "1s"),
        deadline="100ms",
        retry=NO_RETRY,
    )

    wrapped = throttler.storage
    assert isinstance(wrapped, ResilientStorage)
    local = wrapped.failure_strategy
    assert isinstance(local, LocalFallback) and local.app_servers == 4
    assert wrapped.breaker.cool_down_us == 1_000_000


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("FAILURE_STRATEGY", "fail-sometimes", "failure_strategy"),
        ("SWT_DEADLINE", "soon", "deadline"),
        ("SWT_APP_SERVERS", "0", "app_servers"),
        ("SWT_BREAKER_COOL_DOWN", "0", "breaker_cool_down"),
    ],
)
def test_a_bad_variable_is_a_configuration_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError) as sync_info:
        Throttler(FlakyStorage())

    with pytest.raises(ConfigurationError) as async_info:
        AsyncThrottler(AsyncFlakyStorage())

    for info in (sync_info, async_info):
        assert info.value.field == field
        assert name in info.value.message
        assert repr(value) in info.value.message


def test_memory_storages_stay_bare_and_ignore_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-open")
    monkeypatch.setenv("SWT_DEADLINE", "soon")
    memory = MemoryStorage()
    async_memory = AsyncMemoryStorage()

    assert Throttler(memory).storage is memory
    assert Throttler(memory, failure_strategy="local").storage is memory
    assert type(Throttler().storage) is MemoryStorage
    assert AsyncThrottler(async_memory).storage is async_memory
    assert type(AsyncThrottler().storage) is AsyncMemoryStorage


def test_resilient_true_wraps_even_a_memory_storage() -> None:
    memory = MemoryStorage()

    throttler = Throttler(memory, resilient=True, failure_strategy="fail-open")

    assert isinstance(throttler.storage, ResilientStorage)
    assert throttler.storage.primary is memory


def test_resilient_false_leaves_the_storage_bare() -> None:
    storage = FlakyStorage()
    storage.fail(refused)
    throttler = Throttler(storage, resilient=False)
    async_storage = AsyncFlakyStorage()

    assert throttler.storage is storage
    assert AsyncThrottler(async_storage, resilient=False).storage is async_storage
    with pytest.raises(RedisConnectionError):
        throttler.hit("c", API)


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        (
            {"resilient": False, "failure_strategy": "fail-open"},
            "resilient",
            "failure_strategy=",
        ),
        ({"resilient": False, "app_servers": 2}, "resilient", "app_servers="),
        ({"resilient": "yes"}, "resilient", "'yes'"),
        ({"app_servers": 0}, "app_servers", "at least 1, got 0"),
        ({"app_servers": 2.5, "failure_strategy": "fail-open"}, "app_servers", "2.5"),
    ],
)
def test_contradictory_or_bad_facade_arguments_are_refused(
    kwargs: dict[str, object], field: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Throttler(FlakyStorage(), **kwargs)  # type: ignore[arg-type]

    assert info.value.field == field
    assert shown in info.value.message


def test_an_already_resilient_storage_is_not_wrapped_again() -> None:
    resilient = ResilientStorage(FlakyStorage())

    assert Throttler(resilient).storage is resilient
    with pytest.raises(ConfigurationError) as info:
        Throttler(resilient, failure_strategy="fail-open")

    assert info.value.field == "storage"
    assert "ResilientStorage already: give failure_strategy=" in info.value.message


def test_local_strategy_divides_limits_among_the_app_servers_of_the_facade() -> None:
    storage = FlakyStorage()
    storage.fail(refused)
    throttler = Throttler(
        storage, failure_strategy="local", app_servers=3, retry=NO_RETRY
    )
    async_storage = AsyncFlakyStorage()
    async_storage.sync.fail(refused)
    async_throttler = AsyncThrottler(
        async_storage, failure_strategy="local", app_servers=3, retry=NO_RETRY
    )

    async def async_hits() -> list[bool]:
        return [(await async_throttler.hit("c", FIVE)).allowed for _ in range(3)]

    assert [throttler.hit("c", FIVE).allowed for _ in range(3)] == [True, True, False]
    assert asyncio.run(async_hits()) == [True, True, False]


def test_async_throttler_wraps_the_storage_when_asked() -> None:
    storage = AsyncFlakyStorage()
    throttler = AsyncThrottler(storage, breaker=CircuitBreaker(2))
    storage.sync.fail(refused)

    with pytest.raises(StorageUnavailableError):
        asyncio.run(throttler.hit("c", API))

    assert isinstance(throttler.storage, AsyncResilientStorage)


# The async face.


def make_async(
    strategy: str = "fail-open", deadline: float | None = 0.1
) -> tuple[AsyncFlakyStorage, AsyncResilientStorage, ManualClock]:
    clock = ManualClock()
    storage = AsyncFlakyStorage(FlakyStorage(MemoryStorage(clock=clock)))
    resilient = AsyncResilientStorage(
        storage,
        failure_strategy=strategy,
        breaker=CircuitBreaker(failure_threshold=3, cool_down=5),
        retry=NO_RETRY,
        deadline=deadline,
        clock=clock,
    )
    return storage, resilient, clock


def test_async_face_degrades_opens_and_restores() -> None:
    storage, resilient, clock = make_async("local")

    async def scenario() -> list[Decision]:
        storage.sync.fail(refused)
        down = [await resilient.hit("c", THROTTLES, 1) for _ in range(12)]
        storage.sync.heal()
        clock.advance(5)
        back = [await resilient.hit("c", THROTTLES, 1) for _ in range(2)]
        await resilient.close()
        return down + back

    decisions = asyncio.run(scenario())

    assert [d.allowed for d in decisions[:12]] == [True] * 10 + [False] * 2
    assert all(d.degraded for d in decisions[:12])
    assert not any(d.degraded for d in decisions[12:])
    assert storage.sync.calls == 3 + 2
    assert storage.sync.closed


class HangingStorage(AsyncFlakyStorage):
    """An async storage whose hits never answer (a stalled Redis)."""

    async def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        self.sync.calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_async_face_cuts_a_hanging_call_at_the_deadline() -> None:
    storage = HangingStorage()
    resilient = AsyncResilientStorage(
        storage,
        failure_strategy="fail-open",
        retry=ExponentialBackoff(3),
        deadline=0.05,
    )

    async def timed() -> tuple[Decision, float]:
        start = time.monotonic()
        decision = await resilient.hit("c", THROTTLES, 1)
        return decision, time.monotonic() - start

    decision, elapsed = asyncio.run(timed())

    assert decision.degraded
    assert elapsed < 0.05 + 0.5
    assert storage.sync.calls == 1
    assert resilient.stats().errors_by_code == {"REDIS_TIMEOUT": 1}


def test_async_fail_closed_raises_unavailable() -> None:
    storage, resilient, _ = make_async("fail-closed")
    storage.sync.fail(refused)

    with pytest.raises(StorageUnavailableError):
        asyncio.run(resilient.peek("c", THROTTLES, 1))


def test_async_reset_goes_to_the_storage() -> None:
    _, resilient, _ = make_async()

    async def scenario() -> Decision:
        await resilient.hit("c", THROTTLES, 1)
        await resilient.reset("c")
        return await resilient.peek("c", THROTTLES, 0)

    assert asyncio.run(scenario()).records[0].total_hits == 0


class Watching:
    """An extra strategy that sees every storage error and declines."""

    name = "watching"

    def __init__(self) -> None:
        self.codes: list[str] = []

    def can_recover(self, error: ThrottlerError) -> bool:
        return isinstance(error, StorageError)

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        self.codes.append(str(error.code))
        return RecoveryResult(False, self.name, error=error)


def test_extra_strategies_see_errors_before_the_failure_strategy() -> None:
    clock = ManualClock()
    storage = FlakyStorage(MemoryStorage(clock=clock))
    watching = Watching()
    resilient = ResilientStorage(
        storage,
        failure_strategy="fail-open",
        breaker=CircuitBreaker(failure_threshold=2, cool_down=5),
        retry=NO_RETRY,
        strategies=[watching],
        clock=clock,
    )
    storage.fail(refused)

    decisions = hits(resilient, 4)

    assert all(d.degraded and d.strategy == "fail-open" for d in decisions)
    assert (
        watching.codes == ["REDIS_CONNECTION_FAILED"] * 2 + ["STORAGE_UNAVAILABLE"] * 2
    )


def test_counters_hold_under_threads() -> None:
    storage, resilient, _ = make("local")
    storage.fail(refused)

    def worker(n: int) -> None:
        for _ in range(500):
            resilient.hit(f"client-{n}", THROTTLES, 1)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()

    for thread in threads:
        thread.join()

    stats = resilient.stats()
    assert stats.degraded_total == 8 * 500
    assert stats.degraded_by_strategy == {"local": 8 * 500}
    assert storage.calls == 3


def test_async_face_retries_a_refused_connection_to_a_normal_decision() -> None:
    clock = ManualClock()
    storage = AsyncFlakyStorage(FlakyStorage(MemoryStorage(clock=clock)))

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    resilient = AsyncResilientStorage(
        storage,
        failure_strategy="fail-closed",
        retry=RetryWithBackoff(ExponentialBackoff(3), async_sleep=sleep),
        clock=clock,
    )
    storage.sync.fail(refused, times=1)

    decision = asyncio.run(resilient.hit("c", THROTTLES, 1))

    assert not decision.degraded
    assert storage.sync.calls == 2


# Only the probe's answer ends an outage.


class HeldStorage(FlakyStorage):
    """A flaky storage whose next call waits until released (a slow command)."""

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        super().__init__(inner)
        self.hold_next = False
        self.held = threading.Event()
        self.release = threading.Event()
        self.held_answer: Callable[[], Exception] | None = None

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        if not self.hold_next:
            return super().hit(identifier, throttles, cost, now_us)

        self.hold_next = False
        self.calls += 1
        self.held.set()
        assert self.release.wait(10)
        if self.held_answer is not None:
            raise self.held_answer()

        return self.inner.hit(identifier, throttles, cost, now_us)


@pytest.mark.parametrize(
    ("late_answer", "degraded"), [(None, False), (out_of_memory, True)]
)
def test_a_slow_call_from_before_the_breaker_opened_cannot_close_it(
    late_answer: Callable[[], Exception] | None, degraded: bool
) -> None:
    storage = HeldStorage()
    _, resilient, clock = make(storage=storage)
    storage.hold_next = True
    storage.held_answer = late_answer
    slow: list[Decision] = []
    thread = threading.Thread(
        target=lambda: slow.append(resilient.hit("c", THROTTLES, 1))
    )
    thread.start()
    assert storage.held.wait(10)

    storage.fail(refused)
    hits(resilient, 3)
    storage.release.set()
    thread.join()
    during = hits(resilient, 20)

    assert slow[0].degraded is degraded
    stats = resilient.stats()
    assert stats.breaker.state is BreakerState.OPEN
    assert stats.breaker.opened_total == 1
    assert stats.breaker.retry_after == 5.0
    assert all(d.degraded for d in during)
    assert storage.calls == 4

    storage.heal()
    clock.advance(5)
    assert not resilient.hit("c", THROTTLES, 1).degraded
    assert resilient.breaker.state is BreakerState.CLOSED
    assert storage.calls == 5


def test_a_probe_that_raises_another_error_is_released() -> None:
    storage, resilient, clock = make()
    storage.fail(refused)
    hits(resilient, 3)
    clock.advance(5)
    storage.fail(lambda: ConfigurationError("throttles", "limit too high"), times=1)

    with pytest.raises(ConfigurationError):
        resilient.hit("c", THROTTLES, 1)

    decision = resilient.hit("c", THROTTLES, 1)

    assert not decision.degraded
    assert resilient.breaker.state is BreakerState.CLOSED
    assert storage.calls == 5


def test_async_probe_that_raises_another_error_is_released() -> None:
    storage, resilient, clock = make_async()

    async def scenario() -> Decision:
        storage.sync.fail(refused)
        for _ in range(3):
            await resilient.hit("c", THROTTLES, 1)

        clock.advance(5)
        storage.sync.fail(lambda: ConfigurationError("throttles", "x"), times=1)
        with pytest.raises(ConfigurationError):
            await resilient.hit("c", THROTTLES, 1)

        return await resilient.hit("c", THROTTLES, 1)

    decision = asyncio.run(scenario())

    assert not decision.degraded
    assert resilient.breaker.state is BreakerState.CLOSED
    assert storage.sync.calls == 5


def test_a_cancelled_async_probe_is_released() -> None:
    clock = ManualClock()
    storage = HangingStorage(FlakyStorage(MemoryStorage(clock=clock)))
    resilient = AsyncResilientStorage(
        storage,
        failure_strategy="fail-open",
        breaker=CircuitBreaker(failure_threshold=1, cool_down=5),
        retry=NO_RETRY,
        deadline=None,
        clock=clock,
    )
    resilient.breaker.record_failure(clock.now_us())
    clock.advance(5)

    async def scenario() -> Decision:
        probe = asyncio.create_task(resilient.hit("c", THROTTLES, 1))
        await asyncio.sleep(0)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe

        return await resilient.peek("c", THROTTLES, 1)

    decision = asyncio.run(scenario())

    assert not decision.degraded
    assert resilient.breaker.state is BreakerState.CLOSED
    assert storage.sync.calls == 2


# Health.


class CheckedStorage(FlakyStorage):
    """A flaky storage with a health check, as the Redis storage has."""

    report = StorageHealth(True, "redis", "PING answered", 0.25, True, True)

    def health(self) -> StorageHealth:
        return self.report


class AsyncCheckedStorage(AsyncFlakyStorage):
    async def health(self) -> StorageHealth:
        await asyncio.sleep(0)
        return CheckedStorage.report


def test_health_is_the_primary_s_with_the_breaker_state() -> None:
    storage = CheckedStorage()
    _, resilient, clock = make(storage=storage)

    closed = resilient.health()
    storage.fail(refused)
    hits(resilient, 3)
    clock.advance(2.71)
    opened = resilient.health()
    clock.advance(2.29)
    resilient.breaker.allow(clock.now_us())
    half_open = resilient.health()

    assert closed == replace(CheckedStorage.report, breaker="closed")
    assert opened == StorageHealth(
        False,
        "redis",
        "PING answered; circuit breaker open: the storage is not asked for "
        "2.29s more, and the 'fail-open' strategy decides meanwhile",
        0.25,
        True,
        True,
        "open",
    )
    assert half_open == replace(
        opened,
        breaker="half-open",
        detail="PING answered; circuit breaker half-open: one probe call checks "
        "whether the storage is back, and the 'fail-open' strategy decides "
        "meanwhile",
    )


def test_health_copes_with_a_primary_without_a_check_or_whose_check_raises() -> None:
    class Raising(FlakyStorage):
        def health(self) -> StorageHealth:
            raise RuntimeError("boom")

    bare = ResilientStorage(FlakyStorage()).health()
    raising = ResilientStorage(Raising()).health()

    assert bare == StorageHealth(
        True,
        "FlakyStorage",
        "FlakyStorage was not checked: it has no health()",
        breaker="closed",
    )
    assert raising == StorageHealth(
        False, "Raising", "Raising.health() raised RuntimeError: boom", breaker="closed"
    )


def test_async_health_awaits_the_primary_s_check() -> None:
    checked = AsyncResilientStorage(AsyncCheckedStorage())
    unchecked = AsyncResilientStorage(AsyncFlakyStorage())

    async def scenario() -> tuple[StorageHealth, StorageHealth]:
        return await checked.health(), await unchecked.health()

    got_checked, got_unchecked = asyncio.run(scenario())

    assert got_checked == replace(CheckedStorage.report, breaker="closed")
    assert got_unchecked.healthy and got_unchecked.breaker == "closed"
    assert got_unchecked.detail == (
        "AsyncFlakyStorage was not checked: it has no health()"
    )


def test_facades_report_the_health_of_their_storage() -> None:
    storage = CheckedStorage()
    throttler = Throttler(storage, failure_strategy="fail-open", retry=NO_RETRY)
    async_throttler = AsyncThrottler(AsyncCheckedStorage())
    storage.fail(refused)
    for _ in range(5):
        throttler.hit("c", API)

    health = throttler.health()
    async_health = asyncio.run(async_throttler.health())

    assert (health.healthy, health.breaker, health.backend) == (False, "open", "redis")
    assert async_health == replace(CheckedStorage.report, breaker="closed")


def test_a_sync_face_does_not_await_an_async_check() -> None:
    from sliding_window_throttler.recovery import storage_health

    health = storage_health(AsyncCheckedStorage())

    assert health == StorageHealth(
        True,
        "AsyncCheckedStorage",
        "AsyncCheckedStorage was not checked: its health() must be awaited",
    )


def test_async_face_lets_a_callers_own_cancellation_through() -> None:
    # A cancellation that is not the deadline's (the caller gave up) is the
    # caller's: it must stay a CancelledError, not become a storage timeout.
    storage = HangingStorage()
    resilient = AsyncResilientStorage(storage, failure_strategy="fail-open", deadline=5)

    async def scenario() -> str:
        task = asyncio.create_task(resilient.hit("c", THROTTLES, 1))
        await asyncio.sleep(0.02)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"

        return "finished"

    assert asyncio.run(scenario()) == "cancelled"
    assert resilient.stats().errors_by_code == {}
    assert resilient.stats().degraded_total == 0


# Deadlines must be above 0: a zero deadline times every call out.


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        (0, "deadline must be above 0 (None for no deadline), got 0"),
        (0.0, "deadline must be above 0 (None for no deadline), got 0.0"),
        ("0ms", "deadline must be above 0 (None for no deadline), got '0ms'"),
        (
            timedelta(0),
            "deadline must be above 0 (None for no deadline), "
            "got datetime.timedelta(0)",
        ),
        (-1, "deadline must not be negative, got -1"),
    ],
)
def test_a_deadline_not_above_zero_is_refused_by_every_face(
    deadline: float | str | timedelta, message: str
) -> None:
    makers: list[Callable[[], object]] = [
        lambda: ResilientStorage(FlakyStorage(), deadline=deadline),
        lambda: AsyncResilientStorage(AsyncFlakyStorage(), deadline=deadline),
        lambda: Throttler(FlakyStorage(), deadline=deadline),
        lambda: AsyncThrottler(AsyncFlakyStorage(), deadline=deadline),
    ]
    for make_face in makers:
        with pytest.raises(ConfigurationError) as info:
            make_face()

        assert (info.value.field, info.value.message) == ("deadline", message)


def test_a_deadline_of_none_means_no_deadline() -> None:
    _, resilient, _ = make_async(deadline=None)

    decision = asyncio.run(resilient.hit("c", THROTTLES, 1))

    assert (decision.allowed, decision.degraded) == (True, False)


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"breaker": "nope"},
            "breaker",
            "breaker must be a CircuitBreaker, got 'nope'",
        ),
        (
            {"retry": 2},
            "retry",
            "retry must be an ExponentialBackoff or a RetryWithBackoff, got 2",
        ),
        (
            {"failure_strategy": 42},
            "failure_strategy",
            "failure_strategy must be one of fail-open, fail-closed, local or a "
            "recovery strategy (name, can_recover, recover); int has no name, "
            "can_recover, recover",
        ),
    ],
)
def test_a_resilient_storage_refuses_objects_of_the_wrong_kind(
    kwargs: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        ResilientStorage(FlakyStorage(), **kwargs)  # type: ignore[arg-type]

    assert (info.value.field, info.value.message) == (field, message)


# Fail-closed says why when the breaker is open.

_CAUSE = (
    "the storage failed 3 times in a row, retries included: REDIS_CONNECTION_FAILED"
)


def test_fail_closed_before_the_breaker_opens_names_the_storage_error() -> None:
    storage, resilient, _ = make("fail-closed")
    storage.fail(refused)

    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    assert info.value.message == (
        "the storage cannot decide (REDIS_CONNECTION_FAILED: Redis is unreachable "
        "(deciding a hit): Connection refused) and the failure strategy is "
        "fail-closed: refusing the request"
    )


def test_fail_closed_while_open_says_the_breaker_refuses_and_why() -> None:
    storage, resilient, clock = make("fail-closed")
    storage.fail(refused)
    for _ in range(3):
        with pytest.raises(StorageUnavailableError):
            resilient.hit("c", THROTTLES, 1)

    clock.advance(1)
    with pytest.raises(StorageUnavailableError) as info:
        resilient.hit("c", THROTTLES, 1)

    error = info.value
    assert error.message == (
        f"the circuit breaker is open ({_CAUSE}); fail-closed refuses the "
        "request; retry in 4.000s"
    )
    assert error.context == {
        "retry_after": 4.0,
        "strategy": "fail-closed",
        "error_code": "STORAGE_UNAVAILABLE",
        "cause_code": "REDIS_CONNECTION_FAILED",
    }
    breaker_error = error.__cause__
    assert isinstance(breaker_error, StorageUnavailableError)
    assert breaker_error.message == (
        "the circuit breaker is open: the storage failed 3 consecutive calls "
        "(retries included) and is not asked until the cool-down ends"
    )
    assert breaker_error.context == {
        "retry_after": 4.0,
        "strategy": None,
        "reason": "circuit_open",
        "breaker": "open",
        "failures": 3,
        "cause_code": "REDIS_CONNECTION_FAILED",
    }
    assert isinstance(breaker_error.__cause__, RedisConnectionError)


def test_async_fail_closed_while_open_says_the_breaker_refuses_and_why() -> None:
    storage, resilient, clock = make_async("fail-closed")

    async def scenario() -> StorageUnavailableError:
        storage.sync.fail(refused)
        for _ in range(3):
            with pytest.raises(StorageUnavailableError):
                await resilient.hit("c", THROTTLES, 1)

        clock.advance(2.5)
        with pytest.raises(StorageUnavailableError) as info:
            await resilient.hit("c", THROTTLES, 1)

        return info.value

    error = asyncio.run(scenario())

    assert error.message == (
        f"the circuit breaker is open ({_CAUSE}); fail-closed refuses the "
        "request; retry in 2.500s"
    )


# The breaker counts failed calls, retries included, and the log says so.


def test_retries_count_toward_the_breaker_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sliding_window_throttler.recovery")
    clock = ManualClock()
    storage = FlakyStorage(MemoryStorage(clock=clock))
    resilient = ResilientStorage(
        storage,
        failure_strategy="fail-open",
        retry=RetryWithBackoff(ExponentialBackoff(2), sleep=clock.advance),
        clock=clock,
    )
    storage.fail(refused)

    hits(resilient, 2)
    after_two = (storage.calls, resilient.breaker.state)
    hits(resilient, 1)

    assert after_two == (4, BreakerState.CLOSED)
    assert (storage.calls, resilient.breaker.state) == (5, BreakerState.OPEN)
    opened = [r.getMessage() for r in caplog.records if "breaker open" in r.msg]
    assert opened == [
        "circuit breaker open after 5 consecutive failed calls (retries included), "
        "the last REDIS_CONNECTION_FAILED: the storage is not asked for 5s, the "
        "'fail-open' strategy decides"
    ]


# FAILURE_STRATEGY and SWT_FAILURE_STRATEGY must agree.


def test_twin_variables_that_disagree_are_refused_by_the_facades(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-open")
    monkeypatch.setenv("SWT_FAILURE_STRATEGY", "local")

    with pytest.raises(ConfigurationError) as info:
        Throttler(FlakyStorage())

    assert info.value.field == "failure_strategy"
    assert "SWT_FAILURE_STRATEGY and FAILURE_STRATEGY" in info.value.message
    # An explicit argument replaces both variables, which are then not read.
    throttler = Throttler(FlakyStorage(), failure_strategy="fail-closed")
    assert throttler.storage.failure_strategy.name == "fail-closed"  # type: ignore[attr-defined]


def _timeout_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sliding_window_throttler.recovery.resilient"
    ]


def test_socket_timeouts_that_outlast_the_deadline_are_named_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "redis://127.0.0.1:1/0"  # never connected: the check reads settings
    caplog.set_level(logging.WARNING)
    Throttler(RedisStorage.from_url(url))  # 50 + 100 ms within 250 ms
    assert _timeout_warnings(caplog) == []

    Throttler(RedisStorage.from_url(url, socket_timeout=1.0))
    own = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    Throttler(RedisStorage(own), deadline=0.1)

    assert _timeout_warnings(caplog) == [
        "a decision may wait longer than its deadline (250 ms) for a stalled "
        "Redis: the storage's connect timeout (50 ms) and command timeout "
        "(1000 ms) bound it on this synchronous face; lower "
        "socket_connect_timeout and socket_timeout to fit the deadline, or "
        "raise the deadline",
        "a decision may wait longer than its deadline (100 ms) for a stalled "
        "Redis: the storage's connect timeout (no limit) and command timeout "
        "(no limit) bound it on this synchronous face; lower "
        "socket_connect_timeout and socket_timeout to fit the deadline, or "
        "raise the deadline",
    ]
