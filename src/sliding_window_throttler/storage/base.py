"""The storage seam: what the throttler needs from a backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..core.decision import Decision
from ..core.rate import Throttle


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
