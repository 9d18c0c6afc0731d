"""
The window arithmetic of the decision contract, on integer microseconds.

A pair (identifier, throttle) keeps a ring of its last ``limit`` admission
times, plus the time its block ends. The ring is a list that grows to
``limit`` entries and then wraps: the oldest time is at ``head``, and the
times ascend from there around the ring (``times[head:]``, then
``times[:head]``). Hits at ``t <= now - ttl`` have left the window. A hit of
cost ``c`` is admitted when the pair is not blocked and the ``c``-th oldest of
the last ``limit`` slots has left the window (a slot never written counts as
long ago). When it is refused for a full window, the wait is the time until
that hit leaves: its time plus ``ttl`` minus ``now``.

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
    "count_left",
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
    head: int = 0,
) -> tuple[Outcome, int, int, int]:
    """
    Decide one throttle for one hit.

    Args:
        times: The pair's ring of admission times, oldest at ``head``; only
            the newest ``limit`` count (more linger after a limit was lowered,
            until the next write keeps the newest).
        blocked_until_us: When the pair's block ends.
        now_us: The time of the hit.
        limit: Hits allowed per window.
        ttl_us: The window.
        cost: How many hits this one counts as.
        head: Where the oldest time is in ``times``.

    Returns:
        ``(outcome, in_window, wait_us, expires_in_us)``: ``in_window`` is how
        many of the newest ``limit`` times are in the window; ``wait_us`` is 0
        when admitted, ``NEVER`` when the hit can never be admitted, else the
        time until a retry succeeds; ``expires_in_us`` is the time until the
        oldest counted hit leaves the window (0 when none is counted).
    """
    size = len(times)
    # Times are counted from the first in the window, or the first of the
    # newest `limit`, whichever is later (oldest first, 0 is the oldest).
    first = count_left(times, head, now_us - ttl_us)
    if first < size - limit:
        first = size - limit

    in_window = size - first
    expires_in = 0
    if in_window:
        expires_in = times[(head + first) % size] + ttl_us - now_us

    if cost > limit:
        return _COST_EXCEEDS_LIMIT, in_window, NEVER, expires_in

    window_wait = 0
    if in_window + cost > limit:
        # The cost-th oldest of the newest `limit` admissions must leave.
        window_wait = times[(head + size - limit + cost - 1) % size] + ttl_us - now_us

    if blocked_until_us > now_us:
        wait = max(blocked_until_us - now_us, window_wait)
        return _BLOCKED, in_window, wait, expires_in

    if window_wait:
        return _LIMIT_REACHED, in_window, window_wait, expires_in

    return _ADMITTED, in_window, 0, expires_in


def count_left(times: Sequence[int], head: int, left_us: int) -> int:
    """How many times of the ring (oldest at ``head``) are at or before ``left_us``."""
    if not head:
        return bisect_right(times, left_us)

    if left_us < times[0]:  # times[:head] are the newest: all of them later
        return bisect_right(times, left_us, head) - head

    return len(times) - head + bisect_right(times, left_us, 0, head)


def combine(records: Sequence[ThrottleRecord]) -> Decision:
    """The overall decision over built records: allowed only if all admitted."""
    refused = [r.retry_after for r in records if r.is_blocked]
    if not refused:
        return Decision(True, records, 0.0)

    return Decision(False, records, max(refused))
