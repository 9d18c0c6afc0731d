"""
MemoryStorage against the reference model, on random traffic.

The storage keeps one clock for all its pairs: where the clock steps back,
the model does the same (``Model(one_clock=True)``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sliding_window_throttler import ManualClock, MemoryStorage, Throttle, Throttler

from model import Model, as_verdict, spec_of

# Each test runs on the C hot path of MemoryStorage and on its Python twin.
pytestmark = pytest.mark.usefixtures("hot_path")

IDENTIFIERS = ("alice", "bob", "carol")


@dataclass(frozen=True)
class Step:
    delta_us: int
    identifier: str
    cost: int
    action: str
    """``hit``, ``peek`` or ``reset`` (of every throttle of the identifier)."""
    mask: int
    """Which throttles apply to this step, as bits; none selected means all."""


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


def _steps(actions: list[str]) -> st.SearchStrategy[list[Step]]:
    delta_us = st.one_of(
        st.just(0),
        st.integers(0, 2_000),
        st.integers(0, 6_000).map(lambda ms: ms * 1000),
    )
    cost = st.one_of(st.just(1), st.integers(0, 9))
    mask = st.one_of(st.just(0), st.integers(0, 7))
    step = st.builds(
        Step,
        delta_us,
        st.sampled_from(IDENTIFIERS),
        cost,
        st.sampled_from(actions),
        mask,
    )
    return st.lists(step, max_size=60)


def _replay(throttles: tuple[Throttle, ...], steps: list[Step]) -> None:
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    model = Model()
    now_us = 0
    for number, step in enumerate(steps):
        now_us += step.delta_us
        clock.set_us(now_us)
        chosen = [t for i, t in enumerate(throttles) if step.mask >> i & 1]
        chosen = chosen or list(throttles)
        specs = [spec_of(t) for t in chosen]
        if step.action == "reset":
            throttler.reset(step.identifier)
            model.reset(step.identifier)
            continue

        if step.action == "peek":
            got = throttler.peek(step.identifier, *chosen, cost=step.cost)
            want = model.peek(step.identifier, specs, step.cost, now_us)
        else:
            got = throttler.hit(step.identifier, *chosen, cost=step.cost)
            want = model.hit(step.identifier, specs, step.cost, now_us)

        assert as_verdict(got) == want, f"step {number}: {step} at {now_us} us"


@settings(max_examples=500, deadline=None)
@given(throttle_sets, _steps(["hit"]))
def test_hits_decide_exactly_as_the_model(
    throttles: tuple[Throttle, ...], steps: list[Step]
) -> None:
    _replay(throttles, steps)


@settings(max_examples=400, deadline=None)
@given(throttle_sets, _steps(["hit", "hit", "peek", "peek", "reset"]))
def test_peeks_match_the_models_would_be_decision_and_change_nothing(
    throttles: tuple[Throttle, ...], steps: list[Step]
) -> None:
    # Every hit after a peek checks that the peek changed nothing.
    _replay(throttles, steps)


@dataclass(frozen=True)
class Move:
    delta_us: int
    """May be negative: the clock steps back."""
    identifier: str
    version: int
    """Which definition of the throttle applies: its limit changes."""
    cost: int
    peek: bool


moves = st.lists(
    st.builds(
        Move,
        st.one_of(
            st.integers(-3_000, 3_000),
            st.integers(-2_000, 4_000).map(lambda ms: ms * 1000),
        ),
        st.sampled_from(IDENTIFIERS),
        st.integers(0, 2),
        st.one_of(st.just(1), st.integers(0, 4)),
        st.booleans(),
    ),
    max_size=80,
)


def _play_one_name(
    versions: list[Throttle], steps: list[Move], *, windows_shrink: bool = False
) -> None:
    """
    Play ``steps`` on one throttle name whose definition changes between
    them (``step.version``; never back to an earlier one if ``windows_shrink``).
    The clock jumps both ways; the model keeps one clock for all pairs, as the
    storage does.
    """
    clock = ManualClock(start_ms=10_000)
    throttler = Throttler(MemoryStorage(clock=clock))
    model = Model(one_clock=True)
    now_us = 10_000_000
    version = 0
    for number, step in enumerate(steps):
        now_us += step.delta_us
        clock.set_us(now_us)
        version = max(version, step.version) if windows_shrink else step.version
        throttle = versions[version]
        spec = [spec_of(throttle)]
        if step.peek:
            got = throttler.peek(step.identifier, throttle, cost=step.cost)
            want = model.peek(step.identifier, spec, step.cost, now_us)
        else:
            got = throttler.hit(step.identifier, throttle, cost=step.cost)
            want = model.hit(step.identifier, spec, step.cost, now_us)

        assert as_verdict(got) == want, f"step {number}: {step} at {now_us} us"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=3, max_size=3),
    st.sampled_from([1, 5, 1000, 3000]),
    st.sampled_from([0, 500, 5000]),
    moves,
)
def test_changed_limits_and_a_clock_that_steps_back_decide_as_the_model(
    limits: list[int], ttl_ms: int, block_ms: int, steps: list[Move]
) -> None:
    versions = [Throttle("api", n, ttl_ms / 1000, block_ms / 1000) for n in limits]
    _play_one_name(versions, steps)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=3, max_size=3),
    st.sampled_from([0, 500, 5000]),
    moves,
)
def test_shorter_windows_and_changed_limits_decide_as_the_model(
    limits: list[int], block_ms: int, steps: list[Move]
) -> None:
    # The window shrinks in turn (3 s, 1 s, 5 ms) while the limit changes: the
    # rings carry over. (A longer window cannot be compared: the storage
    # forgets a client idle past its old window, the model never does.)
    windows = (3, 1, 0.005)
    versions = [
        Throttle("api", n, ttl, block_ms / 1000)
        for n, ttl in zip(limits, windows, strict=True)
    ]
    _play_one_name(versions, steps, windows_shrink=True)


@pytest.mark.parametrize("limit", [33, 64, 257])
def test_long_runs_on_large_limits_decide_as_the_model(limit: int) -> None:
    # Enough hits that each ring wraps around many times, at gaps that keep
    # the window sliding.
    rng = random.Random(limit)
    throttle = Throttle("api", limit, 1)
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    model = Model()
    now_us = 0
    for number in range(20 * limit):
        now_us += rng.choice([0, 1, 500, 3_000, 9_000, 40_000])
        clock.set_us(now_us)
        got = throttler.hit("one", throttle)
        want = model.hit("one", [spec_of(throttle)], 1, now_us)
        assert as_verdict(got) == want, f"hit {number} at {now_us} us"


@pytest.mark.parametrize("limits", [(2, 3), (7, 33), (64, 5)])
def test_long_runs_of_two_throttles_and_costs_decide_as_the_model(
    limits: tuple[int, int],
) -> None:
    # Hits on two throttles at once, with costs, wrap both rings many times
    # through the general path (the one-throttle shortcut is not taken).
    rng = random.Random(sum(limits))
    throttles = [Throttle("a", limits[0], 1), Throttle("b", limits[1], 0.25)]
    specs = [spec_of(t) for t in throttles]
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    model = Model()
    now_us = 0
    for number in range(40 * max(limits)):
        now_us += rng.choice([0, 1, 500, 3_000, 9_000, 40_000, 120_000])
        clock.set_us(now_us)
        cost = rng.choice([1, 1, 1, 0, 2, 3])
        got = throttler.hit("one", *throttles, cost=cost)
        want = model.hit("one", specs, cost, now_us)
        assert as_verdict(got) == want, f"hit {number} at {now_us} us"


@pytest.mark.parametrize("seed", range(4))
def test_long_runs_with_limits_changing_under_one_name_decide_as_the_model(
    seed: int,
) -> None:
    # Rings wrap, shrink and grow again as the limit of one name changes
    # between hits (windows shrink only: see the test of shorter windows).
    rng = random.Random(seed)
    windows = sorted(rng.sample([0.002, 0.01, 0.05, 0.2], 3), reverse=True)
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    model = Model(one_clock=True)
    now_us = 0
    for number in range(3_000):
        now_us += rng.choice([0, 1, 500, 2_000, 9_000])
        clock.set_us(now_us)
        ttl = windows[min(number // 1_000, 2)]
        throttle = Throttle("api", rng.choice([1, 2, 3, 5, 8]), ttl)
        cost = rng.choice([1, 1, 1, 0, 2, 4])
        got = throttler.hit("one", throttle, cost=cost)
        want = model.hit("one", [spec_of(throttle)], cost, now_us)
        assert as_verdict(got) == want, f"hit {number} at {now_us} us: {throttle}"
