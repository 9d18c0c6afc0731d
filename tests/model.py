"""
The reference model of the decision contract: slow, obviously correct.

Written from DESIGN.md alone; it shares no code with the package (only the
field names of the records it returns). Every backend is tested against it.

Per (identifier, throttle name) the model keeps a ring of the last ``limit``
admission times (``None`` is an empty slot, "long ago"; oldest first) and the
time the pair's block ends. Times are integer microseconds, durations integer
milliseconds, as in the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple

US_PER_MS = 1_000
US_PER_S = 1_000_000


class Spec(NamedTuple):
    """A throttle as the model sees it."""

    name: str
    limit: int
    ttl_ms: int
    block_ms: int = 0


class Record(NamedTuple):
    """The model's record; fields and order match ``ThrottleRecord``."""

    name: str
    limit: int
    total_hits: int
    remaining: int
    time_to_expire: int
    is_blocked: bool
    time_to_block_expire: int
    retry_after: float
    outcome: str


class Verdict(NamedTuple):
    """The model's decision; compare with ``as_verdict(decision)``."""

    allowed: bool
    retry_after: float
    records: tuple[Record, ...]


@dataclass
class _Pair:
    ring: list[int | None]
    blocked_until: int | None = None


@dataclass
class Model:
    """
    The state of every pair, and the decisions taken on it.

    Time never goes back for a pair (a clock that steps back stands still).
    With ``one_clock`` it never goes back for the whole model either, as in a
    ``MemoryStorage``, whose one clock every hit moves forward (a peek reads it
    without moving it).
    """

    pairs: dict[tuple[str, str], _Pair] = field(default_factory=dict)
    one_clock: bool = False
    latest_us: int | None = None

    def hit(
        self, identifier: str, specs: list[Spec], cost: int, now_us: int
    ) -> Verdict:
        """Decide a hit and record it in every throttle, or in none."""
        return self._decide(identifier, specs, cost, now_us, commit=True)

    def peek(
        self, identifier: str, specs: list[Spec], cost: int, now_us: int
    ) -> Verdict:
        """What ``hit`` would decide, changing nothing."""
        return self._decide(identifier, specs, cost, now_us, commit=False)

    def reset(self, identifier: str, names: list[str] | None = None) -> None:
        """Forget the identifier's pairs (all of them when ``names`` is None)."""
        for key in list(self.pairs):
            if key[0] == identifier and (names is None or key[1] in names):
                del self.pairs[key]

    def admitted_times(self, identifier: str, name: str) -> list[int]:
        """The admission times the pair remembers, oldest first."""
        pair = self.pairs.get((identifier, name))
        return [] if pair is None else [t for t in pair.ring if t is not None]

    def _decide(
        self, identifier: str, specs: list[Spec], cost: int, now_us: int, commit: bool
    ) -> Verdict:
        if self.one_clock:
            if self.latest_us is not None:
                now_us = max(now_us, self.latest_us)

            if commit:
                self.latest_us = now_us

        views = [self._view(identifier, spec, now_us) for spec in specs]
        judged = [
            _judge(spec, ring, blocked, now, cost)
            for spec, (ring, blocked, now) in zip(specs, views, strict=True)
        ]
        allowed = all(j[0] == "admitted" for j in judged)
        recorded = allowed and cost > 0

        records = []
        for spec, (ring, blocked, now), (outcome, wait) in zip(
            specs, views, judged, strict=True
        ):
            in_window = _count_in_window(ring, now, spec.ttl_ms)
            fresh_block = outcome == "limit_reached" and spec.block_ms > 0
            if fresh_block:
                blocked = now + spec.block_ms * US_PER_MS
                wait = max(wait, spec.block_ms * US_PER_MS)

            after = list(ring)
            if recorded:
                after = (after + [now] * cost)[-spec.limit :]

            if commit and recorded:
                self.pairs[(identifier, spec.name)] = _Pair(after, blocked)
            elif commit and fresh_block:
                # Only a write rebuilds the ring for a changed limit: a block
                # keeps the admissions as they are.
                kept = self.pairs[(identifier, spec.name)].ring
                self.pairs[(identifier, spec.name)] = _Pair(kept, blocked)

            records.append(
                _record(
                    spec, outcome, wait, in_window, cost, after, now, blocked, recorded
                )
            )

        refused = [r.retry_after for r in records if r.is_blocked]
        return Verdict(allowed, max(refused, default=0.0), tuple(records))

    def _view(
        self, identifier: str, spec: Spec, now_us: int
    ) -> tuple[list[int | None], int | None, int]:
        """The pair's ring at the spec's limit, its block end, its clamped now."""
        pair = self.pairs.get((identifier, spec.name))
        if pair is None:
            return [None] * spec.limit, None, now_us

        # A changed limit keeps the newest admissions.
        ring = ([None] * spec.limit + pair.ring)[-spec.limit :]
        times = [t for t in pair.ring if t is not None]
        # Time never goes back for a pair: a clock that steps back stands still.
        now = max([now_us, *times])
        return ring, pair.blocked_until, now


def _count_in_window(ring: list[int | None], now: int, ttl_ms: int) -> int:
    """Hits at ``t <= now - ttl`` have left the window; empty slots are long ago."""
    return sum(1 for t in ring if t is not None and t > now - ttl_ms * US_PER_MS)


def _window_wait(ring: list[int | None], now: int, spec: Spec, cost: int) -> int:
    """The earliest wait after which ``cost`` more hits fit in the window."""
    if _count_in_window(ring, now, spec.ttl_ms) + cost <= spec.limit:
        return 0

    # The count only drops when a hit leaves, at its time plus ttl.
    ttl_us = spec.ttl_ms * US_PER_MS
    leaves = sorted(t + ttl_us for t in ring if t is not None and t + ttl_us > now)
    for later in leaves:
        if _count_in_window(ring, later, spec.ttl_ms) + cost <= spec.limit:
            return later - now

    raise AssertionError("a cost within the limit always fits eventually")


def _judge(
    spec: Spec, ring: list[int | None], blocked_until: int | None, now: int, cost: int
) -> tuple[str, int | None]:
    """``(outcome, wait_us)``; the wait is None when a retry can never succeed."""
    if cost > spec.limit:
        return "cost_exceeds_limit", None

    window_wait = _window_wait(ring, now, spec, cost)
    if blocked_until is not None and blocked_until > now:
        return "blocked", max(blocked_until - now, window_wait)

    if window_wait:
        return "limit_reached", window_wait

    return "admitted", 0


def _ceil_seconds(us: int) -> int:
    return math.ceil(Fraction(us, US_PER_S))


def _record(
    spec: Spec,
    outcome: str,
    wait: int | None,
    in_window: int,
    cost: int,
    after: list[int | None],
    now: int,
    blocked_until: int | None,
    recorded: bool,
) -> Record:
    admitted = outcome == "admitted"
    if blocked_until is not None and blocked_until > now:
        remaining = 0
    else:
        remaining = spec.limit - in_window - (cost if recorded else 0)

    ttl_us = spec.ttl_ms * US_PER_MS
    counted = [t for t in after if t is not None and t > now - ttl_us]
    expires_in = min(counted) + ttl_us - now if counted else 0

    if admitted:
        retry_after, block_left = 0.0, -1
    elif wait is None:
        retry_after, block_left = math.inf, -1
    else:
        retry_after, block_left = wait / US_PER_S, _ceil_seconds(wait)

    return Record(
        name=spec.name,
        limit=spec.limit,
        total_hits=in_window + cost,
        remaining=remaining,
        time_to_expire=_ceil_seconds(expires_in),
        is_blocked=not admitted,
        time_to_block_expire=block_left,
        retry_after=retry_after,
        outcome=outcome,
    )


def as_verdict(decision: Any) -> Verdict:
    """Turn a package ``Decision`` into the model's terms, field by field."""
    records = tuple(
        Record(
            r.name,
            r.limit,
            r.total_hits,
            r.remaining,
            r.time_to_expire,
            r.is_blocked,
            r.time_to_block_expire,
            r.retry_after,
            str(r.outcome),
        )
        for r in decision.records
    )
    return Verdict(decision.allowed, decision.retry_after, records)


def spec_of(throttle: Any) -> Spec:
    """The model's view of a package ``Throttle`` (its public attributes only)."""
    return Spec(
        throttle.name, throttle.limit, throttle.ttl_ms, throttle.block_duration_ms
    )
