"""
Storages that fail on command, for the recovery tests.

``FlakyStorage`` implements the ``Storage`` protocol over a ``MemoryStorage``
and raises whatever error its ``failure`` makes, for as long as it is set.
``counted_then`` simulates the worst case of a timeout: the hit is recorded,
then the answer is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sliding_window_throttler import Decision, MemoryStorage, Throttle
from sliding_window_throttler.errors import (
    RedisConnectionError,
    StorageError,
    StorageOperationError,
    StorageTimeoutError,
)

ErrorFactory = Callable[[], Exception]


def refused() -> StorageError:
    """A connection refused before anything was sent."""
    error = RedisConnectionError(
        "Redis is unreachable (deciding a hit): Connection refused"
    )
    error.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return error


def timed_out() -> StorageError:
    """A command that was sent and never answered."""
    return StorageTimeoutError("Redis did not answer in time (deciding a hit)")


def out_of_memory() -> StorageError:
    """Redis answered with OOM."""
    return StorageOperationError(
        "Redis refused (deciding a hit, OOM): OOM command not allowed when used "
        "memory > 'maxmemory'"
    )


def pool_full() -> StorageError:
    """No pooled connection came free: nothing was sent."""
    return StorageOperationError(
        "no free Redis connection (deciding a hit): all max_connections of the "
        "pool are in use (nothing was sent)",
        context={"redis_error": "max_connections"},
    )


class FlakyStorage:
    """
    A memory storage that fails while ``failure`` is set.

    Attributes:
        inner: The storage that decides when nothing fails.
        failure: Makes the error to raise; None to answer normally.
        counted_then: Record the hit in ``inner`` before raising (a lost reply).
        failures_left: Fail only this many more calls (None: until cleared).
        calls: Calls that reached this storage, failed or not.
    """

    def __init__(self, inner: MemoryStorage | None = None) -> None:
        self.inner = inner if inner is not None else MemoryStorage()
        self.failure: ErrorFactory | None = None
        self.counted_then = False
        self.failures_left: int | None = None
        self.calls = 0
        self.closed = False

    def fail(self, failure: ErrorFactory, times: int | None = None) -> None:
        """Fail the next ``times`` calls (all of them when None)."""
        self.failure = failure
        self.failures_left = times

    def heal(self) -> None:
        """Answer normally from now on."""
        self.failure = None

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        self.calls += 1
        if self._failing() and self.counted_then:
            self.inner.hit(identifier, throttles, cost, now_us)

        self._maybe_raise()
        return self.inner.hit(identifier, throttles, cost, now_us)

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        self.calls += 1
        self._maybe_raise()
        return self.inner.peek(identifier, throttles, cost, now_us)

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        self.calls += 1
        self._maybe_raise()
        self.inner.reset(identifier, throttles)

    def close(self) -> None:
        self.closed = True

    def _failing(self) -> bool:
        return self.failure is not None and self.failures_left != 0

    def _maybe_raise(self) -> None:
        if not self._failing():
            return

        assert self.failure is not None
        if self.failures_left is not None:
            self.failures_left -= 1

        raise self.failure()


class AsyncFlakyStorage:
    """The asyncio face of a ``FlakyStorage``."""

    def __init__(self, sync: FlakyStorage | None = None) -> None:
        self.sync = sync if sync is not None else FlakyStorage()

    async def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        return self.sync.hit(identifier, throttles, cost, now_us)

    async def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        return self.sync.peek(identifier, throttles, cost, now_us)

    async def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        self.sync.reset(identifier, throttles)

    async def close(self) -> None:
        self.sync.close()
