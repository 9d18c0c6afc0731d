"""
The facade: ``Throttler`` and ``AsyncThrottler`` over a storage.

Both faces share ``_ThrottlerCore``, which validates arguments and turns them
into the storage's terms; the faces only call the storage, one with ``await``.

A storage that can fail (anything but memory) is wrapped in a resilient
storage unless the caller opts out (``resilient=False``): its failure
strategy, breaker, retries and deadline come from the arguments, else from
the environment (``ThrottlerSettings``: ``FAILURE_STRATEGY``, ``SWT_*``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from .core.decision import Decision, Outcome
from .core.keys import MAX_IDENTIFIER_LENGTH, check_identifier
from .core.rate import MAX_COST, Duration, Throttle
from .errors import ConfigurationError, RateLimitExceededError, shown
from .recovery import (
    AsyncResilientStorage,
    CircuitBreaker,
    ExponentialBackoff,
    FailureMode,
    RecoveryStrategy,
    ResilientStorage,
    astorage_health,
    storage_health,
)
from .recovery._resilience import check_options
from .storage.base import AsyncStorage, Storage, StorageHealth
from .storage.memory import AsyncMemoryStorage, MemoryStorage, plain_hit_in_c

MAX_NOW_MS = 2**52 // 1000
"""Explicit times stay exact in the doubles of the Redis function."""

_Call = tuple[str, Sequence[Throttle], int, int | None]


class _ThrottlerCore:
    """What both faces do around a storage call."""

    __slots__ = ()

    def prepare(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_ms: float | None,
    ) -> _Call:
        """Validate a call and return ``(identifier, throttles, cost, now_us)``."""
        check_identifier(identifier)
        checked = check_throttles(throttles)
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise ConfigurationError(
                "cost", f"cost must be a whole number of hits, got {shown(cost)}"
            )

        if cost < 0:
            raise ConfigurationError(
                "cost", f"cost must not be negative, got {shown(cost)}"
            )

        if cost > MAX_COST:
            raise ConfigurationError(
                "cost", f"cost must be at most 2**52 hits, got {shown(cost)}"
            )

        return identifier, checked, cost, None if now_ms is None else _ms_to_us(now_ms)


def is_plain_hit(
    identifier: object, throttles: Sequence[object], cost: object, now_ms: object
) -> bool:
    """
    True for the common, valid call: a string identifier, one ``Throttle``, a
    cost of zero or more, the storage's clock. Anything else gets the checks
    of ``_ThrottlerCore.prepare``, which say what is wrong.
    """
    return (
        type(identifier) is str
        and type(cost) is int
        and now_ms is None
        and len(throttles) == 1
        and type(throttles[0]) is Throttle
        and 0 <= cost <= MAX_COST
        and 0 < len(identifier) <= MAX_IDENTIFIER_LENGTH
    )


def check_throttles(throttles: Sequence[Throttle]) -> tuple[Throttle, ...]:
    """Return the throttles as a tuple, refusing none, non-throttles and twins."""
    if not throttles:
        raise ConfigurationError(
            "throttles", "hit() needs at least one Throttle after the identifier"
        )

    for throttle in throttles:
        if not isinstance(throttle, Throttle):
            raise ConfigurationError(
                "throttles",
                f"expected Throttle objects, got {type(throttle).__name__} "
                f"{shown(throttle)}",
            )

    if len(throttles) > 1:
        names = [t.name for t in throttles]
        twins = sorted({n for n in names if names.count(n) > 1})
        if twins:
            raise ConfigurationError(
                "throttles",
                f"throttle names must be distinct within one hit, got {twins} twice",
            )

    return tuple(throttles)


def resilience_options(
    failure_strategy: FailureMode | str | RecoveryStrategy | None,
    breaker: CircuitBreaker | None,
    retry: ExponentialBackoff | None,
    deadline: Duration | None,
    app_servers: int | None = None,
) -> dict[str, Any]:
    """
    The arguments given for a resilient storage; empty when none was.

    Raises:
        ConfigurationError: for an invalid one, even where it will not apply
            (a memory storage stays bare, but a typo must not pass unseen).
    """
    given = {
        "failure_strategy": failure_strategy,
        "breaker": breaker,
        "retry": retry,
        "deadline": deadline,
        "app_servers": app_servers,
    }
    options: dict[str, Any] = {
        name: value for name, value in given.items() if value is not None
    }
    check_options(**options)
    return options


_NEVER_FAILS = (MemoryStorage, AsyncMemoryStorage)
_RESILIENT = (ResilientStorage, AsyncResilientStorage)


def needs_wrapping(
    storage: object, options: dict[str, Any], resilient: bool | None
) -> bool:
    """
    Whether the facade wraps ``storage`` in a resilient storage.

    Memory storages never fail, so they stay bare (and their hot path free)
    unless ``resilient=True``; so does a storage that is resilient already.

    Raises:
        ConfigurationError: for options that cannot apply (``resilient=False``,
            or a storage that is resilient already).
    """
    if resilient is not None and not isinstance(resilient, bool):
        raise ConfigurationError(
            "resilient",
            f"resilient must be True, False or None, got {shown(resilient)}",
        )

    given = ", ".join(f"{name}=" for name in options)
    if resilient is False:
        if options:
            raise ConfigurationError(
                "resilient",
                f"resilient=False leaves the storage bare, so {given} cannot "
                "apply: drop them, or the flag",
            )

        return False

    if isinstance(storage, _RESILIENT):
        if options:
            raise ConfigurationError(
                "storage",
                f"the storage is a {type(storage).__name__} already: give {given} "
                "to it, not to the throttler",
            )

        return False

    return resilient is True or not isinstance(storage, _NEVER_FAILS)


def refused_error(decision: Decision) -> RateLimitExceededError:
    """The ``RateLimitExceededError`` of a refusing decision (its limiting record)."""
    record = decision.limiting
    if decision.can_succeed:
        when = f"retry in {decision.retry_after:.3f}s"
    else:
        when = "this hit can never succeed (its cost is above the limit)"

    hits = "hit" if record.limit == 1 else "hits"
    why = (
        f"throttle {record.name!r} allows {record.limit:,} {hits} per window "
        f"({record.total_hits:,} with this one)"
    )
    if record.outcome is Outcome.BLOCKED:
        why = (
            f"the client is blocked by throttle {record.name!r} for overflowing "
            f"its {record.limit:,} {hits} per window"
        )
    elif record.outcome is Outcome.CAPACITY and not decision.can_succeed:
        why = (
            f"this hit needs {len(decision.records):,} (client, throttle) pairs "
            f"at once, more than the storage may track (max_pairs)"
        )
        when = "it can never succeed"
    elif record.outcome is Outcome.CAPACITY:
        why = (
            f"the storage tracks as many clients as it may (max_pairs) and "
            f"refuses new ones, throttle {record.name!r} included"
        )

    return RateLimitExceededError(
        f"rate limit exceeded: {why}; {when}",
        record.limit,
        record.total_hits,
        decision.retry_after,
        context={
            "throttle": record.name,
            "outcome": str(record.outcome),
            "degraded": decision.degraded,
            "strategy": decision.strategy,
        },
        decision=decision,
    )


_STORAGE_METHODS = ("hit", "peek", "reset", "close")
_DECIDING_METHODS = ("hit", "peek")  # async on the asyncio face, sync on the other


def check_storage(storage: object, *, asynchronous: bool) -> None:
    """Refuse what is not a storage, or a storage of the other face."""
    if isinstance(storage, type):
        raise ConfigurationError(
            "storage",
            f"storage must be a storage object, got the class {storage.__name__}: "
            f"write {storage.__name__}(...)",
        )

    if isinstance(storage, Throttler | AsyncThrottler):
        raise ConfigurationError(
            "storage",
            f"storage must be a storage, not a {type(storage).__name__}: give "
            "the throttler's .storage, or the storage it was made with",
        )

    missing = [m for m in _STORAGE_METHODS if not callable(getattr(storage, m, None))]
    if missing:
        names = missing[-1]
        if len(missing) > 1:
            names = f"{', '.join(missing[:-1])} or {names}"

        raise ConfigurationError(
            "storage",
            "storage must be a storage object (MemoryStorage, RedisStorage...) "
            f"with hit, peek, reset and close methods; {type(storage).__name__} "
            f"has no {names}",
        )

    wrong = [
        m
        for m in _DECIDING_METHODS
        if inspect.iscoroutinefunction(getattr(storage, m)) != asynchronous
    ]
    if not wrong:
        return

    if asynchronous:
        hint = "wrap a MemoryStorage in AsyncMemoryStorage(storage), or use "
        hint += "AsyncRedisStorage"
    else:
        hint = "use MemoryStorage or RedisStorage, or AsyncThrottler for this one"

    face = "AsyncThrottler needs an asyncio" if asynchronous else "Throttler needs a"
    if len(wrong) == 1:  # half a face: say which method is off
        kind = "is not" if asynchronous else "is"
        hint = f"its {wrong[0]}() {kind} a coroutine function (async def)"

    raise ConfigurationError(
        "storage", f"{face} storage, got {type(storage).__name__}: {hint}"
    )


def _ms_to_us(now_ms: float) -> int:
    if isinstance(now_ms, bool) or not isinstance(now_ms, int | float):
        raise ConfigurationError(
            "now_ms", f"now_ms must be a number of milliseconds, got {shown(now_ms)}"
        )

    if not -MAX_NOW_MS <= now_ms <= MAX_NOW_MS:  # also refuses NaN
        raise ConfigurationError(
            "now_ms",
            f"now_ms must be within ±{MAX_NOW_MS:,} ms (about 142 years of "
            f"microseconds around 0), got {shown(now_ms)}",
        )

    return round(now_ms * 1000)


class Throttler:
    """
    Decide hits against one or more throttles.

    ``hit("203.0.113.7", Throttle("burst", "10/second"),
    Throttle("sustained", "100/minute"))`` admits the hit only if both admit
    it, records it in both, and returns a ``Decision`` with one record each.

    A storage that can fail (Redis, your own) is wrapped in a
    ``ResilientStorage``: its settings come from the arguments below, and
    those not given from the environment (``ThrottlerSettings``:
    ``FAILURE_STRATEGY``, ``SWT_*``; fail-closed by default). Memory storages
    never fail and stay bare (valid failure arguments then change nothing;
    invalid ones are still refused), as does a storage that is resilient
    already.

    Args:
        storage: Where state lives (default: a new ``MemoryStorage``).
        failure_strategy: What decides when the storage fails:
            ``"fail-open"``, ``"fail-closed"``, ``"local"`` or a strategy.
        breaker: The circuit breaker around the storage.
        retry: Retry attempts and backoff for calls that are safe to retry.
        deadline: The longest a decision may take, retries included (above
            0; None for the environment's ``SWT_DEADLINE``, 250 ms by default).
        app_servers: For ``local``: how many app servers split each limit
            (each enforces ``ceil(limit / app_servers)``).
        resilient: False leaves the storage bare, so that storage errors
            reach the caller; True wraps even a memory storage; None (the
            default) wraps a storage that can fail.

    Raises:
        ConfigurationError: for a bad argument, or a bad variable in the
            environment (naming it).
    """

    def __init__(
        self,
        storage: Storage | None = None,
        *,
        failure_strategy: FailureMode | str | RecoveryStrategy | None = None,
        breaker: CircuitBreaker | None = None,
        retry: ExponentialBackoff | None = None,
        deadline: Duration | None = None,
        app_servers: int | None = None,
        resilient: bool | None = None,
    ) -> None:
        storage = storage if storage is not None else MemoryStorage()
        check_storage(storage, asynchronous=False)
        options = resilience_options(
            failure_strategy, breaker, retry, deadline, app_servers
        )
        if needs_wrapping(storage, options, resilient):
            storage = ResilientStorage.from_settings(storage, **options)

        self._storage: Storage = storage
        self._core = _ThrottlerCore()

    @property
    def storage(self) -> Storage:
        """The storage it decides with, wrapped if it can fail (read-only)."""
        return self._storage

    def hit(
        self,
        identifier: str,
        *throttles: Throttle,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """
        Decide one hit by ``identifier`` and record it if every throttle admits.

        Args:
            identifier: Who is hitting (an IP address, user id, API key...).
            throttles: The throttles that apply; names must be distinct.
            cost: How many hits this request counts as (0 checks without counting).
            now_ms: An explicit time in milliseconds, for simulations; the
                storage's clock otherwise.

        Raises:
            ConfigurationError: for bad throttles, cost or time.
            KeyGenerationError: for an identifier that cannot key a client.
        """
        return _decide_hit(self, self._storage, identifier, throttles, cost, now_ms)

    def _hit_checked(
        self,
        identifier: str,
        throttles: tuple[Throttle, ...],
        cost: int,
        now_ms: float | None,
    ) -> Decision:
        """``hit`` off the plain call: the full checks, which say what is wrong."""
        return self._storage.hit(
            *self._core.prepare(identifier, throttles, cost, now_ms)
        )

    def peek(
        self,
        identifier: str,
        *throttles: Throttle,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide now, recording nothing."""
        return self._storage.peek(
            *self._core.prepare(identifier, throttles, cost, now_ms)
        )

    def enforce(
        self,
        identifier: str,
        *throttles: Throttle,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """
        Decide a hit like ``hit``, and raise when it is refused.

        Returns:
            The admitting decision.

        Raises:
            RateLimitExceededError: with the ``limit``, ``current`` hits and
                ``retry_after`` of the throttle that refused (the longest
                wait): answer 429.
        """
        decision = self.hit(identifier, *throttles, cost=cost, now_ms=now_ms)
        if not decision.allowed:
            raise refused_error(decision)

        return decision

    def reset(self, identifier: str, *throttles: Throttle) -> None:
        """Forget the hits and blocks of ``identifier`` (all throttles if none)."""
        check_identifier(identifier)
        self._storage.reset(identifier, check_throttles(throttles) if throttles else ())

    def health(self) -> StorageHealth:
        """
        The storage's health (with the breaker's state when it is wrapped);
        a storage without a health check is reported healthy. Never raises.
        """
        return storage_health(self._storage)

    def close(self) -> None:
        """Close the storage."""
        self._storage.close()


class AsyncThrottler:
    """
    The asyncio face of ``Throttler``: the same methods, awaited.

    A storage that can fail is wrapped in an ``AsyncResilientStorage``, as
    ``Throttler`` wraps one in a ``ResilientStorage``.

    Args:
        storage: Where state lives (default: a new ``AsyncMemoryStorage``).
        failure_strategy: See ``Throttler``.
        breaker: See ``Throttler``.
        retry: See ``Throttler``.
        deadline: See ``Throttler``; the async face also cuts a storage call
            still running at the deadline.
        app_servers: See ``Throttler``.
        resilient: See ``Throttler``.
    """

    def __init__(
        self,
        storage: AsyncStorage | None = None,
        *,
        failure_strategy: FailureMode | str | RecoveryStrategy | None = None,
        breaker: CircuitBreaker | None = None,
        retry: ExponentialBackoff | None = None,
        deadline: Duration | None = None,
        app_servers: int | None = None,
        resilient: bool | None = None,
    ) -> None:
        storage = storage if storage is not None else AsyncMemoryStorage()
        check_storage(storage, asynchronous=True)
        options = resilience_options(
            failure_strategy, breaker, retry, deadline, app_servers
        )
        if needs_wrapping(storage, options, resilient):
            storage = AsyncResilientStorage.from_settings(storage, **options)

        self._storage: AsyncStorage = storage
        self._core = _ThrottlerCore()

    @property
    def storage(self) -> AsyncStorage:
        """The storage it decides with, wrapped if it can fail (read-only)."""
        return self._storage

    async def hit(
        self,
        identifier: str,
        *throttles: Throttle,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """Decide one hit; see ``Throttler.hit``."""
        if is_plain_hit(identifier, throttles, cost, now_ms):
            return await self._storage.hit(identifier, throttles, cost, None)

        return await self._storage.hit(
            *self._core.prepare(identifier, throttles, cost, now_ms)
        )

    async def peek(
        self,
        identifier: str,
        *throttles: Throttle,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide now, recording nothing."""
        return await self._storage.peek(
            *self._core.prepare(identifier, throttles, cost, now_ms)
        )

    async def enforce(
        self,
        identifier: str,
        *throttles: Throttle,
        cost: int = 1,
        now_ms: float | None = None,
    ) -> Decision:
        """Decide a hit, and raise when it is refused; see ``Throttler.enforce``."""
        decision = await self.hit(identifier, *throttles, cost=cost, now_ms=now_ms)
        if not decision.allowed:
            raise refused_error(decision)

        return decision

    async def reset(self, identifier: str, *throttles: Throttle) -> None:
        """Forget the hits and blocks of ``identifier`` (all throttles if none)."""
        check_identifier(identifier)
        await self._storage.reset(
            identifier, check_throttles(throttles) if throttles else ()
        )

    async def health(self) -> StorageHealth:
        """The storage's health, its check awaited; see ``Throttler.health``."""
        return await astorage_health(self._storage)

    async def close(self) -> None:
        """Close the storage."""
        await self._storage.close()


def hit_in_python(
    throttler: Throttler,
    storage: Storage,
    identifier: str,
    throttles: tuple[Throttle, ...],
    cost: int,
    now_ms: float | None,
) -> Decision:
    """
    The body of ``Throttler.hit``; ``_hot_path.plain_hit`` is its twin in C.

    The plain call (``is_plain_hit``) goes to the shortcut for one throttle
    of the throttler's ``storage``: a bare ``MemoryStorage``'s ``hit_one``
    (not a subclass's: it may override hit), or any other storage's ``hit``.
    Anything else gets the full checks.
    """
    if is_plain_hit(identifier, throttles, cost, now_ms):
        if type(storage) is MemoryStorage:
            return storage.hit_one(identifier, throttles[0], cost)

        return storage.hit(identifier, throttles, cost, None)

    return throttler._hit_checked(identifier, throttles, cost, now_ms)


# In C when the extension is built: a decision on a bare MemoryStorage then
# costs one Python frame, this method's.
_decide_hit = plain_hit_in_c() or hit_in_python
