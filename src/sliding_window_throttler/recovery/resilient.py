"""
A storage wrapper that keeps deciding when its storage fails.

``ResilientStorage`` and ``AsyncResilientStorage`` implement the storage
protocols around a primary storage (usually Redis):

1. A security lockdown, when configured, refuses locked-down clients first.
2. A circuit breaker keeps calls away from a storage that failed
   ``failure_threshold`` calls in a row (retries included), for a cool-down;
   then one probe call
   tells whether it is back. Only the probe's answer counts then: a slow call
   that began before the breaker opened cannot close it.
3. A failed call goes to the recovery manager: a retry where it is safe and
   fits the deadline, your extra strategies, then the failure strategy
   (fail-open, fail-closed or local). (A Redis without Functions needs no
   strategy: the Redis storages switch to ``EVALSHA`` by themselves.)
4. Every decision a failure strategy makes is marked (``degraded``,
   ``strategy``) and counted in ``stats()``.

Both faces share ``Resilience`` (in ``_resilience``), which holds the
breaker, the manager and the bookkeeping; they differ only in awaiting the
storage. The async face also
cuts a call at the deadline (``asyncio.timeout``); the sync face relies on the
storage's own socket timeouts for that, as a thread cannot be interrupted.

Logs are state changes only: the breaker opening (WARNING) and closing (INFO),
degraded decisions starting (WARNING) and ending (INFO), each at most once per
breaker cool-down. Single failures are logged at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ..core.clock import Clock
from ..core.decision import Decision
from ..core.rate import Duration, Throttle
from ..errors import StorageError, StorageTimeoutError
from ..storage._watchdog import Watchdog
from ..storage.base import AsyncStorage, Storage, StorageHealth
from ._resilience import (
    DEFAULT_DEADLINE,
    REFUSED,
    Resilience,
    ResilienceStats,
    environment_kwargs,
    make_failure_strategy,
)
from .backoff import ExponentialBackoff, RetryWithBackoff
from .breaker import CircuitBreaker
from .health import astorage_health, storage_health
from .manager import (
    AnyStrategy,
    ErrorRecoveryManager,
    Operation,
    RecoveryContext,
    RecoveryStrategy,
)
from .policy import FailureMode, SecurityLockdown

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..config import ThrottlerSettings

__all__ = [
    "DEFAULT_DEADLINE",
    "AsyncResilientStorage",
    "ResilienceStats",
    "ResilientStorage",
    "make_failure_strategy",
]


class ResilientStorage:
    """
    A ``Storage`` that survives its primary storage failing.

    Args:
        primary: The storage to protect (usually a ``RedisStorage``).
        failure_strategy: ``"fail-open"``, ``"fail-closed"`` (the default),
            ``"local"``, or a strategy object: what decides when the storage
            cannot.
        breaker: The circuit breaker (default: 5 consecutive failed calls,
            retries included; 5 s cool-down).
        retry: Retry attempts and backoff (``ExponentialBackoff``), or a
            ``RetryWithBackoff``; ``ExponentialBackoff(max_attempts=1)``
            disables retries.
        deadline: The longest a decision may take, retries included (default
            0.25 s; None for no limit; otherwise above 0). Keep it above the
            storage's command timeout.
        lockdown: A ``SecurityLockdown`` whose blocked clients are refused
            before the storage is asked.
        strategies: More strategies, tried before the failure strategy.
        app_servers: For ``local``: how many app servers split each limit.
        clock: The clock of the breaker and the deadline (monotonic).

    Raises:
        ConfigurationError: for a bad strategy, breaker, retry, deadline (it
            must be above 0) or ``app_servers``, naming it.
    """

    def __init__(
        self,
        primary: Storage,
        *,
        failure_strategy: FailureMode | str | RecoveryStrategy = "fail-closed",
        breaker: CircuitBreaker | None = None,
        retry: ExponentialBackoff | RetryWithBackoff | None = None,
        deadline: Duration | None = DEFAULT_DEADLINE,
        lockdown: SecurityLockdown | None = None,
        strategies: Sequence[AnyStrategy] = (),
        app_servers: int = 1,
        clock: Clock | None = None,
    ) -> None:
        self.primary = primary
        self._core = Resilience(
            failure_strategy=failure_strategy,
            breaker=breaker,
            retry=retry,
            deadline=deadline,
            lockdown=lockdown,
            strategies=strategies,
            app_servers=app_servers,
            clock=clock,
        )
        _warn_if_timeouts_outlast(primary, self._core.deadline_s)

    @classmethod
    def from_settings(
        cls, primary: Storage, settings: ThrottlerSettings | None = None, **kwargs: Any
    ) -> ResilientStorage:
        """
        Wrap ``primary`` as the settings say (``ThrottlerSettings`` from the
        environment by default); ``kwargs`` override single arguments, and
        the variables of an overridden argument are then neither read nor
        checked (``breaker=`` skips ``SWT_BREAKER_*``, ``retry=`` skips
        ``SWT_RETRY_ATTEMPTS`` and ``SWT_COMMAND_TIMEOUT``).

        Raises:
            ConfigurationError: naming the variable of a bad setting.
        """
        return cls(primary, **environment_kwargs(settings, kwargs))

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker."""
        return self._core.breaker

    @property
    def recovery(self) -> ErrorRecoveryManager:
        """The recovery manager: its strategies, in the order they are tried."""
        return self._core.manager

    @property
    def failure_strategy(self) -> RecoveryStrategy:
        """The strategy that decides when the storage cannot."""
        return self._core.failure

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        return self._decide("hit", identifier, throttles, cost, now_us)

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        return self._decide("peek", identifier, throttles, cost, now_us)

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """
        Forget the identifier's hits and blocks, locally and in the storage.

        Raises:
            StorageError: when the storage fails or the breaker is open (no
                strategy decides a reset).
        """
        core = self._core
        core.forget(identifier, throttles)
        ticket = core.admit()
        if ticket == REFUSED:
            raise core.unavailable()

        try:
            self.primary.reset(identifier, throttles)
        except StorageError as exc:
            core.failed(exc, ticket)
            raise
        except BaseException:
            core.released(ticket)
            raise

        core.succeeded(ticket)

    def close(self) -> None:
        """Close the primary storage."""
        self._core.close()
        self.primary.close()

    def stats(self) -> ResilienceStats:
        """Counters: breaker state, degraded decisions, errors."""
        return self._core.stats()

    def health(self) -> StorageHealth:
        """
        The primary storage's health, with the breaker's state in ``breaker``;
        ``healthy`` is False while the breaker is not closed. Never raises.
        """
        return self._core.health(storage_health(self.primary))

    def _decide(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        core = self._core
        if core.lockdown is not None:
            locked = core.lockdown.check(identifier, throttles, cost)
            if locked is not None:
                return locked

        ticket = core.admit()
        if ticket == REFUSED:
            return core.short_circuit(operation, identifier, throttles, cost, now_us)

        # The deadline counts from here; its context is built only on failure.
        started_us = core.clock.now_us()
        method = self.primary.hit if operation == "hit" else self.primary.peek
        try:
            decision = method(identifier, throttles, cost, now_us)
        except StorageError as exc:
            core.failed(exc, ticket)
            context = core.context(
                operation, identifier, throttles, cost, now_us, started_us
            )
            return self._recover(exc, context)
        except BaseException:
            # Neither an answer nor a storage failure (a ConfigurationError,
            # an interrupt): a probe must not hold the breaker half-open.
            core.released(ticket)
            raise

        core.succeeded(ticket)
        return decision

    def _call(self, context: RecoveryContext, ticket: int) -> Decision:
        """One call to the primary storage, reported to the breaker."""
        method = self.primary.hit if context.operation == "hit" else self.primary.peek
        try:
            decision = method(
                context.identifier, context.throttles, context.cost, context.now_us
            )
        except StorageError as exc:
            self._core.failed(exc, ticket)
            raise
        except BaseException:
            # Neither an answer nor a storage failure (a ConfigurationError,
            # an interrupt): a probe must not hold the breaker half-open.
            self._core.released(ticket)
            raise

        self._core.succeeded(ticket)
        return decision

    def _call_again(self, context: RecoveryContext) -> Decision:
        ticket = self._core.admit()
        if ticket == REFUSED:
            raise self._core.unavailable()

        return self._call(context, ticket)

    def _recover(self, error: StorageError, context: RecoveryContext) -> Decision:
        core = self._core
        context = context._replace(call=partial(self._call_again, context))
        try:
            result = core.manager.recover(error, context)
        except BaseException:
            core.refused()
            raise

        return core.recovered(result, error)


def _warn_if_timeouts_outlast(primary: Storage, deadline_s: float | None) -> None:
    """
    Say once, at start, that a sync decision can outlast its deadline: a
    thread cannot be interrupted, so a stalled server holds it for the
    storage's connect and command timeouts (``socket_timeouts``).
    """
    socket_timeouts = getattr(primary, "socket_timeouts", None)
    if deadline_s is None or not callable(socket_timeouts):
        return

    connect, command = socket_timeouts()
    if connect is not None and command is not None and connect + command <= deadline_s:
        return

    def shown(seconds: float | None) -> str:
        return "no limit" if seconds is None else f"{seconds * 1000:g} ms"

    logger.warning(
        "a decision may wait longer than its deadline (%s) for a stalled Redis: "
        "the storage's connect timeout (%s) and command timeout (%s) bound it "
        "on this synchronous face; lower socket_connect_timeout and "
        "socket_timeout to fit the deadline, or raise the deadline",
        shown(deadline_s),
        shown(connect),
        shown(command),
    )


class AsyncResilientStorage:
    """
    The asyncio face of ``ResilientStorage``: the same arguments and methods.

    It also cuts each storage call at the deadline: a call still running then
    is cancelled and raises ``StorageTimeoutError`` (outcome unknown for a
    counting hit, so it is not retried). A storage that can cut its own calls
    (``bound_calls``, as ``AsyncRedisStorage.from_url`` does) is handed the
    deadline instead, and says better whether the hit was sent.
    """

    def __init__(
        self,
        primary: AsyncStorage,
        *,
        failure_strategy: FailureMode | str | RecoveryStrategy = "fail-closed",
        breaker: CircuitBreaker | None = None,
        retry: ExponentialBackoff | RetryWithBackoff | None = None,
        deadline: Duration | None = DEFAULT_DEADLINE,
        lockdown: SecurityLockdown | None = None,
        strategies: Sequence[AnyStrategy] = (),
        app_servers: int = 1,
        clock: Clock | None = None,
    ) -> None:
        self.primary = primary
        self._watchdog: Watchdog | None = None  # the deadline cut, per event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._core = Resilience(
            failure_strategy=failure_strategy,
            breaker=breaker,
            retry=retry,
            deadline=deadline,
            lockdown=lockdown,
            strategies=strategies,
            app_servers=app_servers,
            clock=clock,
        )
        # A storage that cuts its own calls at the deadline (AsyncRedisStorage
        # on a pool of its own) spares each decision this wrapper's cut.
        bound_calls = getattr(primary, "bound_calls", None)
        deadline_s = self._core.deadline_s
        self._cut_by_primary = bool(
            deadline_s is not None and callable(bound_calls) and bound_calls(deadline_s)
        )

    @classmethod
    def from_settings(
        cls,
        primary: AsyncStorage,
        settings: ThrottlerSettings | None = None,
        **kwargs: Any,
    ) -> AsyncResilientStorage:
        """See ``ResilientStorage.from_settings``."""
        return cls(primary, **environment_kwargs(settings, kwargs))

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker."""
        return self._core.breaker

    @property
    def recovery(self) -> ErrorRecoveryManager:
        """The recovery manager: its strategies, in the order they are tried."""
        return self._core.manager

    @property
    def failure_strategy(self) -> RecoveryStrategy:
        """The strategy that decides when the storage cannot."""
        return self._core.failure

    async def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        return await self._decide("hit", identifier, throttles, cost, now_us)

    async def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        return await self._decide("peek", identifier, throttles, cost, now_us)

    async def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """See ``ResilientStorage.reset``."""
        core = self._core
        core.forget(identifier, throttles)
        ticket = core.admit()
        if ticket == REFUSED:
            raise core.unavailable()

        try:
            await self.primary.reset(identifier, throttles)
        except StorageError as exc:
            core.failed(exc, ticket)
            raise
        except BaseException:
            core.released(ticket)
            raise

        core.succeeded(ticket)

    async def close(self) -> None:
        """Close the primary storage."""
        self._core.close()
        await self.primary.close()

    def stats(self) -> ResilienceStats:
        """Counters: breaker state, degraded decisions, errors."""
        return self._core.stats()

    async def health(self) -> StorageHealth:
        """See ``ResilientStorage.health``; the primary's check is awaited."""
        return self._core.health(await astorage_health(self.primary))

    async def _decide(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        core = self._core
        if core.lockdown is not None:
            locked = core.lockdown.check(identifier, throttles, cost)
            if locked is not None:
                return locked

        ticket = core.admit()
        if ticket == REFUSED:
            return core.short_circuit(operation, identifier, throttles, cost, now_us)

        # The deadline counts from here; its context is built only on failure.
        started_us = core.clock.now_us()
        method = self.primary.hit if operation == "hit" else self.primary.peek
        call = method(identifier, throttles, cost, now_us)
        try:
            if core.deadline_s is None or self._cut_by_primary:
                decision = await call
            else:
                counts = operation == "hit" and cost > 0
                decision = await self._within(call, core.deadline_s, counts)
        except StorageError as exc:
            core.failed(exc, ticket)
            context = core.context(
                operation, identifier, throttles, cost, now_us, started_us
            )
            return await self._recover(exc, context)
        except BaseException:
            # Neither an answer nor a storage failure (a ConfigurationError, a
            # cancelled task): a probe must not hold the breaker half-open.
            core.released(ticket)
            raise

        core.succeeded(ticket)
        return decision

    async def _call(self, context: RecoveryContext, ticket: int) -> Decision:
        """One call to the primary storage, cut at the deadline."""
        method = self.primary.hit if context.operation == "hit" else self.primary.peek
        args = (context.identifier, context.throttles, context.cost, context.now_us)
        try:
            if context.deadline is None:
                decision = await method(*args)
            else:
                remaining = context.deadline.remaining()
                decision = await self._within(method(*args), remaining, context.counts)
        except StorageError as exc:
            self._core.failed(exc, ticket)
            raise
        except BaseException:
            # Neither an answer nor a storage failure (a ConfigurationError, a
            # cancelled task): a probe must not hold the breaker half-open.
            self._core.released(ticket)
            raise

        self._core.succeeded(ticket)
        return decision

    async def _within(self, call: Any, seconds: float, counts: bool) -> Decision:
        """Await ``call`` for at most ``seconds``, then give up on it."""
        loop = asyncio.get_running_loop()
        watchdog = self._watchdog
        if watchdog is None or self._loop is not loop:
            watchdog = self._watchdog = Watchdog(seconds)
            self._loop = loop

        task = watchdog.watch(loop, seconds)
        try:
            decision: Decision = await call
        except asyncio.CancelledError:
            if not watchdog.release(task):
                raise

            raise StorageTimeoutError(
                f"no decision within the deadline ({seconds * 1000:.0f} ms)",
                outcome_unknown=counts,
                context={"deadline_ms": round(seconds * 1000)},
            ) from None
        finally:
            watchdog.release(task)

        return decision

    async def _call_again(self, context: RecoveryContext) -> Decision:
        ticket = self._core.admit()
        if ticket == REFUSED:
            raise self._core.unavailable()

        return await self._call(context, ticket)

    async def _recover(self, error: StorageError, context: RecoveryContext) -> Decision:
        core = self._core
        context = context._replace(acall=partial(self._call_again, context))
        try:
            result = await core.manager.arecover(error, context)
        except BaseException:
            core.refused()
            raise

        return core.recovered(result, error)
