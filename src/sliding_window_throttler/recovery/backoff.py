"""
Retry where it is safe, with exponential backoff and jitter (tenacity).

A storage call is retried only when running it again cannot count a hit twice:

- the error says the command never ran: a ``RedisConnectionError`` whose
  ``outcome_unknown`` is False (refused, or broken before sending; a timeout
  while connecting), or a ``RedisFunctionError`` of kind ``load_failed`` (the
  library was missing, so the decision did not run);
- or the call records nothing: a ``peek``, or a hit of cost 0.

A ``StorageTimeoutError`` (or any ``StorageError``) with ``outcome_unknown``
on a counting hit is never retried: Redis may have run the decision and
counted the hit before the answer was lost. It goes to the failure strategy
instead, which admits it (fail-open, local) or refuses it (fail-closed)
without touching Redis again.

Retries never stack past the decision's deadline: another attempt starts only
if the backoff sleep plus one attempt (``attempt_timeout``, the storage's
command timeout) still fits before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from ..core.rate import Duration, parse_duration_ms
from ..errors import (
    ConfigurationError,
    RedisConnectionError,
    RedisFunctionError,
    StorageError,
    ThrottlerError,
    shown,
)
from .manager import Deadline, RecoveryContext, RecoveryResult


def is_retry_safe(error: BaseException, *, counts: bool) -> bool:
    """
    Return True if the call that raised ``error`` may run again.

    Args:
        error: What the storage raised.
        counts: The call records a hit (a ``hit`` of cost above 0).
    """
    if isinstance(error, RedisFunctionError):
        # The library was missing when the call came (flushed again between
        # loading and calling): the decision never ran.
        return error.kind == "load_failed"

    if not isinstance(error, RedisConnectionError):
        return False

    return not (counts and error.outcome_unknown)


def _seconds(value: Duration, field: str) -> float:
    return parse_duration_ms(value, field=field) / 1000


@dataclass(frozen=True, slots=True, init=False)
class ExponentialBackoff:
    """
    How far apart retries are, and how many there are.

    The n-th retry waits ``min(base * 2**(n-1) + uniform(0, jitter), maximum)``.

    Args:
        max_attempts: Attempts in all, the call that failed first included
            (1 disables retries).
        base: The wait before the first retry.
        maximum: The longest wait.
        jitter: Up to this much is added at random, so app servers that lost
            Redis together do not come back in step.
        attempt_timeout: How long one attempt may take (the storage's command
            timeout, 0.1 s for ``RedisStorage``): a retry starts only if it
            can end before the deadline.

    Durations are seconds, ``timedelta`` or strings such as ``"5ms"``.

    Raises:
        ConfigurationError: for a bad value.
    """

    max_attempts: int
    base: float
    maximum: float
    jitter: float
    attempt_timeout: float

    def __init__(
        self,
        max_attempts: int = 2,
        base: Duration = 0.005,
        maximum: Duration = 0.05,
        jitter: Duration = 0.005,
        attempt_timeout: Duration = 0.1,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise ConfigurationError(
                "max_attempts",
                f"max_attempts must be an integer, got {shown(max_attempts)}",
            )

        if max_attempts < 1:
            raise ConfigurationError(
                "max_attempts",
                f"max_attempts must be at least 1, got {shown(max_attempts)}",
            )

        object.__setattr__(self, "max_attempts", max_attempts)
        object.__setattr__(self, "base", _seconds(base, "base"))
        object.__setattr__(self, "maximum", _seconds(maximum, "maximum"))
        object.__setattr__(self, "jitter", _seconds(jitter, "jitter"))
        object.__setattr__(
            self, "attempt_timeout", _seconds(attempt_timeout, "attempt_timeout")
        )

    def wait(self) -> wait_exponential_jitter:
        """The tenacity wait strategy of this backoff."""
        return wait_exponential_jitter(
            multiplier=self.base, max=self.maximum, jitter=self.jitter
        )


class _StopAtDeadline(stop_base):
    """Stop when the next sleep plus one attempt would end past the deadline."""

    def __init__(self, deadline: Deadline, attempt_timeout: float) -> None:
        self._deadline = deadline
        self._attempt_timeout = attempt_timeout

    def __call__(self, retry_state: RetryCallState) -> bool:
        needed = retry_state.upcoming_sleep + self._attempt_timeout
        return needed > self._deadline.remaining()


class RetryWithBackoff:
    """
    Make a failed storage call again when it is safe, with backoff and jitter.

    It recovers when a retry succeeds (the decision is not degraded) and
    declines, passing the last error on to the next strategy, when retrying is
    unsafe (see ``is_retry_safe``), the attempts are spent, the deadline is
    near, or the circuit breaker refuses further calls.

    Args:
        backoff: Attempts and waits (default ``ExponentialBackoff()``).
        sleep: How the sync face sleeps (tests pass a fake).
        async_sleep: How the async face sleeps (tests pass a fake).
    """

    name = "retry"

    def __init__(
        self,
        backoff: ExponentialBackoff | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backoff = backoff if backoff is not None else ExponentialBackoff()
        self._sleep = sleep
        self._async_sleep = async_sleep

    def can_recover(self, error: ThrottlerError) -> bool:
        """
        Connection errors, timeouts and a library that failed to load (whether
        it is safe depends on the call).
        """
        if isinstance(error, RedisFunctionError):
            return error.kind == "load_failed"

        return isinstance(error, RedisConnectionError)

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """Retry ``context.call`` while it is safe and time allows."""
        if context.call is None or not self._may_retry(error, context):
            return RecoveryResult(False, self.name, error=error)

        try:
            for attempt in Retrying(sleep=self._sleep, **self._policy(context)):
                with attempt:
                    # Attempt 1 is the call that already failed: replaying its
                    # error lets tenacity wait before the first real retry.
                    if attempt.retry_state.attempt_number == 1:
                        raise error

                    return RecoveryResult(True, self.name, context.call())
        except StorageError as exc:
            return RecoveryResult(False, self.name, error=exc)

        raise AssertionError("tenacity returned without an outcome")  # pragma: no cover

    async def arecover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """The async face of ``recover``."""
        if context.acall is None or not self._may_retry(error, context):
            return RecoveryResult(False, self.name, error=error)

        try:
            retrying = AsyncRetrying(sleep=self._async_sleep, **self._policy(context))
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise error

                    return RecoveryResult(True, self.name, await context.acall())
        except StorageError as exc:
            return RecoveryResult(False, self.name, error=exc)

        raise AssertionError("tenacity returned without an outcome")  # pragma: no cover

    def _may_retry(self, error: ThrottlerError, context: RecoveryContext) -> bool:
        return self.backoff.max_attempts > 1 and is_retry_safe(
            error, counts=context.counts
        )

    def _policy(self, context: RecoveryContext) -> dict[str, Any]:
        """The tenacity arguments both faces share."""
        counts = context.counts
        stop = stop_after_attempt(self.backoff.max_attempts)
        if context.deadline is not None:
            stop = stop | _StopAtDeadline(  # type: ignore[assignment]
                context.deadline, self.backoff.attempt_timeout
            )

        return {
            "stop": stop,
            "wait": self.backoff.wait(),
            "retry": retry_if_exception(lambda e: is_retry_safe(e, counts=counts)),
            "reraise": True,
        }
