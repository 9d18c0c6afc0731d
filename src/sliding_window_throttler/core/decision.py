"""The answer to a hit: one record per throttle and the overall decision."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum


class Outcome(StrEnum):
    """Why a throttle admitted or refused a hit."""

    ADMITTED = "admitted"
    LIMIT_REACHED = "limit_reached"
    """The window already holds ``limit`` hits (or too many for this cost)."""
    BLOCKED = "blocked"
    """The client is serving a block from an earlier overflow."""
    COST_EXCEEDS_LIMIT = "cost_exceeds_limit"
    """The cost is above the limit: this hit can never succeed."""
    CAPACITY = "capacity"
    """The storage tracks as many clients as it may and refuses new ones."""


@dataclass(frozen=True, slots=True)
class ThrottleRecord:
    """
    What one throttle says about one hit.

    The first four fields follow the storage contract of the seed design, in
    whole seconds rounded up; ``retry_after`` is the precise wait.

    Attributes:
        name: The throttle's name.
        limit: Hits allowed per window.
        total_hits: Hits in the window including this one (above ``limit``
            when refused for a full window).
        remaining: Hits still allowed in the window after this decision.
        time_to_expire: Seconds until the oldest counted hit leaves the window
            (0 when the window is empty).
        is_blocked: This throttle refused the hit.
        time_to_block_expire: Seconds until a retry can succeed; ``-1`` when
            this throttle admitted the hit, and also when it never can
            (``outcome`` is ``COST_EXCEEDS_LIMIT``).
        retry_after: Seconds until a retry can succeed: 0 when admitted,
            ``math.inf`` when it never can.
        outcome: Why.
    """

    name: str
    limit: int
    total_hits: int
    remaining: int
    time_to_expire: int
    is_blocked: bool
    time_to_block_expire: int
    retry_after: float
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Decision:
    """
    The overall answer to a hit over one or more throttles.

    A hit is allowed only if every throttle admits it; it is then recorded in all
    of them, otherwise in none.

    Attributes:
        allowed: Every throttle admitted the hit.
        records: One record per throttle, in the order they were given.
        retry_after: Seconds until a retry can succeed (the longest wait of the
            refusing throttles; 0 when allowed, ``math.inf`` when never).
        degraded: The decision did not come from the configured storage (a
            failure strategy made it).
        strategy: The name of the strategy that made a degraded decision.
    """

    allowed: bool
    records: tuple[ThrottleRecord, ...]
    retry_after: float
    degraded: bool = False
    strategy: str | None = None

    @property
    def limiting(self) -> ThrottleRecord:
        """The record to show in response headers: the most constrained one."""
        if self.allowed:
            return min(self.records, key=lambda r: (r.remaining, -r.time_to_expire))

        return max(self.records, key=lambda r: r.retry_after)

    @property
    def can_succeed(self) -> bool:
        """False when a retry of the same hit can never be admitted."""
        return not math.isinf(self.retry_after)

    def as_degraded(self, strategy: str) -> Decision:
        """Return this decision marked as made by a failure strategy."""
        return replace(self, degraded=True, strategy=strategy)
