"""Throttle definitions and the parsing of durations and rate specs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import timedelta

from ..errors import ConfigurationError, shown

Duration = int | float | timedelta | str
"""Seconds (int or float), a ``timedelta``, or a string such as ``"1.5s"``."""

MAX_LIMIT = 1_000_000
MAX_DURATION_MS = 366 * 86_400_000
MAX_COST = 2**52
"""Costs, like explicit times, stay exact in the doubles of the Redis function."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

_UNIT_MS = {
    "ms": 1,
    "msec": 1,
    "millisecond": 1,
    "milliseconds": 1,
    "s": 1_000,
    "sec": 1_000,
    "secs": 1_000,
    "second": 1_000,
    "seconds": 1_000,
    "m": 60_000,
    "min": 60_000,
    "mins": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hr": 3_600_000,
    "hrs": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
    "w": 604_800_000,
    "week": 604_800_000,
    "weeks": 604_800_000,
}
_UNITS_TEXT = "ms, s, m/min/minute, h/hour, d/day, w/week"
# Spaces and tabs only: a newline inside a spec is a mistake, not a separator.
_DURATION = re.compile(r"[ \t]*(\d+(?:\.\d+)?|\.\d+)[ \t]*([a-zA-Z]*)[ \t]*", re.ASCII)
_SPEC = re.compile(
    r"[ \t]*(\d+)[ \t]*(?:/|[ \t]+per[ \t]+)[ \t]*"
    r"(\d+(?:\.\d+)?|\.\d+)?[ \t]*([a-zA-Z]+)[ \t]*",
    re.IGNORECASE | re.ASCII,
)


def parse_duration_ms(value: Duration, *, field: str = "duration") -> int:
    """
    Convert a duration to whole milliseconds.

    Args:
        value: Seconds as int or float, a ``timedelta``, or a string with a unit
            (``"500ms"``, ``"1.5s"``, ``"2 minutes"``); a bare number string is
            seconds.
        field: The name reported in errors.

    Returns:
        The duration in milliseconds (zero or more).

    Raises:
        ConfigurationError: if the value is not a duration, is negative, is not a
            whole number of milliseconds, or is longer than 366 days.
    """
    if isinstance(value, bool):
        raise ConfigurationError(
            field, f"{field} must be a duration, got {shown(value)}"
        )

    if isinstance(value, timedelta):
        ms = _whole_ms(value / timedelta(milliseconds=1), field, value)
    elif isinstance(value, int):
        ms = value * 1000
    elif isinstance(value, float):
        ms = _whole_ms(value * 1000, field, value)
    elif isinstance(value, str):
        ms = _parse_duration_text(value, field)
    else:
        raise ConfigurationError(
            field,
            f"{field} must be seconds, a timedelta or a string such as '30s', "
            f"got {type(value).__name__} {shown(value)}",
        )

    if ms < 0:
        raise ConfigurationError(
            field, f"{field} must not be negative, got {shown(value)}"
        )

    if ms > MAX_DURATION_MS:
        raise ConfigurationError(
            field, f"{field} must be at most 366 days, got {shown(value)}"
        )

    return ms


def _parse_duration_text(text: str, field: str) -> int:
    match = _DURATION.fullmatch(text)
    stripped = text.strip(" \t")
    if match is None and stripped[:1] == "-" and _DURATION.fullmatch(stripped[1:]):
        raise ConfigurationError(
            field, f"{field} must not be negative, got {shown(text)}"
        )

    if match is None:
        raise ConfigurationError(
            field,
            f"{field} {shown(text)} is not a duration; write a number and a unit, "
            f"such as '30s' or '2 minutes' (units: {_UNITS_TEXT})",
        )

    number, unit = match.groups()
    scale = _UNIT_MS.get(unit.lower(), 0) if unit else 1_000
    if not scale:
        raise ConfigurationError(
            field, f"{field} {shown(text)} has an unknown unit {unit!r} ({_UNITS_TEXT})"
        )

    return _whole_ms(float(number) * scale, field, text)


def _whole_ms(ms: float, field: str, given: object) -> int:
    if not math.isfinite(ms):
        raise ConfigurationError(field, f"{field} must be finite, got {shown(given)}")

    whole = round(ms)
    if abs(ms - whole) > 1e-6:
        raise ConfigurationError(
            field, f"{field} must be a whole number of milliseconds, got {shown(given)}"
        )

    return whole


def parse_rate(spec: str, *, field: str = "rate") -> tuple[int, int]:
    """
    Parse a rate spec into ``(limit, ttl_ms)``.

    Accepts ``"100/minute"``, ``"10/5s"``, ``"5 per 2 minutes"``, ``"1/day"``
    and the like (units: ms, s, m/min/minute, h/hour, d/day, w/week).

    Raises:
        ConfigurationError: naming ``field`` and the bad spec.
    """
    if not isinstance(spec, str):
        raise ConfigurationError(
            field, f"{field} must be a string such as '100/minute', got {shown(spec)}"
        )

    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ConfigurationError(
            field,
            f"{field} {shown(spec)} is not a rate; write it as '100/minute', "
            "'10/5s' or '5 per 2 minutes'",
        )

    count, number, unit = match.groups()
    scale = _UNIT_MS.get(unit.lower())
    if scale is None:
        raise ConfigurationError(
            field, f"{field} {shown(spec)} has an unknown unit {unit!r} ({_UNITS_TEXT})"
        )

    if len(count) > 18:
        raise ConfigurationError(
            field, f"{field} {shown(spec)} has an absurd number of hits per window"
        )

    window_ms = float(number or 1) * scale
    if abs(window_ms - round(window_ms)) > 1e-6:
        raise ConfigurationError(
            field,
            f"{field} {shown(spec)} has a window that is not a whole number of "
            "milliseconds",
        )

    return int(count), _whole_ms(window_ms, field, spec)


@dataclass(frozen=True, slots=True, init=False)
class Throttle:
    """
    A named limit: at most ``limit`` hits in any window of ``ttl_ms``.

    ``Throttle("api", 100, 60)``, ``Throttle("api", 100, timedelta(minutes=1))``
    and ``Throttle("api", "100/minute")`` are the same throttle. When a hit is
    refused because the window is full and ``block_duration`` is above zero, the
    client is blocked for that long.

    Args:
        name: Letters, digits, ``_``, ``.`` or ``-``, at most 64 characters; it
            tells throttles of one client apart and appears in keys and metrics.
        limit: The number of hits allowed per window, or a rate spec string
            (``"100/minute"``) that gives the window too.
        ttl: The window: seconds, a ``timedelta`` or a duration string.
        block_duration: How long a client that overflows the window is refused.

    Raises:
        ConfigurationError: naming the field and the bad value.
    """

    name: str
    limit: int
    ttl_ms: int
    block_duration_ms: int
    ttl_us: int = field(init=False, repr=False, compare=False)
    block_duration_us: int = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        name: str,
        limit: int | str,
        ttl: Duration | None = None,
        block_duration: Duration = 0,
    ) -> None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ConfigurationError(
                "name",
                "throttle name must be 1-64 letters, digits, '_', '.' or '-', "
                f"got {shown(name)}",
            )

        if isinstance(limit, str):
            if ttl is not None:
                raise _spec_with_ttl(name, limit, ttl)

            count, ttl_ms = parse_rate(limit, field="limit")
        else:
            if ttl is None:
                raise ConfigurationError(
                    "ttl",
                    f"throttle {name!r}: give a window (ttl) for limit {shown(limit)}",
                )
            count, ttl_ms = limit, parse_duration_ms(ttl, field="ttl")

        object.__setattr__(self, "name", name)
        object.__setattr__(self, "limit", _check_limit(name, count))
        object.__setattr__(
            self,
            "ttl_ms",
            _check_window(
                name, ttl_ms, *(("ttl", ttl) if ttl is not None else ("limit", limit))
            ),
        )
        block_ms = parse_duration_ms(block_duration, field="block_duration")
        object.__setattr__(self, "block_duration_ms", block_ms)
        object.__setattr__(self, "ttl_us", self.ttl_ms * 1000)
        object.__setattr__(self, "block_duration_us", block_ms * 1000)

    @property
    def ttl(self) -> float:
        """The window in seconds."""
        return self.ttl_ms / 1000

    @property
    def block_duration(self) -> float:
        """The block duration in seconds."""
        return self.block_duration_ms / 1000

    def __str__(self) -> str:
        text = f"{self.name}: {self.limit}/{format_duration_ms(self.ttl_ms)}"
        if self.block_duration_ms:
            text += f" (block {format_duration_ms(self.block_duration_ms)})"
        return text


def _spec_with_ttl(name: str, limit: str, ttl: Duration) -> ConfigurationError:
    try:
        parse_rate(limit)
    except ConfigurationError:
        return ConfigurationError(
            "limit",
            f"throttle {shown(name)}: limit must be an integer when ttl is given "
            f"(or a rate such as '100/minute' without ttl), got {shown(limit)}",
        )

    return ConfigurationError(
        "ttl",
        f"throttle {shown(name)}: the rate {shown(limit)} already gives the window; "
        f"do not pass ttl={shown(ttl)} too",
    )


def _check_limit(name: str, limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ConfigurationError(
            "limit",
            f"throttle {shown(name)}: limit must be an integer, got {shown(limit)}",
        )

    if limit < 1:
        raise ConfigurationError(
            "limit",
            f"throttle {shown(name)}: limit must be at least 1, got {shown(limit)}",
        )

    if limit > MAX_LIMIT:
        raise ConfigurationError(
            "limit",
            f"throttle {name!r}: limit must be at most {MAX_LIMIT:,} hits per window, "
            f"got {shown(limit)}",
        )

    return limit


def _check_window(name: str, ttl_ms: int, field: str, given: object) -> int:
    if not 1 <= ttl_ms <= MAX_DURATION_MS:
        raise ConfigurationError(
            field,
            f"throttle {shown(name)}: the window must be from 1 ms to 366 days, "
            f"got {shown(given)}",
        )

    return ttl_ms


def format_duration_ms(ms: int) -> str:
    """Render milliseconds compactly: ``1500`` is ``"1.5s"``, ``60000`` ``"1m"``."""
    for unit, scale in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms >= scale and ms % scale == 0:
            return f"{ms // scale}{unit}"

    if ms >= 1000:
        return f"{ms / 1000:g}s"

    return f"{ms}ms"
