"""The window arithmetic: ``judge``, ``make_record``, ``combine``, by hand."""

from __future__ import annotations

import math

import pytest

from sliding_window_throttler.core.decision import Outcome, ThrottleRecord
from sliding_window_throttler.core.sliding_window import (
    NEVER,
    ceil_seconds,
    combine,
    judge,
    make_record,
)

SECOND = 1_000_000
A = Outcome.ADMITTED
FULL = Outcome.LIMIT_REACHED
BLOCKED = Outcome.BLOCKED

# (times, blocked_until, now, limit, ttl, cost[, head])
#   -> (outcome, in_window, wait, expires_in)
JUDGEMENTS = [
    # An empty pair admits.
    (([], 0, 0, 3, SECOND, 1), (A, 0, 0, 0)),
    # Three hits at 0 fill 3/s until they leave at exactly 1 s.
    (([0, 0, 0], 0, 999_000, 3, SECOND, 1), (FULL, 3, 1_000, 1_000)),
    (([0, 0, 0], 0, 999_999, 3, SECOND, 1), (FULL, 3, 1, 1)),
    (([0, 0, 0], 0, SECOND, 3, SECOND, 1), (A, 0, 0, 0)),
    # Cost 2 waits for the second oldest: 500 ms + 1 s - 700 ms.
    (([0, 500_000, 600_000], 0, 700_000, 3, SECOND, 2), (FULL, 3, 800_000, 300_000)),
    # Cost 2 fits once the oldest of two has left.
    (([0, 500_000], 0, SECOND, 3, SECOND, 2), (A, 1, 0, 500_000)),
    # A lowered limit: only the newest two of four count.
    (([0, 1, 2, 3], 0, 10, 2, SECOND, 1), (FULL, 2, 2 + SECOND - 10, SECOND - 8)),
    # A block that has not ended refuses even an empty window.
    (([], 5 * SECOND, SECOND, 3, SECOND, 1), (BLOCKED, 0, 4 * SECOND, 0)),
    # A block that ends at now no longer holds.
    (([], SECOND, SECOND, 3, SECOND, 1), (A, 0, 0, 0)),
    # A block shorter than the full window waits for the window.
    (([0, 0], 200_000, 100_000, 2, SECOND, 1), (BLOCKED, 2, 900_000, 900_000)),
    # Cost 0 is admitted on a full window, refused under a block.
    (([0, 0], 0, 1, 2, SECOND, 0), (A, 2, 0, SECOND - 1)),
    (([0, 0], 10, 1, 2, SECOND, 0), (BLOCKED, 2, 9, SECOND - 1)),
    # A cost above the limit can never succeed, blocked or not.
    (([], 0, 0, 3, SECOND, 4), (Outcome.COST_EXCEEDS_LIMIT, 0, NEVER, 0)),
    (([0], SECOND, 0, 3, SECOND, 4), (Outcome.COST_EXCEEDS_LIMIT, 1, NEVER, SECOND)),
    # A 1 us window: a hit leaves one microsecond after it was made.
    (([5], 0, 5, 1, 1, 1), (FULL, 1, 1, 1)),
    (([5], 0, 6, 1, 1, 1), (A, 0, 0, 0)),
    # A wrapped ring: oldest at the head (index 2), newest just before it.
    (([7, 8, 3, 4], 0, 9, 4, SECOND, 1, 2), (FULL, 4, SECOND - 6, SECOND - 6)),
    (([7, 8, 3, 4], 0, SECOND + 3, 4, SECOND, 1, 2), (A, 3, 0, 1)),
    (([7, 8, 3, 4], 0, SECOND + 7, 4, SECOND, 2, 2), (A, 1, 0, 1)),
    (([7, 8, 3, 4], 0, SECOND + 5, 4, SECOND, 3, 2), (FULL, 2, 2, 2)),
    # A wrapped ring under a lowered limit: its newest two are 7 and 8.
    (([7, 8, 3, 4], 0, 9, 2, SECOND, 1, 2), (FULL, 2, SECOND - 2, SECOND - 2)),
    (([7, 8, 3, 4], 0, SECOND + 7, 2, SECOND, 1, 2), (A, 1, 0, 1)),
]


@pytest.mark.parametrize(("arguments", "expected"), JUDGEMENTS)
def test_judge_applies_the_decision_contract(
    arguments: tuple[int | list[int], ...],
    expected: tuple[Outcome, int, int, int],
) -> None:
    assert judge(*arguments) == expected


@pytest.mark.parametrize(
    ("us", "seconds"),
    [(0, 0), (1, 1), (999_999, 1), (SECOND, 1), (SECOND + 1, 2), (90 * SECOND, 90)],
)
def test_ceil_seconds_rounds_up(us: int, seconds: int) -> None:
    assert ceil_seconds(us) == seconds


def test_record_of_a_recorded_hit() -> None:
    record = make_record("api", 3, A, 1, 1, 0, 900_000, True)

    assert record == ThrottleRecord("api", 3, 2, 1, 1, False, -1, 0.0, A)


def test_record_of_an_admitted_but_unrecorded_hit_keeps_remaining() -> None:
    # Another throttle refused: this one admitted, but nothing was recorded.
    record = make_record("api", 3, A, 1, 1, 0, 900_000, False)

    assert (record.total_hits, record.remaining, record.is_blocked) == (2, 2, False)


def test_record_of_a_full_window() -> None:
    record = make_record("api", 3, FULL, 3, 1, 1_000, 1_000, False)

    assert record == ThrottleRecord("api", 3, 4, 0, 1, True, 1, 0.001, FULL)


def test_record_of_a_blocked_pair_has_nothing_remaining() -> None:
    record = make_record("login", 5, BLOCKED, 1, 1, 2_500_000, 0, False)

    assert record == ThrottleRecord("login", 5, 2, 0, 0, True, 3, 2.5, BLOCKED)


def test_record_of_a_cost_that_never_fits() -> None:
    record = make_record("api", 3, Outcome.COST_EXCEEDS_LIMIT, 0, 4, NEVER, 0, False)

    assert record.retry_after == math.inf
    assert record.time_to_block_expire == -1
    assert (record.total_hits, record.remaining, record.is_blocked) == (4, 3, True)


def test_combine_allows_only_when_every_throttle_admitted() -> None:
    admitted = make_record("burst", 10, A, 0, 1, 0, 0, True)
    refused = make_record("sustained", 100, FULL, 100, 1, 8_500_000, 0, False)
    short = make_record("other", 1, FULL, 1, 1, 500_000, 0, False)

    both = combine([admitted, admitted])
    one_refuses = combine([admitted, refused, short])

    assert (both.allowed, both.retry_after) == (True, 0.0)
    assert (one_refuses.allowed, one_refuses.retry_after) == (False, 8.5)
    assert one_refuses.records == (admitted, refused, short)


def test_combine_with_a_cost_that_never_fits_waits_forever() -> None:
    never = make_record("api", 3, Outcome.COST_EXCEEDS_LIMIT, 0, 4, NEVER, 0, False)
    full = make_record("other", 5, FULL, 5, 4, 1_000, 0, False)

    decision = combine([full, never])

    assert decision.retry_after == math.inf
    assert not decision.can_succeed
