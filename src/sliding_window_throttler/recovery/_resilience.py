"""
What ``ResilientStorage`` and ``AsyncResilientStorage`` share: the breaker
gate, the recovery manager, the counters and the state-change logs. The faces
in ``resilient`` only call the storage, one with ``await``.

Each call to the storage is admitted by ``Resilience.admit()``, which returns
a ticket: ``CALL`` for an ordinary call, a positive number for the breaker's
half-open probe, or ``REFUSED``. The face reports the call's end with that
ticket (``succeeded``, ``failed``, ``released``), so that only the probe's own
answer can close or reopen a breaker that is not closed.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic_ns
from typing import TYPE_CHECKING, Any

from ..core.clock import Clock, MonotonicClock
from ..core.decision import US_PER_S, Decision
from ..core.rate import Duration, Throttle, parse_duration_ms
from ..errors import (
    ConfigurationError,
    RedisConnectionError,
    StorageError,
    StorageOperationError,
    StorageUnavailableError,
    ThrottlerError,
    shown,
)
from ..storage.base import StorageHealth
from .backoff import ExponentialBackoff, RetryWithBackoff
from .breaker import BreakerState, BreakerStats, CircuitBreaker, Transition
from .fallback import LocalFallback, check_app_servers
from .health import with_breaker
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
from .policy import FailClosed, FailOpen, FailureMode, SecurityLockdown

if TYPE_CHECKING:
    from ..config import ThrottlerSettings

logger = logging.getLogger(__name__)
_CLOSED = BreakerState.CLOSED  # read on every decision: not through the enum
_HALF_OPEN = BreakerState.HALF_OPEN

DEFAULT_DEADLINE = 0.25
"""
Seconds a decision may take, retries included: room for one command timeout
of ``RedisStorage`` (0.1 s), a backoff and one retry after a fast failure.
"""

CALL = 0
"""The ticket of an ordinary call (the breaker is closed)."""
REFUSED = -1
"""The ticket ``admit()`` returns when the breaker keeps the storage away."""

FIRST_FAILURE_RETRY_AFTER = 1.0
"""
Seconds a fail-closed refusal asks a client to wait when the breaker says
nothing (a failure before it opens, or a refusal while its probe runs); see
``first_failure_retry_after``.
"""


def first_failure_retry_after(breaker: CircuitBreaker) -> float:
    """
    The ``retry_after`` of a fail-closed refusal the breaker gives no time for.

    One second, or the cool-down when it is shorter. One failure is most often
    a blip (a reconnect, a failover) that is over within a second, and
    ``Retry-After`` counts whole seconds, so 1 is the shortest wait a 503 can
    ask for without inviting an immediate retry (``Retry-After: 0``). Asking
    for the whole cool-down would punish every client for one blip; and no
    wait beyond the cool-down helps, as by then the breaker probes anyway.
    Once the breaker is open, refusals carry the exact time left instead.
    """
    return min(FIRST_FAILURE_RETRY_AFTER, breaker.cool_down_us / 1_000_000)


def make_failure_strategy(
    mode: FailureMode | str | RecoveryStrategy,
    *,
    app_servers: int = 1,
    clock: Clock | None = None,
    retry_after: float = FIRST_FAILURE_RETRY_AFTER,
) -> RecoveryStrategy:
    """
    The failure strategy for a configured name.

    Args:
        mode: ``"fail-open"``, ``"fail-closed"`` or ``"local"`` (a strategy
            object is returned as it is).
        app_servers: For ``local``: how many app servers split each limit.
        clock: For ``local``: the clock of its memory storage.
        retry_after: For ``fail-closed``: the wait of a refusal whose error
            gives none (see ``FailClosed``).

    Raises:
        ConfigurationError: for an unknown name, or an object that is not a
            strategy.
    """
    mode = check_failure_strategy(mode)
    if not isinstance(mode, FailureMode):
        return mode

    if mode is FailureMode.FAIL_OPEN:
        return FailOpen()

    if mode is FailureMode.FAIL_CLOSED:
        return FailClosed(retry_after=retry_after)

    return LocalFallback(app_servers=app_servers, clock=clock)


def check_failure_strategy(
    mode: FailureMode | str | RecoveryStrategy,
) -> FailureMode | RecoveryStrategy:
    """
    The ``FailureMode`` a name stands for, or the strategy object itself.

    Raises:
        ConfigurationError: for an unknown name, or an object without the
            ``name``, ``can_recover`` and ``recover`` of a strategy.
    """
    choices = ", ".join(m.value for m in FailureMode)
    if isinstance(mode, str):
        try:
            return FailureMode(mode)
        except ValueError:
            raise ConfigurationError(
                "failure_strategy",
                f"failure_strategy must be one of {choices}, got {mode!r}",
            ) from None

    missing = [a for a in ("name", "can_recover", "recover") if not hasattr(mode, a)]
    if missing:
        raise ConfigurationError(
            "failure_strategy",
            f"failure_strategy must be one of {choices} or a recovery strategy "
            f"(name, can_recover, recover); {type(mode).__name__} has no "
            f"{', '.join(missing)}",
        )

    return mode


def deadline_seconds(deadline: Duration | None) -> float | None:
    """
    A decision's deadline in seconds; None for no deadline.

    Raises:
        ConfigurationError: for a duration that is not above 0 (every call
            would time out at once) or not a duration at all.
    """
    if deadline is None:
        return None

    deadline_ms = parse_duration_ms(deadline, field="deadline")
    if deadline_ms < 1:
        raise ConfigurationError(
            "deadline",
            f"deadline must be above 0 (None for no deadline), got {shown(deadline)}",
        )

    return deadline_ms / 1000


def check_options(
    *,
    failure_strategy: FailureMode | str | RecoveryStrategy | None = None,
    breaker: CircuitBreaker | None = None,
    retry: ExponentialBackoff | RetryWithBackoff | None = None,
    deadline: Duration | None = None,
    app_servers: int | None = None,
) -> None:
    """
    Refuse the first invalid argument of a resilient storage (None is unset).

    The facades call it for memory storages too, which ignore these
    arguments but must not hide a mistake in them.

    Raises:
        ConfigurationError: naming the argument.
    """
    if failure_strategy is not None:
        check_failure_strategy(failure_strategy)

    if breaker is not None and not isinstance(breaker, CircuitBreaker):
        raise ConfigurationError(
            "breaker", f"breaker must be a CircuitBreaker, got {shown(breaker)}"
        )

    if retry is not None and not isinstance(
        retry, ExponentialBackoff | RetryWithBackoff
    ):
        raise ConfigurationError(
            "retry",
            "retry must be an ExponentialBackoff or a RetryWithBackoff, "
            f"got {shown(retry)}",
        )

    deadline_seconds(deadline)
    if app_servers is not None:
        check_app_servers(app_servers)


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
        check_options(
            failure_strategy=failure_strategy,
            breaker=breaker,
            retry=retry,
            deadline=deadline,
            app_servers=app_servers,
        )
        self.clock = clock if clock is not None else MonotonicClock()
        self._monotonic = clock is None
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.deadline_s = deadline_seconds(deadline)
        self.lockdown = lockdown
        self.failure = make_failure_strategy(
            failure_strategy,
            app_servers=app_servers,
            clock=clock,
            retry_after=first_failure_retry_after(self.breaker),
        )
        self.manager = ErrorRecoveryManager(
            self._strategies(retry, lockdown, strategies)
        )
        # While the breaker is open the failure strategy is the first to take
        # the breaker's error (the others before it take no such error), so a
        # strategy that decides alone can be called without the manager.
        self._fast: DecidingStrategy | None = None
        if not strategies and callable(getattr(self.failure, "decide", None)):
            self._fast = self.failure  # type: ignore[assignment]

        self._lock = threading.Lock()
        # A plain dict: a Counter's += costs twice as much, on every degraded
        # decision.
        self._degraded: dict[str, int] = {}
        self._degraded_total = 0
        self._errors: Counter[str] = Counter()
        self._refused = 0
        self._open_cause: StorageError | None = None
        self._open_failures = 0  # consecutive failed calls when it last opened
        self._episode: int | None = None
        self._quiet_until = 0

    def _strategies(
        self,
        retry: ExponentialBackoff | RetryWithBackoff | None,
        lockdown: SecurityLockdown | None,
        extra: Sequence[AnyStrategy],
    ) -> list[AnyStrategy]:
        # No scripts fallback here: the Redis storages switch from FCALL to
        # EVALSHA inside their loader, with or without this layer.
        chain: list[AnyStrategy] = []
        if lockdown is not None:
            chain.append(lockdown)

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
        started_us: int | None = None,
    ) -> RecoveryContext:
        """
        The context of a call to the storage, with its deadline: from
        ``started_us`` (the clock's microseconds) when given, else from now.
        """
        deadline = None
        if self.deadline_s is not None:
            start = self.clock.now_us() if started_us is None else started_us
            deadline = Deadline(start + round(self.deadline_s * US_PER_S), self.clock)

        if not isinstance(throttles, tuple):
            throttles = tuple(throttles)

        return RecoveryContext(identifier, throttles, cost, now_us, operation, deadline)

    def short_circuit(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        """Decide without the storage while the breaker keeps it away."""
        fast = self._fast
        if fast is not None:
            decision = fast.decide(operation, identifier, throttles, cost, now_us)
            self._count_degraded(fast.name, None)
            return decision

        if not isinstance(throttles, tuple):
            throttles = tuple(throttles)

        error = self.unavailable()
        context = RecoveryContext(identifier, throttles, cost, now_us, operation)
        try:
            result = self.manager.recover(error, context)
        except BaseException:
            self.refused()
            raise

        return self.recovered(result, error)

    def admit(self) -> int:
        """
        Whether the storage may be called now: ``CALL``, the probe's ticket
        (above 0), or ``REFUSED``. Report the call's end with the ticket.
        """
        breaker = self.breaker
        if breaker.state is _CLOSED:
            return CALL

        # The default clock is read inline: this runs on every decision while
        # the breaker is open.
        now = monotonic_ns() // 1000 if self._monotonic else self.clock.now_us()
        permit = breaker.allow(now)
        if permit.transition is not None:
            self._log_transition(permit.transition, None)

        return permit.probe if permit.allowed else REFUSED

    def unavailable(self) -> StorageUnavailableError:
        """A breaker-open error carrying the time left in the cool-down."""
        return self._unavailable(self.clock.now_us(), self._open_cause)

    def succeeded(self, ticket: int = CALL) -> None:
        """The storage answered the call admitted with ``ticket``."""
        breaker = self.breaker
        transition = breaker.record_success(ticket)
        if transition is not None:
            self._log_transition(transition, None)

        if self._episode is not None and breaker.state is _CLOSED:
            self._end_episode()

    def failed(self, error: StorageError, ticket: int = CALL) -> None:
        """The storage raised ``error`` for the call admitted with ``ticket``."""
        with self._lock:
            self._errors[str(error.code)] += 1

        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("storage call failed: %s: %s", error.code, error.message)

        now = self.clock.now_us()
        if isinstance(error, RedisConnectionError):
            transition = self.breaker.record_failure(now, ticket)
        elif isinstance(error, StorageOperationError) and not error.server_answered:
            # A full pool sent nothing: it tells nothing of Redis either way
            # (while Redis stalls, the pool fills with calls that time out).
            self.released(ticket)
            return
        else:
            # Redis answered, with an error: the connection is fine.
            transition = self.breaker.record_success(ticket)

        if transition is not None:
            if transition.new is BreakerState.OPEN:
                self._open_cause = error
                self._open_failures = transition.failures

            self._log_transition(transition, error)

    def released(self, ticket: int) -> None:
        """The call admitted with ``ticket`` ended without an answer either way."""
        if ticket > CALL:
            self.breaker.release(ticket)

    def recovered(self, result: RecoveryResult, error: ThrottlerError) -> Decision:
        """Count and return the decision of a recovery."""
        assert result.decision is not None
        if result.degraded:
            self._count_degraded(result.strategy, error)

        return result.decision

    def _count_degraded(self, strategy: str, error: ThrottlerError | None) -> None:
        lock = self._lock
        lock.acquire()  # not `with`: half the cost, while the breaker is open
        try:
            self._degraded[strategy] = self._degraded.get(strategy, 0) + 1
            self._degraded_total += 1
        finally:
            lock.release()

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

    def health(self, primary: StorageHealth) -> StorageHealth:
        """The primary's health with the breaker's view."""
        return with_breaker(
            primary, self.breaker, self.clock.now_us(), self.failure.name
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
        state = self.breaker.state
        failures = self._open_failures or self.breaker.failure_threshold
        until = "its probe answers" if state is _HALF_OPEN else "the cool-down ends"
        # FailClosed words its refusal from this context (see FailClosed.recover).
        context: dict[str, object] = {
            "reason": "circuit_open",
            "breaker": str(state),
            "failures": failures,
        }
        if isinstance(cause, ThrottlerError):
            context["cause_code"] = str(cause.code)

        error = StorageUnavailableError(
            f"the circuit breaker is {state}: the storage failed {failures} "
            f"consecutive calls (retries included) and is not asked until {until}",
            retry_after=self.breaker.retry_after(now_us),
            context=context,
        )
        error.__cause__ = cause
        return error

    def _start_episode(self, strategy: str, error: ThrottlerError | None) -> None:
        now = self.clock.now_us()
        with self._lock:
            if self._episode is not None or now < self._quiet_until:
                return

            # The decision that starts the episode is already counted.
            self._episode = self._degraded_total - 1
            self._quiet_until = now + self.breaker.cool_down_us

        if error is None:  # the breaker keeps the storage away
            error = self.unavailable()

        if isinstance(error, StorageUnavailableError) and isinstance(
            error.__cause__, ThrottlerError
        ):
            error = error.__cause__  # say what failed, not that the breaker is open

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
        if transition.new is BreakerState.OPEN and transition.old is _CLOSED:
            logger.warning(
                "circuit breaker open after %d consecutive failed calls (retries "
                "included), the last %s: the storage is not asked for %.3gs, the "
                "%r strategy decides",
                transition.failures,
                error.code if error is not None else "unknown",
                self.breaker.cool_down_us / 1_000_000,
                self.failure.name,
            )
        elif transition.new is _CLOSED:
            self._open_cause = None
            self._open_failures = 0
            logger.info("circuit breaker closed: the storage answers again")
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("circuit breaker %s -> %s", transition.old, transition.new)


_SETTINGS_OF = {
    "failure_strategy": ("failure_strategy",),
    "breaker": ("breaker_failure_threshold", "breaker_cool_down"),
    "retry": ("retry_attempts", "command_timeout"),
    "deadline": ("deadline",),
    "app_servers": ("app_servers",),
}
"""The settings that only feed each argument of a resilient storage."""


def environment_kwargs(
    settings: ThrottlerSettings | None, explicit: dict[str, Any]
) -> dict[str, Any]:
    """
    The arguments of a resilient storage: ``settings`` (from the environment
    when None) overridden by ``explicit``. Read from the environment, the
    settings behind an explicit argument are neither read nor checked, so a
    stray variable cannot refuse what the code says.
    """
    from ..config import ThrottlerSettings

    if settings is None:
        fields = ThrottlerSettings.model_fields
        skipped = {
            field: fields[field].default
            for name in explicit
            for field in _SETTINGS_OF.get(name, ())
        }
        settings = ThrottlerSettings.from_env(**skipped)

    return {**settings_kwargs(settings), **explicit}


def settings_kwargs(settings: ThrottlerSettings) -> dict[str, Any]:
    """The arguments of a resilient storage that ``settings`` describe."""
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
