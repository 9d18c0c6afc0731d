"""
Recovery: what happens when the storage fails.

The manager (``manager``) picks a strategy for an error; strategies
(``policy``, ``backoff``, ``fallback``) turn errors into decisions,
the circuit breaker (``breaker``) keeps calls away from a failing storage, and
``ResilientStorage`` / ``AsyncResilientStorage`` (``resilient``) put them
around a storage; ``health`` reports a storage's health with the breaker's.
"""

from .backoff import ExponentialBackoff, RetryWithBackoff, is_retry_safe
from .breaker import BreakerState, BreakerStats, CircuitBreaker, Permit, Transition
from .fallback import LocalFallback
from .health import astorage_health, storage_health
from .manager import (
    AsyncRecoveryStrategy,
    Deadline,
    DecidingStrategy,
    ErrorRecoveryManager,
    RecoveryContext,
    RecoveryResult,
    RecoveryStrategy,
)
from .policy import FailClosed, FailOpen, FailureMode, SecurityLockdown
from .resilient import (
    DEFAULT_DEADLINE,
    AsyncResilientStorage,
    ResilienceStats,
    ResilientStorage,
    make_failure_strategy,
)

__all__ = [
    "DEFAULT_DEADLINE",
    "AsyncRecoveryStrategy",
    "AsyncResilientStorage",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "Deadline",
    "DecidingStrategy",
    "ErrorRecoveryManager",
    "ExponentialBackoff",
    "FailClosed",
    "FailOpen",
    "FailureMode",
    "LocalFallback",
    "Permit",
    "RecoveryContext",
    "RecoveryResult",
    "RecoveryStrategy",
    "ResilienceStats",
    "ResilientStorage",
    "RetryWithBackoff",
    "SecurityLockdown",
    "Transition",
    "astorage_health",
    "is_retry_safe",
    "make_failure_strategy",
    "storage_health",
]
