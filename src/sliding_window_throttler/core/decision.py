"""The answer to a hit: one record per throttle and the overall decision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NamedTuple

US_PER_S = 1_000_000
NEVER = -1
"""A wait that never ends (the cost is above the limit)."""


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


class ThrottleRecord(NamedTuple):
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


RawRecord = tuple[str, int, Outcome, int, int, int, int, bool, bool]
"""The arguments of ``make_record``: what a storage knows after deciding."""


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
    blocked: bool = False,
) -> ThrottleRecord:
    """
    Build the record of one throttle from the raw numbers of a decision.

    Args:
        name: The throttle's name.
        limit: Its limit.
        outcome: What the storage decided for this throttle.
        in_window: Admitted hits in the window before this one.
        cost: The cost of this hit.
        wait_us: 0 when admitted, ``NEVER``, or the time until a retry succeeds.
        oldest_expires_in_us: Time until the oldest counted hit leaves the
            window after this decision (0 when the window is empty).
        recorded: The hit was recorded (every throttle admitted it).
        blocked: The pair is blocked after this decision (a block it serves,
            or one this refusal starts): nothing remains until it ends.
    """
    admitted = outcome is Outcome.ADMITTED
    if blocked or outcome is Outcome.BLOCKED:
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


_ADMITTED = Outcome.ADMITTED


def _overall(raw: Sequence[RawRecord]) -> tuple[bool, int]:
    """Whether every throttle admitted, and the longest wait of the others."""
    allowed = True
    longest = 0
    for r in raw:
        if r[2] is not _ADMITTED:
            allowed = False
            wait = r[5]
            if wait == NEVER or longest == NEVER:
                longest = NEVER
            elif wait > longest:
                longest = wait

    return allowed, longest


class Decision:
    """
    The overall answer to a hit over one or more throttles.

    A hit is allowed only if every throttle admits it; it is then recorded in all
    of them, otherwise in none. Treat a decision as read-only.

    Attributes:
        allowed: Every throttle admitted the hit.
        records: One ``ThrottleRecord`` per throttle, in the order given.
        retry_after: Seconds until a retry can succeed (the longest wait of the
            refusing throttles; 0 when allowed, ``math.inf`` when never).
        degraded: The decision did not come from the configured storage (a
            failure strategy made it).
        strategy: The name of the strategy that made a degraded decision.
    """

    # Records are built on first access: most callers only read `allowed`, and
    # building them costs more than the decision itself.
    __slots__ = ("_raw", "_records", "allowed", "degraded", "retry_after", "strategy")

    allowed: bool
    retry_after: float
    degraded: bool
    strategy: str | None
    _raw: Sequence[RawRecord]
    _records: tuple[ThrottleRecord, ...]

    def __init__(
        self,
        allowed: bool,
        records: Sequence[ThrottleRecord],
        retry_after: float,
        degraded: bool = False,
        strategy: str | None = None,
    ) -> None:
        self.allowed = allowed
        self.retry_after = retry_after
        self.degraded = degraded
        self.strategy = strategy
        self._raw = ()
        self._records = tuple(records)

    @classmethod
    def from_raw(cls, raw: Sequence[RawRecord]) -> Decision:
        """
        The decision over raw per-throttle numbers (see ``make_record``).

        Allowed only if every throttle admitted; the retry-after is the longest
        wait of the refusing throttles.
        """
        if len(raw) == 1:
            only = raw[0]
            allowed = only[2] is _ADMITTED
            longest = 0 if allowed else only[5]
        else:
            allowed, longest = _overall(raw)

        retry_after = math.inf if longest == NEVER else longest / US_PER_S
        return make_decision(raw, allowed, retry_after)

    @property
    def records(self) -> tuple[ThrottleRecord, ...]:
        """One record per throttle, in the order they were given."""
        try:
            return self._records
        except AttributeError:  # built from raw numbers: build them once
            records = self._records = tuple(make_record(*r) for r in self._raw)
            return records

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

    def as_degraded(
        self, strategy: str, limits: Sequence[int] | None = None
    ) -> Decision:
        """
        Return a copy of this decision marked as made by a failure strategy.

        Args:
            strategy: The strategy's name.
            limits: The limit each record reports instead of its own, in the
                order of the records (``remaining`` follows).
        """
        copy = Decision.__new__(Decision)
        copy.allowed = self.allowed
        copy.retry_after = self.retry_after
        copy.degraded = True
        copy.strategy = strategy
        copy._raw = self._raw
        if limits is not None and self._raw:
            copy._raw = tuple(
                (r[0], limit, *r[2:])
                for r, limit in zip(self._raw, limits, strict=True)
            )
        elif not self._raw:  # made from records, not from raw numbers
            copy._records = self._records

        return copy

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented

        return (
            self.allowed == other.allowed
            and self.retry_after == other.retry_after
            and self.degraded == other.degraded
            and self.strategy == other.strategy
            and self.records == other.records
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # Copied and pickled as a plain Decision with its records built.
        return (
            Decision,
            (
                self.allowed,
                self.records,
                self.retry_after,
                self.degraded,
                self.strategy,
            ),
        )

    def __repr__(self) -> str:
        extra = f", degraded=True, strategy={self.strategy!r}" if self.degraded else ""
        return (
            f"Decision(allowed={self.allowed}, retry_after={self.retry_after}, "
            f"records={list(self.records)!r}{extra})"
        )


class _Built(Decision):
    """
    A ``Decision`` from raw numbers (``make_decision``): no ``__init__`` of
    its own, and ``degraded``/``strategy`` from the class, so making one costs
    half as much on every hit. Its records are built on first access.
    """

    __slots__ = ()
    __init__ = object.__init__
    degraded = False
    strategy = None


def make_decision(
    raw: Sequence[RawRecord], allowed: bool, retry_after: float
) -> Decision:
    """
    The decision over raw per-throttle numbers whose verdict the caller
    already knows (``from_raw`` works it out).
    """
    decision: Decision = _Built()
    decision.allowed = allowed
    decision.retry_after = retry_after
    decision._raw = raw
    return decision
