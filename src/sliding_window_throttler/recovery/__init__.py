"""
Recovery: what happens when the storage fails.

The manager (``manager``) picks a strategy for an error; strategies
(``policy``, ``backoff``, ``fallback``) turn errors into decisions,
the circuit breaker (``breaker``) keeps calls away from a failing storage, and
``ResilientStorage`` / ``AsyncResilientStorage`` (``resilient``) put them
around a storage.
"""

from .backoff import ExponentialBackoff, RetryWithBackoff, is_retry_safe
from .breaker import BreakerState, BreakerStats, CircuitBreaker, Transition
from .fallback import LocalFallback
from .manager import (
    AsyncRecoveryStrategy,
    Deadline,
    DecidingStrategy,
    ErrorRecoveryManager,
    RecoveryContext,
    RecoveryResult,
    RecoveryStrategy,
)
from .policy import (
    FailClosed,
    FailOpen,
    FailureMode,
    ScriptsFallback,
    SecurityLockdown,
    SupportsScripts,
)
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
    "RecoveryContext",
    "RecoveryResult",
    "RecoveryStrategy",
    "ResilienceStats",
    "ResilientStorage",
    "RetryWithBackoff",
    "ScriptsFallback",
    "SecurityLockdown",
    "SupportsScripts",
    "Transition",
    "is_retry_safe",
    "make_failure_strategy",
]
