"""
The ring in Redis: read whole or by ranges, index upkeep, expiry, old servers.

The contract suite decides with limits up to 300; here rings of thousands of
slots are searched by ranges (prefetch, gallop, chunk, wrap), the library runs
as it would on a server without ``PEXPIRE ... GT`` and ``SET ... PXAT``, and
every key keeps an expiry and its identifier's index.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sliding_window_throttler import (
    ManualClock,
    MemoryStorage,
    RedisFunctionError,
    Throttle,
)
from sliding_window_throttler.storage import RedisStorage
from sliding_window_throttler.storage._redis_common import (
    LIBRARY,
    load_library,
    map_redis_errors,
)

from redis_servers import RedisServer
from simulated_expiry import forget_as_memory_does

pytestmark = pytest.mark.redis

TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
MS = 1_000
S = 1_000_000
RINGS = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

_examples = itertools.count()


@pytest.fixture
def storage(redis_server: RedisServer, redis_prefix: str) -> Iterator[RedisStorage]:
    made = RedisStorage.from_url(
        redis_server.url, prefix=redis_prefix.rstrip(":"), **TIMEOUTS
    )
    yield made
    made.close()


def all_keys(storage: RedisStorage, prefix: str) -> list[bytes]:
    return sorted(storage.client.scan_iter(match=f"{prefix}:*", count=1000))


# Big rings decide as memory does


@dataclass(frozen=True)
class Step:
    delta_us: int
    cost: int
    variant: int
    peek: bool


big_throttles = st.lists(
    st.builds(
        Throttle,
        name=st.just("big"),
        limit=st.sampled_from([129, 200, 700, 2_500]),
        ttl=st.sampled_from([0.05, 1, 30]),
        block_duration=st.sampled_from([0, 0, 0.5]),
    ),
    min_size=1,
    max_size=2,
)
big_steps = st.lists(
    st.builds(
        Step,
        st.one_of(st.just(0), st.integers(0, 2_000), st.integers(0, 200_000)),
        st.one_of(
            st.just(1), st.integers(0, 40), st.sampled_from([128, 250, 700, 2_500])
        ),
        st.integers(0, 1),
        st.integers(0, 9).map(lambda n: n == 0),
    ),
    max_size=150,
)


@RINGS
@given(variants=big_throttles, steps=big_steps)
def test_rings_read_by_ranges_decide_as_memory(
    storage: RedisStorage, variants: list[Throttle], steps: list[Step]
) -> None:
    identifier = f"big-{next(_examples)}"
    memory = MemoryStorage(clock=ManualClock())
    now_us = 0
    for number, step in enumerate(steps):
        now_us += step.delta_us
        throttles = [variants[step.variant % len(variants)]]
        forget_as_memory_does(memory, storage, identifier, throttles, now_us)
        if step.peek:
            got = storage.peek(identifier, throttles, step.cost, now_us)
            expected = memory.peek(identifier, throttles, step.cost, now_us)
        else:
            got = storage.hit(identifier, throttles, step.cost, now_us)
            expected = memory.hit(identifier, throttles, step.cost, now_us)

        assert got == expected, f"step {number}: {step} {throttles[0]} at {now_us} us"


def test_a_full_big_ring_in_steady_traffic_reads_two_ranges(
    storage: RedisStorage,
) -> None:
    throttle = Throttle("steady", 10_000, 10)
    step_us = throttle.ttl_us // throttle.limit
    for i in range(throttle.limit):
        storage.hit("steady", [throttle], 1, i * step_us)

    storage.client.config_resetstat()
    for i in range(throttle.limit, throttle.limit + 50):
        assert storage.hit("steady", [throttle], 1, i * step_us).allowed

    stats = storage.client.info("commandstats")
    # The header, then the newest slot with the oldest ones beside it (in two
    # ranges where the string ends between them).
    assert 2 * 50 <= stats["cmdstat_getrange"]["calls"] <= 2 * 50 + 2
    assert stats["cmdstat_setrange"]["calls"] == 2 * 50


def test_a_rebuild_years_later_forgets_times_no_window_can_count(
    storage: RedisStorage,
) -> None:
    # Slots hold 48 bits of microseconds past a base (8.9 years): a ring
    # rebuilt ten years after its last hit must not try to keep that hit.
    memory = MemoryStorage(clock=ManualClock())
    ten_years_us = 10 * 365 * 86_400 * S
    steps = [
        (Throttle("api", 3, 1), 0),
        (Throttle("api", 3, 1), 1),
        (Throttle("api", 2, 86_400), ten_years_us),  # a new limit: a rebuild
        (Throttle("api", 2, 86_400), ten_years_us + 1),
        (Throttle("api", 2, 86_400), ten_years_us + 2),
    ]
    for number, (throttle, now_us) in enumerate(steps):
        got = storage.hit("decade", [throttle], 1, now_us)
        expected = memory.hit("decade", [throttle], 1, now_us)
        assert got == expected, f"step {number} at {now_us} us"

    assert [r.total_hits for r in got.records] == [3]
    assert not got.allowed


# Old servers: no SET ... PXAT (Redis 6.2), or no way to tell (before 7.0)


def old_server_library() -> Any:
    """The library as it runs where redis.REDIS_VERSION_NUM is missing."""
    text = LIBRARY.source.replace(LIBRARY.name, "swt").replace(
        "redis.REDIS_VERSION_NUM or 0", "0"
    )
    assert "redis.REDIS_VERSION_NUM" not in text
    return load_library(text)


def test_the_library_without_redis_7_commands_decides_and_expires_the_same(
    storage: RedisStorage, redis_prefix: str
) -> None:
    old = old_server_library()
    client = storage.client
    client.function_load(old.source, replace=True)
    throttles = [Throttle("a", 3, 1, block_duration=2), Throttle("b", 50, 10)]
    base = redis_prefix.rstrip(":")
    for step in range(60):
        now_us = step * 150 * MS if step < 30 else None
        cost = step % 3
        new_keys = storage.keys("u", throttles)
        old_keys = [key.replace(base, f"{base}-old", 1) for key in new_keys]
        args = ["hit", "" if now_us is None else now_us, cost]
        for t in throttles:
            args += [t.name, t.limit, t.ttl_ms, t.block_duration_ms]

        new = client.fcall(LIBRARY.decide.function, 3, *new_keys, *args)
        got = client.fcall(old.decide.function, 3, *old_keys, *args)

        if now_us is None:
            # Two calls on the server's clock: times moved on in between.
            counts = [1, 2, 5, 6, 7, 8, 11, 12]  # outcome, in window, flags
            assert [got[i] for i in counts] == [new[i] for i in counts], step
            assert all(abs(a - b) < S for a, b in zip(got, new, strict=True))
        else:
            assert got == new, f"step {step}"

        for new_key, old_key in zip(new_keys, old_keys, strict=True):
            new_ttl, old_ttl = client.pttl(new_key), client.pttl(old_key)
            assert -1 not in (new_ttl, old_ttl)
            assert (new_ttl > 0) == (old_ttl > 0)
            assert abs(new_ttl - old_ttl) <= 50


# The index and expiry


def test_the_index_is_rewritten_only_when_a_ring_is_created(
    storage: RedisStorage,
) -> None:
    api = Throttle("api", 100, 60)
    storage.hit("alice", [api], 1)
    storage.client.config_resetstat()

    for _ in range(20):
        storage.hit("alice", [api], 1)

    stats = storage.client.info("commandstats")
    assert stats["cmdstat_get"]["calls"] == 20  # the ring, read whole
    assert "cmdstat_set" not in stats
    assert stats["cmdstat_pttl"]["calls"] == 20  # the index outlives the ring?
    assert stats["cmdstat_pexpireat"]["calls"] == 20  # the ring
    assert stats.get("cmdstat_pexpire", {"calls": 0})["calls"] <= 1  # the index


def test_the_index_outlives_every_ring_whatever_the_order_of_hits(
    storage: RedisStorage,
) -> None:
    long, short = Throttle("long", 5, 60), Throttle("short", 5, 1, block_duration=90)
    storage.hit("alice", [long], 1)
    storage.hit("alice", [short], 1)
    for _ in range(6):
        storage.hit("alice", [short], 1)  # blocked for 90 s: the longest now

    index, long_ring, short_ring = storage.keys("alice", [long, short])
    ttl = {key: storage.client.pttl(key) for key in (index, long_ring, short_ring)}
    assert 0 < ttl[long_ring] <= ttl[index]
    assert 85_000 < ttl[short_ring] <= ttl[index] <= 91_000 + 1_000


def test_a_lost_index_comes_back_with_its_expiry(storage: RedisStorage) -> None:
    api, burst = Throttle("api", 100, 60), Throttle("burst", 20, 1)
    storage.hit("alice", [api, burst], 1)
    index = storage.keys("alice")[0]
    storage.client.delete(index)  # say, evicted

    storage.hit("alice", [api], 1)

    assert storage.client.get(index) == b" api "
    assert 59_000 < storage.client.pttl(index) <= 61_000
    storage.client.persist(index)

    storage.hit("alice", [api], 1)

    assert 59_000 < storage.client.pttl(index) <= 61_000


def test_no_key_lives_without_an_expiry(
    storage: RedisStorage, redis_prefix: str
) -> None:
    prefix = redis_prefix.rstrip(":")
    throttles = [
        Throttle("a", 2, 1, block_duration=5),
        Throttle("b", 300, 30),
        Throttle("c", 1, 0.2),
    ]
    for step in range(40):
        chosen = throttles[: 1 + step % 3]
        storage.hit(f"id-{step % 4}", chosen, step % 4)
        storage.hit(f"id-{step % 5}", chosen[-1:], 1, step * 100 * MS)
        if step % 13 == 0:
            storage.reset(f"id-{step % 4}", chosen[:1])

    keys = all_keys(storage, prefix)
    assert keys
    assert all(storage.client.pttl(key) > 0 for key in keys)


def test_bad_arguments_change_no_key(storage: RedisStorage) -> None:
    throttle = Throttle("api", 200, 60)
    for _ in range(3):
        storage.hit("alice", [throttle], 1)
    index, ring = storage.keys("alice", [throttle])
    before = {key: storage.client.get(key) for key in (index, ring)}
    good = ["hit", "", 1, "api", 200, 60_000, 0]

    for args in (
        [*good[:4], 0, *good[5:]],
        [*good[:5], 1.5, good[6]],
        [*good[:6], -1],
        [*good[:3], "a pi", *good[4:]],
    ):
        with pytest.raises(RedisFunctionError), map_redis_errors("hit"):
            storage.client.fcall(LIBRARY.decide.function, 2, index, ring, *args)

    assert {key: storage.client.get(key) for key in (index, ring)} == before


def test_reset_finds_rings_of_every_size(storage: RedisStorage) -> None:
    throttles = [Throttle("small", 10, 60), Throttle("large", 5_000, 60)]
    for _ in range(3):
        storage.hit("alice", throttles, 1)

    storage.reset("alice")

    keys = storage.keys("alice", throttles)
    assert storage.client.exists(*keys) == 0


def test_a_ring_longer_than_its_header_says_is_refused(storage: RedisStorage) -> None:
    throttle = Throttle("api", 5_000, 60)
    storage.hit("alice", [throttle], 1)
    ring = storage.keys("alice", [throttle])[1]
    storage.client.setrange(ring, 0, b"\x07")  # another version

    with pytest.raises(RedisFunctionError, match="version 1 ring"):
        storage.hit("alice", [throttle], 1)

    client: redis.Redis = storage.client
    client.delete(ring)
    assert storage.hit("alice", [throttle], 1).allowed
