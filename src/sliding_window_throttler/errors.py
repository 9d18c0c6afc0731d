"""
Errors raised by sliding-window-throttler.

Every error is a ``ThrottlerError``. The branches follow what the caller can do
about it::

    ThrottlerError                  code, message, severity, context, suggestion
    ├── ConfigurationError          fix the configuration (names the field)
    └── KeyGenerationError          fix the identifier passed to hit()

Each error carries a stable ``code`` (``ThrottlerErrorCode``), a ``severity``,
whether it ``is_recoverable`` (a retry or a fallback may succeed), a ``context``
dict of details safe to log, and ``get_recovery_suggestion()``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ThrottlerErrorCode(StrEnum):
    """Stable machine-readable error codes."""

    CONFIGURATION_INVALID = "CONFIGURATION_INVALID"
    KEY_GENERATION_FAILED = "KEY_GENERATION_FAILED"


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

    default_code = ThrottlerErrorCode.CONFIGURATION_INVALID
    default_severity = ErrorSeverity.MEDIUM
    default_recoverable = False
    suggestion = "See the error message and its context."

    def __init__(
        self,
        message: str,
        *,
        code: ThrottlerErrorCode | None = None,
        severity: ErrorSeverity | None = None,
        recoverable: bool | None = None,
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


def is_throttler_error(error: object) -> bool:
    """Return True if ``error`` is an error of this package."""
    return isinstance(error, ThrottlerError)


def is_recoverable_error(error: object) -> bool:
    """Return True if ``error`` is ours and a retry or fallback may succeed."""
    return isinstance(error, ThrottlerError) and error.is_recoverable
