"""
Errors raised by sliding-window-throttler.

Every error is a ``ThrottlerError``. The branches follow what the caller can do
about it::

    ThrottlerError                   code, message, severity, context, suggestion
    ├── ConfigurationError           fix the configuration (names the field)
    ├── KeyGenerationError           fix the identifier passed to hit()
    ├── StorageError                 the backend failed: retry or fall back
    │   ├── RedisConnectionError     Redis unreachable (recoverable)
    │   │   └── StorageTimeoutError  no answer within the deadline; the hit's
    │   │                            outcome is unknown (``outcome_unknown``)
    │   ├── StorageUnavailableError  the storage is not asked (circuit open) or
    │   │                            fail-closed refuses: answer 503
    │   ├── RedisFunctionError       the Lua function: not supported, load
    │   │                            failed or execution failed (``kind``)
    │   └── StorageOperationError    Redis answered with an error (OOM, READONLY,
    │                                credentials, NOPERM) or the pool stayed full
    ├── RateLimitExceededError       a hit was refused: answer 429
    └── SecurityViolationError       abuse detected (``violation_type``)

Each error carries a stable ``code`` (``ThrottlerErrorCode``), a ``severity``,
whether it ``is_recoverable`` (a retry or a fallback may succeed), a ``context``
dict of details safe to log (never a raw identifier or secret), the original
exception as ``__cause__``, and ``get_recovery_suggestion()``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ThrottlerErrorCode(StrEnum):
    """Stable machine-readable error codes."""

    CONFIGURATION_INVALID = "CONFIGURATION_INVALID"
    KEY_GENERATION_FAILED = "KEY_GENERATION_FAILED"
    STORAGE_ERROR = "STORAGE_ERROR"
    REDIS_CONNECTION_FAILED = "REDIS_CONNECTION_FAILED"
    REDIS_TIMEOUT = "REDIS_TIMEOUT"
    REDIS_FUNCTION_NOT_SUPPORTED = "REDIS_FUNCTION_NOT_SUPPORTED"
    REDIS_FUNCTION_LOAD_FAILED = "REDIS_FUNCTION_LOAD_FAILED"
    REDIS_FUNCTION_EXECUTION_FAILED = "REDIS_FUNCTION_EXECUTION_FAILED"
    STORAGE_OPERATION_FAILED = "STORAGE_OPERATION_FAILED"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    SECURITY_VIOLATION = "SECURITY_VIOLATION"


class ErrorSeverity(StrEnum):
    """How urgently an operator should look at an error."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ThrottlerError(Exception):
    """
    Base class of every error this package raises.

    Args:
        message: A sentence a person can act on.
        code: The stable code; subclasses fix their own.
        severity: How urgent the error is.
        recoverable: Whether a retry or a fallback may succeed.
        context: Details safe to log (never raw identifiers or secrets).
    """

    default_code = ThrottlerErrorCode.STORAGE_ERROR
    default_severity = ErrorSeverity.MEDIUM
    default_recoverable = False
    suggestion = "Read the message and the context of the error."

    def __init__(
        self,
        message: str,
        code: ThrottlerErrorCode | str | None = None,
        recoverable: bool | None = None,
        *,
        severity: ErrorSeverity | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.severity = severity if severity is not None else self.default_severity
        self.is_recoverable = (
            recoverable if recoverable is not None else self.default_recoverable
        )
        self.context: dict[str, Any] = dict(context or {})

    def get_recovery_suggestion(self) -> str:
        """Return what an operator should do about this error."""
        return self.suggestion

    def __reduce__(self) -> tuple[Any, ...]:
        # Copied and pickled with every field, whatever the subclass's
        # arguments (Exception's own way calls __init__ with the message alone).
        return (_restored, (type(self), self.args), self.__dict__)


class ConfigurationError(ThrottlerError, ValueError):
    """
    A setting or argument is invalid; fixing the configuration is the only cure.

    Args:
        field: The name of the offending setting or argument.
        message: What is wrong with it, including the bad value.
    """

    default_code = ThrottlerErrorCode.CONFIGURATION_INVALID
    default_severity = ErrorSeverity.HIGH
    suggestion = "Correct the named setting; the message says which values it takes."

    def __init__(
        self, field: str, message: str, *, context: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, context={"field": field, **(context or {})})
        self.field = field


class KeyGenerationError(ThrottlerError, ValueError):
    """The identifier passed to a hit cannot be turned into a storage key."""

    default_code = ThrottlerErrorCode.KEY_GENERATION_FAILED
    default_severity = ErrorSeverity.MEDIUM
    suggestion = (
        "Pass a non-empty string identifier (an IP address, user id or API key "
        "digest) of at most 65,536 characters."
    )


class StorageError(ThrottlerError):
    """
    The storage could not decide; a retry or a failure strategy may.

    ``outcome_unknown`` is True when the command may have run all the same (a
    timeout, a connection lost after sending): such a hit may already be
    counted, so it is never retried. It is False unless a subclass or the
    storage says otherwise.
    """

    default_code = ThrottlerErrorCode.STORAGE_ERROR
    default_severity = ErrorSeverity.HIGH
    default_recoverable = True
    suggestion = "Check the storage backend; the failure strategy decides meanwhile."
    outcome_unknown: bool = False


class RedisConnectionError(StorageError):
    """
    Redis could not be reached (refused, reset, DNS, a Cluster slot in migration).

    Pass ``outcome_unknown=True`` when the connection broke after the command
    was sent (reset or closed while reading the reply): the hit may have been
    counted, so it must not be retried.
    """

    default_code = ThrottlerErrorCode.REDIS_CONNECTION_FAILED
    default_severity = ErrorSeverity.CRITICAL
    suggestion = (
        "Check that Redis is running and reachable at the configured address, and "
        "that the password and TLS settings match; decisions follow the failure "
        "strategy (fail-open, fail-closed or local) until it answers."
    )

    def __init__(
        self,
        message: str,
        code: ThrottlerErrorCode | str | None = None,
        recoverable: bool | None = None,
        *,
        severity: ErrorSeverity | None = None,
        context: dict[str, Any] | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        if outcome_unknown:
            context = {"outcome_unknown": True, **(context or {})}

        super().__init__(message, code, recoverable, severity=severity, context=context)
        self.outcome_unknown = outcome_unknown


class StorageTimeoutError(RedisConnectionError):
    """
    Redis did not answer within the deadline.

    The command may still have run: ``outcome_unknown`` is True when the hit may
    have been counted, so it must not be retried blindly.
    """

    default_code = ThrottlerErrorCode.REDIS_TIMEOUT
    default_severity = ErrorSeverity.HIGH
    suggestion = (
        "Redis is slow or stalled: check its latency (SLOWLOG, CLIENT PAUSE, CPU) "
        "or raise the command timeout if the network is slow."
    )

    def __init__(
        self,
        message: str,
        *,
        outcome_unknown: bool = True,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message,
            context={"outcome_unknown": outcome_unknown, **(context or {})},
            outcome_unknown=outcome_unknown,
        )


class RedisFunctionError(StorageError):
    """
    The decision function failed to load or run.

    Args:
        message: What happened.
        kind: ``"not_supported"``, ``"load_failed"`` or ``"execution_failed"``.
    """

    _CODES: ClassVar[dict[str, ThrottlerErrorCode]] = {
        "not_supported": ThrottlerErrorCode.REDIS_FUNCTION_NOT_SUPPORTED,
        "load_failed": ThrottlerErrorCode.REDIS_FUNCTION_LOAD_FAILED,
        "execution_failed": ThrottlerErrorCode.REDIS_FUNCTION_EXECUTION_FAILED,
    }
    _SUGGESTIONS: ClassVar[dict[str, str]] = {
        "not_supported": (
            "This Redis has no FUNCTION command (before 7.0) or forbids it: set "
            "enable_redis_functions=False to use EVALSHA."
        ),
        "load_failed": (
            "Loading the Lua library failed: check that the user may run FUNCTION "
            "LOAD / SCRIPT LOAD (ACL) and that the server is not read-only."
        ),
        "execution_failed": (
            "The decision function returned an error: check the arguments in the "
            "context; report it if they are valid."
        ),
    }

    def __init__(
        self,
        message: str,
        kind: str = "execution_failed",
        *,
        context: dict[str, Any] | None = None,
    ) -> None:
        if kind not in self._CODES:
            raise ValueError(f"unknown RedisFunctionError kind {kind!r}")

        super().__init__(
            message,
            code=self._CODES[kind],
            recoverable=kind != "execution_failed",
            context={"kind": kind, **(context or {})},
        )
        self.kind = kind

    def get_recovery_suggestion(self) -> str:
        """Return what an operator should do about this error."""
        return self._SUGGESTIONS[self.kind]


class StorageOperationError(StorageError):
    """
    Redis answered a command with an error (out of memory, read-only, refused
    credentials or permissions), or no connection of the pool came free.

    The connection is fine, so it never opens the circuit breaker, and running
    the call again would meet the same refusal, so it is never retried: the
    failure strategy decides.

    Args:
        message: What happened.
        suggestion: What to do, when it differs from the class's (the
            credentials, an ACL, the pool size).
    """

    default_code = ThrottlerErrorCode.STORAGE_OPERATION_FAILED
    default_severity = ErrorSeverity.HIGH
    suggestion = (
        "Redis refused the command: for OOM raise maxmemory or pick an evicting "
        "maxmemory-policy (volatile-ttl suits throttle keys, which all expire); for "
        "READONLY point the client at the master."
    )

    def __init__(
        self,
        message: str,
        code: ThrottlerErrorCode | str | None = None,
        recoverable: bool | None = None,
        *,
        severity: ErrorSeverity | None = None,
        context: dict[str, Any] | None = None,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(message, code, recoverable, severity=severity, context=context)
        if suggestion is not None:
            self.suggestion = suggestion

    @property
    def server_answered(self) -> bool:
        """False when no pooled connection came free: nothing reached Redis."""
        return self.context.get("redis_error") != "max_connections"


class StorageUnavailableError(StorageError):
    """
    No decision could be made: the web layer answers 503 Service Unavailable.

    Raised by the fail-closed strategy (with the storage's error as
    ``__cause__``), and handed to the failure strategy while the circuit
    breaker keeps requests away from a failing storage.

    Args:
        message: What happened.
        retry_after: Seconds until the storage is tried again (for a
            ``Retry-After`` header; 0 when unknown).
        strategy: The failure strategy that refused, if one did.
    """

    default_code = ThrottlerErrorCode.STORAGE_UNAVAILABLE
    default_severity = ErrorSeverity.HIGH
    suggestion = (
        "The storage is failing and the failure strategy refuses requests: answer "
        "503 with Retry-After, and check the storage error in __cause__ (or the "
        "circuit breaker's last error in the context)."
    )

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 0.0,
        strategy: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message,
            context={
                "retry_after": retry_after,
                "strategy": strategy,
                **(context or {}),
            },
        )
        self.retry_after = retry_after
        self.strategy = strategy


class RateLimitExceededError(ThrottlerError):
    """
    A hit was refused by a throttle: the web layer answers 429.

    Args:
        message: What was refused.
        limit: The limit of the refusing throttle.
        current: Hits in its window including the refused one.
        retry_after: Seconds until a retry can succeed.
        decision: The refusing ``Decision``, for response headers
            (``decision.limiting``), when a throttler raised it.
    """

    default_code = ThrottlerErrorCode.RATE_LIMIT_EXCEEDED
    default_severity = ErrorSeverity.LOW
    suggestion = "Wait retry_after seconds before retrying, or lower the request rate."

    def __init__(
        self,
        message: str,
        limit: int,
        current: int,
        retry_after: float,
        *,
        context: dict[str, Any] | None = None,
        decision: Any = None,
    ) -> None:
        super().__init__(
            message,
            context={
                "limit": limit,
                "current": current,
                "retry_after": retry_after,
                **(context or {}),
            },
        )
        self.limit = limit
        self.current = current
        self.retry_after = retry_after
        self.decision = decision


class SecurityViolationError(ThrottlerError):
    """
    A client's behaviour looks like abuse.

    Args:
        message: What was seen.
        violation_type: A short stable name such as ``"rate_abuse"``.
    """

    default_code = ThrottlerErrorCode.SECURITY_VIOLATION
    default_severity = ErrorSeverity.HIGH
    default_recoverable = True
    suggestion = (
        "Review the client's traffic in the security log; a lockdown strategy "
        "blocks it for the configured time."
    )

    def __init__(
        self,
        message: str,
        violation_type: str,
        *,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message, context={"violation_type": violation_type, **(context or {})}
        )
        self.violation_type = violation_type


def shown(value: object, width: int = 80) -> str:
    """
    A user's value as error messages quote it: its repr, kept short.

    Integers too long to print (Python refuses past 4,300 digits) are described
    by their size instead.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 128:
            return f"an integer of {value.bit_length()} bits"

        return f"{value:,}" if abs(value) < 10**12 else repr(value)

    text = repr(value)
    if len(text) > width:
        text = f"{text[: width - 5]}...{text[-2:]}"

    return text


def is_throttler_error(error: object) -> bool:
    """Return True if ``error`` is an error of this package."""
    return isinstance(error, ThrottlerError)


def is_recoverable_error(error: object) -> bool:
    """Return True if ``error`` is ours and a retry or fallback may succeed."""
    return isinstance(error, ThrottlerError) and error.is_recoverable


def _restored(cls: type[ThrottlerError], args: tuple[Any, ...]) -> ThrottlerError:
    """An error of ``cls`` with ``args``, its fields to be set from its state."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    return error
