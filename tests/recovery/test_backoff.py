"""Retry where it is safe, with backoff and jitter, within the deadline."""

from __future__ import annotations

import asyncio

import pytest
from recovery_fakes import FlakyStorage, out_of_memory, refused, timed_out

from sliding_window_throttler import Decision, ManualClock, MemoryStorage, Throttle
from sliding_window_throttler.errors import (
    ConfigurationError,
    RedisConnectionError,
    StorageOperationError,
    StorageTimeoutError,
    StorageUnavailableError,
)
from sliding_window_throttler.recovery import (
    Deadline,
    ExponentialBackoff,
    RecoveryContext,
    RetryWithBackoff,
    is_retry_safe,
)

API = Throttle("api", 10, 60)


class Sleeps:
    """A fake sleep that records waits and moves a manual clock."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self(seconds)


def setup(
    backoff: ExponentialBackoff | None = None, deadline_s: float | None = None
) -> tuple[FlakyStorage, RetryWithBackoff, Sleeps, ManualClock, Deadline | None]:
    clock = ManualClock()
    sleeps = Sleeps(clock)
    storage = FlakyStorage(MemoryStorage())
    retry = RetryWithBackoff(backoff, sleep=sleeps, async_sleep=sleeps.async_sleep)
    deadline = None if deadline_s is None else Deadline.after(deadline_s, clock)
    return storage, retry, sleeps, clock, deadline


def context_for(
    storage: FlakyStorage,
    operation: str = "hit",
    cost: int = 1,
    deadline: Deadline | None = None,
) -> RecoveryContext:
    method = storage.hit if operation == "hit" else storage.peek

    def call() -> Decision:
        return method("c", (API,), cost)

    async def acall() -> Decision:
        return call()

    return RecoveryContext(
        "c",
        (API,),
        cost,
        None,
        operation,  # type: ignore[arg-type]
        deadline,
        call,
        acall,
    )


def timeout_before_sending() -> StorageTimeoutError:
    return StorageTimeoutError("Timeout connecting to server", outcome_unknown=False)


@pytest.mark.parametrize(
    ("error", "counts", "safe"),
    [
        (refused(), True, True),
        (RedisConnectionError("reset", outcome_unknown=True), True, False),
        (RedisConnectionError("reset", outcome_unknown=True), False, True),
        (timed_out(), True, False),
        (timed_out(), False, True),
        (timeout_before_sending(), True, True),
        (out_of_memory(), False, False),
        (StorageUnavailableError("open"), False, False),
        (ValueError("x"), False, False),
    ],
)
def test_retry_safety(error: Exception, counts: bool, safe: bool) -> None:
    assert is_retry_safe(error, counts=counts) is safe


def test_refused_connection_is_retried_after_a_jittered_backoff() -> None:
    storage, retry, sleeps, _, _ = setup(ExponentialBackoff(2, 0.01, 1, 0.005))

    result = retry.recover(refused(), context_for(storage))

    assert result.recovered and not result.degraded
    assert result.decision is not None and result.decision.allowed
    assert storage.calls == 1
    assert len(sleeps.waits) == 1
    assert 0.01 <= sleeps.waits[0] <= 0.015


def test_waits_grow_exponentially_up_to_the_maximum() -> None:
    storage, retry, sleeps, _, _ = setup(ExponentialBackoff(5, 0.01, 0.03, 0))
    storage.fail(refused)

    result = retry.recover(refused(), context_for(storage))

    assert not result.recovered
    assert isinstance(result.error, RedisConnectionError)
    assert sleeps.waits == pytest.approx([0.01, 0.02, 0.03, 0.03])
    assert storage.calls == 4


def test_timed_out_hit_is_never_retried() -> None:
    storage, retry, sleeps, _, _ = setup()
    error = timed_out()

    result = retry.recover(error, context_for(storage))

    assert not result.recovered
    assert result.error is error
    assert storage.calls == 0
    assert sleeps.waits == []


def test_hit_that_loses_its_reply_midway_is_not_retried() -> None:
    storage, retry, _, _, _ = setup()
    storage.fail(timed_out, times=1)
    storage.counted_then = True
    context = context_for(storage)
    with pytest.raises(StorageTimeoutError):
        assert context.call is not None
        context.call()

    result = retry.recover(timed_out(), context)

    assert not result.recovered
    assert storage.inner.peek("c", (API,), 0).records[0].total_hits == 1


@pytest.mark.parametrize(("operation", "cost"), [("peek", 1), ("hit", 0)])
def test_timed_out_call_that_records_nothing_is_retried(
    operation: str, cost: int
) -> None:
    storage, retry, _, _, _ = setup()

    result = retry.recover(timed_out(), context_for(storage, operation, cost))

    assert result.recovered
    assert storage.calls == 1


def test_operation_errors_are_not_retried() -> None:
    _, retry, _, _, _ = setup()

    assert not retry.can_recover(out_of_memory())
    assert not retry.can_recover(StorageUnavailableError("open"))
    assert retry.can_recover(refused())


def test_retries_stop_before_the_deadline() -> None:
    backoff = ExponentialBackoff(10, 0.01, 0.01, 0, attempt_timeout=0.05)
    storage, retry, sleeps, clock, deadline = setup(backoff, deadline_s=0.1)
    storage.fail(refused)

    result = retry.recover(refused(), context_for(storage, deadline=deadline))

    assert not result.recovered
    # Each retry needs its sleep plus one attempt timeout left: the last one
    # started early enough to end by the deadline, and the next would not.
    assert len(sleeps.waits) >= 4
    assert clock.now_ms() + 50 <= 100
    assert clock.now_ms() + 10 + 50 >= 100


def test_no_retry_when_the_deadline_leaves_no_room() -> None:
    backoff = ExponentialBackoff(3, 0.01, 0.01, 0, attempt_timeout=0.05)
    storage, retry, sleeps, clock, deadline = setup(backoff, deadline_s=0.1)
    clock.advance(0.05)

    result = retry.recover(refused(), context_for(storage, deadline=deadline))

    assert not result.recovered
    assert storage.calls == 0
    assert sleeps.waits == []


def test_one_attempt_disables_retries() -> None:
    storage, retry, _, _, _ = setup(ExponentialBackoff(max_attempts=1))

    assert not retry.recover(refused(), context_for(storage)).recovered
    assert storage.calls == 0


def test_async_face_retries_the_same_way() -> None:
    storage, retry, sleeps, _, _ = setup(ExponentialBackoff(3, 0.01, 1, 0))
    storage.fail(refused, times=1)

    result = asyncio.run(retry.arecover(refused(), context_for(storage)))

    assert result.recovered
    assert sleeps.waits == pytest.approx([0.01, 0.02])
    assert storage.calls == 2


def test_async_face_never_retries_a_timed_out_hit() -> None:
    storage, retry, _, _, _ = setup()

    result = asyncio.run(retry.arecover(timed_out(), context_for(storage)))

    assert not result.recovered
    assert storage.calls == 0


def test_other_errors_raised_by_a_retry_end_it() -> None:
    storage, retry, _, _, _ = setup(ExponentialBackoff(5))
    storage.fail(out_of_memory)

    result = retry.recover(refused(), context_for(storage))

    assert not result.recovered
    assert isinstance(result.error, StorageOperationError)
    assert storage.calls == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"base": -1}, "base"),
        ({"attempt_timeout": "slow"}, "attempt_timeout"),
    ],
)
def test_backoff_refuses_bad_settings(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ExponentialBackoff(**kwargs)  # type: ignore[arg-type]

    assert info.value.field == field
