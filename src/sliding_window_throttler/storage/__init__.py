"""Storages: where the hits of each (identifier, throttle) pair live."""

from __future__ import annotations

import importlib.util
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


def has_redis_py() -> bool:
    """Whether redis-py (the ``redis`` extra) can be imported."""
    try:
        return importlib.util.find_spec("redis") is not None
    except (ImportError, ValueError):  # a broken or blocked redis module
        return False


if not has_redis_py():
    # `import *` takes every name of __all__: without the redis extra, all but
    # the Redis storages (importing one by name says what to install).
    __all__ = [name for name in __all__ if name not in _REDIS]


def __getattr__(name: str) -> Any:
    # The Redis storages import redis-py, an optional extra: only on demand,
    # and a missing extra raises ConfigurationError naming it.
    if name in _REDIS:
        module = importlib.import_module(f".{_REDIS[name]}", __name__)
        return getattr(module, name)

    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
