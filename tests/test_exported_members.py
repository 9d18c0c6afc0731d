"""The public API is what ``__all__`` says, sorted, and nothing slips in."""

from __future__ import annotations

import subprocess
import sys

import sliding_window_throttler

# Changing this list changes the public API: update it on purpose only.
PUBLIC = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert sliding_window_throttler.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC


def test_every_exported_name_is_defined_by_this_package() -> None:
    for name in PUBLIC:
        member = getattr(sliding_window_throttler, name)
        if name == "__version__":
            assert isinstance(member, str)
        else:
            assert member.__module__.startswith("sliding_window_throttler."), name


def test_every_public_class_and_function_of_the_package_root_is_exported() -> None:
    defined_here = {
        name
        for name, member in vars(sliding_window_throttler).items()
        if not name.startswith("_")
        and callable(member)
        and getattr(member, "__module__", "").startswith("sliding_window_throttler")
    }

    assert defined_here <= set(PUBLIC)


def test_import_star_works_without_redis_py() -> None:
    # redis-py is an optional extra: without it, `import *` takes every name
    # but the Redis storages, and importing one by name says what to install.
    script = """
import sys
sys.modules["redis"] = None  # as if the redis extra were not installed
from sliding_window_throttler import *
assert "RedisStorage" not in dir() and Throttler and MemoryStorage
from sliding_window_throttler.storage import *
assert "AsyncRedisStorage" not in dir() and AsyncMemoryStorage
try:
    from sliding_window_throttler import RedisStorage
except ConfigurationError as exc:
    print(exc.field, "|", exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert done.stdout.startswith("redis | ")
    assert "pip install 'sliding-window-throttler[redis]'" in done.stdout
