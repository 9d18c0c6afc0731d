"""
The recovery manager: which strategy turns an error into a decision.

A strategy says which errors it ``can_recover`` and turns one into a
``RecoveryResult``: usually a decision made without the storage (marked
``degraded``), sometimes a refusal (fail-closed raises). The manager asks its
strategies in the order they were added; the first that recovers wins, one
that declines passes the (possibly newer) error on, and an error nobody
recovers, or that is not recoverable at all, is raised unchanged.

Strategies that decide alone (fail-open, fail-closed, lockdown, local
fallback) are pure policy objects with a plain ``recover``. Strategies that
call the storage again (the retry) also provide ``async def
arecover``, and a user's strategy may instead define ``async def recover``:
the manager checks which once, when the strategy is added.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from ..core.clock import Clock
from ..core.decision import Decision
from ..core.rate import Throttle
from ..errors import ConfigurationError, ThrottlerError

Operation = Literal["hit", "peek"]
US_PER_S = 1_000_000

_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


class Deadline(NamedTuple):
    """
    The time by which a decision must be made, on a given clock.

    Attributes:
        at_us: The deadline in the clock's microseconds.
        clock: The clock ``at_us`` is measured on.
    """

    at_us: int
    clock: Clock

    @classmethod
    def after(cls, seconds: float, clock: Clock) -> Deadline:
        """The deadline ``seconds`` from now on ``clock``."""
        return cls(clock.now_us() + round(seconds * US_PER_S), clock)

    def remaining(self) -> float:
        """Seconds left (0 when passed)."""
        return max(0, self.at_us - self.clock.now_us()) / US_PER_S


class RecoveryContext(NamedTuple):
    """
    What a strategy knows about the call that failed.

    A named tuple, as decisions are made on the hot path: ``_replace()``
    returns a changed copy.

    Attributes:
        identifier: The client (never logged raw).
        throttles: The throttles of the call.
        cost: The cost of the hit.
        now_us: The explicit time of the call, if the caller gave one.
        operation: ``"hit"`` (records) or ``"peek"`` (changes nothing).
        deadline: When the decision is due, if the caller set a deadline.
        call: Makes the same storage call again (sync callers), if allowed.
        acall: Makes the same storage call again (async callers), if allowed.
        attributes: Anything else the caller wants strategies to see.
    """

    identifier: str = ""
    throttles: tuple[Throttle, ...] = ()
    cost: int = 1
    now_us: int | None = None
    operation: Operation = "hit"
    deadline: Deadline | None = None
    call: Callable[[], Decision] | None = None
    acall: Callable[[], Awaitable[Decision]] | None = None
    attributes: Mapping[str, Any] = _NO_ATTRIBUTES

    @property
    def counts(self) -> bool:
        """The call records a hit: running it twice could count it twice."""
        return self.operation == "hit" and self.cost > 0


class RecoveryResult(NamedTuple):
    """
    What a strategy made of an error.

    Attributes:
        recovered: A decision was made; when False the strategy declined and
            ``error`` is what the next strategy sees.
        strategy: The name of the strategy.
        decision: The decision, when recovered.
        degraded: The decision did not come from the storage (fail-open,
            local fallback): count it, and mark it in responses if you like.
            A retry that succeeded is recovered but not degraded.
        error: Why the strategy declined (the original or a newer error).
    """

    recovered: bool
    strategy: str
    decision: Decision | None = None
    degraded: bool = False
    error: ThrottlerError | None = None

    @property
    def is_blocked(self) -> bool:
        """The recovered decision refuses the hit."""
        return self.decision is not None and not self.decision.allowed

    @property
    def retry_after(self) -> float:
        """Seconds until a retry can succeed (0 when admitted or unknown)."""
        return self.decision.retry_after if self.decision is not None else 0.0

    @property
    def time_to_block_expire(self) -> int:
        """Whole seconds until a retry can succeed; ``-1`` when not blocked."""
        if not self.is_blocked or math.isinf(self.retry_after):
            return -1

        return math.ceil(self.retry_after)


@runtime_checkable
class RecoveryStrategy(Protocol):
    """
    Turns some errors into decisions.

    ``recover`` may return a result, decline (``recovered=False``) or raise
    (fail-closed raises ``StorageUnavailableError``). A strategy that does I/O
    can add ``async def arecover(error, context)`` for async callers.
    """

    @property
    def name(self) -> str:
        """A short stable name, used in decisions, logs and metrics."""
        ...

    def can_recover(self, error: ThrottlerError) -> bool:
        """Return True if this strategy handles ``error``."""
        ...

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """Make what can be made of ``error``."""
        ...


class AsyncRecoveryStrategy(Protocol):
    """A strategy whose ``recover`` is a coroutine (async callers only)."""

    @property
    def name(self) -> str:
        """A short stable name, used in decisions, logs and metrics."""
        ...

    def can_recover(self, error: ThrottlerError) -> bool:
        """Return True if this strategy handles ``error``."""
        ...

    async def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """Make what can be made of ``error``."""
        ...


class DecidingStrategy(RecoveryStrategy, Protocol):
    """
    A failure strategy that decides any call without the storage.

    ``decide`` is what ``recover`` does for every storage error, without
    building a context and a result: ``ResilientStorage`` calls it directly
    while the breaker is open, so that a decision then costs about what a
    memory decision costs.
    """

    def decide(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        """Decide the call, marked degraded."""
        ...


AnyStrategy = RecoveryStrategy | AsyncRecoveryStrategy
_SyncRecover = Callable[[ThrottlerError, RecoveryContext], RecoveryResult]
_AsyncRecover = Callable[[ThrottlerError, RecoveryContext], Awaitable[RecoveryResult]]


@dataclass(frozen=True, slots=True)
class _Entry:
    strategy: AnyStrategy
    sync: _SyncRecover | None
    async_: _AsyncRecover | None


def _entry(strategy: AnyStrategy) -> _Entry:
    """Check once whether ``strategy`` is sync, async or both."""
    for attribute in ("name", "can_recover", "recover"):
        if not hasattr(strategy, attribute):
            raise ConfigurationError(
                "strategy",
                f"a recovery strategy needs name, can_recover and recover; "
                f"{type(strategy).__name__} has no {attribute}",
            )

    recover = strategy.recover
    arecover = getattr(strategy, "arecover", None)
    if arecover is not None and inspect.iscoroutinefunction(arecover):
        return _Entry(strategy, recover, arecover)  # type: ignore[arg-type]

    if inspect.iscoroutinefunction(recover):
        return _Entry(strategy, None, recover)

    return _Entry(strategy, recover, None)  # type: ignore[arg-type]


class ErrorRecoveryManager:
    """
    Recover errors with the first strategy that can.

    Args:
        strategies: Strategies to try, in order.
    """

    def __init__(self, strategies: Iterable[AnyStrategy] = ()) -> None:
        self._entries: list[_Entry] = []
        for strategy in strategies:
            self.add_strategy(strategy)

    def add_strategy(self, strategy: AnyStrategy) -> None:
        """
        Try ``strategy`` after those already added.

        Raises:
            ConfigurationError: if it lacks ``name``, ``can_recover`` or
                ``recover``.
        """
        self._entries.append(_entry(strategy))

    @property
    def strategies(self) -> tuple[AnyStrategy, ...]:
        """Every strategy, in the order they are tried."""
        return tuple(e.strategy for e in self._entries)

    def get_available_strategies(
        self, error: BaseException | None = None
    ) -> list[AnyStrategy]:
        """The strategies that can recover ``error`` (all of them when None)."""
        if error is None:
            return list(self.strategies)

        if not isinstance(error, ThrottlerError):
            return []

        return [e.strategy for e in self._entries if e.strategy.can_recover(error)]

    def recover(
        self, error: BaseException, context: RecoveryContext | None = None
    ) -> RecoveryResult:
        """
        Recover ``error`` with the first strategy that can.

        Raises:
            BaseException: ``error`` itself, unchanged, when it is not a
                recoverable ``ThrottlerError``; the last error when every
                strategy declined; whatever a strategy raised (fail-closed
                raises ``StorageUnavailableError``).
            ConfigurationError: when the chosen strategy is async only.
        """
        current = _recoverable(error)
        ctx = context if context is not None else RecoveryContext()
        for entry in self._entries:
            if not entry.strategy.can_recover(current):
                continue

            if entry.sync is None:
                raise ConfigurationError(
                    "strategy",
                    f"recovery strategy {entry.strategy.name!r} is async only: "
                    "use arecover() or give it a sync recover()",
                )

            result = entry.sync(current, ctx)
            if result.recovered:
                return result

            current = result.error or current

        raise current

    async def arecover(
        self, error: BaseException, context: RecoveryContext | None = None
    ) -> RecoveryResult:
        """The async face of ``recover``: awaits async strategies."""
        current = _recoverable(error)
        ctx = context if context is not None else RecoveryContext()
        for entry in self._entries:
            if not entry.strategy.can_recover(current):
                continue

            if entry.async_ is not None:
                result = await entry.async_(current, ctx)
            else:
                assert entry.sync is not None
                result = entry.sync(current, ctx)

            if result.recovered:
                return result

            current = result.error or current

        raise current


def _recoverable(error: BaseException) -> ThrottlerError:
    """Return ``error`` if strategies may see it; raise it unchanged otherwise."""
    if isinstance(error, ThrottlerError) and error.is_recoverable:
        return error

    raise error
