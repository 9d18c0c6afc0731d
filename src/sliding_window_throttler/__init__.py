"""
sliding-window-throttler: exact sliding-window rate limiting.

At most ``limit`` hits are admitted in any window of ``ttl``, per client and
per named throttle, in memory or in Redis.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .config import ThrottlerSettings
from .core.clock import Clock, ManualClock, MonotonicClock
from .core.decision import Decision, Outcome, ThrottleRecord
from .core.rate import Throttle, parse_duration_ms, parse_rate
from .errors import (
    ConfigurationError,
    ErrorSeverity,
    KeyGenerationError,
    RateLimitExceededError,
    RedisConnectionError,
    RedisFunctionError,
    SecurityViolationError,
    StorageError,
    StorageOperationError,
    StorageTimeoutError,
    StorageUnavailableError,
    ThrottlerError,
    ThrottlerErrorCode,
    is_recoverable_error,
    is_throttler_error,
)
from .recovery import (
    AsyncResilientStorage,
    CircuitBreaker,
    ErrorRecoveryManager,
    ExponentialBackoff,
    FailureMode,
    RecoveryResult,
    RecoveryStrategy,
    ResilientStorage,
)
from .storage import has_redis_py as _has_redis_py
from .storage.base import AsyncStorage, Storage
from .storage.memory import (
    AsyncMemoryStorage,
    MemoryStats,
    MemoryStorage,
    OverflowPolicy,
)
from .throttler import AsyncThrottler, Throttler

if TYPE_CHECKING:
    from .storage.redis import RedisStorage
    from .storage.redis_async import AsyncRedisStorage

logging.getLogger(__name__).addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AsyncMemoryStorage",
    "AsyncRedisStorage",
    "AsyncResilientStorage",
    "AsyncStorage",
    "AsyncThrottler",
    "CircuitBreaker",
    "Clock",
    "ConfigurationError",
    "Decision",
    "ErrorRecoveryManager",
    "ErrorSeverity",
    "ExponentialBackoff",
    "FailureMode",
    "KeyGenerationError",
    "ManualClock",
    "MemoryStats",
    "MemoryStorage",
    "MonotonicClock",
    "Outcome",
    "OverflowPolicy",
    "RateLimitExceededError",
    "RecoveryResult",
    "RecoveryStrategy",
    "RedisConnectionError",
    "RedisFunctionError",
    "RedisStorage",
    "ResilientStorage",
    "SecurityViolationError",
    "Storage",
    "StorageError",
    "StorageOperationError",
    "StorageTimeoutError",
    "StorageUnavailableError",
    "Throttle",
    "ThrottleRecord",
    "Throttler",
    "ThrottlerError",
    "ThrottlerErrorCode",
    "ThrottlerSettings",
    "__version__",
    "is_recoverable_error",
    "is_throttler_error",
    "parse_duration_ms",
    "parse_rate",
]


_REDIS_NAMES = ("AsyncRedisStorage", "RedisStorage")
if not _has_redis_py():
    # `import *` takes every name of __all__: without the redis extra, all but
    # the Redis storages (importing one by name says what to install).
    __all__ = [name for name in __all__ if name not in _REDIS_NAMES]


def __getattr__(name: str) -> Any:
    # The Redis storages need redis-py, an optional extra: imported on demand.
    if name in _REDIS_NAMES:
        from . import storage

        return getattr(storage, name)

    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
