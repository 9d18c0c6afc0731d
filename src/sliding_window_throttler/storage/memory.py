"""
The embedded storage: exact sliding windows in this process's memory.

State per client is a dict of pairs, one per throttle name. A pair keeps a
ring of its last ``limit`` admission times (never more) and when its block
ends. Memory stays bounded whatever clients send:

- Idle pairs are reclaimed lazily: a heap orders pairs by the time their
  window and block end, and every decision first pops the pairs that are due
  (an entry found early, for a pair hit since, goes back in at its new end).
  No thread or timer runs, and no decision scans every pair.
- At most ``max_pairs`` pairs are tracked. When a new pair would exceed that
  (after the reclaim above), the overflow policy either refuses the new client
  (``reject-new``, the default: existing clients keep exact limits) or evicts
  the least recently used clients (``evict-lru``). A blocked client is never
  evicted before its block ends. Both are counted in ``stats()`` and logged
  once per episode at WARNING.

The storage clock never goes back: a time earlier than one already seen is
treated as that time (a clock that steps back stands still). That is what lets
reclaimed state stay reclaimed.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from time import monotonic_ns

from ..core.clock import MAX_CLOCK_US, Clock, MonotonicClock, check_clock
from ..core.decision import (
    NEVER,
    US_PER_S,
    Decision,
    Outcome,
    _Built,
    make_decision,
)
from ..core.keys import MAX_IDENTIFIER_LENGTH
from ..core.rate import MAX_COST, Throttle
from ..core.sliding_window import count_left, judge
from ..errors import ConfigurationError, shown
from .base import StorageHealth

logger = logging.getLogger(__name__)


def _switch(name: str) -> bool:
    """
    A yes/no variable of the environment; unset or empty is no. Any other
    value than the yes and no words is taken as yes, with a warning: read
    at import, it must not stop the import (nor ``swt --help``).
    """
    value = os.environ.get(name, "")
    if value.strip().lower() in ("", "0", "false", "no", "off"):
        return False

    if value.strip().lower() not in ("1", "true", "yes", "on"):
        warnings.warn(
            f"{name}={value!r} is none of 1, true, yes, on, 0, false, no, off: "
            "taken as yes",
            RuntimeWarning,
            stacklevel=2,
        )

    return True


try:
    from . import _hot_path as _extension
except ImportError:  # built without a C compiler, or not CPython
    _extension = None  # type: ignore[assignment]

# The extension as built (bound below), and the one in use: none when the
# environment asks for the Python path (the tests switch between the two).
_hot_path = _extension
if _switch("SWT_NO_EXTENSIONS"):
    _hot_path = None  # type: ignore[assignment]

_NO_TIMES: list[int] = []
# Before any time a caller can pass (explicit times may be negative).
_NEVER_BLOCKED = -(2**63)
_NEVER_EXPIRES = 2**63


def checked_time(now: object, source: str) -> int:
    """
    The time of a hit, checked: whole microseconds within ``MAX_CLOCK_US``
    of 0, so that every time a storage keeps fits in 64 bits. (Also called
    by ``_hot_path.c`` for a time it cannot take as it is.)

    Raises:
        ConfigurationError: naming ``source`` (``now_us``, or the ``clock``
            that gave it).
    """
    # In the words of check_clock, which reads a clock once when it is given.
    what = "now_us must be" if source == "now_us" else "clock.now_us() must return"
    if type(now) is not int:  # not a bool, nor an int subclass's own idea
        got = shown(now)
        if isinstance(now, int) and not isinstance(now, bool):
            got = f"a {type(now).__name__}, a subclass of int: {got}"

        raise ConfigurationError(
            source, f"{what} whole microseconds (an int), got {got}"
        )

    if not -MAX_CLOCK_US <= now <= MAX_CLOCK_US:
        raise ConfigurationError(
            source,
            f"{what} a time within +-2**62 microseconds (146,000 years) of 0, "
            f"got {shown(now)}",
        )

    return now


class OverflowPolicy(StrEnum):
    """What ``MemoryStorage`` does when it tracks ``max_pairs`` pairs."""

    REJECT_NEW = "reject-new"
    EVICT_LRU = "evict-lru"


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """
    Counters of a ``MemoryStorage``.

    Attributes:
        clients: Identifiers tracked now.
        pairs: (identifier, throttle) pairs tracked now.
        max_pairs: The cap on ``pairs``.
        overflow_policy: What happens at the cap.
        refused_new: Hits refused because a new pair would exceed the cap.
        evicted: Pairs evicted (least recently used first) to make room.
        reclaimed: Pairs dropped after their window and block ended.
    """

    clients: int
    pairs: int
    max_pairs: int
    overflow_policy: OverflowPolicy
    refused_new: int
    evicted: int
    reclaimed: int


class _Pair(list[int]):
    """
    One (identifier, throttle) pair: the ring of its last ``limit`` admission
    times (oldest at ``head``, see ``core.sliding_window``) and when its block
    ends. (One object per pair, not a pair and its list: a million clients are
    half as many objects for the garbage collector.)

    The list grows to ``limit`` entries and never beyond: from then on, each
    admission overwrites the oldest time. Nothing is ever trimmed, so a
    decision costs the same at any limit.
    """

    __slots__ = ("blocked_until", "due", "head", "ttl_us")

    def __init__(self, ttl_us: int) -> None:
        self.head = 0
        self.blocked_until = _NEVER_BLOCKED
        self.ttl_us = ttl_us
        self.due = _NEVER_EXPIRES  # when its entry in the reclaim heap is due

    def expires_at(self) -> int:
        # The newest time sits just before the oldest (at the end when the
        # ring has not wrapped); the pair expires when it leaves the window.
        last = self[self.head - 1] + self.ttl_us if self else 0
        return max(last, self.blocked_until)

    def record(self, now: int, cost: int, limit: int) -> None:
        """Write ``cost`` admissions at ``now``, keeping the newest ``limit``."""
        size = len(self)
        head = self.head
        if size < limit and cost == 1 and not head:
            self.append(now)  # the commonest write, before the ring is full
            return

        if size > limit or (head and size < limit):
            # A changed limit: the newest admissions, oldest first.
            self[:] = (self[head:] + self[:head])[-limit:]
            size = len(self)
            head = self.head = 0

        room = limit - size  # the ring wraps only once it is full (head 0)
        if cost <= room:
            self.extend([now] * cost)
            return

        if room:
            self.extend([now] * room)
            cost -= room

        # Overwrite the `cost` oldest, from the head on, around the end.
        first = min(cost, limit - head)
        self[head : head + first] = [now] * first
        if cost > first:
            self[: cost - first] = [now] * (cost - first)

        self.head = (head + cost) % limit


_Client = dict[str, _Pair]
_ADMITTED = Outcome.ADMITTED
_LIMIT_REACHED = Outcome.LIMIT_REACHED


def _judge(
    pair: _Pair | None, throttle: Throttle, cost: int, now: int
) -> tuple[Outcome, int, int, int]:
    if pair is None:
        return judge(
            _NO_TIMES, _NEVER_BLOCKED, now, throttle.limit, throttle.ttl_us, cost
        )

    return judge(
        pair,
        pair.blocked_until,
        now,
        throttle.limit,
        throttle.ttl_us,
        cost,
        pair.head,
    )


def _held(pair: _Pair, keep: list[_Pair]) -> bool:
    """Whether ``pair`` is one of ``keep`` (the same object, not an equal list)."""
    return any(pair is kept for kept in keep)


class MemoryStorage:
    """
    Exact sliding-window storage in process memory; thread-safe.

    Args:
        clock: Where time comes from (default: the monotonic clock). Inject a
            ``ManualClock`` to test or to replay logged time.
        max_pairs: The most (identifier, throttle) pairs tracked at once.
        overflow: ``"reject-new"`` or ``"evict-lru"`` (see the module docs).

    Raises:
        ConfigurationError: for a bad ``max_pairs`` or ``overflow``.
    """

    # Slots, not a dict: the C hot path (_hot_path.c) reads and writes some
    # of them at their offsets.
    __slots__ = (
        "__weakref__",
        "_clients",
        "_clients_high",
        "_clock",
        "_due",
        "_evictable_at",
        "_evicted",
        "_high_water",
        "_lock",
        "_lru",
        "_max_pairs",
        "_monotonic",
        "_next_due",
        "_no_evictions_until",
        "_overflowing",
        "_pairs",
        "_policy",
        "_reclaimed",
        "_refused_new",
        "_refusing",
    )

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        max_pairs: int = 100_000,
        overflow: OverflowPolicy | str = OverflowPolicy.REJECT_NEW,
    ) -> None:
        if isinstance(max_pairs, bool) or not isinstance(max_pairs, int):
            raise ConfigurationError(
                "max_pairs", f"max_pairs must be an integer, got {shown(max_pairs)}"
            )

        if max_pairs < 1:
            raise ConfigurationError(
                "max_pairs", f"max_pairs must be at least 1, got {shown(max_pairs)}"
            )

        try:
            self._policy = OverflowPolicy(overflow)
        except ValueError:
            choices = ", ".join(p.value for p in OverflowPolicy)
            raise ConfigurationError(
                "overflow", f"overflow must be one of {choices}, got {shown(overflow)}"
            ) from None

        if clock is not None:
            check_clock(clock)

        self._clock = clock if clock is not None else MonotonicClock()
        # The default clock is read inline: one call less on every hit.
        self._monotonic = clock is None
        self._max_pairs = max_pairs
        self._lock = threading.Lock()
        self._lru = self._policy is OverflowPolicy.EVICT_LRU
        # evict-lru keeps its clients least recently used first: an
        # OrderedDict, whose front is found at once. (A plain dict renewed by
        # re-inserting would leave its front to deleted slots that every
        # eviction walks past: 75 us a new client at the cap.)
        self._clients: dict[str, _Client] = OrderedDict() if self._lru else {}
        # (due, identifier, name) of every pair, and entries gone stale.
        self._due: list[tuple[int, str, str]] = []
        self._next_due = _NEVER_EXPIRES  # the head of _due, read on every hit
        self._pairs = 0
        self._high_water = _NEVER_BLOCKED
        self._refused_new = 0
        self._evicted = 0
        self._reclaimed = 0
        self._overflowing = False  # full, evicting or refusing: logged once
        self._refusing = False  # full and refusing new clients
        self._no_evictions_until = _NEVER_BLOCKED
        # When the last eviction scan found a blocked client that will be
        # evictable (for the retry_after of the refusal that follows it).
        self._evictable_at = _NEVER_EXPIRES
        self._clients_high = 0

    @property
    def hot_path(self) -> str:
        """
        ``"c"`` when hits on one throttle are decided by the C extension
        (``storage/_hot_path.c``), ``"python"`` when by its Python twin (not
        built, or ``SWT_NO_EXTENSIONS=1``): the decisions are the same.
        """
        return "python" if _hot_path is None else "c"

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        if len(throttles) == 1:
            return self.hit_one(identifier, throttles[0], cost, now_us)

        with self._lock:
            now = self._advance(self._now(now_us))
            return self._decide(identifier, throttles, cost, now, commit=True)

    def hit_one(
        self,
        identifier: str,
        throttle: Throttle,
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """
        ``hit(identifier, (throttle,), cost, now_us)``: the path of every hit
        on one throttle.

        Decided in C (``_hot_path.c``) when the extension is built, else by
        ``_hit_one_at``: the same steps. The tests run every hit through
        here, both ways, and compare them with the reference model. (A
        subclass's slots may lie elsewhere than the C code reads them, as
        may those of a class from before a reload: Python decides for them.)
        """
        if _hot_path is not None and type(self) is MemoryStorage:
            return _hot_path.hit_one(self, identifier, throttle, cost, now_us)

        lock = self._lock
        lock.acquire()  # not `with`: half the cost, on every decision
        try:
            now = self._now(now_us)
            return self._hit_one_at(identifier, throttle, cost, now)
        finally:
            lock.release()

    def _advance(self, now: int) -> int:
        """
        The storage's time for a hit at ``now``, which never goes back, with
        the pairs that ended by then reclaimed.
        """
        if now < self._high_water:
            now = self._high_water
        else:
            self._high_water = now

        if now >= self._next_due:
            self._reclaim_due(now)

        return now

    def _now(self, now_us: int | None) -> int:
        """The time of a hit: ``now_us`` when given, else the storage's clock."""
        if now_us is not None:
            now, source = now_us, "now_us"
        elif self._monotonic:
            return monotonic_ns() // 1000
        else:
            now, source = self._clock.now_us(), "clock"

        if type(now) is not int or not -MAX_CLOCK_US <= now <= MAX_CLOCK_US:
            return checked_time(now, source)

        return now

    def _hit_one_at(
        self, identifier: str, throttle: Throttle, cost: int, now: int
    ) -> Decision:
        """
        ``hit_one`` with the lock held, at ``now`` on the storage's clock.

        The commonest hit (cost 1 on a known, unblocked pair that needs no
        block, eviction or expiry note) is decided here in a few steps; the
        rest goes to ``_decide_one``. ``_hot_path.c`` repeats these steps.
        """
        now = self._advance(now)
        client = self._clients.get(identifier)
        if cost != 1 or (client is not None and self._lru):
            return self._decide_one(identifier, throttle, cost, now, True)

        # A pair is the ring of its times.
        times = client.get(throttle.name) if client is not None else None
        if times is None:
            if self._pairs >= self._max_pairs:  # the overflow policy decides
                return self._decide_one(identifier, throttle, cost, now, True)

            self._record(identifier, throttle, None, 1, now)
            # The hit recorded now is the oldest: it expires in a whole window.
            raw = (
                throttle.name,
                throttle.limit,
                _ADMITTED,
                0,
                1,
                0,
                throttle.ttl_us,
                True,
                False,
            )
            return make_decision((raw,), True, 0.0)

        if times.blocked_until > now:
            return self._decide_one(identifier, throttle, cost, now, True)

        size = len(times)
        head = times.head
        limit = throttle.limit
        ttl = throttle.ttl_us
        if size >= limit:
            # The oldest of the newest `limit` hits: while it is in the
            # window, the window is full and the hit waits for it to leave.
            oldest = head + size - limit
            wait = times[oldest - size if oldest >= size else oldest] + ttl - now
            if wait > 0:
                if throttle.block_duration_us:
                    return self._decide_one(identifier, throttle, 1, now, True)

                raw = (
                    throttle.name,
                    limit,
                    _LIMIT_REACHED,
                    limit,
                    1,
                    wait,
                    wait,
                    False,
                    False,
                )
                return make_decision((raw,), False, wait / US_PER_S)

        if size > limit or (head and size < limit) or times.ttl_us != ttl:
            # A changed limit or window: _record rebuilds the ring or
            # notes the pair's new expiry.
            return self._decide_one(identifier, throttle, 1, now, True)

        # Admitted: the limit-th newest time has left the window, so the
        # window holds fewer than `limit` and the new time fits.
        in_window = size - count_left(times, head, now - ttl)
        if in_window:
            oldest = head + size - in_window
            expires_in = times[oldest - size if oldest >= size else oldest]
            expires_in += ttl - now
        else:
            expires_in = ttl  # the hit recorded now is the oldest

        if size < limit:
            times.append(now)  # not wrapped yet: the head is 0
        else:
            times[head] = now
            times.head = head + 1 if head + 1 < limit else 0

        raw = (
            throttle.name,
            limit,
            _ADMITTED,
            in_window,
            1,
            0,
            expires_in,
            True,
            False,
        )
        return make_decision((raw,), True, 0.0)

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        with self._lock:
            now = max(self._now(now_us), self._high_water)
            # Reclaiming what expired by the storage clock changes no answer,
            # and lets the capacity check see what hit would see. (Not up to
            # `now`: a peek ahead in time must not move the storage clock.)
            if self._high_water >= self._next_due:
                self._reclaim_due(self._high_water)

            if len(throttles) == 1:
                return self._decide_one(identifier, throttles[0], cost, now, False)

            return self._decide(identifier, throttles, cost, now, commit=False)

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        with self._lock:
            client = self._clients.get(identifier)
            if client is None:
                return

            # What was left may be evictable now: look again.
            self._no_evictions_until = _NEVER_BLOCKED
            if not throttles:
                del self._clients[identifier]
                self._pairs -= len(client)
            else:
                for throttle in throttles:
                    if client.pop(throttle.name, None) is not None:
                        self._pairs -= 1

                if not client:
                    del self._clients[identifier]

            self._note_room()

    def close(self) -> None:
        """Nothing to release; present for the ``Storage`` protocol."""

    def health(self) -> StorageHealth:
        """
        Healthy unless it is full and refusing new clients (``reject-new``)
        or unable to evict anyone (``evict-lru``), or its clock fails; never
        raises.
        """
        try:
            reading = self._now(None)
        except Exception as exc:  # a clock of the caller's: report, never raise
            detail = f"in memory; its clock failed: {type(exc).__name__}: {exc}"
            return StorageHealth(healthy=False, backend="memory", detail=detail)

        with self._lock:
            now = max(reading, self._high_water)
            pairs = self._pairs
            # Refusing still: full, and no pair has ended since (a hit would
            # reclaim it and find room).
            full = pairs >= self._max_pairs and now < self._next_end()
            refusing = self._refusing and full
            evicting = self._overflowing and not self._refusing and full

        detail = f"in memory, {pairs:,} of {self._max_pairs:,} pairs tracked"
        if refusing:
            detail += f"; full: new clients are refused (overflow={self._policy})"
        elif evicting:
            detail += "; full: the least recently used clients are evicted"

        return StorageHealth(healthy=not refusing, backend="memory", detail=detail)

    def stats(self) -> MemoryStats:
        """Return the current counters."""
        with self._lock:
            return MemoryStats(
                clients=len(self._clients),
                pairs=self._pairs,
                max_pairs=self._max_pairs,
                overflow_policy=self._policy,
                refused_new=self._refused_new,
                evicted=self._evicted,
                reclaimed=self._reclaimed,
            )

    def _decide(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now: int,
        *,
        commit: bool,
    ) -> Decision:
        client = self._clients.get(identifier)
        if commit and client is not None and self._lru:
            self._renew(identifier)

        pairs = [self._found(client, t.name, now, commit) for t in throttles]
        verdicts = [
            _judge(p, t, cost, now) for p, t in zip(pairs, throttles, strict=True)
        ]
        allowed = all(v[0] is _ADMITTED for v in verdicts)
        # peek answers as hit would: it reports the recording it skips.
        recorded = allowed and cost > 0
        if (
            recorded
            and None in pairs
            and not self._make_room(identifier, pairs, now, commit)
        ):
            never = len(pairs) > self._max_pairs
            return self._refuse_capacity(throttles, verdicts, cost, now, never)

        raw = []
        for throttle, pair, verdict in zip(throttles, pairs, verdicts, strict=True):
            outcome, in_window, wait, expires_in = verdict
            if recorded and not in_window:
                expires_in = throttle.ttl_us  # the hit recorded now is the oldest

            blocked = pair is not None and pair.blocked_until > now
            if recorded and commit:
                self._record(identifier, throttle, pair, cost, now)
            elif outcome is _LIMIT_REACHED and throttle.block_duration_us:
                wait = self._start_block(identifier, throttle, pair, now, wait, commit)
                blocked = True

            raw.append(
                (
                    throttle.name,
                    throttle.limit,
                    outcome,
                    in_window,
                    cost,
                    wait,
                    expires_in,
                    recorded,
                    blocked,
                )
            )

        return Decision.from_raw(raw)

    def _decide_one(
        self, identifier: str, throttle: Throttle, cost: int, now: int, commit: bool
    ) -> Decision:
        # The same steps as _decide, without its lists: most hits carry one
        # throttle.
        client = self._clients.get(identifier)
        pair = None
        if client is not None:
            if commit and self._lru:
                self._renew(identifier)

            pair = self._found(client, throttle.name, now, commit)

        if pair is None:
            outcome, in_window, wait, expires_in = judge(
                _NO_TIMES, _NEVER_BLOCKED, now, throttle.limit, throttle.ttl_us, cost
            )
            blocked = False
        else:
            outcome, in_window, wait, expires_in = judge(
                pair,
                pair.blocked_until,
                now,
                throttle.limit,
                throttle.ttl_us,
                cost,
                pair.head,
            )
            blocked = pair.blocked_until > now

        if outcome is _ADMITTED and cost:
            if (
                pair is None
                and self._pairs >= self._max_pairs
                and not self._make_room(identifier, [None], now, commit)
            ):
                verdicts = [(outcome, in_window, wait, expires_in)]
                return self._refuse_capacity((throttle,), verdicts, cost, now)

            if not in_window:
                expires_in = throttle.ttl_us  # the hit recorded now is the oldest

            if commit:
                self._record(identifier, throttle, pair, cost, now)

            recorded = True
        else:
            recorded = False
            if outcome is _LIMIT_REACHED and throttle.block_duration_us:
                wait = self._start_block(identifier, throttle, pair, now, wait, commit)
                blocked = True

        raw = (
            throttle.name,
            throttle.limit,
            outcome,
            in_window,
            cost,
            wait,
            expires_in,
            recorded,
            blocked,
        )
        if recorded or outcome is _ADMITTED:
            return make_decision((raw,), True, 0.0)

        return make_decision(
            (raw,), False, math.inf if wait == NEVER else wait / US_PER_S
        )

    def _renew(self, identifier: str) -> None:
        """evict-lru: ``identifier`` is the most recently used client now."""
        clients = self._clients
        assert isinstance(clients, OrderedDict)
        clients.move_to_end(identifier)

    @staticmethod
    def _found(
        client: _Client | None, name: str, now: int, commit: bool
    ) -> _Pair | None:
        """
        The pair as a hit at ``now`` finds it. A hit has reclaimed the pairs
        that ended by then; a peek ahead of the storage clock has not, and
        answers as if it had.
        """
        pair = client.get(name) if client else None
        if not commit and pair is not None and pair.expires_at() <= now:
            return None

        return pair

    def _start_block(
        self,
        identifier: str,
        throttle: Throttle,
        pair: _Pair | None,
        now: int,
        wait: int,
        commit: bool,
    ) -> int:
        # peek reports the block that hit would start, and starts none.
        block_us = throttle.block_duration_us
        assert pair is not None  # a full window means the pair has hits
        if commit:
            pair.blocked_until = now + block_us
            if pair.ttl_us != throttle.ttl_us:
                # A write keeps the pair for the throttle's window, as any
                # write does (a Redis key's expiry too).
                pair.ttl_us = throttle.ttl_us
                self._schedule(identifier, throttle.name, pair, pair.expires_at())

        return max(wait, block_us)

    def _record(
        self,
        identifier: str,
        throttle: Throttle,
        pair: _Pair | None,
        cost: int,
        now: int,
    ) -> _Pair:
        moved = False
        if pair is None:
            pair = _Pair(throttle.ttl_us)
            self._add_pair(identifier, throttle.name, pair, now + throttle.ttl_us)
        elif pair.ttl_us != throttle.ttl_us:
            pair.ttl_us = throttle.ttl_us
            moved = True  # a shorter window can end the pair sooner than noted

        pair.record(now, cost, throttle.limit)
        if moved:
            self._schedule(identifier, throttle.name, pair, pair.expires_at())

        return pair

    def _schedule(self, identifier: str, name: str, pair: _Pair, at: int) -> None:
        """
        Reclaim ``pair`` at ``at`` unless it is due sooner already. An entry
        is checked when due: a pair hit since goes back in at its new end.
        """
        if at >= pair.due:
            return

        pair.due = at
        heapq.heappush(self._due, (at, identifier, name))
        self._next_due = self._due[0][0]
        if len(self._due) > 2 * self._pairs + 1024:
            self._rebuild_due()

    def _add_pair(self, identifier: str, name: str, pair: _Pair, due: int) -> None:
        client = self._clients.get(identifier)
        if client is None:
            client = self._clients[identifier] = {}
            self._no_evictions_until = _NEVER_BLOCKED  # a new evictable client

        client[name] = pair
        self._pairs += 1
        self._schedule(identifier, name, pair, due)
        if len(self._clients) > self._clients_high:
            self._clients_high = len(self._clients)

    def _make_room(
        self, identifier: str, pairs: list[_Pair | None], now: int, commit: bool
    ) -> bool:
        needed = pairs.count(None)
        if not needed or self._pairs + needed <= self._max_pairs:
            return True

        if len(pairs) > self._max_pairs:
            # More pairs at once than the storage may ever hold: refused for
            # good, whatever is tracked (so nothing is evicted, and it is not
            # full).
            if commit:
                self._refused_new += 1

            return False

        self._evictable_at = _NEVER_EXPIRES

        # Pairs that ended by `now` were reclaimed before this decision. A
        # peek reclaims only up to the storage clock: later it answers as hit
        # would at `now`, counting what hit would reclaim as free.
        occupied = self._pairs
        if not commit:
            keep = [pair for pair in pairs if pair is not None]
            occupied -= self._expired_pairs(now, keep)

        if occupied + needed > self._max_pairs and self._lru:
            victims = self._eviction_victims(
                identifier, needed, now, occupied, live_only=not commit
            )
            if victims is not None:
                if commit:
                    self._evict(victims)

                return True

        if occupied + needed <= self._max_pairs:
            return True

        if commit:
            self._count_refusal()

        return False

    def _count_refusal(self) -> None:
        self._refused_new += 1
        if not self._refusing:
            self._overflowing = self._refusing = True
            logger.warning(
                "memory storage is full (%d pairs tracked, max_pairs=%d, "
                "overflow=%s): refusing new clients until pairs expire",
                self._pairs,
                self._max_pairs,
                self._policy.value,
            )

    def _expired_pairs(self, now: int, keep: list[_Pair]) -> int:
        """How many pairs but ``keep`` a hit at ``now`` would reclaim first."""
        if now < self._next_end():
            return 0

        # Only for a peek ahead of the storage clock at capacity: a scan.
        return sum(
            1
            for client in self._clients.values()
            for pair in client.values()
            if pair.expires_at() <= now and not _held(pair, keep)
        )

    def _eviction_victims(
        self,
        identifier: str,
        needed: int,
        now: int,
        occupied: int,
        *,
        live_only: bool,
    ) -> list[str] | None:
        """
        The least recently used clients whose eviction makes room for
        ``needed`` new pairs among ``occupied`` ones, or None when no
        eviction can. ``live_only``: expired pairs are already counted as
        free (a peek's sweep that did not run), so only live ones are freed.
        """
        if now < self._no_evictions_until:
            self._evictable_at = self._no_evictions_until
            return None

        victims: list[str] = []
        freed = 0
        spared = 0  # the asker's own pairs, which another asker could evict
        blocks_end = _NEVER_EXPIRES
        # Least recently used first; blocked clients and the one asking are
        # never evicted. Nothing is evicted unless enough room can be made.
        for candidate, client in self._clients.items():
            if occupied - freed + needed <= self._max_pairs:
                return victims

            blocked = max(p.blocked_until for p in client.values())
            size = len(client)
            if live_only:
                size = sum(1 for p in client.values() if p.expires_at() > now)

            if blocked > now:
                blocks_end = min(blocks_end, blocked)
            elif candidate == identifier:
                spared = size
            else:
                victims.append(candidate)
                freed += size

        if occupied - freed + needed <= self._max_pairs:
            return victims

        self._evictable_at = blocks_end
        if not live_only and occupied - freed - spared + 1 > self._max_pairs:
            # Every client that could be evicted is blocked: until a block
            # ends no asker can evict anyone, so skip the scan till then. (A
            # peek changes nothing, this included.)
            self._no_evictions_until = blocks_end

        return None

    def _evict(self, victims: list[str]) -> None:
        if not self._overflowing:
            self._overflowing = True
            logger.warning(
                "memory storage is full (%d pairs, max_pairs=%d): evicting the "
                "least recently used clients",
                self._pairs,
                self._max_pairs,
            )

        for victim in victims:
            evicted = len(self._clients.pop(victim))
            self._pairs -= evicted
            self._evicted += evicted

    def _refuse_capacity(
        self,
        throttles: Sequence[Throttle],
        verdicts: list[tuple[Outcome, int, int, int]],
        cost: int,
        now: int,
        never: bool = False,
    ) -> Decision:
        """
        The refusal of a hit that needs new pairs the storage has no room
        for: until room may appear, or for good (``never``) when it needs
        more pairs at once than ``max_pairs``.
        """
        wait = NEVER if never else max(self._room_expected_at(now) - now, 1)
        return Decision.from_raw(
            [
                (
                    t.name,
                    t.limit,
                    Outcome.CAPACITY,
                    v[1],
                    cost,
                    wait,
                    v[3],
                    False,
                    False,
                )
                for t, v in zip(throttles, verdicts, strict=True)
            ]
        )

    def _room_expected_at(self, now: int) -> int:
        """
        When room may appear: the first end of a tracked pair's window or
        block after ``now``, or for evict-lru of a block that keeps a client
        from eviction.
        """
        at = self._next_end()
        if at <= now:  # a peek ahead of the storage clock: a scan
            ends = (p.expires_at() for c in self._clients.values() for p in c.values())
            at = min((e for e in ends if e > now), default=_NEVER_EXPIRES)

        if self._lru and self._evictable_at > now:
            at = min(at, self._evictable_at)

        return at if at != _NEVER_EXPIRES else now

    def _next_end(self) -> int:
        """When the first tracked pair ends: the heap's head, made exact."""
        due = self._due
        while due:
            at, identifier, name = due[0]
            client = self._clients.get(identifier)
            pair = client.get(name) if client is not None else None
            if pair is None or pair.due != at:
                heapq.heappop(due)  # gone, or scheduled again since
                continue

            expires = pair.expires_at()
            if expires == at:
                break

            pair.due = expires  # hit since: it ends later
            heapq.heapreplace(due, (expires, identifier, name))

        self._next_due = due[0][0] if due else _NEVER_EXPIRES
        return self._next_due

    def _reclaim_due(self, now: int) -> None:
        due, clients = self._due, self._clients
        while due and due[0][0] <= now:
            at, identifier, name = heapq.heappop(due)
            client = clients.get(identifier)
            pair = client.get(name) if client is not None else None
            if client is None or pair is None or pair.due != at:
                continue  # gone, or scheduled again since

            expires = pair.expires_at()
            if expires > now:
                pair.due = expires  # hit since: it ends later
                heapq.heappush(due, (expires, identifier, name))
                continue

            del client[name]
            self._pairs -= 1
            self._reclaimed += 1
            if not client:
                del clients[identifier]

        self._next_due = due[0][0] if due else _NEVER_EXPIRES
        # A dict never shrinks its table on deletion: copy it once it is mostly
        # empty, so memory returns when clients leave.
        if len(self._clients) < self._clients_high // 4:
            self._clients = type(self._clients)(self._clients)
            self._clients_high = len(self._clients)

        self._note_room()

    def _note_room(self) -> None:
        """End a full episode once there is room: log it, health is good again."""
        if self._overflowing and self._pairs < self._max_pairs:
            self._overflowing = self._refusing = False
            logger.warning(
                "memory storage has room again (%d of %d pairs)",
                self._pairs,
                self._max_pairs,
            )

    def _rebuild_due(self) -> None:
        """Drop the stale entries: one per pair, at its end."""
        entries = []
        for identifier, client in self._clients.items():
            for name, pair in client.items():
                pair.due = pair.expires_at()
                entries.append((pair.due, identifier, name))

        heapq.heapify(entries)
        self._due = entries
        self._next_due = entries[0][0] if entries else _NEVER_EXPIRES


if _extension is not None:
    _extension.bind(
        MemoryStorage,
        _Pair,
        Throttle,
        _Built,
        Outcome.ADMITTED,
        Outcome.LIMIT_REACHED,
        checked_time,
        MAX_COST,
        MAX_CLOCK_US,
        MAX_IDENTIFIER_LENGTH,
    )


def plain_hit_in_c() -> Callable[..., Decision] | None:
    """
    ``_hot_path.plain_hit``, the body of ``Throttler.hit`` in C (the twin of
    ``throttler.hit_in_python``), or None without the extension.
    """
    return None if _hot_path is None else _hot_path.plain_hit


def given_or_new(
    owner: str,
    storage: object,
    clock: Clock | None,
    max_pairs: int,
    overflow: OverflowPolicy | str = OverflowPolicy.REJECT_NEW,
) -> MemoryStorage:
    """
    The ``MemoryStorage`` given to ``owner``, or a new one with the options.

    Raises:
        ConfigurationError: for a storage that is no ``MemoryStorage``, or
            one given with options (the storage keeps its own).
    """
    if storage is None:
        return MemoryStorage(clock=clock, max_pairs=max_pairs, overflow=overflow)

    if not isinstance(storage, MemoryStorage):
        what = shown(storage)
        if isinstance(storage, type):
            what = f"the class {storage.__name__}: write {storage.__name__}(...)"
        elif type(storage).__module__ != "builtins":  # its repr says little
            what = f"an instance of {type(storage).__name__}"

        raise ConfigurationError(
            "storage", f"{owner} takes a MemoryStorage, got {what}"
        )

    given = [
        name
        for name, value, default in (
            ("clock", clock, None),
            ("max_pairs", max_pairs, 100_000),
            ("overflow", overflow, OverflowPolicy.REJECT_NEW),
        )
        if value != default
    ]
    if given:
        raise ConfigurationError(
            "storage",
            f"give {owner} a storage or the options of a new one, not both: "
            f"the storage keeps its own ({', '.join(given)} given)",
        )

    return storage


class AsyncMemoryStorage:
    """
    The asyncio face of ``MemoryStorage``; every call delegates to it.

    A decision holds the lock for microseconds and does no I/O, so calling the
    synchronous storage from the event loop does not block it.

    Args:
        storage: The storage to share (a new ``MemoryStorage`` otherwise).
        clock: Passed to the new storage when ``storage`` is not given.
        max_pairs: Passed to the new storage when ``storage`` is not given.
        overflow: Passed to the new storage when ``storage`` is not given.
    """

    def __init__(
        self,
        storage: MemoryStorage | None = None,
        *,
        clock: Clock | None = None,
        max_pairs: int = 100_000,
        overflow: OverflowPolicy | str = OverflowPolicy.REJECT_NEW,
    ) -> None:
        self.sync = given_or_new(
            "AsyncMemoryStorage", storage, clock, max_pairs, overflow
        )

    async def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        return self.sync.hit(identifier, throttles, cost, now_us)

    async def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        return self.sync.peek(identifier, throttles, cost, now_us)

    async def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        self.sync.reset(identifier, throttles)

    async def close(self) -> None:
        """Nothing to release."""

    async def health(self) -> StorageHealth:
        """See ``MemoryStorage.health``."""
        return self.sync.health()

    def stats(self) -> MemoryStats:
        """Return the current counters."""
        return self.sync.stats()
