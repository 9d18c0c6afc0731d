"""
The local fallback: decide in this process while the shared storage fails.

Each app server keeps its own ``MemoryStorage`` and enforces every throttle
there, its limit divided by the configured number of app servers, so the whole
fleet still admits roughly ``limit`` hits per window instead of an unlimited
number. When the storage answers again, decisions go back to it; the local
windows are kept (they expire by themselves) for the next outage.

The division rounds up: ``ceil(limit / app_servers)`` per server, so a client
spread evenly over the fleet gets at least its limit, and at most
``app_servers - 1`` hits more per window. Rounding down would refuse clients
who keep to their limit (5/minute over 3 servers would be 1 each: 3 in all),
and an outage is no reason to serve less than the contract promises.

A hit whose cost is within a limit but above a server's share of it is
admitted there only while that share is unused, and counts its whole cost.

Limitation: the split assumes traffic is spread evenly over the app servers;
one that gets most of a client's traffic refuses it early. And hits admitted
locally are not in Redis, so just after recovery a client may get up to one
more window's worth.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta

from ..core.clock import Clock
from ..core.decision import Decision
from ..core.rate import Throttle
from ..errors import ConfigurationError, StorageError, ThrottlerError, shown
from ..storage.memory import MemoryStats, MemoryStorage, given_or_new
from .manager import Operation, RecoveryContext, RecoveryResult
from .policy import FailureMode

_CACHE_SIZE = 1024


def check_app_servers(app_servers: object) -> None:
    """Raise ``ConfigurationError`` unless ``app_servers`` is a whole number >= 1."""
    if isinstance(app_servers, bool) or not isinstance(app_servers, int):
        raise ConfigurationError(
            "app_servers", f"app_servers must be an integer, got {shown(app_servers)}"
        )

    if app_servers < 1:
        raise ConfigurationError(
            "app_servers", f"app_servers must be at least 1, got {shown(app_servers)}"
        )


class LocalFallback:
    """
    Decide with a per-process ``MemoryStorage`` while the storage fails.

    Args:
        app_servers: How many app servers share the traffic; each enforces
            ``ceil(limit / app_servers)``.
        storage: The memory storage to use (a new one otherwise).
        clock: Passed to the new storage when ``storage`` is not given.
        max_pairs: Passed to the new storage when ``storage`` is not given.

    Raises:
        ConfigurationError: for ``app_servers`` below 1, a ``storage`` that is
            no ``MemoryStorage``, or one given with ``clock`` or ``max_pairs``.
    """

    name = FailureMode.LOCAL.value

    def __init__(
        self,
        *,
        app_servers: int = 1,
        storage: MemoryStorage | None = None,
        clock: Clock | None = None,
        max_pairs: int = 100_000,
    ) -> None:
        check_app_servers(app_servers)
        self.app_servers = app_servers
        self.storage = given_or_new("LocalFallback", storage, clock, max_pairs)
        self._scaled: dict[tuple[Throttle, int], Throttle] = {}
        self._lock = threading.Lock()

    def can_recover(self, error: ThrottlerError) -> bool:
        """Any storage failure."""
        return isinstance(error, StorageError)

    def recover(
        self, error: ThrottlerError, context: RecoveryContext
    ) -> RecoveryResult:
        """Decide the call in local memory, marked degraded."""
        decision = self.decide(
            context.operation,
            context.identifier,
            context.throttles,
            context.cost,
            context.now_us,
        )
        return RecoveryResult(True, self.name, decision, True)

    def decide(
        self,
        operation: Operation,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
    ) -> Decision:
        """Decide in local memory, marked degraded (``recover`` unwrapped)."""
        shares = None
        if self.app_servers != 1:
            shares = [self._share(t) for t in throttles]
            local = tuple(
                self._local(t, share, cost)
                for t, share in zip(throttles, shares, strict=True)
            )
            if all(t.limit == share for t, share in zip(local, shares, strict=True)):
                shares = None  # the records report them already

            throttles = local

        storage = self.storage
        if operation == "hit" and now_us is None and len(throttles) == 1:
            decision = storage.hit_one(identifier, throttles[0], cost)
        elif operation == "hit":
            decision = storage.hit(identifier, throttles, cost, now_us)
        else:
            decision = storage.peek(identifier, throttles, cost, now_us)

        if shares is not None:
            # A throttle raised to the cost reports its share all the same.
            return decision.as_degraded(self.name, shares)

        return decision.as_degraded(self.name)

    def local_throttles(self, throttles: Sequence[Throttle]) -> tuple[Throttle, ...]:
        """The throttles with their limits divided by ``app_servers``."""
        if self.app_servers == 1:
            return throttles if isinstance(throttles, tuple) else tuple(throttles)

        return tuple(self._local(t, self._share(t), 1) for t in throttles)

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's local hits and blocks."""
        self.storage.reset(identifier, self.local_throttles(throttles))

    def close(self) -> None:
        """Release the memory storage."""
        self.storage.close()

    def stats(self) -> MemoryStats:
        """The local storage's counters."""
        return self.storage.stats()

    def _share(self, throttle: Throttle) -> int:
        """This process's share of the throttle's limit, rounded up."""
        return -(-throttle.limit // self.app_servers)

    def _local(self, throttle: Throttle, share: int, cost: int) -> Throttle:
        """
        The throttle this process enforces: its ``share`` of the limit; where
        the cost fits the limit but not the share, the cost, so that the hit is
        admitted while the share is unused (the ring keeps the newest).
        """
        limit = cost if share < cost <= throttle.limit else share
        key = (throttle, limit)
        local = self._scaled.get(key)
        if local is not None:
            return local

        local = Throttle(
            throttle.name,
            limit,
            timedelta(milliseconds=throttle.ttl_ms),
            timedelta(milliseconds=throttle.block_duration_ms),
        )
        with self._lock:
            if len(self._scaled) >= _CACHE_SIZE:
                self._scaled.clear()

            self._scaled[key] = local

        return local
