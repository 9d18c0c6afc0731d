"""The local fallback: per-process limits while the storage fails."""

from __future__ import annotations

import math

import pytest
from recovery_fakes import refused

from sliding_window_throttler import (
    AsyncMemoryStorage,
    ManualClock,
    MemoryStorage,
    Throttle,
)
from sliding_window_throttler.errors import ConfigurationError, SecurityViolationError
from sliding_window_throttler.recovery import LocalFallback, RecoveryContext

API = Throttle("api", 10, 60, block_duration=30)


def decide(fallback: LocalFallback, operation: str = "hit") -> bool:
    context = RecoveryContext("c", (API,), operation=operation)  # type: ignore[arg-type]
    result = fallback.recover(refused(), context)
    assert result.recovered and result.degraded
    assert result.decision is not None
    assert result.decision.degraded and result.decision.strategy == "local"
    return result.decision.allowed


def test_enforces_the_limit_in_process() -> None:
    fallback = LocalFallback(clock=ManualClock())

    allowed = [decide(fallback) for _ in range(12)]

    assert allowed == [True] * 10 + [False] * 2


def test_divides_the_limit_by_the_app_servers_rounding_up() -> None:
    fallback = LocalFallback(app_servers=4, clock=ManualClock())

    allowed = [decide(fallback) for _ in range(4)]

    assert allowed == [True, True, True, False]
    (local,) = fallback.local_throttles((API,))
    assert (local.name, local.limit, local.ttl_ms, local.block_duration_ms) == (
        "api",
        3,
        60_000,
        30_000,
    )


@pytest.mark.parametrize(
    ("limit", "app_servers", "each"),
    [(5, 3, 2), (10, 4, 3), (10, 5, 2), (2, 3, 1), (1, 3, 1), (100, 1, 100)],
)
def test_the_servers_together_admit_at_least_the_global_limit(
    limit: int, app_servers: int, each: int
) -> None:
    fallback = LocalFallback(app_servers=app_servers)

    (local,) = fallback.local_throttles((Throttle("api", limit, 60),))

    assert local.limit == each
    assert limit <= each * app_servers < limit + app_servers


def test_a_cost_above_the_share_but_within_the_limit_takes_the_whole_share() -> None:
    # Limit 10 over 4 servers is 3 each: a cost of 5 fits the limit, so it
    # must be able to succeed (never cost_exceeds_limit), using the share.
    clock = ManualClock()
    fallback = LocalFallback(app_servers=4, clock=clock)
    plain = Throttle("api", 10, 60)

    def hit(cost: int) -> tuple[bool, str, float, int, int, int]:
        decision = fallback.decide("hit", "c", (plain,), cost, None)
        record = decision.records[0]
        outcome, retry = str(record.outcome), decision.retry_after
        # The share is the limit reported, whatever the cost.
        return decision.allowed, outcome, retry, record.limit, *record[2:4]

    # (allowed, outcome, retry_after, limit, total_hits, remaining)
    assert hit(5) == (True, "admitted", 0.0, 3, 5, 0)
    clock.advance(1)
    assert hit(5) == (False, "limit_reached", 59.0, 3, 10, 0)
    assert hit(1) == (False, "limit_reached", 59.0, 3, 4, 0)
    assert hit(11) == (False, "cost_exceeds_limit", math.inf, 3, 14, 0)
    clock.advance(59)
    assert hit(5) == (True, "admitted", 0.0, 3, 5, 0)


def test_a_cost_above_one_share_still_counts_whole_in_the_others() -> None:
    # burst 10/s is 3 a server, sustained 100/min 25: hits of cost 5 pass
    # burst while its share is unused, and sustained counts all 5 of each.
    clock = ManualClock()
    fallback = LocalFallback(app_servers=4, clock=clock)
    burst, sustained = Throttle("burst", 10, 1), Throttle("sustained", 100, 60)

    admitted = []
    for second in range(60):
        clock.set_ms(second * 1000)
        decision = fallback.decide("hit", "c", (burst, sustained), 5, None)
        admitted.append(decision.allowed)

    assert admitted == [True] * 5 + [False] * 55
    assert decision.records[1].total_hits == 30  # 25 counted, and this hit's 5


def test_keeps_at_least_one_hit_per_window() -> None:
    fallback = LocalFallback(app_servers=100)

    assert fallback.local_throttles((API,))[0].limit == 1


def test_peek_records_nothing() -> None:
    fallback = LocalFallback(app_servers=10, clock=ManualClock())

    assert [decide(fallback, "peek") for _ in range(3)] == [True] * 3
    assert decide(fallback)
    assert not decide(fallback)


def test_reset_forgets_local_hits() -> None:
    fallback = LocalFallback(app_servers=10, storage=MemoryStorage(clock=ManualClock()))
    decide(fallback)

    fallback.reset("c", (API,))

    assert decide(fallback)
    assert fallback.stats().pairs == 1


def test_recovers_storage_errors_only() -> None:
    fallback = LocalFallback()

    assert fallback.can_recover(refused())
    assert not fallback.can_recover(SecurityViolationError("x", "y"))


@pytest.mark.parametrize("app_servers", [0, -1, 1.5, True])
def test_refuses_bad_app_servers(app_servers: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        LocalFallback(app_servers=app_servers)  # type: ignore[arg-type]

    assert info.value.field == "app_servers"


@pytest.mark.parametrize(
    ("storage", "shown"),
    [
        (AsyncMemoryStorage(), "an instance of AsyncMemoryStorage"),
        (MemoryStorage, "the class MemoryStorage: write MemoryStorage(...)"),
        ("x", "'x'"),
    ],
)
def test_a_storage_that_is_no_memory_storage_is_refused_at_once(
    storage: object, shown: str
) -> None:
    # Refused when the strategy is made, not in the middle of an outage.
    with pytest.raises(ConfigurationError) as caught:
        LocalFallback(storage=storage)  # type: ignore[arg-type]

    assert caught.value.field == "storage"
    assert caught.value.message == f"LocalFallback takes a MemoryStorage, got {shown}"


def test_options_beside_a_storage_are_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        LocalFallback(storage=MemoryStorage(), max_pairs=10)

    assert caught.value.message == (
        "give LocalFallback a storage or the options of a new one, not both: "
        "the storage keeps its own (max_pairs given)"
    )
