"""
The window arithmetic of the decision contract, on integer microseconds.

A pair (identifier, throttle) keeps the times of its admitted hits in ascending
order, at most ``limit`` of them, plus the time its block ends. Hits at
``t <= now - ttl`` have left the window. A hit of cost ``c`` is admitted when
the pair is not blocked and at most ``limit - c`` hits remain in the window.
When it is refused for a full window, the wait is the time until enough of the
oldest hits leave: the ``c``-th oldest of the newest ``limit`` hits, plus
``ttl``, minus ``now``.

Everything here is pure: times arrive as arguments, nothing is read or stored.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from .decision import (
    NEVER,
    US_PER_S,
    Decision,
    Outcome,
    ThrottleRecord,
    ceil_seconds,
    make_record,
)

US_PER_MS = 1_000

__all__ = [
    "NEVER",
    "US_PER_MS",
    "US_PER_S",
    "ceil_seconds",
    "combine",
    "judge",
    "make_record",
]


_ADMITTED = Outcome.ADMITTED
_LIMIT_REACHED = Outcome.LIMIT_REACHED
_BLOCKED = Outcome.BLOCKED
_COST_EXCEEDS_LIMIT = Outcome.COST_EXCEEDS_LIMIT


def judge(
    times: Sequence[int],
    blocked_until_us: int,
    now_us: int,
    limit: int,
    ttl_us: int,
    cost: int,
    start: int = 0,
) -> tuple[Outcome, int, int, int, int]:
    """
    Decide one throttle for one hit.

    Args:
        times: Admission times in ascending order from ``start`` on (those
            before ``start`` are already dropped); only the newest ``limit``
            count (older ones may linger after a limit was lowered).
        blocked_until_us: When the pair's block ends (0 when never blocked).
        now_us: The time of the hit.
        limit: Hits allowed per window.
        ttl_us: The window.
        cost: How many hits this one counts as.
        start: Where the kept times begin in ``times``.

    Returns:
        ``(outcome, expired, in_window, wait_us, expires_in_us)``:
        ``expired`` is how many kept times have left the window, ``in_window``
        how many of the newest ``limit`` have not; ``wait_us`` is 0 when
        admitted, ``NEVER`` when the hit can never be admitted, else the time
        until a retry succeeds; ``expires_in_us`` is the time until the oldest
        counted hit leaves the window (0 when none is counted).
    """
    end = len(times)
    expired = bisect_right(times, now_us - ttl_us, start) - start
    in_window = end - start - expired
    if in_window > limit:
        in_window = limit

    expires_in = times[end - in_window] + ttl_us - now_us if in_window else 0
    if cost > limit:
        return _COST_EXCEEDS_LIMIT, expired, in_window, NEVER, expires_in

    window_wait = 0
    if in_window + cost > limit:
        # The cost-th oldest among the newest `limit` admissions must leave.
        window_wait = times[end - limit + cost - 1] + ttl_us - now_us

    if blocked_until_us > now_us:
        wait = max(blocked_until_us - now_us, window_wait)
        return _BLOCKED, expired, in_window, wait, expires_in

    if window_wait:
        return _LIMIT_REACHED, expired, in_window, window_wait, expires_in

    return _ADMITTED, expired, in_window, 0, expires_in


def combine(records: Sequence[ThrottleRecord]) -> Decision:
    """The overall decision over built records: allowed only if all admitted."""
    refused = [r.retry_after for r in records if r.is_blocked]
    if not refused:
        return Decision(True, records, 0.0)

    return Decision(False, records, max(refused))
