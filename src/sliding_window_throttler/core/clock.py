"""Clocks: where ``now`` comes from. The rest of ``core`` only receives it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of time in whole microseconds."""

    def now_us(self) -> int:
        """Return the current time in microseconds."""
        ...


class MonotonicClock:
    """The process's monotonic clock: never steps back, meaningless across hosts."""

    __slots__ = ()

    def now_us(self) -> int:
        """Return the monotonic time in microseconds."""
        return time.monotonic_ns() // 1000


class ManualClock:
    """
    A clock that moves only when told to, for tests and simulations.

    Args:
        start_ms: The initial time in milliseconds.
    """

    __slots__ = ("_now_us",)

    def __init__(self, start_ms: float = 0) -> None:
        self._now_us = round(start_ms * 1000)

    def now_us(self) -> int:
        """Return the current time in microseconds."""
        return self._now_us

    def now_ms(self) -> float:
        """Return the current time in milliseconds."""
        return self._now_us / 1000

    def set_ms(self, ms: float) -> None:
        """Jump to ``ms`` milliseconds (backwards too)."""
        self._now_us = round(ms * 1000)

    def set_us(self, us: int) -> None:
        """Jump to ``us`` microseconds (backwards too)."""
        self._now_us = us

    def advance_ms(self, ms: float) -> None:
        """Move forward by ``ms`` milliseconds."""
        self._now_us += round(ms * 1000)

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self._now_us += round(seconds * 1_000_000)
