"""
The built-in strategies that decide without the storage, and their decisions.

``FailOpen``, ``FailClosed`` and ``SecurityLockdown`` are pure policy objects.
The local fallback lives in ``fallback``, the retry in ``backoff``. There is no
scripts fallback: the Redis storages switch from ``FCALL`` to ``EVALSHA``
inside their loader (``storage/_redis_common.py``), which must work without
this layer too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from enum import StrEnum
from typing import NoReturn

from ..core.clock import Clock, MonotonicClock
from ..core.decision import Decision, Outcome, ThrottleRecord
from ..core.rate import Duration, Throttle, parse_duration_ms
from ..errors import (
    ConfigurationError,
    SecurityViolationError,
    StorageError,
    StorageUnavailableError,
    ThrottlerError,
    shown,
)
from .manager import US_PER_S, Operation, RecoveryContext, RecoveryResult

security_logger = logging.getLogger("sliding_window_throttler.security")


class FailureMode(StrEnum):
    """The built-in failure strategies, by the names configuration uses."""

    FAIL_OPEN = "fail-open"
    """Admit every hit while the storage fails (availability first)."""
    FAIL_CLOSED = "fail-closed"
    """Refuse every hit with ``StorageUnavailableError`` (answer 503)."""
    LOCAL = "local"
    """Decide with a per-process ``MemoryStorage`` (limits roughly hold)."""


def admitted_decision(
    throttles: Sequence[Throttle], cost: int, strategy: str
) -> Decision:
    """An admitting, degraded decision over ``throttles``."""
    records = [
        ThrottleRecord(
            name=t.name,
            limit=t.limit,
            total_hits=cost,
            remaining=max(0, t.limit - cost),
            time_to_expire=-(-t.ttl_ms // 1000),
            is_blocked=False,
            time_to_block_expire=-1,
            retry_after=0.0,
            outcome=Outcome.ADMITTED,
        )
        for t in throttles
    ]
    return Decision(True, records, 0.0, True, strategy)


def blocked_decision(
    throttles: Sequence[Throttle],
    cost: int,
    wait_us: int,
    strategy: str,
    *,
    degraded: bool,
) -> Decision:
    """A refusing decision: every throttle blocked for ``wait_us``."""
    seconds = -(-wait_us // US_PER_S)
    records = [
        ThrottleRecord(
            name=t.name,
            limit=t.limit,
            total_hits=t.limit + max(cost, 1),
            remaining=0,
            time_to_expire=seconds,
            is_blocked=True,
            time_to_block_expire=seconds,
            retry_after=wait_us / US_PER_S,
            outcome=Outcome.BLOCKED,
        )
        for t in throttles
    ]
    return Decision(False, records, wait_us / US_PER_S, degraded, strategy)


def mark_degraded(decision: Decision, strategy: str) -> Decision:
    """Mark a decision that a strategy just made as degraded (a cheap copy)."""
    return decision.as_degraded(strategy)


class FailOpen:
    """
    Admit every hit the storage cannot decide (availability first).

    Nothing is counted anywhere while it decides, so limits do not hold at all.
    """

    name = FailureMode.FAIL_OPEN.value

    def can_recover(self, error: ThrottlerError) -> bool:
        """Any storage failure."""
        return isinstance(error, StorageError)

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """Admit the hit, marked degraded."""
        decision = admitted_decision(context.throttles, context.cost, self.name)
        return RecoveryResult(True, self.name, decision, True)

    def decide(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        """Admit the hit, marked degraded (``recover`` without the wrapping)."""
        return admitted_decision(throttles, cost, self.name)


class FailClosed:
    """
    Refuse every hit the storage cannot decide (limits first).

    It raises ``StorageUnavailableError`` (a ``StorageError``) with the storage's
    error as ``__cause__``: the web layer answers 503 Service Unavailable, with
    ``Retry-After`` from the error's ``retry_after``, which is always above 0:
    the time left in the breaker's cool-down when the error says it, else
    ``retry_after``.

    Args:
        retry_after: Seconds to ask for when the error gives no time (a
            failure before the breaker opens). ``ResilientStorage`` passes one
            second, or its cool-down when shorter (see
            ``first_failure_retry_after`` for why).

    Raises:
        ConfigurationError: for a ``retry_after`` that is not above 0.
    """

    name = FailureMode.FAIL_CLOSED.value

    def __init__(self, retry_after: float = 1.0) -> None:
        if (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or not 0 < retry_after < float("inf")
        ):
            raise ConfigurationError(
                "retry_after",
                "retry_after must be a number of seconds above 0, "
                f"got {shown(retry_after)}",
            )

        self.retry_after = float(retry_after)

    def can_recover(self, error: ThrottlerError) -> bool:
        """Any storage failure."""
        return isinstance(error, StorageError)

    def recover(self, error: ThrottlerError, context: RecoveryContext) -> NoReturn:
        """Raise ``StorageUnavailableError`` from ``error``."""
        retry_after = 0.0
        if isinstance(error, StorageUnavailableError):
            retry_after = error.retry_after

        if not retry_after > 0:
            retry_after = self.retry_after

        details = {"error_code": str(error.code)}
        if error.context.get("reason") == "circuit_open":
            message = _breaker_refusal(error, retry_after)
            if "cause_code" in error.context:
                details["cause_code"] = error.context["cause_code"]
        else:
            message = (
                f"the storage cannot decide ({error.code}: {error.message}) and the "
                "failure strategy is fail-closed: refusing the request"
            )

        raise StorageUnavailableError(
            message, retry_after=retry_after, strategy=self.name, context=details
        ) from error


def _breaker_refusal(error: ThrottlerError, retry_after: float) -> str:
    """Why fail-closed refuses while the breaker keeps the storage away."""
    # The breaker's own error (Resilience._unavailable) says what opened it;
    # "STORAGE_UNAVAILABLE" alone would hide the storage's failure.
    state = error.context.get("breaker", "open")
    failures = error.context.get("failures")
    why = "the storage keeps failing"
    if failures is not None:
        why = f"the storage failed {failures} times in a row, retries included"

    if "cause_code" in error.context:
        why += f": {error.context['cause_code']}"

    return (
        f"the circuit breaker is {state} ({why}); fail-closed refuses the "
        f"request; retry in {retry_after:.3f}s"
    )


class SecurityLockdown:
    """
    Block a client for a fixed time after a ``SecurityViolationError``.

    The block is kept in this process (a bounded table) and returned by
    ``check()``, which ``ResilientStorage`` consults before every decision.

    Limitation: the block lives in this process only; other app servers learn
    of the violation only if it is raised there too.

    Args:
        block_duration: How long the client is refused (seconds, a
            ``timedelta`` or a duration string; default one hour).
        clock: Where time comes from (default: the monotonic clock).
        max_clients: The most clients blocked at once; past that the block
            that ends first is dropped.
    """

    name = "security-lockdown"

    def __init__(
        self,
        block_duration: Duration = 3600,
        *,
        clock: Clock | None = None,
        max_clients: int = 100_000,
    ) -> None:
        block_ms = parse_duration_ms(block_duration, field="block_duration")
        if block_ms < 1:
            raise ConfigurationError(
                "block_duration",
                f"block_duration must be at least 1 ms, got {shown(block_duration)}",
            )

        if isinstance(max_clients, bool) or not isinstance(max_clients, int):
            raise ConfigurationError(
                "max_clients",
                f"max_clients must be an integer, got {shown(max_clients)}",
            )

        if max_clients < 1:
            raise ConfigurationError(
                "max_clients",
                f"max_clients must be at least 1, got {shown(max_clients)}",
            )

        self.block_us = block_ms * 1000
        self._clock = clock if clock is not None else MonotonicClock()
        self._max_clients = max_clients
        self._until: dict[str, int] = {}
        self._lock = threading.Lock()

    def can_recover(self, error: ThrottlerError) -> bool:
        """``SecurityViolationError``."""
        return isinstance(error, SecurityViolationError)

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """Block the context's client and return the refusing decision."""
        if context.identifier:
            self._block(context.identifier, self._clock.now_us() + self.block_us)

        security_logger.warning(
            "client locked down for %.0fs after a security violation",
            self.block_us / US_PER_S,
            extra={
                "event": "security.lockdown",
                "violation_type": getattr(error, "violation_type", None),
                "block_seconds": self.block_us / US_PER_S,
            },
        )
        decision = blocked_decision(
            context.throttles, context.cost, self.block_us, self.name, degraded=False
        )
        return RecoveryResult(True, self.name, decision)

    def check(
        self, identifier: str, throttles: Sequence[Throttle], cost: int = 1
    ) -> Decision | None:
        """The refusing decision if ``identifier`` is locked down, else None."""
        until = self._until.get(identifier) if self._until else None
        if until is None:
            return None

        wait = until - self._clock.now_us()
        if wait <= 0:
            self.release(identifier)
            return None

        return blocked_decision(throttles, cost, wait, self.name, degraded=False)

    def is_locked(self, identifier: str) -> bool:
        """True while ``identifier`` is locked down."""
        until = self._until.get(identifier)
        return until is not None and until > self._clock.now_us()

    def release(self, identifier: str) -> None:
        """Lift the lockdown of ``identifier``."""
        with self._lock:
            self._until.pop(identifier, None)

    def _block(self, identifier: str, until: int) -> None:
        with self._lock:
            if identifier not in self._until and len(self._until) >= self._max_clients:
                now = self._clock.now_us()
                self._until = {k: v for k, v in self._until.items() if v > now}
                if len(self._until) >= self._max_clients:
                    del self._until[min(self._until, key=self._until.__getitem__)]

            self._until[identifier] = max(until, self._until.get(identifier, 0))
