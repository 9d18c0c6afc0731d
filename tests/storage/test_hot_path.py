"""
The C hot path of MemoryStorage (storage/_hot_path.c) where it differs from
its Python twin: what it hands back to Python, its lock, its errors.

The decisions themselves are checked on both paths by the memory, model and
facade tests (the ``hot_path`` fixture runs each of them twice).
"""

from __future__ import annotations

import copy
import gc
import math
import pickle
import subprocess
import sys
import weakref
from typing import Any

import pytest

from sliding_window_throttler import (
    ConfigurationError,
    Decision,
    KeyGenerationError,
    ManualClock,
    MemoryStorage,
    Outcome,
    Throttle,
    Throttler,
    ThrottleRecord,
)
from sliding_window_throttler.storage import memory

# On the C path, whatever SWT_NO_EXTENSIONS says (it fails when not built).
pytestmark = pytest.mark.usefixtures("c_path")

API = Throttle("api", 3, 1)


@pytest.mark.parametrize(
    ("value", "hot_path"),
    [("1", "python"), ("yes", "python"), ("0", "c"), ("false", "c"), ("", "c")],
)
def test_swt_no_extensions_chooses_the_path(value: str, hot_path: str) -> None:
    # Unset or "no", a process decides in C: the extension is built.
    shown = subprocess.run(
        [sys.executable, "-c", _SHOW_HOT_PATH],
        env={"SWT_NO_EXTENSIONS": value},
        capture_output=True,
        text=True,
        check=True,
    )

    assert shown.stdout.split() == [hot_path, str(hot_path == "c")]
    assert shown.stderr == ""


def test_an_unknown_swt_no_extensions_is_taken_as_yes_with_a_warning() -> None:
    # Read at import: a typo must not stop the import, nor swt --help.
    shown = subprocess.run(
        [sys.executable, "-c", _SHOW_HOT_PATH],
        env={"SWT_NO_EXTENSIONS": "maybe"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert shown.stdout.split() == ["python", "False"]
    assert (
        "RuntimeWarning: SWT_NO_EXTENSIONS='maybe' is none of 1, true, yes, on, "
        "0, false, no, off: taken as yes"
    ) in shown.stderr


_SHOW_HOT_PATH = """
from sliding_window_throttler import MemoryStorage, throttler
print(MemoryStorage().hot_path, throttler._decide_hit is not throttler.hit_in_python)
"""


def test_exact_decisions_on_the_hot_path() -> None:
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    got = []
    for ms in (0, 0, 0, 999, 1000, 1001):
        clock.set_ms(ms)
        decision = throttler.hit("203.0.113.7", API)
        got.append((decision.allowed, decision.retry_after))

    assert got == [
        (True, 0.0),
        (True, 0.0),
        (True, 0.0),
        (False, 0.001),
        (True, 0.0),
        (True, 0.0),
    ]


def test_records_of_a_hot_path_decision() -> None:
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    throttler.hit("a", API)
    clock.set_ms(400)
    second = throttler.hit("a", API)
    throttler.hit("a", API)
    refused = throttler.hit("a", API)

    # The oldest hit leaves in 600 ms: 1 s, rounded up.
    assert second.records[0] == ThrottleRecord(
        name="api",
        limit=3,
        total_hits=2,
        remaining=1,
        time_to_expire=1,
        is_blocked=False,
        time_to_block_expire=-1,
        retry_after=0.0,
        outcome=Outcome.ADMITTED,
    )
    assert refused.records[0] == ThrottleRecord(
        name="api",
        limit=3,
        total_hits=4,
        remaining=0,
        time_to_expire=1,
        is_blocked=True,
        time_to_block_expire=1,
        retry_after=0.6,
        outcome=Outcome.LIMIT_REACHED,
    )
    assert (refused.allowed, refused.retry_after) == (False, 0.6)
    assert (refused.degraded, refused.strategy) == (False, None)


def test_a_hot_path_decision_copies_pickles_and_compares() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    decision = throttler.hit("a", API)

    assert isinstance(decision, Decision)
    assert pickle.loads(pickle.dumps(decision)) == decision
    assert copy.deepcopy(decision) == decision
    assert decision.as_degraded("local").degraded


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda t: t.hit(7, API), KeyGenerationError, None),
        (lambda t: t.hit("", API), KeyGenerationError, None),
        (lambda t: t.hit("x" * 65_537, API), KeyGenerationError, None),
        (lambda t: t.hit("a", API, cost=True), ConfigurationError, "cost"),
        (lambda t: t.hit("a", API, cost=1.0), ConfigurationError, "cost"),
        (lambda t: t.hit("a", API, cost=-1), ConfigurationError, "cost"),
        (lambda t: t.hit("a", API, cost=2**52 + 1), ConfigurationError, "cost"),
        (lambda t: t.hit("a"), ConfigurationError, "throttles"),
        (lambda t: t.hit("a", "api"), ConfigurationError, "throttles"),
        (lambda t: t.hit("a", API, API), ConfigurationError, "throttles"),
        (lambda t: t.hit("a", API, now_ms="soon"), ConfigurationError, "now_ms"),
    ],
)
def test_calls_off_the_plain_path_get_the_checks_of_throttler_hit(
    call: Any, error: type[Exception], field: str | None
) -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    with pytest.raises(error) as caught:
        call(throttler)

    if field is not None:
        assert caught.value.field == field  # type: ignore[attr-defined]


def test_an_unknown_keyword_is_a_type_error_naming_it() -> None:
    throttler = Throttler(MemoryStorage())
    with pytest.raises(TypeError, match="'costs'"):
        throttler.hit("a", API, costs=1)  # type: ignore[call-arg]


def test_calls_off_the_plain_path_are_decided_by_the_python_method() -> None:
    class Address(str):
        pass

    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    other = Throttle("other", 1, 1)

    # A str subclass, two throttles, an explicit time, a keyword cost: each
    # counts in the same windows as the plain calls.
    assert throttler.hit(Address("a"), API).allowed
    assert throttler.hit("a", API, other).allowed
    assert throttler.hit("a", API, cost=1, now_ms=None).allowed
    refused = throttler.hit("a", API, now_ms=0)
    assert (refused.allowed, refused.retry_after) == (False, 1.0)
    assert throttler.hit("a", API, cost=0).allowed  # reads, asks for no room


def test_a_throttler_subclass_keeps_its_own_hit() -> None:
    class Counting(Throttler):
        calls = 0

        def hit(self, *args: Any, **kwargs: Any) -> Decision:
            Counting.calls += 1
            return super().hit(*args, **kwargs)

    throttler = Counting(MemoryStorage())
    assert throttler.hit("a", API).allowed
    assert Counting.calls == 1


def test_a_memory_storage_subclass_is_served_by_its_own_methods() -> None:
    class Refusing(MemoryStorage):
        def hit(self, *args: Any, **kwargs: Any) -> Decision:
            return Decision(False, (), 5.0)

    throttler = Throttler(Refusing())
    assert throttler.hit("a", API).retry_after == 5.0
    assert throttler.hit("a", API, now_ms=1).retry_after == 5.0


class Recording:
    """A storage of its own: it records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def hit(self, *args: object) -> Decision:
        self.calls.append(args)
        return Decision(True, (), 0.0)

    def peek(self, *args: object) -> Decision:
        return Decision(True, (), 0.0)

    def reset(self, *args: object) -> None:
        pass

    def close(self) -> None:
        pass


def test_any_other_storage_gets_the_calls_throttler_hit_would_make() -> None:
    storage = Recording()
    throttler = Throttler(storage, resilient=False)  # type: ignore[arg-type]
    other = Throttle("other", 1, 1)

    throttler.hit("a", API)
    throttler.hit("a", API, cost=3)
    throttler.hit("a", API, now_ms=2.5)
    throttler.hit("a", API, other)
    with pytest.raises(KeyGenerationError):
        throttler.hit("", API)

    assert storage.calls == [
        ("a", (API,), 1, None),
        ("a", (API,), 3, None),
        ("a", (API,), 1, 2500),
        ("a", (API, other), 1, None),
    ]


def test_a_throttler_and_its_hot_path_are_collected() -> None:
    throttler = Throttler(MemoryStorage())
    throttler.hit("a", API)
    ref = weakref.ref(throttler)
    storage_ref = weakref.ref(throttler.storage)

    del throttler
    gc.collect()

    assert ref() is None
    assert storage_ref() is None


class FlakyClock:
    """A clock that raises when told to, and may return odd values."""

    def __init__(self) -> None:
        self.now: object = 0
        self.fail = False

    def now_us(self) -> object:
        if self.fail:
            raise OSError("the clock broke")
        return self.now


def test_an_error_of_the_clock_reaches_the_caller_and_frees_the_lock() -> None:
    clock = FlakyClock()
    storage = MemoryStorage(clock=clock)  # type: ignore[arg-type]
    throttler = Throttler(storage)
    clock.fail = True
    with pytest.raises(OSError, match="the clock broke"):
        throttler.hit("a", API)

    clock.fail = False
    assert throttler.hit("a", API).allowed  # the lock was released
    assert storage.stats().pairs == 1


def test_an_error_in_a_python_step_frees_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = MemoryStorage(clock=ManualClock())
    throttler = Throttler(storage)

    def broken(*args: Any) -> None:
        raise RuntimeError("no room today")

    with monkeypatch.context() as patch:
        patch.setattr(MemoryStorage, "_record", broken)
        with pytest.raises(RuntimeError, match="no room today"):
            throttler.hit("a", API)  # a new pair: recorded by _record

    assert throttler.hit("a", API).allowed
    assert throttler.hit("a", API).records[0].total_hits == 2


def test_explicit_times_on_the_storage_take_the_hot_path() -> None:
    storage = MemoryStorage(clock=ManualClock())
    throttle = Throttle("one", 1, 1)
    got = [storage.hit("a", (throttle,), 1, us).allowed for us in (0, 999_999)]
    got.append(storage.hit("a", (throttle,), 1, 1_000_000).allowed)

    assert got == [True, False, True]


def test_a_storage_subclass_is_decided_in_python_whatever_its_slots() -> None:
    # A subclass may declare a slot of its own under a base slot's name: its
    # value then lies elsewhere than where the C path reads.
    class Moved(MemoryStorage):
        __slots__ = ("_high_water",)

    storage = Moved(clock=ManualClock())
    decisions = [storage.hit("a", (API,), 1).allowed for _ in range(4)]

    assert decisions == [True, True, True, False]
    with pytest.raises(TypeError, match=r"needs a \S*MemoryStorage, got object"):
        memory._hot_path.hit_one(object(), "a", API, 1)  # type: ignore[union-attr]


def test_a_reloaded_memory_module_leaves_older_storages_working() -> None:
    # The C path is bound to the classes of the last import; a storage of an
    # earlier one is decided in Python. (In a process of its own: a reload
    # replaces the module's classes for everything imported later.)
    script = """
import importlib
from sliding_window_throttler import ManualClock, MemoryStorage, Throttle, Throttler
from sliding_window_throttler.storage import memory
older = MemoryStorage(clock=ManualClock())
throttler = Throttler(older)
importlib.reload(memory)
api = Throttle("api", 3, 1)
hits = [throttler.hit("a", api).allowed for _ in range(4)]
print(hits, older.hit("b", (api,), 1).allowed)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert done.stdout.split("\n")[0] == "[True, True, True, False] True"


@pytest.mark.parametrize("limit", [-(10**6), -5, 0])
def test_a_throttle_forced_out_of_shape_is_left_to_python(limit: int) -> None:
    # A frozen Throttle can still be forced (object.__setattr__, a crafted
    # pickle): the C path must not index the ring with its numbers.
    storage = MemoryStorage(clock=ManualClock())
    throttle = Throttle("t", 3, 1)
    for _ in range(3):
        storage.hit("a", (throttle,), 1)

    object.__setattr__(throttle, "limit", limit)
    refused = storage.hit("a", (throttle,), 1)

    assert refused.records[0].outcome is Outcome.COST_EXCEEDS_LIMIT


def test_a_bad_binding_is_refused_and_the_one_in_force_stays() -> None:
    assert memory._hot_path is not None

    class Loose:  # no __slots__: nothing at fixed offsets
        pass

    with pytest.raises(TypeError, match="_lock"):
        memory._hot_path.bind(
            Loose,
            memory._Pair,
            Throttle,
            memory._Built,
            Outcome.ADMITTED,
            Outcome.LIMIT_REACHED,
            memory.checked_time,
            1,
            1,
            1,
        )

    with pytest.raises(TypeError, match="must be a class"):
        memory._hot_path.bind(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)

    assert Throttler(MemoryStorage()).hit("a", API).allowed


def test_retry_after_is_the_exact_wait_in_seconds() -> None:
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    throttle = Throttle("t", 1, "7ms")
    throttler.hit("a", throttle)
    clock.set_us(1)

    refused = throttler.hit("a", throttle)
    assert refused.retry_after == 6_999 / 1_000_000
    assert not math.isinf(refused.retry_after)
