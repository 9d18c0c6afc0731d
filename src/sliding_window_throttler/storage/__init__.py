"""Storages: where the hits of each (identifier, throttle) pair live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import AsyncStorage, Storage
from .memory import AsyncMemoryStorage, MemoryStats, MemoryStorage, OverflowPolicy

if TYPE_CHECKING:
    from .redis import RedisStorage
    from .redis_async import AsyncRedisStorage

__all__ = [
    "AsyncMemoryStorage",
    "AsyncRedisStorage",
    "AsyncStorage",
    "MemoryStats",
    "MemoryStorage",
    "OverflowPolicy",
    "RedisStorage",
    "Storage",
]

_REDIS = {"RedisStorage": "redis", "AsyncRedisStorage": "redis_async"}


def __getattr__(name: str) -> Any:
    # The Redis storages import redis-py, an optional extra: only on demand,
    # and a missing extra raises ConfigurationError naming it.
    if name in _REDIS:
        from importlib import import_module

        return getattr(import_module(f".{_REDIS[name]}", __name__), name)

    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
