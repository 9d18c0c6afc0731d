"""
Every storage behind one synchronous face, so scenarios are written once.

Async storages run on an event loop of their own (``BlockingStorage``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

import pytest

from sliding_window_throttler import Decision, ManualClock, MemoryStorage, Throttle
from sliding_window_throttler.storage import AsyncRedisStorage, RedisStorage
from sliding_window_throttler.storage.base import StorageHealth

T = TypeVar("T")

# Generous: a loaded CI machine must not turn a slow reply into a failure.
TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}

REDIS_KINDS = (
    "redis",
    "redis-evalsha",
    "redis-async",
    "redis-cluster",
    "redis-cluster-async",
)
KINDS = ("memory", *REDIS_KINDS)


class SyncStorage(Protocol):
    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision: ...

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision: ...

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None: ...

    def health(self) -> StorageHealth: ...

    def close(self) -> None: ...


class BlockingStorage:
    """An ``AsyncRedisStorage`` driven from synchronous code."""

    def __init__(self, make: Callable[[], AsyncRedisStorage]) -> None:
        self._runner = asyncio.Runner()
        self.storage = make()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        return self._run(self.storage.hit(identifier, throttles, cost, now_us))

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        return self._run(self.storage.peek(identifier, throttles, cost, now_us))

    def decide(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
        *,
        record: bool = True,
    ) -> tuple[Decision, int]:
        return self._run(
            self.storage.decide(identifier, throttles, cost, now_us, record=record)
        )

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        self._run(self.storage.reset(identifier, throttles))

    def health(self) -> StorageHealth:
        return self._run(self.storage.health())

    def close(self) -> None:
        try:
            self._run(self.storage.close())
        finally:
            self._runner.close()


def make_storage(kind: str, request: pytest.FixtureRequest) -> SyncStorage:
    """A new storage of ``kind`` with its own key prefix."""
    if kind == "memory":
        return MemoryStorage(clock=ManualClock())

    prefix = request.getfixturevalue("redis_prefix").rstrip(":")
    options: dict[str, Any] = {"prefix": prefix, **TIMEOUTS}
    if kind == "redis-evalsha":
        options["enable_redis_functions"] = False

    if kind.startswith("redis-cluster"):
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        if kind.endswith("async"):
            return BlockingStorage(
                lambda: AsyncRedisStorage.from_cluster(nodes, **options)
            )
        return RedisStorage.from_cluster(nodes, **options)

    url = request.getfixturevalue("redis_server").url
    if kind.endswith("async"):
        return BlockingStorage(lambda: AsyncRedisStorage.from_url(url, **options))
    return RedisStorage.from_url(url, **options)
