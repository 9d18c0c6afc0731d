"""
Redis decides exactly as ``MemoryStorage`` and the reference model.

Random traffic with explicit, non-decreasing times goes to a Redis storage, a
``MemoryStorage`` and ``tests/model.py``; every decision must be equal, field
by field. A second property drives one pair through changing limits and
windows, large limits (the ring wraps, the binary search runs deep) and resets,
against ``MemoryStorage`` (the model does not define changing throttles).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from contract_storages import SyncStorage, make_storage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sliding_window_throttler import ManualClock, MemoryStorage, Throttle

from model import Model, as_verdict, spec_of
from simulated_expiry import forget_as_memory_does

pytestmark = pytest.mark.redis

IDENTIFIERS = ("alice", "bob", "carol")
PARITY = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

_examples = itertools.count()


@dataclass(frozen=True)
class Step:
    delta_us: int
    identifier: str
    cost: int
    peek: bool


def _throttle(index: int) -> st.SearchStrategy[Throttle]:
    return st.builds(
        Throttle,
        name=st.just(f"t{index}"),
        limit=st.integers(1, 8),
        ttl=st.one_of(
            st.integers(1, 20), st.integers(1, 5000), st.sampled_from([1000, 5000])
        ).map(lambda ms: ms / 1000),
        block_duration=st.one_of(
            st.just(0), st.integers(1, 10_000).map(lambda ms: ms / 1000)
        ),
    )


throttle_sets = st.integers(1, 3).flatmap(
    lambda n: st.tuples(*(_throttle(i) for i in range(n)))
)
deltas = st.one_of(
    st.just(0), st.integers(0, 2_000), st.integers(0, 6_000).map(lambda ms: ms * 1000)
)
steps = st.lists(
    st.builds(
        Step,
        deltas,
        st.sampled_from(IDENTIFIERS),
        st.one_of(st.just(1), st.integers(0, 9)),
        st.booleans(),
    ),
    max_size=60,
)


@pytest.fixture(params=["redis", "redis-evalsha", "redis-cluster", "redis-async"])
def redis_storage(request: pytest.FixtureRequest) -> Iterator[SyncStorage]:
    storage = make_storage(request.param, request)
    yield storage
    storage.close()


@PARITY
@given(throttles=throttle_sets, steps=steps, start_us=st.sampled_from([0, 1 << 50]))
def test_redis_decides_as_memory_and_the_model(
    redis_storage: SyncStorage,
    throttles: tuple[Throttle, ...],
    steps: list[Step],
    start_us: int,
) -> None:
    example = next(_examples)
    memory = MemoryStorage(clock=ManualClock())
    model = Model()
    specs = [spec_of(t) for t in throttles]
    now_us = start_us
    for number, step in enumerate(steps):
        now_us += step.delta_us
        identifier = f"{example}:{step.identifier}"
        if step.peek:
            got = redis_storage.peek(identifier, throttles, step.cost, now_us)
            expected = memory.peek(identifier, throttles, step.cost, now_us)
            modelled = model.peek(identifier, specs, step.cost, now_us)
        else:
            got = redis_storage.hit(identifier, throttles, step.cost, now_us)
            expected = memory.hit(identifier, throttles, step.cost, now_us)
            modelled = model.hit(identifier, specs, step.cost, now_us)

        where = f"step {number}: {step} at {now_us} us"
        assert as_verdict(got) == modelled, where
        assert got == expected, where


@dataclass(frozen=True)
class PairStep:
    delta_us: int
    variant: int
    cost: int
    action: str


def _variants(limits: list[int]) -> st.SearchStrategy[list[Throttle]]:
    # Few limits, so that variants often share one and only the window or the
    # block changes: the ring is then kept, not rebuilt.
    return st.lists(
        st.builds(
            Throttle,
            name=st.just("t"),
            limit=st.sampled_from(limits),
            ttl=st.sampled_from([0.005, 0.05, 1, 30]),
            block_duration=st.sampled_from([0, 0, 0.02, 2]),
        ),
        min_size=1,
        max_size=3,
    )


variants = st.lists(
    st.one_of(st.integers(1, 5), st.integers(1, 300)), min_size=1, max_size=2
).flatmap(_variants)
pair_steps = st.lists(
    st.builds(
        PairStep,
        st.one_of(st.just(0), st.integers(0, 3_000), st.integers(0, 40_000)),
        st.integers(0, 2),
        st.one_of(st.just(1), st.integers(0, 40), st.integers(0, 310)),
        st.sampled_from(["hit"] * 12 + ["peek", "reset"]),
    ),
    max_size=120,
)


@settings(PARITY, max_examples=200)
@given(variants=variants, steps=pair_steps)
def test_changing_limits_windows_and_resets_decide_as_memory(
    redis_storage: SyncStorage, variants: list[Throttle], steps: list[PairStep]
) -> None:
    identifier = f"{next(_examples)}:pair"
    memory = MemoryStorage(clock=ManualClock())
    now_us = 0
    for number, step in enumerate(steps):
        now_us += step.delta_us
        throttles = [variants[step.variant % len(variants)]]
        if step.action == "reset":
            redis_storage.reset(identifier)
            memory.reset(identifier)
            continue

        forget_as_memory_does(memory, redis_storage, identifier, throttles, now_us)
        if step.action == "peek":
            got = redis_storage.peek(identifier, throttles, step.cost, now_us)
            expected = memory.peek(identifier, throttles, step.cost, now_us)
        else:
            got = redis_storage.hit(identifier, throttles, step.cost, now_us)
            expected = memory.hit(identifier, throttles, step.cost, now_us)

        assert got == expected, f"step {number}: {step} {throttles[0]} at {now_us} us"
