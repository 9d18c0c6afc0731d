"""The facade: argument checks, reset, and the sync and async faces."""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
import pickle
import weakref
from typing import Any
from unittest import mock

import pytest

from sliding_window_throttler import (
    AsyncMemoryStorage,
    AsyncThrottler,
    CircuitBreaker,
    ConfigurationError,
    Decision,
    KeyGenerationError,
    ManualClock,
    MemoryStorage,
    RateLimitExceededError,
    Throttle,
    Throttler,
    ThrottlerErrorCode,
)
from sliding_window_throttler.recovery import ExponentialBackoff

# Each test runs on the C hot path of MemoryStorage and on its Python twin.
pytestmark = pytest.mark.usefixtures("hot_path")

API = Throttle("api", 1, 60)
LOGIN = Throttle("login", 1, 60)


@pytest.fixture
def throttler() -> Throttler:
    return Throttler(MemoryStorage(clock=ManualClock()))


@pytest.mark.parametrize(
    ("identifier", "shown"),
    [
        (None, "NoneType"),
        (42, "int"),
        (b"203.0.113.7", "bytes"),
        (["a"], "list"),
        ("", "got 0"),
        ("x" * 65_537, "got 65,537"),
    ],
)
def test_bad_identifier_raises_key_generation_error(
    throttler: Throttler, identifier: object, shown: str
) -> None:
    with pytest.raises(KeyGenerationError) as caught:
        throttler.hit(identifier, API)  # type: ignore[arg-type]

    assert shown in str(caught.value)


def test_identifier_of_65536_characters_is_accepted(throttler: Throttler) -> None:
    assert throttler.hit("x" * 65_536, API).allowed


def test_identifier_is_checked_by_peek_and_reset_too(throttler: Throttler) -> None:
    with pytest.raises(KeyGenerationError):
        throttler.peek("", API)

    with pytest.raises(KeyGenerationError):
        throttler.reset(7)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cost", "shown"),
    [
        (-1, "-1"),
        (1.0, "1.0"),
        (True, "True"),
        ("1", "'1'"),
        (None, "None"),
        (2**52 + 1, "4503599627370497"),
        pytest.param(-(10**5000), "an integer of 16610 bits", id="huge-negative"),
        pytest.param(10**5000, "an integer of 16610 bits", id="huge"),
    ],
)
def test_bad_cost_raises_configuration_error_for_cost(
    throttler: Throttler, cost: object, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        throttler.hit("a", API, cost=cost)  # type: ignore[arg-type]

    assert caught.value.field == "cost"
    assert shown in str(caught.value)


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        (MemoryStorage, "got the class MemoryStorage: write MemoryStorage(...)"),
        (Throttler(), "not a Throttler: give the throttler's .storage"),
    ],
)
def test_what_is_not_a_storage_object_is_refused_at_construction(
    storage: object, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Throttler(storage)  # type: ignore[arg-type]

    assert caught.value.field == "storage"
    assert message in caught.value.message


def test_hit_without_throttles_raises_configuration_error(
    throttler: Throttler,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        throttler.hit("a")

    assert caught.value.field == "throttles"


def test_throttles_with_the_same_name_raise_configuration_error(
    throttler: Throttler,
) -> None:
    twin = Throttle("api", 100, 1)

    with pytest.raises(ConfigurationError) as caught:
        throttler.hit("a", API, LOGIN, twin)

    assert caught.value.field == "throttles"
    assert "'api'" in str(caught.value)


def test_non_throttle_argument_raises_configuration_error(
    throttler: Throttler,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        throttler.hit("a", "100/minute")  # type: ignore[arg-type]

    assert caught.value.field == "throttles"
    assert "'100/minute'" in str(caught.value)


@pytest.mark.parametrize("now_ms", [math.nan, math.inf, -math.inf, True, "5"])
def test_bad_explicit_time_raises_configuration_error(
    throttler: Throttler, now_ms: object
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        throttler.hit("a", API, LOGIN, now_ms=now_ms)  # type: ignore[arg-type]

    assert caught.value.field == "now_ms"


def test_reset_of_an_identifier_forgets_all_its_throttles(
    throttler: Throttler,
) -> None:
    throttler.hit("a", API, LOGIN)
    throttler.hit("b", API, LOGIN)

    throttler.reset("a")

    assert throttler.hit("a", API, LOGIN).allowed
    assert not throttler.hit("b", API).allowed


def test_reset_of_one_throttle_keeps_the_others(throttler: Throttler) -> None:
    throttler.hit("a", API, LOGIN)

    throttler.reset("a", LOGIN)

    assert throttler.hit("a", LOGIN).allowed
    assert not throttler.hit("a", API).allowed


def test_reset_of_an_unknown_identifier_does_nothing(throttler: Throttler) -> None:
    throttler.reset("nobody")
    throttler.reset("nobody", API)

    assert throttler.hit("nobody", API).allowed


def test_explicit_time_overrides_the_storage_clock(throttler: Throttler) -> None:
    assert throttler.hit("a", API, now_ms=0).allowed
    assert not throttler.hit("a", API, now_ms=59_999).allowed
    assert throttler.hit("a", API, now_ms=60_000).allowed


def test_default_throttler_uses_memory_storage() -> None:
    throttler = Throttler()

    assert isinstance(throttler.storage, MemoryStorage)
    assert throttler.hit("a", API).allowed
    assert not throttler.hit("a", API).allowed
    throttler.close()


def test_async_face_decides_validates_and_resets_like_the_sync_one() -> None:
    throttler = AsyncThrottler(AsyncMemoryStorage(clock=ManualClock()))

    async def scenario() -> list[bool]:
        first = await throttler.hit("a", API, LOGIN)
        peeked = await throttler.peek("a", API)
        second = await throttler.hit("a", API)
        await throttler.reset("a", API)
        third = await throttler.hit("a", API)
        fourth = await throttler.hit("a", LOGIN)
        with pytest.raises(KeyGenerationError):
            await throttler.hit("", API)

        with pytest.raises(ConfigurationError):
            await throttler.hit("a", API, cost=-1)

        await throttler.close()
        return [
            first.allowed,
            peeked.allowed,
            second.allowed,
            third.allowed,
            fourth.allowed,
        ]

    assert asyncio.run(scenario()) == [True, False, False, True, False]


def test_async_memory_storage_shares_a_given_storage() -> None:
    shared = MemoryStorage(clock=ManualClock())
    sync = Throttler(shared)
    asynchronous = AsyncThrottler(AsyncMemoryStorage(shared))
    sync.hit("a", API)

    decision = asyncio.run(asynchronous.hit("a", API))

    assert not decision.allowed
    assert shared.stats().pairs == 1


@pytest.mark.parametrize("now_ms", [1e20, -1e20, float("nan"), float("inf")])
def test_explicit_times_outside_the_exact_range_are_refused(now_ms: float) -> None:
    throttler = Throttler(MemoryStorage())

    with pytest.raises(ConfigurationError) as caught:
        throttler.hit("a", Throttle("api", 1, 1), now_ms=now_ms)

    assert caught.value.field == "now_ms"


@pytest.mark.parametrize(
    ("face", "storage", "hint"),
    [
        (Throttler, "memory", "storage object"),
        (Throttler, AsyncMemoryStorage(), "AsyncThrottler"),
        (AsyncThrottler, MemoryStorage(), "AsyncMemoryStorage"),
        (AsyncThrottler, None.__class__, "storage object"),
    ],
)
def test_a_storage_of_the_wrong_kind_is_refused_at_construction(
    face: type, storage: object, hint: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        face(storage)

    assert caught.value.field == "storage"
    assert hint in str(caught.value)


class HitOnly:
    def hit(self, *args: object) -> None: ...


class NoClose(HitOnly):
    def peek(self, *args: object) -> None: ...

    def reset(self, *args: object) -> None: ...

    close = "not callable"


class HalfAsync:
    async def hit(self, *args: object) -> None: ...

    def peek(self, *args: object) -> None: ...

    async def reset(self, *args: object) -> None: ...

    async def close(self) -> None: ...


_NEEDS = (
    "storage must be a storage object (MemoryStorage, RedisStorage...) with hit, "
    "peek, reset and close methods; "
)


@pytest.mark.parametrize(
    ("face", "storage", "message"),
    [
        (Throttler, HitOnly(), _NEEDS + "HitOnly has no peek, reset or close"),
        (AsyncThrottler, HitOnly(), _NEEDS + "HitOnly has no peek, reset or close"),
        (Throttler, NoClose(), _NEEDS + "NoClose has no close"),
        (Throttler, "memory", _NEEDS + "str has no hit, peek, reset or close"),
        (
            AsyncThrottler,
            HalfAsync(),
            "AsyncThrottler needs an asyncio storage, got HalfAsync: its peek() "
            "is not a coroutine function (async def)",
        ),
        (
            Throttler,
            HalfAsync(),
            "Throttler needs a storage, got HalfAsync: its hit() is a coroutine "
            "function (async def)",
        ),
    ],
)
def test_a_storage_must_have_every_method_of_its_face(
    face: type, storage: object, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        face(storage)

    assert caught.value.field == "storage"
    assert caught.value.message == message


# Failure options on a memory storage: ignored when valid, refused when not.


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        (
            {"failure_strategy": "bogus"},
            "failure_strategy",
            "failure_strategy must be one of fail-open, fail-closed, local, "
            "got 'bogus'",
        ),
        (
            {"failure_strategy": object()},
            "failure_strategy",
            "failure_strategy must be one of fail-open, fail-closed, local or a "
            "recovery strategy (name, can_recover, recover); object has no name, "
            "can_recover, recover",
        ),
        ({"app_servers": -5}, "app_servers", "app_servers must be at least 1, got -5"),
        (
            {"app_servers": 2.0},
            "app_servers",
            "app_servers must be an integer, got 2.0",
        ),
        (
            {"deadline": "xyz"},
            "deadline",
            "deadline 'xyz' is not a duration; write a number and a unit, such as "
            "'30s' or '2 minutes' (units: ms, s, m/min/minute, h/hour, d/day, "
            "w/week)",
        ),
        (
            {"deadline": 0},
            "deadline",
            "deadline must be above 0 (None for no deadline), got 0",
        ),
        (
            {"breaker": "nope"},
            "breaker",
            "breaker must be a CircuitBreaker, got 'nope'",
        ),
        (
            {"retry": 3},
            "retry",
            "retry must be an ExponentialBackoff or a RetryWithBackoff, got 3",
        ),
        (
            {
                "failure_strategy": "bogus",
                "app_servers": -5,
                "deadline": "xyz",
                "breaker": "nope",
            },
            "failure_strategy",
            "failure_strategy must be one of fail-open, fail-closed, local, "
            "got 'bogus'",
        ),
    ],
)
def test_invalid_failure_options_are_refused_for_memory_storages_too(
    kwargs: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as sync_caught:
        Throttler(MemoryStorage(), **kwargs)  # type: ignore[arg-type]

    with pytest.raises(ConfigurationError) as async_caught:
        AsyncThrottler(AsyncMemoryStorage(), **kwargs)  # type: ignore[arg-type]

    for caught in (sync_caught, async_caught):
        assert caught.value.field == field
        assert caught.value.message == message


def test_valid_failure_options_leave_a_memory_storage_bare() -> None:
    memory = MemoryStorage()
    async_memory = AsyncMemoryStorage()
    options = {
        "failure_strategy": "local",
        "breaker": CircuitBreaker(3, 1),
        "retry": ExponentialBackoff(max_attempts=1),
        "deadline": "100ms",
        "app_servers": 4,
    }

    assert Throttler(memory, **options).storage is memory  # type: ignore[arg-type]
    assert (
        AsyncThrottler(async_memory, **options).storage  # type: ignore[arg-type]
        is async_memory
    )


# enforce(): a refusal raises RateLimitExceededError.

BURST = Throttle("burst", 2, 10)
SUSTAINED = Throttle("sustained", 3, 60)


def test_enforce_returns_the_admitting_decision(throttler: Throttler) -> None:
    decision = throttler.enforce("a", API)

    assert decision.allowed
    assert decision.records[0].total_hits == 1


def test_enforce_raises_with_the_throttle_that_refused() -> None:
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    for at in (0, 11, 12):
        clock.set_ms(at * 1000)
        throttler.enforce("a", BURST, SUSTAINED)

    clock.set_ms(13_000)
    with pytest.raises(RateLimitExceededError) as info:
        throttler.enforce("a", BURST, SUSTAINED)

    error = info.value
    assert (error.limit, error.current, error.retry_after) == (3, 4, 47.0)
    assert error.code == ThrottlerErrorCode.RATE_LIMIT_EXCEEDED
    assert not error.is_recoverable
    assert error.message == (
        "rate limit exceeded: throttle 'sustained' allows 3 hits per window "
        "(4 with this one); retry in 47.000s"
    )
    assert error.context == {
        "limit": 3,
        "current": 4,
        "retry_after": 47.0,
        "throttle": "sustained",
        "outcome": "limit_reached",
        "degraded": False,
        "strategy": None,
    }
    assert throttler.peek("a", SUSTAINED, cost=0).records[0].total_hits == 3


def test_enforce_says_when_a_hit_can_never_succeed(throttler: Throttler) -> None:
    with pytest.raises(RateLimitExceededError) as info:
        throttler.enforce("a", BURST, cost=5)

    error = info.value
    assert (error.limit, error.current, error.retry_after) == (2, 5, math.inf)
    assert error.message.endswith(
        "this hit can never succeed (its cost is above the limit)"
    )
    assert error.context["outcome"] == "cost_exceeds_limit"


def test_enforce_at_capacity_says_the_storage_is_full() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock(), max_pairs=1))
    throttler.hit("a", API)

    with pytest.raises(RateLimitExceededError) as caught:
        throttler.enforce("b", API)

    assert caught.value.message == (
        "rate limit exceeded: the storage tracks as many clients as it may "
        f"(max_pairs) and refuses new ones, throttle 'api' included; retry in "
        f"{caught.value.retry_after:.3f}s"
    )
    assert caught.value.context["outcome"] == "capacity"
    assert caught.value.decision.limiting.outcome == "capacity"  # for headers


def test_async_enforce_admits_then_raises() -> None:
    throttler = AsyncThrottler(AsyncMemoryStorage(clock=ManualClock()))

    async def scenario() -> RateLimitExceededError:
        assert (await throttler.enforce("a", BURST)).allowed
        assert (await throttler.enforce("a", BURST)).allowed
        with pytest.raises(RateLimitExceededError) as info:
            await throttler.enforce("a", BURST)

        return info.value

    error = asyncio.run(scenario())

    assert (error.limit, error.current, error.retry_after) == (2, 3, 10.0)


# health()


def test_a_memory_throttler_is_healthy_and_has_no_breaker() -> None:
    sync_health = Throttler(MemoryStorage()).health()
    async_health = asyncio.run(AsyncThrottler().health())

    for health in (sync_health, async_health):
        assert (health.healthy, health.backend, health.breaker) == (
            True,
            "memory",
            None,
        )


def test_enforce_says_when_the_client_serves_a_block() -> None:
    clock = ManualClock()
    throttler = Throttler(MemoryStorage(clock=clock))
    strict = Throttle("strict", 1, 10, block_duration=60)
    throttler.enforce("a", strict)
    with pytest.raises(RateLimitExceededError):
        throttler.enforce("a", strict)  # overflows: blocked for 60 s

    clock.advance(30)
    with pytest.raises(RateLimitExceededError) as info:
        throttler.enforce("a", strict)

    assert info.value.message == (
        "rate limit exceeded: the client is blocked by throttle 'strict' for "
        "overflowing its 1 hit per window; retry in 30.000s"
    )
    assert info.value.context["outcome"] == "blocked"


def test_enforce_says_hit_for_a_limit_of_one() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    once = Throttle("once", 1, 10)
    throttler.enforce("a", once)

    with pytest.raises(RateLimitExceededError) as info:
        throttler.enforce("a", once)

    assert info.value.message == (
        "rate limit exceeded: throttle 'once' allows 1 hit per window "
        "(2 with this one); retry in 10.000s"
    )


def test_hit_is_a_plain_method() -> None:
    throttler = Throttler(MemoryStorage())

    assert inspect.isfunction(Throttler.hit)
    assert pickle.loads(pickle.dumps(Throttler.hit)) is Throttler.hit
    assert weakref.WeakMethod(throttler.hit)() == throttler.hit
    assert list(inspect.signature(throttler.hit).parameters) == [
        "identifier",
        "throttles",
        "cost",
        "now_ms",
    ]


def test_patching_throttler_hit_reaches_every_call_before_and_after() -> None:
    calls = []
    original = Throttler.hit

    def counting(self: Throttler, *args: Any, **kwargs: Any) -> Decision:
        calls.append(args)
        return original(self, *args, **kwargs)

    before = Throttler(MemoryStorage())
    with mock.patch.object(Throttler, "hit", counting):
        after = Throttler(MemoryStorage())
        before.hit("a", API)
        after.hit("b", API)
        after.enforce("c", API)

    assert calls == [("a", API), ("b", API), ("c", API)]


def test_an_autospec_of_hit_records_the_throttler_and_checks_arguments() -> None:
    throttler = Throttler(MemoryStorage())
    with mock.patch.object(Throttler, "hit", autospec=True) as hit:
        throttler.hit("a", API, cost=2)
        with pytest.raises(TypeError):
            throttler.hit()  # type: ignore[call-arg]

    hit.assert_called_once_with(throttler, "a", API, cost=2)
    spec = mock.create_autospec(Throttler, instance=True)
    with pytest.raises(TypeError):
        spec.hit("a", API, costs=2)


def test_a_patched_memory_hit_one_answers_every_hit() -> None:
    before = Throttler(MemoryStorage())
    answer = Decision(False, (), 9.0)
    with mock.patch.object(MemoryStorage, "hit_one", return_value=answer) as spy:
        after = Throttler(MemoryStorage())

        assert before.hit("a", API) is answer
        assert after.hit("b", API, cost=2) is answer

    assert spy.call_args_list == [mock.call("a", API, 1), mock.call("b", API, 2)]
    assert before.hit("a", API).allowed  # the storage's own again


def test_a_throttler_never_initialised_says_what_it_lacks() -> None:
    bare = Throttler.__new__(Throttler)
    with pytest.raises(AttributeError, match="_storage"):
        bare.hit("a", API)


def test_a_copied_throttler_shares_the_storage() -> None:
    throttler = Throttler(MemoryStorage(clock=ManualClock()))
    clone = copy.copy(throttler)

    assert clone.hit("a", API).allowed
    assert not throttler.hit("a", API).allowed
    assert clone.storage is throttler.storage
