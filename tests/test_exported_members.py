"""The public API is what ``__all__`` says, sorted, and nothing slips in."""

from __future__ import annotations

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
