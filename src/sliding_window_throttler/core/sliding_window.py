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

import math
from bisect import bisect_right
from collections.abc import Sequence

from .decision import Decision, Outcome, ThrottleRecord

NEVER = -1
"""A wait that never ends (the cost is above the limit)."""

US_PER_MS = 1_000
US_PER_S = 1_000_000


def judge(
    times: Sequence[int],
    blocked_until_us: int,
    now_us: int,
    limit: int,
    ttl_us: int,
    cost: int,
) -> tuple[Outcome, int, int, int]:
    """
    Decide one throttle for one hit.

    Args:
        times: Admission times in ascending order; only the newest ``limit``
            count (older ones may linger after a limit was lowered).
        blocked_until_us: When the pair's block ends (0 when never blocked).
        now_us: The time of the hit.
        limit: Hits allowed per window.
        ttl_us: The window.
        cost: How many hits this one counts as.

    Returns:
        ``(outcome, expired, in_window, wait_us)``: ``expired`` is how many of
        ``times`` have left the window, ``in_window`` how many of the newest
        ``limit`` have not; ``wait_us`` is 0 when admitted, ``NEVER`` when the
        hit can never be admitted, else the time until a retry succeeds.
    """
    size = len(times)
    expired = bisect_right(times, now_us - ttl_us)
    in_window = min(size - expired, limit)
    if cost > limit:
        return Outcome.COST_EXCEEDS_LIMIT, expired, in_window, NEVER

    window_wait = 0
    if in_window + cost > limit:
        # The cost-th oldest among the newest `limit` admissions must leave.
        window_wait = times[size - limit + cost - 1] + ttl_us - now_us

    if blocked_until_us > now_us:
        wait = max(blocked_until_us - now_us, window_wait)
        return Outcome.BLOCKED, expired, in_window, wait

    if window_wait:
        return Outcome.LIMIT_REACHED, expired, in_window, window_wait

    return Outcome.ADMITTED, expired, in_window, 0


def ceil_seconds(us: int) -> int:
    """Whole seconds, rounded up, in ``us`` microseconds (``us >= 0``)."""
    return -(-us // US_PER_S)


def make_record(
    name: str,
    limit: int,
    outcome: Outcome,
    in_window: int,
    cost: int,
    wait_us: int,
    oldest_expires_in_us: int,
    recorded: bool,
) -> ThrottleRecord:
    """
    Build the record of one throttle from the raw numbers of a decision.

    Args:
        name: The throttle's name.
        limit: Its limit.
        outcome: What ``judge`` (or the Redis function) decided.
        in_window: Admitted hits in the window before this one.
        cost: The cost of this hit.
        wait_us: The wait from ``judge`` (0, ``NEVER`` or positive).
        oldest_expires_in_us: Time until the oldest counted hit leaves the
            window after this decision (0 when the window is empty).
        recorded: The hit was recorded (every throttle admitted it).
    """
    admitted = outcome is Outcome.ADMITTED
    if outcome is Outcome.BLOCKED:
        remaining = 0
    else:
        remaining = max(0, limit - in_window - (cost if recorded else 0))

    if admitted:
        retry_after, block_left = 0.0, -1
    elif wait_us == NEVER:
        retry_after, block_left = math.inf, -1
    else:
        retry_after, block_left = wait_us / US_PER_S, ceil_seconds(wait_us)

    return ThrottleRecord(
        name,
        limit,
        in_window + cost,
        remaining,
        ceil_seconds(oldest_expires_in_us),
        not admitted,
        block_left,
        retry_after,
        outcome,
    )


def combine(records: Sequence[ThrottleRecord]) -> Decision:
    """The overall decision: allowed only if every throttle admitted."""
    refused = [r.retry_after for r in records if r.is_blocked]
    if not refused:
        return Decision(True, tuple(records), 0.0)

    return Decision(False, tuple(records), max(refused))
