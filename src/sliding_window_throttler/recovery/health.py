"""
A storage's health, as an operator or a readiness probe wants it.

``storage_health`` (and ``astorage_health``, which awaits an async check)
returns what the storage's own ``health()`` found, and copes with a storage
that has none or whose check raises: a health check reports, it never raises.
``with_breaker`` adds a circuit breaker's view: its state in ``breaker``, and
``healthy`` False while it keeps decisions away from the storage.
"""

from __future__ import annotations

import inspect
from dataclasses import replace

from ..storage.base import StorageHealth
from ..storage.memory import AsyncMemoryStorage, MemoryStorage
from .breaker import BreakerState, CircuitBreaker


def storage_health(storage: object) -> StorageHealth:
    """The health of ``storage`` from its ``health()``, never raising."""
    check = getattr(storage, "health", None)
    if not callable(check):
        return _unchecked(storage)

    try:
        health = check()
    except Exception as exc:
        return _failed(storage, exc)

    if inspect.isawaitable(health):
        close = getattr(health, "close", None)
        if callable(close):
            close()  # a coroutine never awaited would warn

        return _unchecked(storage, "its health() must be awaited")

    return _checked(storage, health)


async def astorage_health(storage: object) -> StorageHealth:
    """The health of ``storage``, awaiting its ``health()`` if it is async."""
    check = getattr(storage, "health", None)
    if not callable(check):
        return _unchecked(storage)

    try:
        health = check()
        if inspect.isawaitable(health):
            health = await health
    except Exception as exc:
        return _failed(storage, exc)

    return _checked(storage, health)


def with_breaker(
    health: StorageHealth, breaker: CircuitBreaker, now_us: int, strategy: str
) -> StorageHealth:
    """
    ``health`` with the breaker's state, unhealthy unless the breaker is closed.

    Args:
        health: What the storage's check found.
        breaker: The breaker in front of the storage.
        now_us: The breaker's clock now.
        strategy: The name of the strategy that decides meanwhile.
    """
    state = breaker.state
    if state is BreakerState.CLOSED:
        return replace(health, breaker=state.value)

    if state is BreakerState.OPEN:
        left = breaker.retry_after(now_us)
        why = f"the storage is not asked for {left:.3g}s more"
    else:
        why = "one probe call checks whether the storage is back"

    detail = (
        f"{health.detail}; circuit breaker {state.value}: {why}, and the "
        f"{strategy!r} strategy decides meanwhile"
    )
    return replace(health, healthy=False, breaker=state.value, detail=detail)


def _checked(storage: object, health: object) -> StorageHealth:
    if isinstance(health, StorageHealth):
        return health

    name = type(storage).__name__
    return StorageHealth(
        False,
        _backend(storage),
        f"{name}.health() returned {type(health).__name__}, not a StorageHealth",
    )


def _unchecked(storage: object, why: str = "it has no health()") -> StorageHealth:
    # Nothing was checked: report healthy, as a check that cannot run must not
    # take an app out of service; a breaker in front still says when it fails.
    name = type(storage).__name__
    return StorageHealth(True, _backend(storage), f"{name} was not checked: {why}")


def _failed(storage: object, exc: Exception) -> StorageHealth:
    name = type(storage).__name__
    return StorageHealth(
        False,
        _backend(storage),
        f"{name}.health() raised {type(exc).__name__}: {exc}",
    )


def _backend(storage: object) -> str:
    if isinstance(storage, MemoryStorage | AsyncMemoryStorage):
        return "memory"

    if "redis" in type(storage).__module__:
        return "redis"

    return type(storage).__name__
