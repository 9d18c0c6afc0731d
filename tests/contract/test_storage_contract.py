"""
The decision contract, scenario by scenario, on every storage.

Times are explicit (``now_us``), so memory and Redis see the same clock.
"""

from __future__ import annotations

import math

from contract_storages import SyncStorage

from sliding_window_throttler import Outcome, Throttle
from sliding_window_throttler.storage.base import StorageHealth

MS = 1_000
S = 1_000_000


def test_the_window_edge_admits_exactly_when_the_oldest_hit_leaves(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("edge", 3, 1)
    results = []
    for at_ms in (0, 0, 0, 999, 1000, 1001):
        decision = storage.hit(identifier, [throttle], 1, at_ms * MS + 5 * S)
        record = decision.records[0]
        results.append((decision.allowed, decision.retry_after, record.total_hits))

    assert results == [
        (True, 0.0, 1),
        (True, 0.0, 2),
        (True, 0.0, 3),
        (False, 0.001, 4),
        (True, 0.0, 1),
        (True, 0.0, 2),
    ]


def test_records_carry_the_header_fields(storage: SyncStorage, identifier: str) -> None:
    throttle = Throttle("api", 2, 10)
    storage.hit(identifier, [throttle], 1, 0)
    storage.hit(identifier, [throttle], 1, 2_500 * MS)

    record = storage.hit(identifier, [throttle], 1, 4_000 * MS).records[0]

    assert record.outcome is Outcome.LIMIT_REACHED
    assert (record.total_hits, record.remaining, record.limit) == (3, 0, 2)
    assert record.time_to_expire == 6
    assert record.time_to_block_expire == 6
    assert record.retry_after == 6.0


def test_a_cost_counts_that_many_hits(storage: SyncStorage, identifier: str) -> None:
    throttle = Throttle("bulk", 5, 1)

    first = storage.hit(identifier, [throttle], 3, 0)
    refused = storage.hit(identifier, [throttle], 3, 100 * MS)
    fits = storage.hit(identifier, [throttle], 2, 200 * MS)

    assert first.allowed and first.records[0].remaining == 2
    assert not refused.allowed and refused.records[0].total_hits == 6
    assert refused.retry_after == 0.9
    assert fits.allowed and fits.records[0].remaining == 0


def test_a_cost_above_the_limit_can_never_succeed_and_records_nothing(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("small", 2, 1)

    decision = storage.hit(identifier, [throttle], 3, 0)

    assert decision.records[0].outcome is Outcome.COST_EXCEEDS_LIMIT
    assert math.isinf(decision.retry_after) and not decision.can_succeed
    assert storage.peek(identifier, [throttle], 0, 0).records[0].total_hits == 0


def test_a_zero_cost_checks_without_counting(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("probe", 1, 1)

    for _ in range(3):
        assert storage.hit(identifier, [throttle], 0, 0).allowed

    assert storage.hit(identifier, [throttle], 1, 0).allowed
    assert not storage.hit(identifier, [throttle], 1, 0).allowed


def test_an_overflow_blocks_for_the_block_duration(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("login", 2, 1, block_duration=5)
    storage.hit(identifier, [throttle], 1, 0)
    storage.hit(identifier, [throttle], 1, 0)

    overflow = storage.hit(identifier, [throttle], 1, 100 * MS)
    still = storage.hit(identifier, [throttle], 1, 1_600 * MS)
    free = storage.hit(identifier, [throttle], 1, 5_100 * MS)

    assert overflow.records[0].outcome is Outcome.LIMIT_REACHED
    assert overflow.retry_after == 5.0
    assert still.records[0].outcome is Outcome.BLOCKED
    assert still.retry_after == 3.5
    assert still.records[0].remaining == 0
    assert free.allowed


def test_throttles_of_one_hit_admit_together_or_record_nothing(
    storage: SyncStorage, identifier: str
) -> None:
    wide = Throttle("wide", 10, 60)
    narrow = Throttle("narrow", 1, 60)
    assert storage.hit(identifier, [wide, narrow], 1, 0).allowed

    refused = storage.hit(identifier, [wide, narrow], 1, MS)

    assert not refused.allowed
    assert [r.outcome for r in refused.records] == [
        Outcome.ADMITTED,
        Outcome.LIMIT_REACHED,
    ]
    assert storage.peek(identifier, [wide], 1, 2 * MS).records[0].total_hits == 2


def test_peek_answers_as_hit_would_and_changes_nothing(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("peeked", 2, 1, block_duration=10)
    first = storage.peek(identifier, [throttle], 1, 0)
    storage.hit(identifier, [throttle], 2, 0)

    for _ in range(3):
        peeked = storage.peek(identifier, [throttle], 1, MS)
        assert peeked.records[0].outcome is Outcome.LIMIT_REACHED
        assert peeked.retry_after == 10.0

    assert (first.records[0].remaining, first.records[0].time_to_expire) == (1, 1)
    assert storage.hit(identifier, [throttle], 1, S).allowed


def test_reset_forgets_one_throttle_or_all(
    storage: SyncStorage, identifier: str
) -> None:
    first, second = Throttle("first", 1, 60), Throttle("second", 1, 60)
    storage.hit(identifier, [first, second], 1, 0)

    storage.reset(identifier, [first])

    assert storage.hit(identifier, [first], 1, MS).allowed
    assert not storage.hit(identifier, [second], 1, MS).allowed
    storage.reset(identifier)
    assert storage.hit(identifier, [first, second], 1, 2 * MS).allowed


def test_reset_of_an_unknown_identifier_does_nothing(
    storage: SyncStorage, identifier: str
) -> None:
    storage.reset(identifier)
    storage.reset(identifier, [Throttle("never", 1, 1)])


def test_similar_identifiers_have_their_own_counters(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("one", 1, 60)
    names = [f"{identifier}:A", f"{identifier}:a", f"{identifier}_a", f"{identifier}_A"]

    first = [storage.hit(name, [throttle], 1, 0).allowed for name in names]
    second = [storage.hit(name, [throttle], 1, 0).allowed for name in names]

    assert first == [True] * 4
    assert second == [False] * 4


def test_a_clock_that_steps_back_stands_still(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("steps", 1, 1)
    storage.hit(identifier, [throttle], 1, 10 * S)

    back = storage.hit(identifier, [throttle], 1, 9 * S)

    assert not back.allowed
    assert back.retry_after == 1.0


def test_a_lowered_limit_keeps_the_newest_hits(
    storage: SyncStorage, identifier: str
) -> None:
    for at_ms in range(4):
        storage.hit(identifier, [Throttle("t", 4, 10)], 1, at_ms * MS)

    lowered = storage.hit(identifier, [Throttle("t", 2, 10)], 1, 10 * MS)
    raised = storage.peek(identifier, [Throttle("t", 6, 10)], 1, 11 * MS)

    assert not lowered.allowed
    assert lowered.retry_after == 9.992
    assert raised.records[0].total_hits == 5


def test_a_raised_limit_admits_more_at_once(
    storage: SyncStorage, identifier: str
) -> None:
    storage.hit(identifier, [Throttle("t", 1, 10)], 1, 0)

    raised = storage.hit(identifier, [Throttle("t", 3, 10)], 2, MS)

    assert raised.allowed
    assert not storage.hit(identifier, [Throttle("t", 3, 10)], 1, 2 * MS).allowed


def test_many_hits_at_one_instant_all_count(
    storage: SyncStorage, identifier: str
) -> None:
    throttle = Throttle("instant", 50, 1)

    admitted = [storage.hit(identifier, [throttle], 1, S).allowed for _ in range(60)]

    assert admitted == [True] * 50 + [False] * 10
    assert storage.hit(identifier, [throttle], 1, 2 * S).allowed


def test_a_working_storage_reports_itself_healthy(storage: SyncStorage) -> None:
    health = storage.health()

    assert isinstance(health, StorageHealth)
    assert health.healthy
    assert health.backend in ("memory", "redis")
    if health.backend == "redis":
        assert (health.answers_ping, health.accepts_writes) == (True, True)
