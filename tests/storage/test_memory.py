"""
MemoryStorage: hand-written edge tables, clock rules, capacity and concurrency.

Every expected value here is worked out by hand from DESIGN.md, not computed
by the reference model (``test_memory_model.py`` does that on random traffic).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from sliding_window_throttler import (
    AsyncMemoryStorage,
    AsyncThrottler,
    ConfigurationError,
    Decision,
    ManualClock,
    MemoryStorage,
    Outcome,
    RateLimitExceededError,
    Throttle,
    Throttler,
    ThrottleRecord,
)
from sliding_window_throttler.core.sliding_window import count_left, judge
from sliding_window_throttler.storage import memory
from sliding_window_throttler.storage.base import StorageHealth

from model import Model, as_verdict, spec_of

# Each test runs on the C hot path of MemoryStorage and on its Python twin.
pytestmark = pytest.mark.usefixtures("hot_path")

A = Outcome.ADMITTED
FULL = Outcome.LIMIT_REACHED
BLOCKED = Outcome.BLOCKED
NEVER = Outcome.COST_EXCEEDS_LIMIT


class Row(NamedTuple):
    """One hit and what its record must say."""

    at_ms: float
    allowed: bool
    total_hits: int
    remaining: int
    time_to_expire: int
    time_to_block_expire: int
    retry_after: float
    outcome: Outcome
    cost: int = 1


def _seen(decision: Decision, at_ms: float, cost: int) -> Row:
    (record,) = decision.records
    return Row(
        at_ms,
        decision.allowed,
        record.total_hits,
        record.remaining,
        record.time_to_expire,
        record.time_to_block_expire,
        record.retry_after,
        record.outcome,
        cost,
    )


def _play(throttle: Throttle, rows: list[Row], identifier: str = "client") -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    for row in rows:
        decision = throttler.hit(identifier, throttle, cost=row.cost, now_ms=row.at_ms)

        assert _seen(decision, row.at_ms, row.cost) == row
        assert decision.retry_after == row.retry_after
        assert decision.records[0].is_blocked is not row.allowed


def test_three_per_second_admits_again_exactly_when_the_first_hits_leave() -> None:
    _play(
        Throttle("api", 3, 1),
        [
            Row(0, True, 1, 2, 1, -1, 0.0, A),
            Row(0, True, 2, 1, 1, -1, 0.0, A),
            Row(0, True, 3, 0, 1, -1, 0.0, A),
            Row(999, False, 4, 0, 1, 1, 0.001, FULL),
            Row(1000, True, 1, 2, 1, -1, 0.0, A),
            Row(1001, True, 2, 1, 1, -1, 0.0, A),
        ],
    )


def test_block_longer_than_the_window_outlasts_it_and_is_not_extended() -> None:
    _play(
        Throttle("login", 2, 1, block_duration=5),
        [
            Row(0, True, 1, 1, 1, -1, 0.0, A),
            Row(100, True, 2, 0, 1, -1, 0.0, A),
            # Refused while the window waits 0.8 s: the 5 s block is longer.
            Row(200, False, 3, 0, 1, 5, 5.0, FULL),
            # The window is empty again, but the block holds until 5200 ms.
            Row(1500, False, 1, 0, 0, 4, 3.7, BLOCKED),
            Row(5199, False, 1, 0, 0, 1, 0.001, BLOCKED),
            Row(5200, True, 1, 1, 1, -1, 0.0, A),
        ],
    )


def test_block_shorter_than_the_window_reports_the_still_full_window() -> None:
    _play(
        Throttle("login", 2, 10, block_duration=1),
        [
            Row(0, True, 1, 1, 10, -1, 0.0, A),
            Row(0, True, 2, 0, 10, -1, 0.0, A),
            # Blocked until 1500 ms, but the window only frees at 10 s.
            Row(500, False, 3, 0, 10, 10, 9.5, FULL),
            Row(1000, False, 3, 0, 9, 9, 9.0, BLOCKED),
            # The block has ended; the window is still full: a new block.
            Row(2000, False, 3, 0, 8, 8, 8.0, FULL),
            Row(10_000, True, 1, 1, 10, -1, 0.0, A),
        ],
    )


def test_limit_one_alternates_on_the_window_edge() -> None:
    _play(
        Throttle("one", 1, 1),
        [
            Row(0, True, 1, 0, 1, -1, 0.0, A),
            Row(500, False, 2, 0, 1, 1, 0.5, FULL),
            Row(1000, True, 1, 0, 1, -1, 0.0, A),
            Row(1999, False, 2, 0, 1, 1, 0.001, FULL),
            Row(2000, True, 1, 0, 1, -1, 0.0, A),
        ],
    )


def test_one_millisecond_window_works_in_microseconds() -> None:
    _play(
        Throttle("tiny", 2, 0.001),
        [
            Row(0, True, 1, 1, 1, -1, 0.0, A),
            Row(0, True, 2, 0, 1, -1, 0.0, A),
            Row(0.5, False, 3, 0, 1, 1, 0.0005, FULL),
            Row(0.999, False, 3, 0, 1, 1, 0.000001, FULL),
            Row(1, True, 1, 1, 1, -1, 0.0, A),
        ],
    )


def test_cost_above_limit_never_succeeds_and_starts_no_block() -> None:
    throttle = Throttle("api", 3, 1, block_duration=10)
    _play(
        throttle,
        [
            Row(0, False, 4, 3, 0, -1, math.inf, NEVER, cost=4),
            Row(0, True, 1, 2, 1, -1, 0.0, A),
            Row(0, True, 3, 0, 1, -1, 0.0, A, cost=2),
            Row(1, False, 7, 0, 1, -1, math.inf, NEVER, cost=4),
            # A block would last until 10 s: there is none.
            Row(1000, True, 1, 2, 1, -1, 0.0, A),
        ],
    )


def test_cost_above_limit_decision_cannot_succeed() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))

    decision = throttler.hit("client", Throttle("api", 3, 1), cost=4)

    assert not decision.allowed
    assert decision.retry_after == math.inf
    assert not decision.can_succeed


def test_cost_zero_is_admitted_unless_blocked_and_records_nothing() -> None:
    _play(
        Throttle("api", 2, 1, block_duration=5),
        [
            Row(0, True, 0, 2, 0, -1, 0.0, A, cost=0),
            Row(0, True, 1, 1, 1, -1, 0.0, A),
            Row(0, True, 2, 0, 1, -1, 0.0, A),
            Row(500, True, 2, 0, 1, -1, 0.0, A, cost=0),
            # Had the cost-0 hit counted, total_hits would be 4.
            Row(500, False, 3, 0, 1, 5, 5.0, FULL),
            Row(2000, False, 0, 0, 0, 4, 3.5, BLOCKED, cost=0),
        ],
    )


def test_lowered_limit_keeps_the_newest_admissions() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    three = Throttle("api", 3, 10)
    two = Throttle("api", 2, 10)
    for at_ms in (0, 1000, 2000):
        assert throttler.hit("client", three, now_ms=at_ms).allowed

    refused = throttler.hit("client", two, now_ms=3000)
    later = throttler.hit("client", two, now_ms=11_000)

    # The newest two are 1000 and 2000 ms: the wait runs to 11 s, not 10 s.
    assert _seen(refused, 3000, 1) == Row(3000, False, 3, 0, 8, 8, 8.0, FULL)
    assert _seen(later, 11_000, 1) == Row(11_000, True, 2, 0, 1, -1, 0.0, A)


@pytest.mark.parametrize("limit", [1, 2, 10, 100])
def test_a_pair_never_keeps_more_than_limit_times(limit: int) -> None:
    # Hits at gaps that keep the window sliding, with costs that wrap the
    # ring in one write.
    rng = random.Random(limit)
    storage = MemoryStorage(clock=ManualClock())
    throttler = Throttler(storage)
    throttle = Throttle("api", limit, 1)
    now_ms = 0.0
    longest = 0
    for _ in range(50 * limit):
        now_ms += rng.choice([0, 1, 10, 100, 400])
        throttler.hit("client", throttle, cost=rng.randint(0, limit), now_ms=now_ms)
        pairs = storage._clients.get("client", {})
        longest = max(longest, len(pairs.get("api", [])))

    assert longest == limit


def test_a_lowered_limit_shrinks_the_pair_at_its_next_write() -> None:
    storage = MemoryStorage(clock=ManualClock())
    throttler = Throttler(storage)
    for at_ms in range(4):
        assert throttler.hit("client", Throttle("api", 4, 0.01), now_ms=at_ms).allowed

    lowered = Throttle("api", 2, 0.01)
    assert not throttler.hit("client", lowered, now_ms=11).allowed  # 2 and 3 count
    assert throttler.hit("client", lowered, now_ms=12).allowed
    assert sorted(storage._clients["client"]["api"]) == [3_000, 12_000]


def test_a_raised_limit_on_a_wrapped_ring_keeps_every_admission_in_order() -> None:
    # Limit 2 wraps the ring on the third hit; limit 3 then grows it again.
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    two, three = Throttle("api", 2, 0.01), Throttle("api", 3, 0.01)
    for at_ms in (0, 4, 10):
        assert throttler.hit("client", two, now_ms=at_ms).allowed

    assert throttler.hit("client", three, now_ms=11).allowed  # 4, 10, 11
    assert throttler.hit("client", three, now_ms=15).allowed  # 10, 11, 15
    refused = throttler.hit("client", three, now_ms=16)
    # Back to limit 2: its newest two, 11 and 15 ms, fill the window.
    lowered = throttler.hit("client", two, now_ms=16)

    assert _seen(refused, 16, 1) == Row(16, False, 4, 0, 1, 1, 0.004, FULL)
    assert _seen(lowered, 16, 1) == Row(16, False, 3, 0, 1, 1, 0.005, FULL)


def test_a_block_under_a_longer_window_keeps_the_hits_of_the_shorter_one() -> None:
    # Two hits under 2/1s, then the name moves to 2/10s with a block: the
    # window of 10 s holds both, so every later hit is refused (the block
    # keeps the pair for the longer window, as any write does).
    storage = MemoryStorage(clock=ManualClock())
    short = Throttle("a", 2, 1)
    long_ = Throttle("a", 2, 10, block_duration=2)
    model = Model(one_clock=True)
    for _ in range(2):
        storage.hit("c", [short], 1, 0)
        model.hit("c", [spec_of(short)], 1, 0)

    for step in range(1, 10):
        now_us = step * 500_000
        got = storage.hit("c", [long_], 1, now_us)
        assert as_verdict(got) == model.hit("c", [spec_of(long_)], 1, now_us)
        assert not got.allowed


def test_a_peek_ahead_of_the_clock_answers_as_the_hit_there_would() -> None:
    # At 200 ms the pair of a 100 ms window has ended: the hit reclaims it
    # and admits; the peek must say so too, whatever window it asks about.
    storage = MemoryStorage(clock=ManualClock())
    storage.hit("x", [Throttle("a", 1, 0.1)], 1, 0)
    longer = Throttle("a", 1, 1)

    peeked = storage.peek("x", [longer], 1, 200_000)
    hit = storage.hit("x", [longer], 1, 200_000)

    assert as_verdict(peeked) == as_verdict(hit)
    assert hit.allowed


def test_a_peek_ahead_never_stops_evict_lru_from_evicting() -> None:
    storage = MemoryStorage(clock=ManualClock(), max_pairs=1, overflow="evict-lru")
    a, c = Throttle("a", 5, 1), Throttle("c", 5, 1)
    storage.hit("y", [a], 1, 0)

    storage.peek("y", [a, c], 1, 2_000_000)
    decision = storage.hit("x", [a], 1, 500_000)

    assert decision.allowed
    assert (storage.stats().evicted, storage.stats().refused_new) == (1, 0)


def test_refused_hit_is_recorded_in_no_throttle() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    burst = Throttle("burst", 1, 1)
    sustained = Throttle("sustained", 2, 10)
    assert throttler.hit("client", burst, sustained, now_ms=0).allowed

    by_burst = throttler.hit("client", burst, sustained, now_ms=500)
    sustained_after = throttler.peek("client", sustained, now_ms=500)

    assert not by_burst.allowed
    assert by_burst.retry_after == 0.5
    assert [r.outcome for r in by_burst.records] == [FULL, A]
    assert by_burst.records[1].is_blocked is False
    assert by_burst.records[1].time_to_block_expire == -1
    # Only the 0 ms hit is in the sustained window: 1 + this peek's 1.
    assert sustained_after.records[0].total_hits == 2


def test_refusal_by_the_second_throttle_leaves_the_first_unrecorded() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    burst = Throttle("burst", 1, 1)
    sustained = Throttle("sustained", 2, 10)
    assert throttler.hit("client", burst, sustained, now_ms=0).allowed
    assert throttler.hit("client", burst, sustained, now_ms=1000).allowed

    by_sustained = throttler.hit("client", burst, sustained, now_ms=2000)
    burst_alone = throttler.hit("client", burst, now_ms=2000)

    assert not by_sustained.allowed
    assert [r.outcome for r in by_sustained.records] == [A, FULL]
    assert by_sustained.retry_after == 8.0
    # Had the refused hit been recorded in burst, this one would be refused.
    assert burst_alone.allowed
    assert burst_alone.records[0].total_hits == 1


def test_multi_throttle_retry_after_is_the_longest_wait() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    burst = Throttle("burst", 1, 1)
    sustained = Throttle("sustained", 2, 10)
    assert throttler.hit("client", burst, sustained, now_ms=0).allowed
    assert throttler.hit("client", burst, sustained, now_ms=1000).allowed

    both = throttler.hit("client", burst, sustained, now_ms=1500)

    assert [(r.outcome, r.retry_after) for r in both.records] == [
        (FULL, 0.5),
        (FULL, 8.5),
    ]
    assert both.retry_after == 8.5
    assert both.limiting.name == "sustained"


def test_clock_that_steps_back_stands_still() -> None:
    clock = ManualClock(start_ms=5000)
    throttler = Throttler(MemoryStorage(clock=clock))
    throttle = Throttle("api", 2, 1)
    assert throttler.hit("a", throttle).allowed

    clock.set_ms(0)
    second = throttler.hit("a", throttle)
    clock.set_ms(1000)
    third = throttler.hit("a", throttle)
    clock.set_ms(6000)
    fourth = throttler.hit("a", throttle)

    # Both hits count at 5000 ms, so the window frees at 6000 ms.
    assert second.allowed
    assert second.records[0].time_to_expire == 1
    assert not third.allowed
    assert third.retry_after == 1.0
    assert fourth.allowed
    assert fourth.records[0].total_hits == 1


def test_storage_clock_never_goes_back_across_clients() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    throttle = Throttle("api", 2, 1)
    throttler.hit("a", throttle, now_ms=5000)

    throttler.hit("b", throttle, now_ms=0)
    at_5999 = throttler.hit("b", throttle, now_ms=5999)
    again = throttler.hit("b", throttle, now_ms=5999)

    # b's first hit counts at 5000 ms (the storage has seen that time), so it
    # is still in the window at 5999 ms.
    assert at_5999.records[0].total_hits == 2
    assert not again.allowed
    assert again.retry_after == 0.001


def test_peek_changes_nothing_not_even_the_storage_clock() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    throttle = Throttle("api", 2, 1, block_duration=60)
    throttler.hit("a", throttle, now_ms=5000)
    throttler.hit("a", throttle, now_ms=5000)

    throttler.peek("a", throttle, now_ms=7000)
    throttler.peek("a", throttle, now_ms=5500)
    refused = throttler.hit("a", throttle, now_ms=5500)

    # The peek at 7000 ms neither moved the clock nor blocked the client.
    assert refused.records[0].outcome is FULL
    assert refused.retry_after == 60.0


def test_peek_reports_the_block_that_hit_would_start() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    throttle = Throttle("login", 1, 1, block_duration=60)
    throttler.hit("a", throttle, now_ms=0)

    peeked = throttler.peek("a", throttle, now_ms=500)
    hit = throttler.hit("a", throttle, now_ms=500)

    assert hit.retry_after == 60.0
    assert peeked == hit


def test_peek_reports_remaining_and_expiry_as_if_recorded() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    throttle = Throttle("api", 3, 1)

    peeked = throttler.peek("a", throttle, now_ms=0)
    hit = throttler.hit("a", throttle, now_ms=0)

    assert (hit.records[0].remaining, hit.records[0].time_to_expire) == (2, 1)
    assert peeked == hit


def test_refusal_that_starts_a_block_leaves_nothing_remaining() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    throttle = Throttle("api", 3, 1, block_duration=10)
    throttler.hit("a", throttle, now_ms=0)

    refused = throttler.hit("a", throttle, cost=3, now_ms=0)

    # One hit is in the window and the cost of 3 does not fit: blocked 10 s.
    assert refused.records[0].outcome is FULL
    assert refused.retry_after == 10.0
    assert refused.records[0].remaining == 0


def test_reset_forgets_hits_and_blocks() -> None:
    storage = MemoryStorage(clock=ManualClock())
    throttler = Throttler(storage)
    throttle = Throttle("login", 1, 1, block_duration=60)
    throttler.hit("a", throttle, now_ms=0)
    throttler.hit("a", throttle, now_ms=0)

    throttler.reset("a")

    assert throttler.hit("a", throttle, now_ms=1).allowed
    assert storage.stats().pairs == 1


def _filled(max_pairs: int, overflow: str) -> tuple[Throttler, MemoryStorage]:
    storage = MemoryStorage(clock=ManualClock(), max_pairs=max_pairs, overflow=overflow)
    return Throttler(storage), storage


def test_reject_new_refuses_a_new_client_until_one_expires() -> None:
    throttler, storage = _filled(2, "reject-new")
    throttle = Throttle("api", 5, 1)
    throttler.hit("a", throttle, now_ms=0)
    throttler.hit("b", throttle, now_ms=100)

    refused = throttler.hit("c", throttle, now_ms=200)
    known = throttler.hit("a", throttle, now_ms=300)
    still_full = throttler.hit("c", throttle, now_ms=1000)
    room = throttler.hit("c", throttle, now_ms=1100)

    assert not refused.allowed
    assert refused.records[0].outcome is Outcome.CAPACITY
    # Nothing of c is counted: its window is empty, so nothing expires.
    assert (refused.records[0].total_hits, refused.records[0].time_to_expire) == (1, 0)
    # The first tracked client (a, due at 1000 ms) is the earliest room.
    assert refused.retry_after == 0.8
    assert known.allowed
    # a was hit again at 300 ms, so only b (due 1100 ms) can leave next.
    assert not still_full.allowed
    assert still_full.retry_after == 0.1
    assert room.allowed
    stats = storage.stats()
    assert (stats.pairs, stats.refused_new, stats.reclaimed, stats.evicted) == (
        2,
        2,
        1,
        0,
    )


def test_peek_at_capacity_reports_the_refusal_hit_would_give() -> None:
    throttler, _ = _filled(1, "reject-new")
    throttle = Throttle("api", 5, 1)
    throttler.hit("a", throttle, now_ms=0)

    peeked = throttler.peek("b", throttle, now_ms=200)
    hit = throttler.hit("b", throttle, now_ms=200)

    assert hit.records[0].outcome is Outcome.CAPACITY
    assert peeked == hit


def test_evict_lru_drops_the_least_recently_used_client() -> None:
    throttler, storage = _filled(2, "evict-lru")
    throttle = Throttle("api", 2, 10)
    throttler.hit("a", throttle, now_ms=0)
    throttler.hit("b", throttle, now_ms=100)
    throttler.hit("a", throttle, now_ms=200)

    assert throttler.hit("c", throttle, now_ms=300).allowed  # evicts b
    assert throttler.hit("b", throttle, now_ms=400).allowed  # evicts a
    again = throttler.hit("a", throttle, now_ms=500)  # evicts c

    # a's two hits were forgotten with it: this is its first again.
    assert again.allowed
    assert again.records[0].total_hits == 1
    stats = storage.stats()
    assert (stats.pairs, stats.evicted, stats.refused_new) == (2, 3, 0)


def test_blocked_client_is_never_evicted_before_its_block_ends() -> None:
    throttler, storage = _filled(2, "evict-lru")
    login = Throttle("login", 1, 1, block_duration=10)
    throttler.hit("a", login, now_ms=0)
    throttler.hit("a", login, now_ms=1)  # blocked until 10 001 ms

    for at_ms, client in enumerate(["b", "c", "d", "e"], start=2):
        assert throttler.hit(client, login, now_ms=at_ms).allowed

    still = throttler.hit("a", login, now_ms=9999)
    free = throttler.hit("a", login, now_ms=10_001)

    assert still.records[0].outcome is BLOCKED
    assert still.retry_after == 0.002
    assert free.allowed
    assert storage.stats().evicted == 3


def test_when_every_client_is_blocked_evict_lru_refuses_the_new_one() -> None:
    throttler, storage = _filled(1, "evict-lru")
    login = Throttle("login", 1, 1, block_duration=10)
    throttler.hit("a", login, now_ms=0)
    throttler.hit("a", login, now_ms=1)

    refused = throttler.hit("b", login, now_ms=2)

    assert refused.records[0].outcome is Outcome.CAPACITY
    stats = storage.stats()
    assert (stats.pairs, stats.evicted, stats.refused_new) == (1, 0, 1)


def test_blocked_client_is_not_reclaimed_before_its_block_ends() -> None:
    throttler, storage = _filled(10, "reject-new")
    login = Throttle("login", 1, 1, block_duration=10)
    throttler.hit("a", login, now_ms=0)
    throttler.hit("a", login, now_ms=1)  # window ends at 1 s, block at 10.001 s

    throttler.hit("b", login, now_ms=2000)  # a is due, but blocked: kept
    throttler.hit("b", login, now_ms=5000)  # b's first pair is reclaimed
    reclaimed = storage.stats().reclaimed
    still = throttler.hit("a", login, now_ms=10_000)

    assert reclaimed == 1
    assert still.records[0].outcome is BLOCKED
    assert still.retry_after == 0.001
    assert throttler.hit("a", login, now_ms=10_001).allowed


@pytest.mark.parametrize(
    ("options", "field", "shown"),
    [
        ({"max_pairs": 0}, "max_pairs", "got 0"),
        ({"max_pairs": True}, "max_pairs", "got True"),
        ({"max_pairs": "10"}, "max_pairs", "got '10'"),
        ({"overflow": "drop-oldest"}, "overflow", "got 'drop-oldest'"),
    ],
)
def test_bad_storage_options_raise_configuration_error(
    options: dict[str, object], field: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MemoryStorage(**options)  # type: ignore[arg-type]

    assert caught.value.field == field
    assert shown in str(caught.value)


def test_a_wrapped_ring_counts_the_hit_at_the_window_edge_as_left() -> None:
    # limit 3 per 10 ms: the ring wraps at 10,000 us and 10,001 us, so at
    # 20,000 us its slot 0 holds 10,000, exactly now - ttl: that hit has
    # left the window, and only 10,001 is still in it.
    storage = MemoryStorage(clock=ManualClock())
    three = Throttle("t", 3, "10ms")
    for us in (0, 1, 2, 10_000, 10_001):
        assert storage.hit("a", (three,), 1, us).allowed

    record = storage.hit("a", (three,), 1, 20_000).records[0]

    assert (record.total_hits, record.remaining) == (2, 1)
    assert record.time_to_expire == 1  # 10,001 leaves at 20,001: 1 us, rounded up


def test_the_ring_wraps_its_head_back_to_the_oldest_slot() -> None:
    storage = MemoryStorage(clock=ManualClock())
    three = Throttle("t", 3, "1ms")
    for us in (0, 1, 2):
        storage.hit("a", (three,), 1, us)

    heads = []
    for us in (1000, 1001, 1002, 2001):
        assert storage.hit("a", (three,), 1, us).allowed
        heads.append(storage._clients["a"]["t"].head)

    assert heads == [1, 2, 0, 1]
    assert list(storage._clients["a"]["t"]) == [2001, 1001, 1002]


API = Throttle("api", 1, 60)
LOGIN = Throttle("login", 1, 60)


class OddClock:
    """A clock whose first reading (checked at construction) is 0."""

    def __init__(self, reading: object) -> None:
        self.readings = iter([0])
        self.reading = reading

    def now_us(self) -> object:
        return next(self.readings, self.reading)


NOT_AN_INT = "clock.now_us() must return whole microseconds (an int), got "
OUT_OF_RANGE = (
    "clock.now_us() must return a time within +-2**62 microseconds (146,000 "
    "years) of 0, got "
)


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        (5.5, NOT_AN_INT + "5.5"),
        (True, NOT_AN_INT + "True"),
        ("5", NOT_AN_INT + "'5'"),
        (None, NOT_AN_INT + "None"),
        (2**62 + 1, OUT_OF_RANGE + "4611686018427387905"),
        (-(2**62) - 1, OUT_OF_RANGE + "-4611686018427387905"),
        (2**64, OUT_OF_RANGE + "18446744073709551616"),
    ],
)
def test_a_clock_reading_that_is_no_time_is_an_error_naming_the_clock(
    reading: object, message: str
) -> None:
    # Every time a storage keeps is whole microseconds within 2**62 of 0:
    # a clock that gives anything else is refused, on every call.
    clock = OddClock(reading)
    storage = MemoryStorage(clock=clock)  # type: ignore[arg-type]
    throttler = Throttler(storage)
    calls = [
        lambda: throttler.hit("a", API),
        lambda: throttler.hit("a", API, LOGIN),
        lambda: throttler.peek("a", API),
        lambda: storage.hit("a", (API,), 1),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError) as caught:
            call()

        assert caught.value.field == "clock"
        assert str(caught.value) == message

    clock.reading = 1_000_000
    assert throttler.hit("a", API).allowed  # nothing was recorded, no lock held
    assert storage.stats().pairs == 1


@pytest.mark.parametrize(
    ("reading", "shown"),
    [
        (None, "ConfigurationError: " + NOT_AN_INT + "None"),
        (OSError("gone"), "OSError: gone"),
    ],
)
def test_health_reports_a_failing_clock_and_never_raises(
    reading: object, shown: str
) -> None:
    class Failing:
        def __init__(self) -> None:
            self.first = True

        def now_us(self) -> object:
            if self.first:
                self.first = False
                return 0
            if isinstance(reading, Exception):
                raise reading
            return reading

    health = MemoryStorage(clock=Failing()).health()  # type: ignore[arg-type]

    assert not health.healthy
    assert health.detail == "in memory; its clock failed: " + shown


def test_a_throttle_forced_to_a_float_window_breaks_no_other_client() -> None:
    # A frozen Throttle can still be forced (object.__setattr__): its float
    # window leaves a float among the storage's times, which must not stop
    # every other client's hits.
    clock = ManualClock()
    storage = MemoryStorage(clock=clock)
    throttler = Throttler(storage)
    odd = Throttle("odd", 3, 1)
    object.__setattr__(odd, "ttl_us", 1e6)
    assert throttler.hit("x", odd).allowed

    others = []
    for i in range(3):
        clock.advance(10)
        others.append(throttler.hit(f"y{i}", Throttle("ok", 3, 1)).allowed)

    assert others == [True, True, True]
    stats = storage.stats()
    assert (stats.clients, stats.pairs, stats.reclaimed) == (1, 1, 3)


def test_an_int_subclass_is_no_time_whatever_it_says_it_is() -> None:
    class Shifty(int):
        def __int__(self) -> int:
            return 2**70

    storage = MemoryStorage(clock=ManualClock())
    with pytest.raises(ConfigurationError) as caught:
        storage.hit("a", (API,), 1, Shifty(5))

    assert caught.value.field == "now_us"
    assert caught.value.message == (
        "now_us must be whole microseconds (an int), got a Shifty, a subclass of int: 5"
    )
    assert storage.hit("a", (API,), 1, 5).allowed


@pytest.mark.parametrize("now_us", [5.5, True, 2**62 + 1, -(2**63)])
def test_an_explicit_time_that_is_no_time_is_an_error_naming_now_us(
    now_us: object,
) -> None:
    storage = MemoryStorage(clock=ManualClock())
    for throttles in ((API,), (API, LOGIN)):
        with pytest.raises(ConfigurationError) as caught:
            storage.hit("a", throttles, 1, now_us)  # type: ignore[arg-type]

        assert caught.value.field == "now_us"

    with pytest.raises(ConfigurationError):
        storage.peek("a", (API,), 1, now_us)  # type: ignore[arg-type]

    assert storage.stats().pairs == 0


def test_times_at_the_edges_of_the_range_are_decided_exactly() -> None:
    # 2**62 microseconds either way: the window arithmetic stays in 64 bits.
    storage = MemoryStorage(clock=ManualClock())
    three = Throttle("t", 3, 1)
    low = -(2**62)
    got = [storage.hit("a", (three,), 1, low + i).records[0] for i in range(4)]

    assert [r.total_hits for r in got] == [1, 2, 3, 4]
    assert got[3].retry_after == 0.999_997

    high = 2**62
    storage = MemoryStorage(clock=ManualClock())
    assert storage.hit("b", (three,), 1, high - 1_000_000).allowed  # leaves at high
    last = [storage.hit("b", (three,), 1, high).records[0] for _ in range(4)]
    assert [r.total_hits for r in last] == [1, 2, 3, 4]
    assert (last[3].outcome, last[3].retry_after) == (FULL, 1.0)


def _on_32_threads(hits: Callable[[int], int]) -> int:
    """Start ``hits(index)`` on 32 threads at once; the sum of their answers."""
    start = threading.Barrier(32)
    answers = [0] * 32

    def worker(index: int) -> None:
        start.wait()
        answers[index] = hits(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()

    for thread in threads:
        thread.join()

    return sum(answers)


def test_threads_on_one_key_admit_exactly_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each decision lets other threads run between reading the window and
    # recording the hit (a storage without its lock then admits about a third
    # too many): only the storage's lock keeps the count exact. (The C hot
    # path does not call count_left: the next test covers it.)
    def yielding_count_left(*args: Any) -> int:
        time.sleep(0)
        return count_left(*args)

    monkeypatch.setattr(memory, "count_left", yielding_count_left)
    throttler = Throttler(MemoryStorage(clock=ManualClock(start_ms=1000)))
    throttle = Throttle("api", 100, 60)

    def hits(index: int) -> int:
        return sum(throttler.hit("shared", throttle).allowed for _ in range(500))

    assert _on_32_threads(hits) == 100


def test_threads_mixing_costs_on_one_key_admit_exactly_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Cost-2 hits are decided by _decide_one, which yields here while it
    # holds the lock; cost-1 hits take the hot path (in C when it is built).
    # Only the lock keeps the count exact: 100 hits of the frozen window.
    def yielding_judge(*args: Any) -> Any:
        time.sleep(0)
        return judge(*args)

    monkeypatch.setattr(memory, "judge", yielding_judge)
    throttler = Throttler(MemoryStorage(clock=ManualClock(start_ms=1000)))
    throttle = Throttle("api", 100, 60)

    def hits(index: int) -> int:
        counted = 0
        for i in range(500):
            cost = 1 + (i + index) % 2
            counted += cost * throttler.hit("shared", throttle, cost=cost).allowed

        return counted

    assert _on_32_threads(hits) == 100


def test_coroutines_on_one_key_admit_exactly_the_limit() -> None:
    throttler = AsyncThrottler(AsyncMemoryStorage(clock=ManualClock(start_ms=1000)))
    throttle = Throttle("api", 100, 60)

    async def client() -> int:
        admitted = 0
        for _ in range(5):
            admitted += (await throttler.hit("shared", throttle)).allowed
            await asyncio.sleep(0)

        return admitted

    async def crowd() -> list[int]:
        return await asyncio.gather(*(client() for _ in range(1000)))

    assert sum(asyncio.run(crowd())) == 100


# One million distinct clients, one hit each, one microsecond apart, through a
# window of 200 ms (200 000 hits) and a cap of 100 000 pairs. A client "held"
# is blocked for the whole run and takes one of the pairs.
CLIENTS = 1_000_000
CAP = 100_000
CHURN = Throttle("api", 1, 0.2)
HELD = Throttle("login", 1, 0.2, block_duration=2)


def _churn(overflow: str) -> tuple[MemoryStorage, int, int]:
    """Run the million clients; return the storage, admitted, and peak pairs."""
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=CAP, overflow=overflow)
    storage.hit("held", (HELD,), 1)
    storage.hit("held", (HELD,), 1)  # blocked until 2 s
    churn = (CHURN,)
    admitted = peak = 0
    for i in range(CLIENTS):
        clock.set_us(i)
        admitted += storage.hit(f"client-{i}", churn, 1).allowed
        if i % 1000 == 0:
            peak = max(peak, storage.stats().pairs)

    return storage, admitted, max(peak, storage.stats().pairs)


def _held_is_still_blocked(storage: MemoryStorage) -> bool:
    decision = storage.peek("held", (HELD,), 1)
    return decision.records[0].outcome is BLOCKED


@pytest.mark.slow
def test_million_clients_reject_new_keeps_the_cap_and_counts_refusals() -> None:
    storage, admitted, peak = _churn("reject-new")

    # The cap holds 99 999 clients beside "held". Each client's pair leaves
    # 200 000 us after its hit, so every 200 000 hits admit 99 999 and refuse
    # the rest: 5 periods.
    stats = storage.stats()
    assert peak == CAP
    assert admitted == 5 * 99_999
    assert stats.refused_new == CLIENTS - 5 * 99_999
    # Reclaimed by the last hit: clients admitted at or before 799 999 us.
    assert stats.reclaimed == 4 * 99_999
    assert (stats.pairs, stats.evicted) == (CAP, 0)
    assert _held_is_still_blocked(storage)


@pytest.mark.slow
def test_million_clients_evict_lru_keeps_the_cap_and_counts_evictions() -> None:
    storage, admitted, peak = _churn("evict-lru")

    # Every client is admitted; past the first 99 999, each evicts the least
    # recently used one, never the blocked "held".
    stats = storage.stats()
    assert peak == CAP
    assert admitted == CLIENTS
    assert stats.evicted == CLIENTS - (CAP - 1)
    assert (stats.pairs, stats.refused_new, stats.reclaimed) == (CAP, 0, 0)
    assert _held_is_still_blocked(storage)


@pytest.mark.slow
def test_memory_returns_to_its_baseline_once_every_client_expired() -> None:
    # A million clients through the cap, then one hit after they all expired:
    # the allocated blocks fall back to where they started.
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=CAP)
    churn = (CHURN,)
    gc.collect()
    baseline = sys.getallocatedblocks()
    peak = 0
    for i in range(CLIENTS):
        clock.set_us(i)
        storage.hit(f"client-{i}", churn, 1)
        if i % 50_000 == 0:
            peak = max(peak, sys.getallocatedblocks() - baseline)

    clock.set_us(10 * CLIENTS)
    storage.hit("last", churn, 1)
    gc.collect()
    left = sys.getallocatedblocks() - baseline

    assert storage.stats().pairs == 1
    assert storage.stats().reclaimed == 5 * CAP  # 100,000 admitted per 200 ms
    assert peak > 300_000  # some blocks per tracked client
    assert left < 1_000, f"{left:,} blocks still held of {peak:,}"


def test_record_type_is_the_public_throttle_record() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))

    decision = throttler.hit("a", Throttle("api", 1, 1))

    assert isinstance(decision.records[0], ThrottleRecord)


def test_negative_explicit_times_are_ordinary_times():
    # 0 must not stand for "never blocked": simulations may start before it.
    throttler = Throttler(MemoryStorage())
    throttle = Throttle("api", 2, 1)

    allowed = [
        throttler.hit("a", throttle, now_ms=ms).allowed
        for ms in (-5000, -5000, -5000, -4001, -4000)
    ]

    assert allowed == [True, True, False, False, True]


def test_evict_lru_evicts_nobody_when_it_cannot_make_room():
    storage = MemoryStorage(clock=ManualClock(), max_pairs=2, overflow="evict-lru")
    throttler = Throttler(storage)
    p, q, r = (Throttle(name, 1, 60) for name in "pqr")
    throttler.hit("A", p, q)

    refused = throttler.hit("B", p, q, r)

    assert refused.records[0].outcome is Outcome.CAPACITY
    assert storage.stats().evicted == 0
    assert throttler.hit("A", p, q).allowed is False  # A's hits were kept


def test_full_storage_reclaims_expired_pairs_of_a_client_that_lives_on():
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=2)
    throttler = Throttler(storage)
    throttler.hit("A", Throttle("day", 5, 86_400), Throttle("sec", 5, 1))
    clock.advance(5)

    admitted = throttler.hit("B", Throttle("sec", 5, 1))

    assert admitted.allowed is True
    assert storage.stats().pairs == 2
    assert storage.stats().reclaimed == 1


class _FloatClock:
    def now_us(self) -> float:
        return 1.5


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("x", "got 'x'"),
        (5, "got 5"),
        (ManualClock, "got the class ManualClock"),
        (_FloatClock(), "must return whole microseconds (an int), got 1.5"),
    ],
)
def test_a_clock_without_now_us_is_refused_at_construction(
    bad: object, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        MemoryStorage(clock=bad)  # type: ignore[arg-type]

    assert caught.value.field == "clock"
    assert message in caught.value.message


def test_a_max_pairs_too_long_to_print_is_described_by_its_size() -> None:
    with pytest.raises(ConfigurationError) as caught:
        MemoryStorage(max_pairs=-(10**5000))

    assert caught.value.message == (
        "max_pairs must be at least 1, got an integer of 16610 bits"
    )


def test_async_memory_storage_wraps_only_a_memory_storage() -> None:
    with pytest.raises(ConfigurationError) as caught:
        AsyncMemoryStorage("x")  # type: ignore[arg-type]

    assert caught.value.field == "storage"
    assert caught.value.message == ("AsyncMemoryStorage takes a MemoryStorage, got 'x'")


@pytest.mark.parametrize(
    ("options", "given"),
    [
        ({"max_pairs": 0}, "max_pairs"),
        ({"overflow": "evict-lru"}, "overflow"),
        ({"clock": ManualClock(), "max_pairs": 5}, "clock, max_pairs"),
    ],
)
def test_async_memory_storage_refuses_options_beside_a_storage(
    options: dict[str, Any], given: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AsyncMemoryStorage(MemoryStorage(), **options)

    assert caught.value.field == "storage"
    assert caught.value.message == (
        "give AsyncMemoryStorage a storage or the options of a new one, not "
        f"both: the storage keeps its own ({given} given)"
    )


def _blocking() -> tuple[Throttle, Throttle]:
    return Throttle("t", 1, 0.1, block_duration=0.003), Throttle("u", 5, 0.1)


def test_evict_lru_looks_again_after_a_reset_frees_a_client() -> None:
    t, u = Throttle("t", 1, 0.1, block_duration=0.05), Throttle("u", 5, 0.1)
    storage = MemoryStorage(max_pairs=3, overflow="evict-lru", clock=ManualClock())
    for now_us in (0, 1000):
        storage.hit("a", [t], 1, now_us)
        storage.hit("x", [t], 1, now_us)

    storage.hit("a", [u], 1, 1000)
    refused = storage.hit("b", [t], 1, 1000)  # every other client is blocked
    storage.reset("a", [t])  # a keeps only u, and is no longer blocked
    admitted = storage.hit("b", [t, u], 1, 2000)

    assert refused.records[0].outcome is Outcome.CAPACITY
    assert admitted.allowed
    assert storage.stats().evicted == 1


def test_evict_lru_retry_after_is_when_a_blocked_client_becomes_evictable() -> None:
    t, u = _blocking()
    storage = MemoryStorage(max_pairs=2, overflow="evict-lru", clock=ManualClock())
    for who in ("x", "w"):
        storage.hit(who, [t], 1, 0)
        storage.hit(who, [t], 1, 1000)  # blocked until 4 ms

    storage.hit("v", [t], 1, 1000)  # refused: both are blocked
    storage.hit("x", [t], 1, 5000)  # blocked again, until 8 ms

    refused = storage.hit("w", [u], 1, 5000)
    peeked = storage.peek("w", [u], 1, 5000)

    assert refused.records[0].outcome is Outcome.CAPACITY
    assert (refused.retry_after, peeked.retry_after) == (0.003, 0.003)
    assert not storage.hit("w", [u], 1, 7999).allowed
    assert storage.hit("w", [u], 1, 8000).allowed


def test_a_failed_eviction_does_not_stop_later_evictions() -> None:
    throttler, storage = _filled(2, "evict-lru")
    login = Throttle("login", 1, 1, block_duration=60)
    p, q = Throttle("p", 5, 60), Throttle("q", 5, 60)
    throttler.hit("a", login, now_ms=0)
    throttler.hit("a", login, now_ms=1)  # a is blocked for a minute
    throttler.hit("b", p, now_ms=2)

    # b cannot evict itself, and a is blocked: no room for b's second pair.
    own = throttler.hit("b", q, now_ms=3)
    # c can evict b, the least recently used client that is not blocked.
    other = throttler.hit("c", p, now_ms=4)

    assert own.records[0].outcome is Outcome.CAPACITY
    assert other.allowed
    stats = storage.stats()
    assert (stats.pairs, stats.evicted, stats.refused_new) == (2, 1, 1)


def test_peek_at_capacity_answers_as_hit_when_every_client_is_blocked() -> None:
    throttler, _ = _filled(1, "evict-lru")
    login = Throttle("login", 1, 1, block_duration=10)
    throttler.hit("a", login, now_ms=0)
    throttler.hit("a", login, now_ms=1)

    peeked = throttler.peek("b", login, now_ms=2)
    hit = throttler.hit("b", login, now_ms=2)

    assert hit.records[0].outcome is Outcome.CAPACITY
    assert peeked == hit


def test_peek_at_capacity_counts_the_room_hit_would_sweep() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=2)
    throttler = Throttler(storage)
    throttler.hit("A", Throttle("day", 5, 86_400), Throttle("sec", 5, 1))
    clock.advance(5)

    peeked = throttler.peek("B", Throttle("sec", 5, 1))
    hit = throttler.hit("B", Throttle("sec", 5, 1))

    assert hit.allowed
    assert peeked == hit
    assert storage.stats().pairs == 2


def test_a_full_storage_decides_new_clients_without_scanning_every_pair(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Clients with a short and a long throttle keep a pair ending every few
    # microseconds: each hit that needs a new pair must not look at all the
    # others (that held the lock for 70 ms a hit at 100,000 pairs).
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=10_000)
    throttler = Throttler(storage)
    short, long_ = Throttle("s", 10, 1), Throttle("l", 100, 3600)
    for i in range(5_000):
        clock.set_us(i * 20)
        throttler.hit(f"c{i}", short, long_)

    looked = 0
    expires_at = memory._Pair.expires_at

    def counted(pair: Any) -> int:
        nonlocal looked
        looked += 1
        return expires_at(pair)

    monkeypatch.setattr(memory._Pair, "expires_at", counted)
    clock.set_us(1_000_000)  # the short pairs end from now on, one per 20 us
    admitted = 0
    for n in range(200):
        clock.advance(20e-6)
        admitted += throttler.hit(f"new{n}", long_).allowed

    stats = storage.stats()
    assert admitted == 200
    # The first step ends two short pairs (at 1 s and 1 s + 20 us).
    assert (stats.pairs, stats.reclaimed, stats.refused_new) == (9_999, 201, 0)
    assert looked < 2_000


def test_a_full_storage_keeps_the_askers_own_expired_pair() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=2)
    throttler = Throttler(storage)
    sec, day = Throttle("sec", 1, 1), Throttle("day", 5, 86_400)
    minute = Throttle("min", 5, 60)
    throttler.hit("A", sec, day)
    clock.advance(5)  # A's sec pair has expired; A lives on by its day pair

    # The hit would record in A's sec pair and need a third pair for min:
    # sweeping sec from under it would lose the hit, so there is no room.
    refused = throttler.hit("A", sec, minute)
    admitted = throttler.hit("A", sec)
    full = throttler.hit("A", sec)

    assert [r.outcome for r in refused.records] == [Outcome.CAPACITY] * 2
    assert admitted.allowed
    assert full.records[0].outcome is FULL
    assert storage.stats().pairs == 2


def test_a_full_storage_warns_once_per_episode_and_when_room_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttler, _ = _filled(1, "reject-new")
    throttle = Throttle("api", 5, 1)
    caplog.set_level(logging.WARNING, logger="sliding_window_throttler")
    throttler.hit("a", throttle, now_ms=0)
    for at_ms in (1, 2, 3):
        throttler.hit(f"new-{at_ms}", throttle, now_ms=at_ms)  # refused, warned once

    throttler.hit("b", throttle, now_ms=2000)  # a expired: room, then b admitted
    throttler.hit("c", throttle, now_ms=2001)  # full again: a second episode

    assert [r.getMessage() for r in caplog.records] == [
        "memory storage is full (1 pairs tracked, max_pairs=1, overflow=reject-new): "
        "refusing new clients until pairs expire",
        "memory storage has room again (0 of 1 pairs)",
        "memory storage is full (1 pairs tracked, max_pairs=1, overflow=reject-new): "
        "refusing new clients until pairs expire",
    ]


def test_evict_lru_warns_once_when_it_starts_evicting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttler, _ = _filled(1, "evict-lru")
    throttle = Throttle("api", 5, 10)
    caplog.set_level(logging.WARNING, logger="sliding_window_throttler")
    for at_ms, client in enumerate("abcd"):
        assert throttler.hit(client, throttle, now_ms=at_ms).allowed

    assert [r.getMessage() for r in caplog.records] == [
        "memory storage is full (1 pairs, max_pairs=1): evicting the least "
        "recently used clients"
    ]


def test_health_reports_a_storage_that_refuses_new_clients() -> None:
    throttler, storage = _filled(1, "reject-new")
    throttle = Throttle("api", 5, 1)
    healthy = storage.health()
    throttler.hit("a", throttle, now_ms=0)
    throttler.hit("b", throttle, now_ms=1)  # refused: full
    refusing = storage.health()

    assert healthy == StorageHealth(
        healthy=True, backend="memory", detail="in memory, 0 of 1 pairs tracked"
    )
    assert refusing == StorageHealth(
        healthy=False,
        backend="memory",
        detail="in memory, 1 of 1 pairs tracked; full: new clients are refused "
        "(overflow=reject-new)",
    )


def test_health_of_an_evicting_storage_stays_healthy() -> None:
    throttler, storage = _filled(1, "evict-lru")
    throttle = Throttle("api", 5, 10)
    throttler.hit("a", throttle, now_ms=0)
    throttler.hit("b", throttle, now_ms=1)  # evicts a

    health = asyncio.run(AsyncMemoryStorage(storage).health())

    assert health.healthy
    assert health.detail == (
        "in memory, 1 of 1 pairs tracked; full: the least recently used clients "
        "are evicted"
    )


def test_a_capacity_refusal_still_reports_the_hits_a_known_pair_counts() -> None:
    # reject-new refuses what needs a new pair: here a known client's new
    # throttle. The throttle it has keeps its own numbers in the record.
    storage = MemoryStorage(clock=ManualClock(), max_pairs=1)
    throttler = Throttler(storage)
    known, new = Throttle("known", 5, 10), Throttle("new", 5, 10)
    throttler.hit("a", known, now_ms=0)

    refused = throttler.hit("a", known, new, now_ms=2500)

    first = refused.records[0]
    assert [r.outcome for r in refused.records] == [Outcome.CAPACITY] * 2
    assert (first.total_hits, first.remaining, first.time_to_expire) == (2, 4, 8)


@pytest.mark.parametrize("overflow", ["reject-new", "evict-lru"])
def test_a_hit_needing_more_pairs_than_max_pairs_is_refused_for_good(
    overflow: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Three throttles need three pairs, and the storage may hold two: no
    # amount of waiting or evicting makes room, so the refusal says never.
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=2, overflow=overflow)
    throttler = Throttler(storage)
    throttler.hit("other", Throttle("x", 1, 1))
    a, b, c = (Throttle(name, 5, 10) for name in "abc")

    with caplog.at_level(logging.WARNING):
        refused = throttler.hit("u", a, b, c)
        again = throttler.peek("u", a, b, c)

    assert (refused.allowed, refused.retry_after) == (False, math.inf)
    assert not refused.can_succeed
    assert [r.outcome for r in refused.records] == [Outcome.CAPACITY] * 3
    assert [r.time_to_block_expire for r in refused.records] == [-1] * 3
    assert again.retry_after == math.inf
    stats = storage.stats()
    assert (stats.pairs, stats.refused_new, stats.evicted) == (1, 1, 0)
    assert storage.health().healthy  # not full: the hit is impossible
    assert caplog.records == []
    clock.advance(1)
    assert throttler.hit("u", a, b).allowed  # two fit once "other" is gone
    # "u" holds two of the three now, and still can never hold all three.
    assert throttler.hit("u", a, b, c).retry_after == math.inf
    with pytest.raises(RateLimitExceededError) as caught:
        throttler.enforce("u", a, b, c)

    assert caught.value.message == (
        "rate limit exceeded: this hit needs 3 (client, throttle) pairs at once, "
        "more than the storage may track (max_pairs); it can never succeed"
    )


def test_a_clients_own_expired_pairs_make_room_for_its_new_one() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=2)
    throttler = Throttler(storage)
    throttler.hit("A", Throttle("short", 5, 1))
    throttler.hit("A", Throttle("long", 5, 100))
    clock.advance(5)  # A's short pair has expired; A lives on by its long one

    admitted = throttler.hit("A", Throttle("other", 5, 1))

    assert admitted.allowed
    assert (storage.stats().pairs, storage.stats().reclaimed) == (2, 1)


def test_evict_lru_evicts_nobody_while_expired_pairs_make_room() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=3, overflow="evict-lru")
    throttler = Throttler(storage)
    once = Throttle("x", 1, 100)
    throttler.hit("B", once)
    throttler.hit("A", Throttle("short", 5, 1))
    throttler.hit("A", Throttle("long", 5, 100))
    clock.advance(5)

    throttler.hit("A", Throttle("other", 5, 1))  # A's expired pair makes room
    again = throttler.hit("B", once)  # B was not evicted: still 1 per 100 s

    assert storage.stats().evicted == 0
    assert again.records[0].outcome is FULL


def test_a_shortened_window_frees_room_when_it_ends() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=1)
    throttler = Throttler(storage)
    throttler.hit("A", Throttle("x", 5, 100))
    clock.advance(0.5)
    throttler.hit("A", Throttle("x", 5, 1))  # same name, a 1 s window now
    clock.advance(2)

    assert throttler.hit("B", Throttle("x", 5, 1)).allowed


@pytest.mark.parametrize(
    ("overflow", "setup", "asker", "throttles"),
    [
        # An expired pair would be swept before any eviction is needed.
        ("evict-lru", [("X", ("a",))], "Y", ("b", "c")),
        # The asker's only pair expired after the last hit: the sweep frees it.
        ("reject-new", [("A", ("a",))], "A", ("b",)),
    ],
)
def test_peek_at_capacity_with_expired_pairs_answers_as_hit(
    overflow: str,
    setup: list[tuple[str, tuple[str, ...]]],
    asker: str,
    throttles: tuple[str, ...],
) -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=len(throttles), overflow=overflow)
    throttler = Throttler(storage)
    for client, names in setup:
        throttler.hit(client, *(Throttle(n, 5, 1) for n in names))

    clock.advance(5)
    asked = [Throttle(n, 5, 1) for n in throttles]

    peeked = throttler.peek(asker, *asked)
    hit = throttler.hit(asker, *asked)

    assert peeked == hit
    assert hit.allowed


def test_health_is_good_again_as_soon_as_a_pair_is_free() -> None:
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=2)
    throttler = Throttler(storage)
    throttle = Throttle("api", 5, 60)
    for client in "ABC":
        throttler.hit(client, throttle)  # C is refused: full

    full = storage.health().healthy
    throttler.reset("A")
    freed = storage.health().healthy
    throttler.hit("D", throttle)  # full again, but D was admitted: no refusal yet

    assert (full, freed, storage.health().healthy) == (False, True, True)


def test_health_stays_bad_while_a_pair_hit_since_still_holds_the_room() -> None:
    # A's first hit would end at 10 s, but its second moved that to 19 s.
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=1)
    throttler = Throttler(storage)
    throttle = Throttle("w", 5, 10)
    throttler.hit("A", throttle)
    clock.set_ms(9_000)
    throttler.hit("A", throttle)
    clock.set_ms(11_000)

    refused = throttler.hit("B", throttle)
    during = storage.health().healthy
    clock.set_ms(19_000)
    after = storage.health().healthy

    assert refused.records[0].outcome == Outcome.CAPACITY
    assert refused.retry_after == 8.0
    assert (during, after) == (False, True)
    assert throttler.hit("B", throttle).allowed


def test_peek_never_counts_an_expired_pair_twice_as_room() -> None:
    # One pair of room, expired: swept, it leaves room for one new pair, not
    # for the two asked (evicting its client frees nothing more).
    clock = ManualClock()
    storage = MemoryStorage(clock=clock, max_pairs=1, overflow="evict-lru")
    throttler = Throttler(storage)
    throttler.hit("X", Throttle("a", 5, 1))
    clock.advance(5)
    asked = (Throttle("b", 5, 1), Throttle("c", 5, 1))

    peeked = throttler.peek("Y", *asked)
    hit = throttler.hit("Y", *asked)

    assert peeked == hit
    assert [r.outcome for r in hit.records] == [Outcome.CAPACITY] * 2
