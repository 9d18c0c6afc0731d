"""
Replaying access logs through a real ``Throttler`` on the logged time.

Each request goes, in time order (see ``reorder.py``), through
``Throttler.hit(identifier, *throttles)`` at its logged time, so the decisions
are exactly those a server with these limits would have made. All throttles
are decided together: a request is admitted only if every throttle admits it.

The logs are replayed oldest first, by when each starts (``logfiles.py``),
whatever the order given; a line dated far ahead of the rest of its log is an
outlier, counted but not replayed (``entries.py``).

Where the time comes from is the one seam between storages (``HitAt``): by
default a fresh ``MemoryStorage`` whose ``ManualClock`` is set before each hit;
given a storage with a clock of its own (Redis), each hit carries its time as
``now_ms``. The loop that counts is the same for both.

Memory grows with the number of distinct clients (their counters and the
storage's windows), never with the number of lines.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .. import ManualClock, MemoryStorage, Outcome, Throttle, Throttler
from ..core.decision import Decision
from ..core.rate import (
    MAX_DURATION_MS,
    MAX_LIMIT,
    format_duration_ms,
    parse_duration_ms,
    parse_rate,
)
from ..errors import ConfigurationError
from ..storage.base import Storage
from .accesslog import Malformed
from .entries import DEFAULT_MAX_SKEW_MS, KEYS, Entry, EntryReader
from .logfiles import LogFile, opened_logs
from .reorder import ReorderBuffer

DEFAULT_REORDER_WINDOW_MS = 60_000
# Pairs are reclaimed when their window ends, so this caps the clients active
# within one window; only a log with millions of them could reach it, and a
# refusal would be counted apart in ``capacity_refused``, not as a rejection.
PAIRS_PER_THROTTLE = 10_000_000

HitAt = Callable[[str, int], Decision]
"""Decides one request by an identifier at a time in microseconds."""


@dataclass(frozen=True, slots=True)
class StorageInfo:
    """
    Where a replay kept its windows, as the report names it.

    Attributes:
        kind: ``memory`` or ``redis``.
        topology: For Redis: ``standalone``, ``cluster`` or ``sentinel``.
        prefix: For Redis: the key prefix of this run alone.
    """

    kind: str = "memory"
    topology: str | None = None
    prefix: str | None = None


IN_MEMORY = StorageInfo()


@dataclass(frozen=True, slots=True)
class ThrottledClient:
    """
    A client (an identifier under ``--key``) refused at least once.

    Attributes:
        client: The identifier.
        requests: Its requests replayed.
        rejected: How many the throttles refused.
        first_throttled_us: The logged time of its earliest refused request.
        offset_s: The UTC offset of that request's line.
    """

    client: str
    requests: int
    rejected: int
    first_throttled_us: int
    offset_s: int


@dataclass(frozen=True, slots=True)
class Window:
    """
    One fixed bucket, as long as the shortest throttle window.

    Buckets are aligned to the epoch and follow the storage's clock, so a
    late line counts in the bucket it was replayed in.
    """

    start_us: int
    offset_s: int
    requests: int
    rejected: int


@dataclass(frozen=True, slots=True)
class Instant:
    """A logged time and the UTC offset of the line that gave it."""

    time_us: int
    offset_s: int


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """
    Everything ``swt replay`` reports.

    ``requests`` is ``admitted + rejected + capacity_refused``.
    """

    files: tuple[str, ...]
    throttles: tuple[Throttle, ...]
    key: str
    reorder_window_ms: int
    requests: int
    admitted: int
    rejected: int
    capacity_refused: int
    clients_seen: int
    clients_throttled: int
    late: int
    malformed: int
    malformed_examples: tuple[Malformed, ...]
    top_throttled: tuple[ThrottledClient, ...]
    busiest_windows: tuple[Window, ...]
    first: Instant | None
    last: Instant | None
    storage: StorageInfo = IN_MEMORY
    files_reordered: bool = False
    """``files`` is the order replayed, oldest first, not the order given."""
    outliers: int = 0
    """Lines dated too far ahead of their log, counted in ``malformed``."""
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS

    @property
    def rejected_percent(self) -> float:
        """Rejected requests as a percentage of all, to two decimals."""
        return round(100 * self.rejected / self.requests, 2) if self.requests else 0.0


def throttle_name(limit: int, ttl_ms: int) -> str:
    """Name a limit after its normalised spec: 20 per 10 s is ``20-per-10s``."""
    return f"{limit}-per-{format_duration_ms(ttl_ms)}"


def make_throttles(
    specs: Sequence[str], block: str | None = None
) -> tuple[Throttle, ...]:
    """
    Build one throttle per ``--limit`` spec, each blocking for ``block``.

    Raises:
        ConfigurationError: for a bad spec or block, no spec, or two specs
            that mean the same limit (``60/minute`` and ``60/60s``); its
            message quotes the spec as typed.
    """
    if not specs:
        raise ConfigurationError("limit", "give at least one --limit, e.g. 100/minute")

    block_ms = parse_duration_ms(block, field="--block") if block is not None else 0
    throttles: dict[str, Throttle] = {}
    for spec in specs:
        limit, ttl_ms = _parse_limit(spec)
        name = throttle_name(limit, ttl_ms)
        if name in throttles:
            raise ConfigurationError(
                "limit",
                f"--limit {spec!r} is given twice "
                f"(both mean {limit}/{format_duration_ms(ttl_ms)})",
            )

        try:
            throttles[name] = Throttle(
                name,
                limit,
                timedelta(milliseconds=ttl_ms),
                timedelta(milliseconds=block_ms),
            )
        except ConfigurationError as exc:
            raise ConfigurationError(exc.field, f"--limit {spec!r}: {exc}") from None

    return tuple(throttles.values())


def _parse_limit(spec: str) -> tuple[int, int]:
    """``(limit, ttl_ms)`` of a ``--limit`` spec within a ``Throttle``'s bounds."""
    limit, ttl_ms = _parse_rate(spec)
    if not 1 <= limit <= MAX_LIMIT:
        raise _limit_range_error(spec)

    if not 1 <= ttl_ms <= MAX_DURATION_MS:
        raise ConfigurationError(
            "limit", f"--limit must have a window of 1 ms to 366 days, got {spec!r}"
        )

    return limit, ttl_ms


def _parse_rate(spec: str) -> tuple[int, int]:
    try:
        return parse_rate(spec, field="--limit")
    except ConfigurationError as exc:
        # The rate parser words these two as if about the whole option: say
        # which part is wrong, and the bound.
        if "absurd number of hits" in exc.message:
            raise _limit_range_error(spec) from None

        if "whole number of milliseconds" in exc.message:
            raise ConfigurationError(
                "limit",
                f"--limit must have a window of whole milliseconds, got {spec!r}",
            ) from None

        raise


def _limit_range_error(spec: str) -> ConfigurationError:
    return ConfigurationError(
        "limit", f"--limit must allow 1 to {MAX_LIMIT:,} hits a window, got {spec!r}"
    )


@dataclass(slots=True)
class _Tally:
    """The counters of a replay that the hot loop does not keep in locals."""

    bucket_us: int
    top: int
    admitted: int = 0
    rejected: int = 0
    capacity_refused: int = 0
    clients: dict[str, list[int]] = field(default_factory=dict)
    """identifier -> [requests, rejected, first throttled us, its offset]"""
    windows: list[tuple[int, int, int, int]] = field(default_factory=list)
    """A min-heap of the busiest closed buckets: (requests, rejected, -start,
    offset), at most ``top`` long."""
    bucket: int | None = None
    bucket_offset: int = 0
    bucket_rejected: int = 0
    first: Instant | None = None
    last: Instant | None = None

    def next_bucket(self, bucket: int | None, offset_s: int, requests: int) -> None:
        """Rank the current bucket (``requests`` long) and open ``bucket``."""
        if requests:
            item = (
                requests,
                self.bucket_rejected,
                -(self.bucket or 0) * self.bucket_us,
                self.bucket_offset,
            )
            if len(self.windows) < self.top:
                heapq.heappush(self.windows, item)
            else:
                heapq.heappushpop(self.windows, item)

        self.bucket, self.bucket_offset, self.bucket_rejected = bucket, offset_s, 0

    def refuse(self, counters: list[int], time_us: int, offset_s: int) -> None:
        """Count a refusal by the throttles."""
        self.rejected += 1
        self.bucket_rejected += 1
        counters[1] += 1
        if counters[1] == 1 or time_us < counters[2]:
            counters[2], counters[3] = time_us, offset_s


class Replay:
    """
    One replay of access logs under a set of throttles.

    Args:
        paths: The logs (paths, ``-`` for standard input, or ``LogFile``s
            already probed), replayed one after the other as one stream,
            oldest first.
        throttles: Decided together on every request.
        key: ``ip``, ``ip+path`` or ``ip+method``.
        reorder_window_ms: How long to wait for out-of-order lines.
        max_skew_ms: How far a line may be dated after the lines before it
            in its log, unless the next line is too; 0 turns the check off.
        top: How many clients and windows to rank.
        on_progress: Called now and then with the bytes read from all files.
        storage: A storage with a clock of its own (Redis) to decide in, each
            hit carrying its logged time; by default every run decides in a
            fresh ``MemoryStorage`` on a ``ManualClock``. It stays yours to
            close.
        storage_info: How the report names ``storage``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path | LogFile],
        throttles: Sequence[Throttle],
        *,
        key: str = "ip",
        reorder_window_ms: int = DEFAULT_REORDER_WINDOW_MS,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        top: int = 10,
        on_progress: Callable[[int], None] | None = None,
        storage: Storage | None = None,
        storage_info: StorageInfo = IN_MEMORY,
    ) -> None:
        if key not in KEYS:
            raise ConfigurationError("key", f"--key must be one of {', '.join(KEYS)}")

        self.paths = tuple(paths)
        self.throttles = tuple(throttles)
        self.key = key
        self.top = top
        self.on_progress = on_progress
        self.reorder_window_ms = reorder_window_ms
        self.max_skew_ms = max_skew_ms
        self.storage = storage
        self.storage_info = storage_info
        self._reorder = ReorderBuffer(reorder_window_ms * 1000)
        self._reader = EntryReader(key, max_skew_ms, on_progress)
        self._clients: dict[str, list[int]] = {}

    def run(self) -> ReplayResult:
        """
        Replay every file and return the counts.

        Raises:
            LogFileError: when a file is missing, unreadable, empty, corrupt,
                given twice, or has no parseable line (before anything is
                replayed), or is a pipe that an earlier run read.
        """
        self._reorder = ReorderBuffer(self.reorder_window_ms * 1000)
        self._reader = EntryReader(self.key, self.max_skew_ms, self.on_progress)
        if self.storage is None:
            hit_at = _hits_on_clock(self.throttles)
        else:
            hit_at = _hits_with_time(self.storage, self.throttles)

        bucket_us = min(t.ttl_ms for t in self.throttles) * 1000
        tally = _Tally(bucket_us=bucket_us, top=self.top)
        self._clients = tally.clients
        with opened_logs(self.paths) as given:
            # A stable sort: logs that start together keep the order given.
            logs = sorted(given, key=lambda log: log.start_us)
            entries = self._reader.entries(logs)
            _simulate(self._reorder.reorder(entries), hit_at, tally)

        return self._result(tally, logs, reordered=logs != given)

    def identifiers(self) -> Iterator[str]:
        """
        The identifiers the last run hit, each once: whose keys it wrote; after
        a failed run, those it hit so far (the failing hit's included).
        """
        return iter(self._clients)

    def _result(
        self, tally: _Tally, logs: Sequence[LogFile], reordered: bool
    ) -> ReplayResult:
        throttled = [(c, v) for c, v in tally.clients.items() if v[1]]
        top = heapq.nsmallest(
            self.top, throttled, key=lambda cv: (-cv[1][1], -cv[1][0], cv[1][2], cv[0])
        )
        windows = sorted(tally.windows, key=lambda w: (-w[0], -w[1], -w[2]))
        return ReplayResult(
            files=tuple(log.name for log in logs),
            throttles=self.throttles,
            key=self.key,
            reorder_window_ms=self.reorder_window_ms,
            requests=tally.admitted + tally.rejected + tally.capacity_refused,
            admitted=tally.admitted,
            rejected=tally.rejected,
            capacity_refused=tally.capacity_refused,
            clients_seen=len(tally.clients),
            clients_throttled=len(throttled),
            late=self._reorder.late,
            malformed=self._reader.malformed,
            malformed_examples=tuple(self._reader.examples),
            top_throttled=tuple(ThrottledClient(c, *v) for c, v in top),
            busiest_windows=tuple(Window(-w[2], w[3], w[0], w[1]) for w in windows),
            first=tally.first,
            last=tally.last,
            storage=self.storage_info,
            files_reordered=reordered,
            outliers=self._reader.outliers,
            max_skew_ms=self.max_skew_ms,
        )


def _hits_on_clock(throttles: tuple[Throttle, ...]) -> HitAt:
    """Hits in a fresh ``MemoryStorage`` whose clock is set to each hit's time."""
    clock = ManualClock()
    pairs = PAIRS_PER_THROTTLE * len(throttles)
    hit = Throttler(MemoryStorage(clock=clock, max_pairs=pairs)).hit
    set_us = clock.set_us

    def hit_at(identifier: str, time_us: int) -> Decision:
        set_us(time_us)
        return hit(identifier, *throttles)

    return hit_at


def _hits_with_time(storage: Storage, throttles: tuple[Throttle, ...]) -> HitAt:
    """Hits that carry their time, for a storage with a clock of its own."""
    # Bare: a replay reports a storage error, never lets a failure strategy
    # (from the environment, say) decide in its place, nor retries a hit.
    hit = Throttler(storage, resilient=False).hit

    def hit_at(identifier: str, time_us: int) -> Decision:
        # The throttler rounds now_ms * 1000 back to the same microsecond for
        # any time below 2**51 us (the year 2041).
        return hit(identifier, *throttles, now_ms=time_us / 1000)

    return hit_at


def _simulate(entries: Iterator[Entry], hit_at: HitAt, tally: _Tally) -> None:
    # The hot loop: counters in locals, rare events (a refusal, a new bucket)
    # in methods. Every hit is decided at `now`, the latest time replayed: for
    # a late line MemoryStorage would hold its clock there anyway, and Redis
    # (which holds a time back only to the client's own newest hit) must be
    # told. Buckets follow the same clock, so one closed never gets another
    # request.
    clients = tally.clients
    bucket_us = tally.bucket_us
    admitted = in_bucket = latest_offset = earliest_offset = 0
    now, earliest = -(2**63), 2**63
    for time_us, _, identifier, offset_s in entries:
        if time_us > now:
            now, latest_offset = time_us, offset_s
            if now // bucket_us != tally.bucket:
                tally.next_bucket(now // bucket_us, offset_s, in_bucket)
                in_bucket = 0

        if time_us < earliest:
            earliest, earliest_offset = time_us, offset_s

        # Counted before the hit: a hit that fails may have written keys.
        counters = clients.get(identifier)
        if counters is None:
            counters = clients[identifier] = [0, 0, 0, 0]

        decision = hit_at(identifier, now)

        counters[0] += 1
        in_bucket += 1
        if decision.allowed:
            admitted += 1
        elif decision.records[0].outcome is Outcome.CAPACITY:
            tally.capacity_refused += 1
        else:
            tally.refuse(counters, time_us, offset_s)

    tally.next_bucket(None, 0, in_bucket)
    tally.admitted = admitted
    if clients:
        tally.first = Instant(earliest, earliest_offset)
        tally.last = Instant(now, latest_offset)
