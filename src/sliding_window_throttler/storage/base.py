"""The storage seam: what the throttler needs from a backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..core.decision import Decision
from ..core.rate import Throttle


@dataclass(frozen=True, slots=True)
class StorageHealth:
    """
    What a storage's health check found. Checks report; they never raise.

    Attributes:
        healthy: The storage can decide hits now.
        backend: ``"memory"`` or ``"redis"``.
        detail: One sentence for an operator: what was checked, what failed.
        latency_ms: How long the check took, in milliseconds.
        answers_ping: The server answered ``PING`` (None where nothing is
            asked, as in memory).
        accepts_writes: A write reached the server and was acknowledged in
            time (False under ``CLIENT PAUSE WRITE``, on a read-only replica
            or with memory full; None where nothing is asked).
        breaker: The circuit breaker's state (``"closed"``, ``"open"``,
            ``"half-open"``) when a resilient storage wraps this one, else
            None.
    """

    healthy: bool
    backend: str
    detail: str
    latency_ms: float = 0.0
    answers_ping: bool | None = None
    accepts_writes: bool | None = None
    breaker: str | None = None


class Storage(Protocol):
    """
    A backend that decides hits under the decision contract.

    Every method receives validated arguments from the throttler: a non-empty
    identifier, throttles with distinct names, a cost of zero or more, and an
    optional explicit time in microseconds (the backend's own clock otherwise).
    """

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        ...

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        ...

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        ...

    def close(self) -> None:
        """Release connections and other resources."""
        ...


class AsyncStorage(Protocol):
    """The asyncio face of ``Storage``: the same methods, awaited."""

    async def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        ...

    async def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        ...

    async def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        ...

    async def close(self) -> None:
        """Release connections and other resources."""
        ...
