"""``RedisStorage`` on private servers: keys, expiry, loader, faults, topologies."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sliding_window_throttler import (
    ConfigurationError,
    Decision,
    RedisConnectionError,
    RedisFunctionError,
    StorageOperationError,
    StorageTimeoutError,
    Throttle,
)
from sliding_window_throttler.recovery.backoff import is_retry_safe
from sliding_window_throttler.storage import AsyncRedisStorage, RedisStorage
from sliding_window_throttler.storage._redis_common import (
    LIBRARY,
    identifier_tag,
    map_redis_errors,
)

from model import Model, as_verdict, spec_of
from redis_servers import RedisCluster, RedisServer, SentinelSet, wait_for

pytestmark = pytest.mark.redis

TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
MS = 1_000
S = 1_000_000


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix.rstrip(":")


@pytest.fixture
def storage(redis_server: RedisServer, prefix: str) -> Iterator[RedisStorage]:
    made = RedisStorage.from_url(redis_server.url, prefix=prefix, **TIMEOUTS)
    yield made
    made.close()


@pytest.fixture
def cluster_storage(redis_cluster: RedisCluster, prefix: str) -> Iterator[RedisStorage]:
    made = RedisStorage.from_cluster(
        redis_cluster.startup_nodes, prefix=prefix, **TIMEOUTS
    )
    yield made
    made.close()


def pttl(storage: RedisStorage, key: str) -> int:
    return int(storage.client.pttl(key))


def count_in_ring(storage: RedisStorage, key: str) -> int:
    """The ring header's count of admissions (see lua/throttle.lua)."""
    header = storage.client.getrange(key, 0, 28)
    return int.from_bytes(header[9:13], "big")


# Keys and expiry


def test_keys_expire_with_their_window(storage: RedisStorage) -> None:
    throttle = Throttle("api", 5, 2)

    storage.hit("alice", [throttle], 1)

    index, ring = storage.keys("alice", [throttle])
    assert 0 < pttl(storage, ring) <= 2_000
    assert pttl(storage, ring) <= pttl(storage, index) <= 2_000 + 1_000


def test_keys_last_as_long_as_a_block(storage: RedisStorage) -> None:
    throttle = Throttle("login", 1, 1, block_duration=30)
    storage.hit("alice", [throttle], 1)

    storage.hit("alice", [throttle], 1)

    index, ring = storage.keys("alice", [throttle])
    assert 29_000 < pttl(storage, ring) <= 30_000
    assert pttl(storage, ring) <= pttl(storage, index) <= 31_000


def test_the_index_outlives_the_longest_pair(storage: RedisStorage) -> None:
    long, short = Throttle("long", 5, 60), Throttle("short", 5, 1)
    storage.hit("alice", [long], 1)

    storage.hit("alice", [short], 1)

    index, long_ring, short_ring = storage.keys("alice", [long, short])
    assert pttl(storage, short_ring) <= 1_000
    assert pttl(storage, long_ring) <= pttl(storage, index)


def test_keys_of_simulated_time_expire_after_a_grace(storage: RedisStorage) -> None:
    throttle = Throttle("sim", 5, 1)

    storage.hit("alice", [throttle], 1, now_us=0)

    _, ring = storage.keys("alice", [throttle])
    assert 60_000 < pttl(storage, ring) <= 61_000


@pytest.mark.parametrize(("hits", "budget"), [(100, 900), (1_000, 8_500)])
def test_memory_per_identifier_stays_within_budget(
    fresh_redis_server: RedisServer, hits: int, budget: int
) -> None:
    # The default prefix, as in production (test prefixes are longer).
    throttle = Throttle("api", hits, 3600)
    with RedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS) as storage:
        for _ in range(hits):
            assert storage.hit("203.0.113.7", [throttle], 1).allowed

        assert not storage.hit("203.0.113.7", [throttle], 1).allowed
        keys = storage.keys("203.0.113.7", [throttle])
        usage = sum(storage.client.memory_usage(key) for key in keys)

    assert usage <= budget


def test_keys_name_the_digest_in_a_hash_tag_and_never_the_identifier(
    storage: RedisStorage, prefix: str
) -> None:
    storage.hit("secret-api-key", [Throttle("api", 5, 60)], 1)

    keys = sorted(storage.client.scan_iter(match=f"{prefix}:*"))

    tag = identifier_tag("secret-api-key")
    assert keys == [f"{prefix}:{{{tag}}}".encode(), f"{prefix}:{{{tag}}}:api".encode()]
    assert all(b"secret" not in key for key in keys)


def test_reset_deletes_exactly_the_identifiers_keys(
    storage: RedisStorage, prefix: str
) -> None:
    first, second = Throttle("first", 5, 60), Throttle("second", 5, 60)
    storage.hit("alice", [first, second], 1)
    storage.hit("bob", [first], 1)
    storage.client.set(f"{prefix}:unrelated", "x")

    storage.reset("alice")

    left = set(storage.client.scan_iter(match=f"{prefix}:*"))
    assert left == {
        f"{prefix}:unrelated".encode(),
        *(key.encode() for key in storage.keys("bob", [first])),
    }
    storage.reset("bob", [first])
    assert storage.client.exists(storage.keys("bob", [first])[1]) == 0


# The loader


def test_function_flush_between_two_hits_loses_and_doubles_nothing(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    with RedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS) as storage:
        storage.hit("alice", [throttle], 1)
        storage.client.function_flush()

        decision = storage.hit("alice", [throttle], 1)

        assert decision.allowed and decision.records[0].total_hits == 2
        assert count_in_ring(storage, storage.keys("alice", [throttle])[1]) == 2
        libraries = storage.client.function_list(library=LIBRARY.name)
        assert len(libraries) == 1


def _move_keys_to_a_node_without_the_library(
    cluster: RedisCluster, key: str
) -> tuple[redis.Redis, redis.Redis, int]:
    """
    Start moving the slot of ``key`` (its owner MIGRATING, another node
    IMPORTING, its keys migrated) to a node whose library was flushed: calls
    for the slot get ASK to that node. Returns the owner, the importer, the slot.
    """
    with cluster.client() as client:
        slot = client.keyslot(key)
        owner_port = client.get_node_from_key(key).port

    owner_node = next(n for n in cluster.nodes if n.port == owner_port)
    importer_node = next(n for n in cluster.nodes if n.port != owner_port)
    owner, importer = owner_node.client(), importer_node.client()
    importer.execute_command("FUNCTION", "FLUSH")
    importer.execute_command("SCRIPT", "FLUSH")
    importer_id = importer.execute_command("CLUSTER", "MYID")
    owner_id = owner.execute_command("CLUSTER", "MYID")
    importer.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", owner_id)
    owner.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", importer_id)
    for moved in owner.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        owner.execute_command(
            "MIGRATE", "127.0.0.1", importer_node.port, "", 0, 5000, "KEYS", moved
        )

    return owner, importer, slot


@pytest.mark.slow
@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_slot_moving_to_a_node_without_the_library_loses_and_doubles_nothing(
    face: str,
) -> None:
    # The call goes to the slot's owner, which answers ASK: the importing node
    # has no library. Loading it on the owner cannot help; the same call runs
    # there through EVAL, once.
    throttle = Throttle("api", 5, 60)
    with RedisCluster() as cluster:
        storage = RedisStorage.from_url(
            f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}", **TIMEOUTS
        )
        storage.hit("alice", [throttle], 1)
        ring = storage.keys("alice", [throttle])[1]
        owner, importer, slot = _move_keys_to_a_node_without_the_library(cluster, ring)

        if face == "sync":
            decisions = [storage.hit("alice", [throttle], 1) for _ in range(2)]
        else:

            async def two_hits() -> list[Decision]:
                async with AsyncRedisStorage.from_url(
                    f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}", **TIMEOUTS
                ) as moving:
                    return [await moving.hit("alice", [throttle], 1) for _ in range(2)]

            decisions = asyncio.run(two_hits())

        assert [d.records[0].total_hits for d in decisions] == [2, 3]
        assert importer.function_list() == []  # EVAL ran it: nothing was loaded
        importer_id = importer.execute_command("CLUSTER", "MYID")
        for node in (owner, importer):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", importer_id)
            node.close()

        wait_for(lambda: count_in_ring(storage, ring) == 3, "the moved ring")
        storage.close()


def test_script_flush_between_two_hits_loses_and_doubles_nothing(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    with RedisStorage.from_url(
        fresh_redis_server.url, enable_redis_functions=False, **TIMEOUTS
    ) as storage:
        storage.hit("alice", [throttle], 1)
        storage.client.script_flush()

        decision = storage.hit("alice", [throttle], 1)

        assert decision.allowed and decision.records[0].total_hits == 2
        assert storage.client.script_exists(LIBRARY.decide.sha) == [True]
        assert storage.client.function_list() == []


def test_a_restart_between_two_hits_counts_the_second_once(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    with RedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS) as storage:
        storage.hit("alice", [throttle], 1)
        fresh_redis_server.restart()

        decision = storage.hit("alice", [throttle], 1)

        assert decision.allowed and decision.records[0].total_hits == 1
        assert storage.peek("alice", [throttle], 1).records[0].total_hits == 2


def test_evalsha_decides_exactly_as_fcall(
    fresh_redis_server: RedisServer,
) -> None:
    throttles = [Throttle("a", 3, 1, block_duration=2), Throttle("b", 5, 10)]
    url = fresh_redis_server.url
    with (
        RedisStorage.from_url(url, prefix="f", **TIMEOUTS) as functions,
        RedisStorage.from_url(
            url, prefix="e", enable_redis_functions=False, **TIMEOUTS
        ) as scripts,
    ):
        for step in range(40):
            now_us = step * 150 * MS
            cost = step % 3
            assert functions.hit("u", throttles, cost, now_us) == scripts.hit(
                "u", throttles, cost, now_us
            )

        stats = functions.client.info("commandstats")

    fcall, evalsha = stats["cmdstat_fcall"], stats["cmdstat_evalsha"]
    # The first FCALL and EVALSHA find nothing loaded and fail before running;
    # the function is then loaded, and the script sent once with EVAL.
    assert fcall["calls"] - fcall["failed_calls"] == 40
    assert evalsha["calls"] - evalsha["failed_calls"] == 39
    assert stats["cmdstat_eval"]["calls"] == 1


# Identifiers and time


def _similar_identifiers() -> list[str]:
    return [
        "{",
        "}",
        "{tag}",
        "a:b",
        "a_b",
        "A:B",
        "with space",
        "line\nbreak",
        "x" * 10_240,
        "日本語 ✓ émoji 🚦",
        "\udc80",
        "case",
        "CASE",
        "Case",
    ]


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_identifiers_are_opaque_and_keep_their_own_counters(
    request: pytest.FixtureRequest, topology: str
) -> None:
    storage: RedisStorage = request.getfixturevalue(
        "storage" if topology == "standalone" else "cluster_storage"
    )
    throttles = [Throttle("one", 1, 60), Throttle("two", 2, 60)]
    identifiers = _similar_identifiers()

    first = [storage.hit(i, throttles, 1).allowed for i in identifiers]
    second = [storage.hit(i, throttles, 1).allowed for i in identifiers]

    assert first == [True] * len(identifiers)
    assert second == [False] * len(identifiers)
    for identifier in identifiers:
        slots = {
            storage.client.execute_command("CLUSTER KEYSLOT", key)
            if topology == "cluster"
            else redis.cluster.key_slot(key.encode())
            for key in storage.keys(identifier, throttles)
        }
        assert len(slots) == 1


def test_decisions_carry_the_servers_time(storage: RedisStorage) -> None:
    seconds, micros = storage.client.time()

    _, decided_at = storage.decide("alice", [Throttle("api", 5, 60)], 1)

    assert abs(decided_at - (seconds * S + micros)) < 2 * S


def test_each_pair_keeps_its_own_time_when_the_clock_steps_back(
    storage: RedisStorage,
) -> None:
    # A later hit on A must not move B's time: B is judged at 5 s, where its
    # hit at 0 s still fills its 6 s window, as the model says.
    a, b = Throttle("A", 100, 60), Throttle("B", 1, 6)
    model = Model()
    steps = [([b], 0), ([a], 10 * S), ([b], 5 * S), ([a, b], 5 * S), ([a], 5 * S)]
    decisions = []
    for number, (throttles, now_us) in enumerate(steps):
        got = storage.hit("clock", throttles, 1, now_us)
        want = model.hit("clock", [spec_of(t) for t in throttles], 1, now_us)
        assert as_verdict(got) == want, f"step {number} at {now_us} us"
        decisions.append(got)

    assert [d.allowed for d in decisions] == [True, True, False, False, True]
    assert decisions[3].records[1].retry_after == 1.0  # B's hit at 0 leaves at 6 s
    assert decisions[4].records[0].total_hits == 2  # A stands at 10 s


def test_clients_with_skewed_clocks_share_one_timeline(
    redis_server: RedisServer, prefix: str
) -> None:
    throttle = Throttle("api", 4, 30)
    real_time, real_time_ns = time.time, time.time_ns
    real_monotonic = time.monotonic

    def ahead(seconds: float) -> Any:
        return mock.patch.multiple(
            time,
            time=lambda: real_time() + seconds,
            time_ns=lambda: real_time_ns() + int(seconds * 1e9),
            monotonic=lambda: real_monotonic() + seconds,
        )

    behind = RedisStorage.from_url(redis_server.url, prefix=prefix, **TIMEOUTS)
    skewed = RedisStorage.from_url(redis_server.url, prefix=prefix, **TIMEOUTS)
    results = []
    for turn in range(8):
        if turn % 2:
            with ahead(5.0):
                results.append(skewed.decide("shared", [throttle], 1))
        else:
            results.append(behind.decide("shared", [throttle], 1))

    behind.close()
    skewed.close()
    allowed = [decision.allowed for decision, _ in results]
    times = [at for _, at in results]
    assert allowed == [True] * 4 + [False] * 4
    assert times == sorted(times)
    for decision, at in results[4:]:
        assert decision.retry_after == pytest.approx((times[0] + 30 * S - at) / S)


# Errors


def test_the_lua_code_checks_its_arguments(storage: RedisStorage) -> None:
    storage.hit("alice", [Throttle("api", 1, 1)], 1)
    index, ring = storage.keys("alice", [Throttle("api", 1, 1)])
    good = ["hit", "", 1, "api", 1, 1000, 0]
    bad_args = [
        ["jump", *good[1:]],
        [good[0], "soon", *good[2:]],
        [*good[:2], -1, *good[3:]],
        [*good[:2], 1.5, *good[3:]],
        [*good[:3], "no space", *good[4:]],
        [*good[:4], 0, *good[5:]],
        [*good[:5], 0, good[6]],
        [*good[:6], -5],
        [*good, "extra"],
        good[:3],
    ]
    for args in bad_args:
        with pytest.raises(RedisFunctionError) as caught, map_redis_errors("hit"):
            storage.client.fcall(LIBRARY.decide.function, 2, index, ring, *args)

        assert caught.value.kind == "execution_failed"
        assert "SWT bad argument" in str(caught.value)

    with pytest.raises(RedisFunctionError, match="key"), map_redis_errors("hit"):
        storage.client.fcall(LIBRARY.decide.function, 2, index, index + ":other", *good)


@pytest.mark.parametrize(
    "spoil", [lambda c, k: c.set(k, "not a ring"), lambda c, k: c.lpush(k, "x")]
)
def test_a_key_holding_something_else_is_an_execution_error(
    storage: RedisStorage, spoil: Callable[[redis.Redis, str], Any]
) -> None:
    throttle = Throttle("api", 5, 60)
    spoil(storage.client, storage.keys("alice", [throttle])[1])

    with pytest.raises(RedisFunctionError) as caught:
        storage.hit("alice", [throttle], 1)

    assert caught.value.kind == "execution_failed"


def test_a_paused_server_times_out_with_the_outcome_unknown(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    with RedisStorage.from_url(fresh_redis_server.url, socket_timeout=0.1) as storage:
        storage.hit("alice", [throttle], 1)
        fresh_redis_server.pause()
        try:
            began = time.monotonic()
            with pytest.raises(StorageTimeoutError) as caught:
                storage.hit("alice", [throttle], 1)
            waited = time.monotonic() - began
        finally:
            fresh_redis_server.resume()

    assert caught.value.outcome_unknown
    assert waited < 2.0


def test_a_dead_server_is_a_connection_error_until_it_returns(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    with RedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS) as storage:
        fresh_redis_server.kill()
        with pytest.raises(RedisConnectionError) as caught:
            storage.hit("alice", [throttle], 1)

        assert not caught.value.outcome_unknown  # refused while connecting
        fresh_redis_server.restart()
        assert storage.hit("alice", [throttle], 1).allowed


# Construction and topologies


def test_default_timeouts_are_tight_and_retries_off(redis_server: RedisServer) -> None:
    with RedisStorage.from_url(redis_server.url) as storage:
        kwargs = storage.client.connection_pool.connection_kwargs

    assert kwargs["socket_connect_timeout"] == 0.05
    assert kwargs["socket_timeout"] == 0.1
    assert kwargs["retry"].get_retries() == 0


def test_from_env_reads_the_url_and_the_timeouts_set(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SWT_COMMAND_TIMEOUT", "300ms")
    throttle = Throttle("api", 2, 60)

    with RedisStorage.from_env(prefix=prefix) as storage:
        decision = storage.hit("env", [throttle], 1)
        timeouts = storage.socket_timeouts()

    async def async_timeouts() -> tuple[float | None, float | None]:
        async with AsyncRedisStorage.from_env(prefix=prefix) as storage:
            await storage.hit("env", [throttle], 1)
            return storage._connect_timeout, storage._command_timeout

    assert decision.allowed
    assert timeouts == (0.05, 0.3)  # the connect timeout is the sync default
    assert asyncio.run(async_timeouts()) == (0.5, 0.3)  # and the async one


@pytest.mark.parametrize("face", [RedisStorage, AsyncRedisStorage])
def test_from_env_names_the_variable_of_a_bad_url(
    monkeypatch: pytest.MonkeyPatch, face: type
) -> None:
    monkeypatch.setenv("REDIS_URL", "notaurl")

    with pytest.raises(ConfigurationError) as caught:
        face.from_env()

    assert caught.value.field == "redis_url"
    assert caught.value.message.startswith(
        "setting redis_url (env REDIS_URL or SWT_REDIS_URL): not a Redis URL"
    )


def test_from_env_without_a_url_says_which_variable_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("REDIS_URL", "SWT_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ConfigurationError) as caught:
        RedisStorage.from_env()

    assert caught.value.field == "redis_url"
    assert "set REDIS_URL (or SWT_REDIS_URL)" in caught.value.message


def test_a_cluster_node_reached_as_one_server_says_how_to_connect(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    node = redis_cluster.nodes[0]
    throttle = Throttle("api", 5, 60)
    with RedisStorage.from_url(node.url, prefix=prefix, **TIMEOUTS) as storage:
        # Some identifier's slot is held by another node: it answers MOVED.
        errors = []
        for n in range(20):
            try:
                storage.hit(f"user-{n}", [throttle], 1)
            except StorageOperationError as error:
                errors.append(error)

    assert errors
    assert errors[0].context["redis_error"] == "MOVED"
    assert errors[0].message.startswith(
        "the Redis reached is a Cluster node (deciding a hit): it answered MOVED "
    )
    assert "redis+cluster://" in errors[0].get_recovery_suggestion()


def test_health_of_a_cluster_node_reached_as_one_server_says_so(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    with redis_cluster.client() as cluster:
        owner = cluster.get_node_from_key(f"{prefix}:{{health}}").port

    node = next(n for n in redis_cluster.nodes if n.port != owner)
    with RedisStorage.from_url(node.url, prefix=prefix, **TIMEOUTS) as storage:
        health = storage.health()

    assert (health.healthy, health.answers_ping) == (False, True)
    assert health.detail.startswith(
        "the Redis reached is a Cluster node (a health check): it answered MOVED"
    )


def test_a_unix_socket_url_works(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    socket_path = tmp_path / "redis.sock"
    redis_server_factory("--unixsocket", str(socket_path))

    with RedisStorage.from_url(f"unix://{socket_path}", **TIMEOUTS) as storage:
        assert storage.hit("alice", [Throttle("api", 1, 60)], 1).allowed


def test_a_client_passed_in_stays_open(redis_server: RedisServer, prefix: str) -> None:
    client = redis_server.client(retry=Retry(NoBackoff(), 0))
    storage = RedisStorage(client, prefix=prefix)

    storage.hit("alice", [Throttle("api", 1, 60)], 1)
    storage.close()

    assert client.ping()
    client.close()


@pytest.mark.parametrize("how", ["url", "cluster-url", "nodes"])
def test_cluster_clients_come_from_nodes_or_urls(
    redis_cluster: RedisCluster, prefix: str, how: str
) -> None:
    host, port = redis_cluster.startup_nodes[0]
    if how == "url":
        storage = RedisStorage.from_url(f"redis+cluster://{host}:{port}", prefix=prefix)
    elif how == "cluster-url":
        storage = RedisStorage.from_cluster(url=f"redis://{host}:{port}", prefix=prefix)
    else:
        storage = RedisStorage.from_cluster([(host, port)], prefix=prefix)

    with storage:
        assert isinstance(storage.client, redis.cluster.RedisCluster)
        assert storage.hit("alice", [Throttle("api", 1, 60)], 1).allowed


def test_two_throttles_on_cluster_admit_together_or_record_nothing(
    cluster_storage: RedisStorage,
) -> None:
    wide, narrow = Throttle("wide", 10, 60), Throttle("narrow", 1, 60)
    cluster_storage.hit("alice", [wide, narrow], 1)

    refused = cluster_storage.hit("alice", [wide, narrow], 1)

    _, wide_ring, narrow_ring = cluster_storage.keys("alice", [wide, narrow])
    assert not refused.allowed
    assert count_in_ring(cluster_storage, wide_ring) == 1
    assert count_in_ring(cluster_storage, narrow_ring) == 1


def test_a_cluster_node_without_the_library_gets_it_on_first_use(prefix: str) -> None:
    throttle = Throttle("api", 5, 60)
    with (
        RedisCluster() as cluster,
        RedisStorage.from_cluster(
            cluster.startup_nodes, prefix=prefix, **TIMEOUTS
        ) as storage,
    ):
        storage.hit("alice", [throttle], 1)
        owner = storage.client.get_node_from_key(storage.keys("alice")[0])
        storage.client.execute_command(
            "FUNCTION FLUSH", target_nodes=storage.client.ALL_NODES
        )

        decision = storage.hit("alice", [throttle], 1)

        assert decision.records[0].total_hits == 2
        loaded = {
            node.name: bool(
                storage.client.execute_command("FUNCTION LIST", target_nodes=node)
            )
            for node in storage.client.get_primaries()
        }
        assert loaded == {name: name == owner.name for name in loaded}


def test_decisions_continue_after_a_sentinel_failover(
    redis_sentinel: SentinelSet,
) -> None:
    throttle = Throttle("api", 10, 60)
    storage = RedisStorage.from_sentinel(
        redis_sentinel.service_name, redis_sentinel.sentinels, **TIMEOUTS
    )
    for _ in range(3):
        storage.hit("alice", [throttle], 1)
    with redis_sentinel.master().client() as master:
        assert master.wait(1, 5_000) == 1

    new_master = redis_sentinel.failover(wait_for_replica=True, timeout_s=40)

    decisions = []

    def decided() -> bool:
        try:
            decisions.append(storage.hit("alice", [throttle], 1))
        except RedisConnectionError:
            return False
        return True

    wait_for(decided, "a decision from the new master", timeout_s=10)
    storage.close()
    assert decisions[-1].allowed
    assert decisions[-1].records[0].total_hits == 4
    with redis_sentinel.master().client() as master:
        assert redis_sentinel.master_address() == new_master
        assert master.exists(storage.keys("alice", [throttle])[1]) == 1


# Many threads, one pool: waiting for a free connection, never failing


def _storage_for(
    request: pytest.FixtureRequest, topology: str, **options: Any
) -> RedisStorage:
    prefix = request.getfixturevalue("redis_prefix").rstrip(":")
    if topology == "cluster":
        nodes = request.getfixturevalue("redis_cluster").startup_nodes
        return RedisStorage.from_cluster(nodes, prefix=prefix, **options)

    if topology == "sentinel":
        sentinels = request.getfixturevalue("redis_sentinel")
        return RedisStorage.from_sentinel(
            sentinels.service_name, sentinels.sentinels, prefix=prefix, **options
        )

    url = request.getfixturevalue("redis_server").url
    return RedisStorage.from_url(url, prefix=prefix, **options)


@pytest.mark.redis
@pytest.mark.parametrize("topology", ["standalone", "cluster", "sentinel"])
def test_more_threads_than_connections_wait_and_all_get_decisions(
    request: pytest.FixtureRequest, topology: str
) -> None:
    throttle = Throttle("api", 50, 60)
    storage = _storage_for(request, topology)  # the defaults: 100 connections
    start = threading.Barrier(150)

    def hit() -> bool:
        start.wait()
        return storage.hit("one-key", [throttle], 1).allowed

    with ThreadPoolExecutor(150) as pool:
        allowed = list(pool.map(lambda _: hit(), range(150)))

    assert allowed.count(True) == 50
    assert allowed.count(False) == 100
    assert storage.peek("one-key", [throttle], 0).records[0].total_hits == 50
    storage.close()


def test_a_pool_still_full_after_pool_timeout_is_an_operation_error(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    storage = RedisStorage.from_url(
        fresh_redis_server.url, max_connections=1, pool_timeout=0.05, **TIMEOUTS
    )
    storage.hit("alice", [throttle], 1)
    busy = threading.Thread(
        target=storage.client.execute_command, args=("DEBUG", "SLEEP", 0.3)
    )
    busy.start()  # holds the only connection for 0.3 s
    time.sleep(0.05)

    began = time.monotonic()
    with pytest.raises(StorageOperationError) as caught:
        storage.hit("alice", [throttle], 1)
    waited = time.monotonic() - began

    busy.join()
    error = caught.value
    assert str(error) == (
        "no free Redis connection (deciding a hit): all max_connections=1 stayed "
        "in use for pool_timeout=0.05 s (nothing was sent)"
    )
    assert error.outcome_unknown is False
    assert error.context["redis_error"] == "max_connections"
    assert 0.04 < waited < 0.3  # before the holder is done
    assert storage.hit("alice", [throttle], 1).records[0].total_hits == 2
    storage.close()


# A Cluster slot in migration


def test_a_hit_on_a_migrating_slot_fails_as_retry_safe_and_counts_nothing(
    prefix: str,
) -> None:
    throttle = Throttle("api", 5, 60)
    with RedisCluster() as cluster:
        storage = RedisStorage.from_cluster(
            cluster.startup_nodes, prefix=prefix, **TIMEOUTS
        )
        storage.hit("alice", [throttle], 1)
        index, ring = storage.keys("alice", [throttle])
        _migrate_ring_only(storage.client, index, ring)

        began = time.monotonic()
        with pytest.raises(RedisConnectionError) as caught:
            storage.hit("alice", [throttle], 1)
        waited = time.monotonic() - began

        async def hit_async() -> RedisConnectionError:
            async with AsyncRedisStorage.from_cluster(
                cluster.startup_nodes, prefix=prefix, **TIMEOUTS
            ) as face:
                with pytest.raises(RedisConnectionError) as caught:
                    await face.hit("alice", [throttle], 1)
                return caught.value

        errors = [caught.value, asyncio.run(hit_async())]
        target = storage.client.get_node_from_key(ring)
        moved = storage.client.execute_command(
            "GETRANGE", ring, 0, 28, target_nodes=target
        )
        storage.close()

    for error in errors:
        assert type(error) is RedisConnectionError
        assert error.outcome_unknown is False
        assert is_retry_safe(error, counts=True)
        assert "a slot is migrating; the command never ran" in str(error)

    # redis-py's redirect loop: 16 attempts, the last eight 50 ms apart.
    assert 0.35 < waited < 2.0
    assert int.from_bytes(moved[9:13], "big") == 1


def _migrate_ring_only(
    client: redis.cluster.RedisCluster, index: str, ring: str
) -> None:
    """Start moving the slot of ``index`` and move its ring alone: TRYAGAIN."""
    slot = redis.cluster.key_slot(index.encode())
    source = client.get_node_from_key(index)
    target = next(n for n in client.get_primaries() if n.name != source.name)
    source_id = client.execute_command("CLUSTER MYID", target_nodes=source)
    target_id = client.execute_command("CLUSTER MYID", target_nodes=target)
    client.execute_command(
        "CLUSTER SETSLOT", slot, "IMPORTING", source_id, target_nodes=target
    )
    client.execute_command(
        "CLUSTER SETSLOT", slot, "MIGRATING", target_id, target_nodes=source
    )
    client.execute_command(
        "MIGRATE", target.host, target.port, ring, 0, 5000, target_nodes=source
    )


# Health


def test_a_healthy_server_is_healthy(storage: RedisStorage, prefix: str) -> None:
    health = storage.health()

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        True,
        True,
        True,
    )
    assert health.backend == "redis"
    assert 0 < health.latency_ms < 1_000
    assert 0 < pttl(storage, f"{prefix}:{{health}}") <= 1_000


def test_a_healthy_cluster_is_healthy(cluster_storage: RedisStorage) -> None:
    health = cluster_storage.health()

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        True,
        True,
        True,
    )


def test_a_server_pausing_writes_answers_ping_but_is_unhealthy(
    fresh_redis_server: RedisServer,
) -> None:
    with RedisStorage.from_url(fresh_redis_server.url) as storage:
        admin = fresh_redis_server.client()
        admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        try:
            began = time.monotonic()
            health = storage.health()
            waited = time.monotonic() - began
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        False,
        True,
        False,
    )
    assert health.detail.startswith("Redis answered PING but did not acknowledge")
    assert waited < 0.1 + 0.4  # the command timeout, and a margin


@pytest.mark.parametrize("refusal", ["pause", "memory"])
def test_a_peek_answers_where_writes_are_refused(
    fresh_redis_server: RedisServer, refusal: str
) -> None:
    # FCALL_RO of a no-writes function: under CLIENT PAUSE WRITE or with
    # memory full, hits cannot be recorded, yet a peek still reads the state.
    throttle = Throttle("api", 5, 60)
    admin = fresh_redis_server.client()
    with RedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS) as storage:
        storage.hit("alice", [throttle], 2)
        if refusal == "pause":
            admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
        else:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)

        try:
            peeked = storage.peek("alice", [throttle], 1)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.config_set("maxmemory", 0)
            admin.close()

    assert peeked.allowed
    assert (peeked.records[0].total_hits, peeked.records[0].remaining) == (3, 2)


def test_a_stopped_server_does_not_answer_ping_and_nothing_is_raised(
    fresh_redis_server: RedisServer,
) -> None:
    with RedisStorage.from_url(fresh_redis_server.url) as storage:
        fresh_redis_server.kill()
        health = storage.health()

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        False,
        False,
        False,
    )
    assert health.detail.startswith("Redis did not answer PING: Redis is unreachable")


# Limitation: reset follows the index


def test_reset_without_throttles_misses_rings_of_an_evicted_index(
    storage: RedisStorage,
) -> None:
    old, new = Throttle("old", 5, 60), Throttle("new", 5, 60)
    storage.hit("alice", [old], 1)
    index, old_ring, new_ring = storage.keys("alice", [old, new])
    storage.client.delete(index)  # as an allkeys-* or volatile-* policy may
    storage.hit("alice", [new], 1)
    storage.hit("alice", [old], 1)  # written again, but not created: not listed

    storage.reset("alice")

    assert storage.client.exists(index, new_ring) == 0
    assert count_in_ring(storage, old_ring) == 2  # until it expires on its own
    storage.reset("alice", [old])
    assert storage.client.exists(old_ring) == 0


# After FUNCTION FLUSH: one load for every caller that needs it at once


def _function_loads(server: RedisServer) -> int:
    with server.client() as admin:
        stats = admin.info("commandstats")
    return int(stats.get("cmdstat_function|load", {}).get("calls", 0))


def test_threads_finding_the_library_missing_share_one_load(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 1_000, 60)
    storage = RedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS)
    storage.hit("warm", [throttle], 1)
    with fresh_redis_server.client() as admin:
        admin.function_flush()
        admin.config_resetstat()

    # The load waits until every thread has found the library missing, so
    # each of them would send its own without the shared flight.
    missing = threading.Semaphore(0)
    execute = storage._execute

    def counting(args: tuple[Any, ...], key: str) -> Any:
        if args[0] == "FUNCTION":
            for _ in range(90):
                assert missing.acquire(timeout=5)
        try:
            return execute(args, key)
        except redis.ResponseError:
            missing.release()
            raise

    storage._execute = counting  # type: ignore[method-assign]
    with ThreadPoolExecutor(90) as pool:
        decisions = list(
            pool.map(lambda i: storage.hit(f"c{i}", [throttle], 1), range(90))
        )

    assert [d.records[0].total_hits for d in decisions] == [1] * 90
    assert _function_loads(fresh_redis_server) == 1
    storage.close()
