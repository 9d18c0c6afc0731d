"""
What ``ResilientStorage`` and ``AsyncResilientStorage`` share: the breaker
gate, the recovery manager, the counters and the state-change logs. The faces
in ``resilient`` only call the storage, one with ``await``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.clock import Clock, MonotonicClock
from ..core.decision import Decision
from ..core.rate import Duration, Throttle, parse_duration_ms
from ..errors import (
    ConfigurationError,
    RedisConnectionError,
    StorageError,
    StorageUnavailableError,
    ThrottlerError,
)
from .backoff import ExponentialBackoff, RetryWithBackoff
from .breaker import BreakerState, BreakerStats, CircuitBreaker, Transition
from .fallback import LocalFallback
from .manager import (
    AnyStrategy,
    Deadline,
    DecidingStrategy,
    ErrorRecoveryManager,
    Operation,
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

if TYPE_CHECKING:
    from ..config import ThrottlerSettings

logger = logging.getLogger(__name__)

DEFAULT_DEADLINE = 0.25
"""
Seconds a decision may take, retries included: room for one command timeout
of ``RedisStorage`` (0.1 s), a backoff and one retry after a fast failure.
"""


def make_failure_strategy(
    mode: FailureMode | str | RecoveryStrategy,
    *,
    app_servers: int = 1,
    clock: Clock | None = None,
) -> RecoveryStrategy:
    """
    The failure strategy for a configured name.

    Args:
        mode: ``"fail-open"``, ``"fail-closed"`` or ``"local"`` (a strategy
            object is returned as it is).
        app_servers: For ``local``: how many app servers split each limit.
        clock: For ``local``: the clock of its memory storage.

    Raises:
        ConfigurationError: for an unknown name.
    """
    if not isinstance(mode, str):
        return mode

    try:
        mode = FailureMode(mode)
    except ValueError:
        choices = ", ".join(m.value for m in FailureMode)
        raise ConfigurationError(
            "failure_strategy",
            f"failure_strategy must be one of {choices}, got {mode!r}",
        ) from None

    if mode is FailureMode.FAIL_OPEN:
        return FailOpen()

    if mode is FailureMode.FAIL_CLOSED:
        return FailClosed()

    return LocalFallback(app_servers=app_servers, clock=clock)


@dataclass(frozen=True, slots=True)
class ResilienceStats:
    """
    Counters of a resilient storage.

    Attributes:
        breaker: The circuit breaker's state and counters.
        degraded_total: Decisions made by a failure strategy.
        degraded_by_strategy: The same, per strategy name.
        refused_total: Calls refused with an error (fail-closed, or an error
            no strategy recovered).
        errors_by_code: Storage errors seen, per ``ThrottlerErrorCode``.
    """

    breaker: BreakerStats
    degraded_total: int
    degraded_by_strategy: dict[str, int]
    refused_total: int
    errors_by_code: dict[str, int]


class Resilience:
    """The breaker, the manager and the bookkeeping both faces share."""

    def __init__(
        self,
        primary: object,
        *,
        failure_strategy: FailureMode | str | RecoveryStrategy,
        breaker: CircuitBreaker | None,
        retry: ExponentialBackoff | RetryWithBackoff | None,
        deadline: Duration | None,
        lockdown: SecurityLockdown | None,
        strategies: Sequence[AnyStrategy],
        app_servers: int,
        clock: Clock | None,
    ) -> None:
        self.clock = clock if clock is not None else MonotonicClock()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.deadline_s = (
            None
            if deadline is None
            else parse_duration_ms(deadline, field="deadline") / 1000
        )
        self.lockdown = lockdown
        self.failure = make_failure_strategy(
            failure_strategy, app_servers=app_servers, clock=clock
        )
        self.manager = ErrorRecoveryManager(
            self._strategies(primary, retry, lockdown, strategies)
        )
        # While the breaker is open the failure strategy is the first to take
        # the breaker's error (the others before it take no such error), so a
        # strategy that decides alone can be called without the manager.
        self._fast: DecidingStrategy | None = None
        if not strategies and callable(getattr(self.failure, "decide", None)):
            self._fast = self.failure  # type: ignore[assignment]

        self._lock = threading.Lock()
        self._degraded: Counter[str] = Counter()
        self._degraded_total = 0
        self._errors: Counter[str] = Counter()
        self._refused = 0
        self._open_error: StorageUnavailableError | None = None
        self._episode: int | None = None
        self._quiet_until = 0

    def _strategies(
        self,
        primary: object,
        retry: ExponentialBackoff | RetryWithBackoff | None,
        lockdown: SecurityLockdown | None,
        extra: Sequence[AnyStrategy],
    ) -> list[AnyStrategy]:
        chain: list[AnyStrategy] = []
        if lockdown is not None:
            chain.append(lockdown)

        if callable(getattr(primary, "use_scripts", None)):
            target: SupportsScripts = primary  # type: ignore[assignment]
            chain.append(ScriptsFallback(target))

        if not isinstance(retry, RetryWithBackoff):
            retry = RetryWithBackoff(retry)

        chain.append(retry)
        chain.extend(extra)
        chain.append(self.failure)
        return chain

    def context(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> RecoveryContext:
        """The context of a call to the storage, with its deadline."""
        deadline = None
        if self.deadline_s is not None:
            deadline = Deadline.after(self.deadline_s, self.clock)

        if not isinstance(throttles, tuple):
            throttles = tuple(throttles)

        return RecoveryContext(identifier, throttles, cost, now_us, operation, deadline)

    def short_circuit(
        self,
        error: StorageUnavailableError,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        """Decide without the storage while the breaker is open."""
        fast = self._fast
        if fast is not None:
            decision = fast.decide(operation, identifier, throttles, cost, now_us)
            self._count_degraded(fast.name, error)
            return decision

        if not isinstance(throttles, tuple):
            throttles = tuple(throttles)

        context = RecoveryContext(identifier, throttles, cost, now_us, operation)
        try:
            result = self.manager.recover(error, context)
        except BaseException:
            self.refused()
            raise

        return self.recovered(result, error)

    def gate(self) -> StorageUnavailableError | None:
        """None when the storage may be called now, else why not (not raised)."""
        if self.breaker.state is BreakerState.CLOSED:
            return None

        now = self.clock.now_us()
        allowed, transition = self.breaker.allow(now)
        if transition is not None:
            self._log_transition(transition, None)

        if allowed:
            return None

        error = self._open_error
        if error is None:
            error = self._open_error = self._unavailable(now, None)

        return error

    def unavailable(self) -> StorageUnavailableError:
        """A fresh breaker-open error, to raise."""
        opened = self._open_error
        cause = opened.__cause__ if opened is not None else None
        return self._unavailable(self.clock.now_us(), cause)

    def succeeded(self) -> None:
        """The storage answered."""
        transition = self.breaker.record_success()
        if transition is not None:
            self._log_transition(transition, None)

        if self._episode is not None:
            self._end_episode()

    def failed(self, error: StorageError) -> None:
        """The storage raised ``error``."""
        with self._lock:
            self._errors[str(error.code)] += 1

        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("storage call failed: %s: %s", error.code, error.message)

        now = self.clock.now_us()
        if isinstance(error, RedisConnectionError):
            transition = self.breaker.record_failure(now)
        else:
            # Redis answered, with an error: the connection is fine.
            transition = self.breaker.record_success()

        if transition is not None:
            if transition.new is BreakerState.OPEN:
                self._open_error = self._unavailable(now, error)

            self._log_transition(transition, error)

    def recovered(self, result: RecoveryResult, error: ThrottlerError) -> Decision:
        """Count and return the decision of a recovery."""
        assert result.decision is not None
        if result.degraded:
            self._count_degraded(result.strategy, error)

        return result.decision

    def _count_degraded(self, strategy: str, error: ThrottlerError) -> None:
        with self._lock:
            self._degraded[strategy] += 1
            self._degraded_total += 1

        if self._episode is None:
            self._start_episode(strategy, error)

    def refused(self) -> None:
        """A call ended with an error."""
        with self._lock:
            self._refused += 1

    def stats(self) -> ResilienceStats:
        """A snapshot of the counters."""
        with self._lock:
            return ResilienceStats(
                breaker=self.breaker.stats(self.clock.now_us()),
                degraded_total=self._degraded_total,
                degraded_by_strategy=dict(self._degraded),
                refused_total=self._refused,
                errors_by_code=dict(self._errors),
            )

    def forget(self, identifier: str, throttles: Sequence[Throttle]) -> None:
        """Reset what the lockdown and the local fallback know of a client."""
        if self.lockdown is not None:
            self.lockdown.release(identifier)

        if isinstance(self.failure, LocalFallback):
            self.failure.reset(identifier, throttles)

    def close(self) -> None:
        """Release the local fallback."""
        if isinstance(self.failure, LocalFallback):
            self.failure.close()

    def _unavailable(
        self, now_us: int, cause: BaseException | None
    ) -> StorageUnavailableError:
        error = StorageUnavailableError(
            "the circuit breaker is open: the storage failed "
            f"{self.breaker.failure_threshold} times in a row and is not asked "
            "until the cool-down ends",
            retry_after=self.breaker.retry_after(now_us),
            context={"reason": "circuit_open"},
        )
        error.__cause__ = cause
        return error

    def _start_episode(self, strategy: str, error: ThrottlerError) -> None:
        if isinstance(error, StorageUnavailableError) and isinstance(
            error.__cause__, ThrottlerError
        ):
            error = error.__cause__  # say what failed, not that the breaker is open

        now = self.clock.now_us()
        with self._lock:
            if self._episode is not None or now < self._quiet_until:
                return

            # The decision that starts the episode is already counted.
            self._episode = self._degraded_total - 1
            self._quiet_until = now + self.breaker.cool_down_us

        logger.warning(
            "storage failing (%s): decisions now follow the %r strategy; %s",
            error.code,
            strategy,
            error.get_recovery_suggestion(),
        )

    def _end_episode(self) -> None:
        with self._lock:
            if self._episode is None:
                return

            count = self._degraded_total - self._episode
            self._episode = None

        logger.info(
            "storage answers again: normal decisions resumed after %d degraded "
            "decisions",
            count,
        )

    def _log_transition(
        self, transition: Transition, error: StorageError | None
    ) -> None:
        if (
            transition.new is BreakerState.OPEN
            and transition.old is BreakerState.CLOSED
        ):
            logger.warning(
                "circuit breaker open after %d consecutive storage failures (%s): "
                "the storage is not asked for %.3gs, the %r strategy decides",
                transition.failures,
                error.code if error is not None else "unknown",
                self.breaker.cool_down_us / 1_000_000,
                self.failure.name,
            )
        elif transition.new is BreakerState.CLOSED:
            self._open_error = None
            logger.info("circuit breaker closed: the storage answers again")
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("circuit breaker %s -> %s", transition.old, transition.new)


def settings_kwargs(settings: ThrottlerSettings | None) -> dict[str, Any]:
    from ..config import ThrottlerSettings

    if settings is None:
        settings = ThrottlerSettings.from_env()

    return {
        "failure_strategy": settings.failure_strategy,
        "breaker": CircuitBreaker(
            settings.breaker_failure_threshold, settings.breaker_cool_down
        ),
        "retry": ExponentialBackoff(
            max_attempts=settings.retry_attempts,
            attempt_timeout=settings.command_timeout,
        ),
        "deadline": settings.deadline,
        "app_servers": settings.app_servers,
    }
