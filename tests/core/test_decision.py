"""The answer to a hit: ``ThrottleRecord``, ``Decision``, ``Outcome``."""

from __future__ import annotations

import copy
import math
import pickle

from sliding_window_throttler import Decision, Outcome, ThrottleRecord
from sliding_window_throttler.core.decision import make_decision

A = Outcome.ADMITTED
FULL = Outcome.LIMIT_REACHED


def _record(
    name: str, remaining: int, expire: int, retry: float = 0.0
) -> ThrottleRecord:
    refused = retry > 0
    return ThrottleRecord(
        name=name,
        limit=10,
        total_hits=10 - remaining,
        remaining=remaining,
        time_to_expire=expire,
        is_blocked=refused,
        time_to_block_expire=math.ceil(retry) if refused else -1,
        retry_after=retry,
        outcome=FULL if refused else A,
    )


def test_outcomes_have_stable_string_values() -> None:
    assert [o.value for o in Outcome] == [
        "admitted",
        "limit_reached",
        "blocked",
        "cost_exceeds_limit",
        "capacity",
    ]


def test_record_fields_come_in_the_documented_order() -> None:
    record = ThrottleRecord("api", 3, 4, 0, 1, True, 1, 0.001, FULL)

    assert (
        record.name,
        record.limit,
        record.total_hits,
        record.remaining,
        record.time_to_expire,
        record.is_blocked,
        record.time_to_block_expire,
        record.retry_after,
        record.outcome,
    ) == ("api", 3, 4, 0, 1, True, 1, 0.001, FULL)


def test_limiting_record_of_an_allowed_hit_has_the_least_remaining() -> None:
    roomy = _record("sustained", remaining=90, expire=60)
    tight = _record("burst", remaining=2, expire=1)

    assert Decision(True, (roomy, tight), 0.0).limiting is tight


def test_limiting_ties_on_remaining_go_to_the_longest_expiry() -> None:
    soon = _record("burst", remaining=2, expire=1)
    late = _record("sustained", remaining=2, expire=60)

    assert Decision(True, (soon, late), 0.0).limiting is late


def test_limiting_record_of_a_refused_hit_has_the_longest_wait() -> None:
    short = _record("burst", remaining=0, expire=1, retry=0.5)
    long = _record("sustained", remaining=0, expire=9, retry=8.5)

    assert Decision(False, (short, long), 8.5).limiting is long


def test_can_succeed_is_false_only_for_an_infinite_wait() -> None:
    record = _record("api", remaining=0, expire=1, retry=0.5)

    assert Decision(False, (record,), 0.5).can_succeed
    assert not Decision(False, (record,), math.inf).can_succeed
    assert Decision(True, (record,), 0.0).can_succeed


def test_as_degraded_marks_a_copy_and_keeps_the_answer() -> None:
    record = _record("api", remaining=3, expire=1)
    decision = Decision(True, (record,), 0.0)

    degraded = decision.as_degraded("fail-open")

    assert (degraded.allowed, degraded.records, degraded.retry_after) == (
        True,
        (record,),
        0.0,
    )
    assert (degraded.degraded, degraded.strategy) == (True, "fail-open")
    assert (decision.degraded, decision.strategy) == (False, None)


def test_decisions_compare_by_value() -> None:
    record = _record("api", remaining=3, expire=1)

    assert Decision(True, [record], 0.0) == Decision(True, (record,), 0.0)
    assert Decision(True, (record,), 0.0) != Decision(True, (record,), 0.0).as_degraded(
        "local"
    )


def test_a_decision_from_raw_numbers_copies_and_pickles_equal() -> None:
    raw = ("api", 5, Outcome.LIMIT_REACHED, 5, 1, 2_500_000, 2_500_000, False, False)
    decision = make_decision((raw,), False, 2.5)
    degraded = decision.as_degraded("local")

    for made in (decision, degraded):
        copies = [
            copy.copy(made),
            copy.deepcopy(made),
            pickle.loads(pickle.dumps(made)),
        ]
        assert all(c == made and c.records == made.records for c in copies)

    assert pickle.loads(pickle.dumps(degraded)).strategy == "local"
