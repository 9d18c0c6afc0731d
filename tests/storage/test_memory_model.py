"""
MemoryStorage against the reference model, on random traffic.

Times only move forward here: the storage keeps one clock for all its pairs,
the model one per pair, and they agree exactly when time never steps back
(``test_memory.py`` checks the storage's backwards clock on its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from sliding_window_throttler import ManualClock, MemoryStorage, Throttle, Throttler

from model import Model, as_verdict, spec_of

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
