"""Clocks: where ``now`` comes from. The rest of ``core`` only receives it."""

from __future__ import annotations

import math
import time
from typing import Protocol

from ..errors import ConfigurationError, shown


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
        self._now_us = _to_us(start_ms, 1000, "start_ms")

    def __repr__(self) -> str:
        return f"ManualClock(now_ms={self.now_ms()!r})"

    def now_us(self) -> int:
        """Return the current time in microseconds."""
        return self._now_us

    def now_ms(self) -> float:
        """Return the current time in milliseconds."""
        return self._now_us / 1000

    def set_ms(self, ms: float) -> None:
        """Jump to ``ms`` milliseconds (backwards too)."""
        self._now_us = _to_us(ms, 1000, "ms")

    def set_us(self, us: int) -> None:
        """Jump to ``us`` microseconds (backwards too)."""
        self._now_us = _to_us(us, 1, "us")

    def advance_ms(self, ms: float) -> None:
        """Move forward by ``ms`` milliseconds."""
        self._now_us = _within_range(self._now_us + _to_us(ms, 1000, "ms"), "ms", ms)

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self._now_us = _within_range(
            self._now_us + _to_us(seconds, 1_000_000, "seconds"), "seconds", seconds
        )


def check_clock(clock: object) -> None:
    """
    Raise ``ConfigurationError`` unless ``clock`` is a clock object whose
    ``now_us()`` gives whole microseconds (it is read once).
    """
    now_us = getattr(clock, "now_us", None)
    if isinstance(clock, type) or not callable(now_us):
        what = (
            f"the class {clock.__name__}" if isinstance(clock, type) else shown(clock)
        )
        raise ConfigurationError(
            "clock",
            f"clock must be a clock object with a now_us() method (such as "
            f"ManualClock()), got {what}",
        )

    now = now_us()
    if type(now) is not int:
        raise ConfigurationError(
            "clock",
            f"clock.now_us() must return whole microseconds (an int), got {shown(now)}",
        )


MAX_CLOCK_US = 2**62
"""A manual clock stays within this many microseconds of 0 (146,000 years)."""


def _to_us(value: float, scale: int, name: str) -> int:
    # A clock is test and simulation equipment: refuse nonsense loudly.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            name, f"{name} must be a number, got {type(value).__name__} {shown(value)}"
        )

    if isinstance(value, float) and not math.isfinite(value * scale):
        raise ConfigurationError(name, f"{name} must be finite, got {value!r}")

    us = value * scale if isinstance(value, int) else round(value * scale)
    return _within_range(us, name, value)


def _within_range(us: int, name: str, value: object) -> int:
    if not -MAX_CLOCK_US <= us <= MAX_CLOCK_US:
        raise ConfigurationError(
            name,
            f"a ManualClock stays within +-2**62 microseconds (146,000 years) of "
            f"0; {name}={shown(value)} takes it past that",
        )

    return us
