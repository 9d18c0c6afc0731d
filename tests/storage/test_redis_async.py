"""``AsyncRedisStorage``: the asyncio face, and many clients hammering one key."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import threading
import time
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from sliding_window_throttler import (
    AsyncResilientStorage,
    AsyncThrottler,
    ConfigurationError,
    StorageOperationError,
    StorageTimeoutError,
    StorageUnavailableError,
    Throttle,
)
from sliding_window_throttler.recovery import BreakerState
from sliding_window_throttler.storage import AsyncRedisStorage, RedisStorage
from sliding_window_throttler.storage._redis_common import LIBRARY
from sliding_window_throttler.storage.base import StorageHealth

from redis_servers import RedisCluster, RedisServer, SentinelSet, wait_for

pytestmark = pytest.mark.redis

TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
MS = 1_000
S = 1_000_000


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix.rstrip(":")


def test_the_async_face_decides_as_the_sync_one(
    redis_server: RedisServer, prefix: str
) -> None:
    throttles = [Throttle("a", 3, 1, block_duration=2), Throttle("b", 5, 10)]
    sync = RedisStorage.from_url(redis_server.url, prefix=f"{prefix}:s", **TIMEOUTS)

    async def run() -> list[Any]:
        async with AsyncRedisStorage.from_url(
            redis_server.url, prefix=f"{prefix}:a", **TIMEOUTS
        ) as storage:
            return [
                await storage.hit("u", throttles, step % 3, step * 150 * MS)
                for step in range(40)
            ]

    got = asyncio.run(run())

    expected = [
        sync.hit("u", throttles, step % 3, step * 150 * MS) for step in range(40)
    ]
    sync.close()
    assert got == expected


def test_async_peek_reset_and_decide(redis_server: RedisServer, prefix: str) -> None:
    throttle = Throttle("api", 1, 60)

    async def run() -> tuple[bool, bool, bool, int]:
        async with AsyncRedisStorage.from_url(
            redis_server.url, prefix=prefix, **TIMEOUTS
        ) as storage:
            decision, at = await storage.decide("alice", [throttle], 1)
            peeked = await storage.peek("alice", [throttle], 1)
            await storage.reset("alice")
            again = await storage.hit("alice", [throttle], 1)
            return decision.allowed, peeked.allowed, again.allowed, at

    allowed, peeked, again, at = asyncio.run(run())

    assert (allowed, peeked, again) == (True, False, True)
    assert abs(at - time.time() * S) < 60 * S


@pytest.mark.parametrize("how", ["nodes", "url"])
def test_async_cluster_storages_work(
    redis_cluster: RedisCluster, prefix: str, how: str
) -> None:
    host, port = redis_cluster.startup_nodes[0]
    throttles = [Throttle("wide", 10, 60), Throttle("narrow", 1, 60)]

    async def run() -> list[bool]:
        if how == "nodes":
            storage = AsyncRedisStorage.from_cluster([(host, port)], prefix=prefix)
        else:
            storage = AsyncRedisStorage.from_url(
                f"redis+cluster://{host}:{port}", prefix=prefix
            )

        async with storage:
            first = await storage.hit("alice", throttles, 1)
            second = await storage.hit("alice", throttles, 1)
            wide = await storage.peek("alice", throttles[:1], 1)
            return [first.allowed, second.allowed, wide.records[0].total_hits == 2]

    assert asyncio.run(run()) == [True, False, True]


def test_async_loader_recovers_from_function_and_script_flushes(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run(functions: bool) -> list[int]:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url,
            prefix=f"p{functions}",
            enable_redis_functions=functions,
            **TIMEOUTS,
        ) as storage:
            totals = []
            for _ in range(3):
                decision = await storage.hit("alice", [throttle], 1)
                totals.append(decision.records[0].total_hits)
                await storage.client.function_flush()
                await storage.client.script_flush()
            return totals

    assert asyncio.run(run(True)) == [1, 2, 3]
    assert asyncio.run(run(False)) == [1, 2, 3]


def test_async_timeouts_map_to_storage_timeouts(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run() -> StorageTimeoutError:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url, socket_timeout=0.1
        ) as storage:
            await storage.hit("alice", [throttle], 1)
            fresh_redis_server.pause()
            try:
                with pytest.raises(StorageTimeoutError) as caught:
                    await storage.hit("alice", [throttle], 1)
            finally:
                fresh_redis_server.resume()
            return caught.value

    assert asyncio.run(run()).outcome_unknown


def test_async_sentinel_storage_uses_the_master(redis_sentinel: SentinelSet) -> None:
    throttle = Throttle("api", 1, 60)

    async def run() -> list[bool]:
        async with AsyncRedisStorage.from_sentinel(
            redis_sentinel.service_name, redis_sentinel.sentinels, **TIMEOUTS
        ) as storage:
            first = await storage.hit("alice", [throttle], 1)
            second = await storage.hit("alice", [throttle], 1)
            return [first.allowed, second.allowed]

    assert asyncio.run(run()) == [True, False]
    with redis_sentinel.master().client() as master:
        assert master.function_list(library=LIBRARY.name)


# Many clients, one key: the invariant on the server's clock.

HAMMER_SECONDS = 5.0
HAMMER_LIMIT = 50


def _hammer(target: tuple[str, Any], prefix: str) -> tuple[list[int], int]:
    """One process: two asyncio clients, each with four tasks, for 5 seconds."""
    return asyncio.run(_hammer_clients(target, prefix))


async def _hammer_clients(
    target: tuple[str, Any], prefix: str
) -> tuple[list[int], int]:
    throttle = Throttle("hammer", HAMMER_LIMIT, 1)
    deadline = time.monotonic() + HAMMER_SECONDS

    async def task(storage: AsyncRedisStorage) -> tuple[list[int], int]:
        admitted, attempts = [], 0
        while time.monotonic() < deadline:
            decision, at = await storage.decide("one-key", [throttle], 1)
            attempts += 1
            if decision.allowed:
                admitted.append(at)
        return admitted, attempts

    kind, where = target
    storages = [
        AsyncRedisStorage.from_cluster(where, prefix=prefix, **TIMEOUTS)
        if kind == "cluster"
        else AsyncRedisStorage.from_url(where, prefix=prefix, **TIMEOUTS)
        for _ in range(2)
    ]
    results = await asyncio.gather(*(task(s) for s in storages for _ in range(4)))
    for storage in storages:
        await storage.close()

    return [at for admitted, _ in results for at in admitted], sum(
        n for _, n in results
    )


def _most_in_any_window(times: list[int], window_us: int) -> int:
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - window_us:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_four_processes_never_admit_more_than_the_limit_in_any_window(
    request: pytest.FixtureRequest, prefix: str, topology: str
) -> None:
    if topology == "cluster":
        target: tuple[str, Any] = (
            "cluster",
            request.getfixturevalue("redis_cluster").startup_nodes,
        )
    else:
        target = ("url", request.getfixturevalue("redis_server").url)

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_hammer, [(target, prefix)] * 4)

    times = sorted(at for admitted, _ in results for at in admitted)
    attempts = sum(n for _, n in results)
    assert _most_in_any_window(times, S) == HAMMER_LIMIT
    assert HAMMER_LIMIT * 4 <= len(times) <= HAMMER_LIMIT * (HAMMER_SECONDS + 1)
    assert attempts > 4 * len(times)


# Deadlines: one to get a connection ready, one per command.


def test_async_defaults_leave_socket_timeouts_to_the_storage(
    redis_server: RedisServer,
) -> None:
    async def run() -> dict[str, Any]:
        async with AsyncRedisStorage.from_url(redis_server.url) as storage:
            return dict(storage.client.connection_pool.connection_kwargs)

    kwargs = asyncio.run(run())

    assert kwargs["socket_timeout"] is None
    assert kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["retry"].get_retries() == 0


def test_many_tasks_connecting_at_once_all_get_decisions(
    redis_server: RedisServer, prefix: str
) -> None:
    throttle = Throttle("api", 1_000, 60)

    async def run() -> list[bool]:
        async with AsyncRedisStorage.from_url(
            redis_server.url, prefix=prefix
        ) as storage:
            decisions = await asyncio.gather(
                *(storage.hit(f"client-{i}", [throttle], 1) for i in range(100))
            )
            return [decision.allowed for decision in decisions]

    assert asyncio.run(run()) == [True] * 100


def test_a_connection_that_never_gets_ready_fails_with_the_outcome_known(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run() -> tuple[StorageTimeoutError, float]:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url, socket_connect_timeout=0.2, socket_timeout=0.1
        ) as storage:
            fresh_redis_server.pause()  # connects, then never answers HELLO
            try:
                began = time.monotonic()
                with pytest.raises(StorageTimeoutError) as caught:
                    await storage.hit("alice", [throttle], 1)
                waited = time.monotonic() - began
            finally:
                fresh_redis_server.resume()

            assert (await storage.hit("alice", [throttle], 1)).allowed
            return caught.value, waited

    error, waited = asyncio.run(run())

    assert not error.outcome_unknown
    assert "connecting" in str(error)
    assert 0.15 < waited < 1.0


def test_a_cut_command_leaves_no_reply_for_the_next_one(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run() -> list[int]:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url, socket_timeout=0.1
        ) as storage:
            await storage.hit("alice", [throttle], 1)
            fresh_redis_server.pause()
            try:
                with pytest.raises(StorageTimeoutError) as caught:
                    await storage.hit("bob", [throttle], 1)
            finally:
                fresh_redis_server.resume()

            assert caught.value.outcome_unknown
            await asyncio.sleep(0.05)  # the late reply of bob's hit arrives
            decisions = [await storage.peek("alice", [throttle], 0) for _ in range(3)]
            return [d.records[0].total_hits for d in decisions]

    assert asyncio.run(run()) == [1, 1, 1]


def test_a_hit_cancelled_by_its_caller_stays_cancelled(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run() -> bool:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url, socket_timeout=5.0
        ) as storage:
            await storage.hit("alice", [throttle], 1)
            fresh_redis_server.pause()
            try:
                task = asyncio.ensure_future(storage.hit("alice", [throttle], 1))
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                fresh_redis_server.resume()

            return (await storage.hit("bob", [throttle], 1)).allowed

    assert asyncio.run(run())


def test_a_deadline_never_cancels_what_runs_after_it(
    redis_server: RedisServer, prefix: str
) -> None:
    throttle = Throttle("api", 1_000, 60)

    async def run() -> None:
        async with AsyncRedisStorage.from_url(
            redis_server.url, prefix=prefix, socket_timeout=0.05
        ) as storage:
            for _ in range(5):
                await storage.hit("alice", [throttle], 1)
            # Well past every deadline of the hits above.
            await asyncio.sleep(0.2)

    asyncio.run(run())


# One storage, several event loops (asyncio.run twice)


def _total(client: Any, storage: AsyncRedisStorage, throttle: Throttle) -> int:
    """The ring's count of admissions, read by a sync client."""
    ring = storage.keys("alice", [throttle])[1]
    return int.from_bytes(client.getrange(ring, 0, 28)[9:13], "big")


def _connected_clients(server: RedisServer) -> int:
    with server.client() as admin:
        return int(admin.info("clients")["connected_clients"])


def test_a_new_event_loop_gets_fresh_connections_and_counts_each_hit_once(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)
    storage = AsyncRedisStorage.from_url(fresh_redis_server.url, **TIMEOUTS)

    async def hit() -> int:
        return (await storage.hit("alice", [throttle], 1)).records[0].total_hits

    totals = [asyncio.run(hit()), asyncio.run(hit()), asyncio.run(hit())]
    gc.collect()  # a connection left to the GC would warn (an error here)

    assert totals == [1, 2, 3]
    with fresh_redis_server.client() as admin:
        assert _total(admin, storage, throttle) == 3
    # The old loops' connections are closed: one left, and the probe's.
    wait_for(lambda: _connected_clients(fresh_redis_server) == 2, "old sockets closed")
    asyncio.run(storage.close())
    gc.collect()


def test_a_sentinel_storage_moves_to_a_new_event_loop(
    redis_sentinel: SentinelSet,
) -> None:
    throttle = Throttle("api", 5, 60)
    storage = AsyncRedisStorage.from_sentinel(
        redis_sentinel.service_name, redis_sentinel.sentinels, **TIMEOUTS
    )

    async def hit() -> int:
        return (await storage.hit("alice", [throttle], 1)).records[0].total_hits

    totals = [asyncio.run(hit()), asyncio.run(hit())]
    asyncio.run(storage.close())
    gc.collect()

    assert totals == [1, 2]


@pytest.mark.redis
@pytest.mark.parametrize("client", ["passed-in", "cluster"])
# The first loop's sockets cannot be closed once it is gone: the GC does it.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_client_that_cannot_move_is_refused_in_a_new_loop_before_sending(
    request: pytest.FixtureRequest, prefix: str, client: str
) -> None:
    throttle = Throttle("api", 5, 60)
    if client == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        storage = AsyncRedisStorage.from_cluster(
            cluster.startup_nodes, prefix=prefix, **TIMEOUTS
        )
        probe: Any = cluster.client()
    else:
        server = request.getfixturevalue("redis_server")
        storage = AsyncRedisStorage(
            redis.asyncio.Redis(port=server.port, retry=AsyncRetry(NoBackoff(), 0)),
            prefix=prefix,
        )
        probe = server.client()

    first, field, message = _two_loops(storage, throttle)
    total = _total(probe, storage, throttle)
    probe.close()
    del storage
    gc.collect()

    assert first == 1
    assert field == "client"
    assert message.startswith("this storage was used from another event loop (its ")
    assert "Create the storage inside the event loop that uses it" in message
    assert total == 1  # nothing was sent


def _two_loops(storage: AsyncRedisStorage, throttle: Throttle) -> tuple[int, str, str]:
    """A hit in one event loop, then one in another: the total, then the error."""

    async def hit() -> int:
        return (await storage.hit("alice", [throttle], 1)).records[0].total_hits

    first = asyncio.run(hit())
    with pytest.raises(ConfigurationError) as caught:
        asyncio.run(hit())

    return first, caught.value.field, str(caught.value)


def test_a_pooled_storage_is_refused_by_a_second_loop_while_the_first_is_open(
    redis_server: RedisServer, prefix: str
) -> None:
    throttle = Throttle("api", 5, 60)
    storage = AsyncRedisStorage.from_url(redis_server.url, prefix=prefix, **TIMEOUTS)

    async def hit() -> int:
        return (await storage.hit("alice", [throttle], 1)).records[0].total_hits

    first = asyncio.new_event_loop()
    assert first.run_until_complete(hit()) == 1
    with pytest.raises(ConfigurationError, match="which is still open"):
        asyncio.run(hit())

    first.close()
    assert asyncio.run(hit()) == 2  # the first loop is gone: fresh connections
    asyncio.run(storage.close())
    gc.collect()


# More tasks than connections: they wait


@pytest.mark.redis
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_more_tasks_than_connections_wait_and_all_get_decisions(
    request: pytest.FixtureRequest, prefix: str, topology: str
) -> None:
    throttle = Throttle("api", 50, 60)

    async def run() -> list[Any]:
        if topology == "cluster":
            nodes = request.getfixturevalue("redis_cluster").startup_nodes
            storage = AsyncRedisStorage.from_cluster(nodes, prefix=prefix)
        else:
            url = request.getfixturevalue("redis_server").url
            storage = AsyncRedisStorage.from_url(url, prefix=prefix)

        async with storage:  # the defaults: 100 connections
            return await asyncio.gather(
                *(storage.hit("one-key", [throttle], 1) for _ in range(300)),
                return_exceptions=True,
            )

    decisions = asyncio.run(run())

    assert [type(d).__name__ for d in decisions if not hasattr(d, "allowed")] == []
    assert [d.allowed for d in decisions].count(True) == 50
    assert [d.allowed for d in decisions].count(False) == 250


def test_a_task_finding_no_free_connection_in_time_gets_an_operation_error(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run() -> tuple[StorageOperationError, int, float]:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url, max_connections=1, pool_timeout=0.05, **TIMEOUTS
        ) as storage:
            await storage.hit("alice", [throttle], 1)
            stall = threading.Thread(
                target=_debug_sleep, args=(fresh_redis_server, 0.3)
            )
            stall.start()
            await asyncio.sleep(0.05)
            holder = asyncio.ensure_future(storage.hit("alice", [throttle], 1))
            await asyncio.sleep(0.01)  # it holds the only connection
            began = time.monotonic()
            with pytest.raises(StorageOperationError) as caught:
                await storage.hit("alice", [throttle], 1)
            waited = time.monotonic() - began
            total = (await holder).records[0].total_hits
            stall.join()
            return caught.value, total, waited

    error, total, waited = asyncio.run(run())

    assert str(error) == (
        "no free Redis connection (deciding a hit): all max_connections=1 stayed "
        "in use for pool_timeout=0.05 s (nothing was sent)"
    )
    assert error.outcome_unknown is False
    assert error.context["redis_error"] == "max_connections"
    assert total == 2  # the refused hit was never counted
    assert 0.04 < waited < 0.3  # before the holder is done


def _debug_sleep(server: RedisServer, seconds: float) -> None:
    with server.client() as admin:
        admin.execute_command("DEBUG", "SLEEP", seconds)


@pytest.mark.redis
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_hits_that_only_wait_for_a_connection_never_open_the_breaker(
    request: pytest.FixtureRequest, prefix: str, topology: str
) -> None:
    # Two resets hold both connections past the hits' deadline (0.25 s, less
    # than pool_timeout): every hit waits for a slot, and never sends.
    throttle = Throttle("api", 100, 60)
    if topology == "cluster":
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster").nodes
        storage = AsyncRedisStorage.from_cluster(
            [node.address for node in nodes],
            prefix=prefix,
            max_connections=2,
            **TIMEOUTS,
        )
    else:
        nodes = [request.getfixturevalue("fresh_redis_server")]
        storage = AsyncRedisStorage.from_url(
            nodes[0].url, prefix=prefix, max_connections=2, **TIMEOUTS
        )

    async def run() -> tuple[list[Any], AsyncResilientStorage, list[int]]:
        throttler = AsyncThrottler(storage, failure_strategy="fail-closed")
        assert isinstance(throttler.storage, AsyncResilientStorage)
        await throttler.hit("warm", throttle)
        _pause_clients(nodes, 0.6)
        holders = [asyncio.ensure_future(storage.reset(f"h{i}")) for i in range(2)]
        await asyncio.sleep(0.05)  # both connections are theirs
        results = await asyncio.gather(
            *(throttler.hit(f"c{i}", throttle) for i in range(40)),
            return_exceptions=True,
        )
        await asyncio.gather(*holders)
        totals = [
            (await storage.peek(f"c{i}", [throttle], 0)).records[0].total_hits
            for i in range(40)
        ]
        await storage.close()
        return results, throttler.storage, totals

    results, resilient, totals = asyncio.run(run())

    causes = [error.__cause__ for error in results]
    assert [type(error) for error in results] == [StorageUnavailableError] * 40
    assert [type(cause) for cause in causes] == [StorageOperationError] * 40
    assert [c.context["redis_error"] for c in causes] == ["max_connections"] * 40
    assert not any(cause.outcome_unknown for cause in causes)
    assert resilient.breaker.state is BreakerState.CLOSED
    assert resilient.stats().errors_by_code == {"STORAGE_OPERATION_FAILED": 40}
    assert totals == [0] * 40


def _pause_clients(nodes: list[RedisServer], seconds: float) -> None:
    """Hold every client's commands on these servers for ``seconds``."""
    for node in nodes:
        with node.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", int(seconds * 1000), "ALL")


@pytest.mark.redis
@pytest.mark.parametrize("client", ["passed-in", "cluster"])
def test_storages_off_their_own_pool_cut_calls_at_the_deadline_they_are_given(
    request: pytest.FixtureRequest, prefix: str, client: str
) -> None:
    throttle = Throttle("api", 5, 60)
    if client == "cluster":
        nodes: list[RedisServer] = request.getfixturevalue("redis_cluster").nodes
        storage = AsyncRedisStorage.from_cluster(
            [node.address for node in nodes], prefix=prefix, **TIMEOUTS
        )
    else:
        nodes = [request.getfixturevalue("fresh_redis_server")]
        storage = AsyncRedisStorage(
            redis.asyncio.Redis(port=nodes[0].port, retry=AsyncRetry(NoBackoff(), 0)),
            prefix=prefix,
        )

    async def run() -> tuple[bool, float, StorageTimeoutError]:
        bound = storage.bound_calls(0.1)
        await storage.hit("alice", [throttle], 1)
        _pause_clients(nodes, 0.5)
        began = time.monotonic()
        with pytest.raises(StorageTimeoutError) as caught:
            await storage.hit("alice", [throttle], 1)
        elapsed = time.monotonic() - began
        await asyncio.sleep(0.5)  # the pause ends
        await storage.close()
        await storage.client.aclose()
        return bound, elapsed, caught.value

    bound, elapsed, error = asyncio.run(run())

    assert bound is True
    assert 0.08 < elapsed < 0.3
    assert error.outcome_unknown  # the hit was sent: it may have counted


# Health


@pytest.mark.redis
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_async_health_of_a_healthy_server(
    request: pytest.FixtureRequest, prefix: str, topology: str
) -> None:
    async def run() -> StorageHealth:
        if topology == "cluster":
            nodes = request.getfixturevalue("redis_cluster").startup_nodes
            storage = AsyncRedisStorage.from_cluster(nodes, prefix=prefix)
        else:
            url = request.getfixturevalue("redis_server").url
            storage = AsyncRedisStorage.from_url(url, prefix=prefix)

        async with storage:
            return await storage.health()

    health = asyncio.run(run())

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        True,
        True,
        True,
    )
    assert health.detail.startswith("Redis answered PING and acknowledged a write")


@pytest.mark.parametrize("client", ["ours", "passed-in"])
def test_async_health_under_client_pause_write_returns_within_the_timeout(
    fresh_redis_server: RedisServer, client: str
) -> None:
    async def run() -> tuple[StorageHealth, float]:
        if client == "ours":
            storage = AsyncRedisStorage.from_url(fresh_redis_server.url)
        else:  # no socket timeout: the check's own deadline bounds it
            storage = AsyncRedisStorage(
                redis.asyncio.Redis(
                    port=fresh_redis_server.port, retry=AsyncRetry(NoBackoff(), 0)
                )
            )

        await storage.health()  # connected
        with fresh_redis_server.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
            try:
                began = time.monotonic()
                health = await storage.health()
                waited = time.monotonic() - began
            finally:
                admin.execute_command("CLIENT", "UNPAUSE")

        await storage.client.aclose()
        return health, waited

    health, waited = asyncio.run(run())

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        False,
        True,
        False,
    )
    assert waited < 0.1 + 0.4  # the command timeout, and a margin


def test_async_health_of_a_stopped_server_raises_nothing(
    fresh_redis_server: RedisServer,
) -> None:
    async def run() -> StorageHealth:
        async with AsyncRedisStorage.from_url(fresh_redis_server.url) as storage:
            fresh_redis_server.kill()
            return await storage.health()

    health = asyncio.run(run())

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        False,
        False,
        False,
    )


# After FUNCTION FLUSH: one load for every caller that needs it at once


def test_tasks_finding_the_library_missing_share_one_load(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 1_000, 60)

    async def run() -> list[int]:
        async with AsyncRedisStorage.from_url(
            fresh_redis_server.url, **TIMEOUTS
        ) as storage:
            # 90 connections ready: the 90 calls below go out at once.
            await asyncio.gather(
                *(storage.hit(f"w{i}", [throttle], 1) for i in range(90))
            )
            with fresh_redis_server.client() as admin:
                admin.function_flush()
                admin.config_resetstat()

            decisions = await asyncio.gather(
                *(storage.hit(f"c{i}", [throttle], 1) for i in range(90))
            )
            return [d.records[0].total_hits for d in decisions]

    assert asyncio.run(run()) == [1] * 90
    with fresh_redis_server.client() as admin:
        stats = admin.info("commandstats")
    assert stats["cmdstat_function|load"]["calls"] == 1


def test_a_task_waiting_for_a_cancelled_load_sends_it_and_is_decided(
    fresh_redis_server: RedisServer,
) -> None:
    throttle = Throttle("api", 5, 60)

    async def run() -> tuple[list[int], dict[str, int], int]:
        proxy = await _SlowLoadProxy(fresh_redis_server.port, 0.1).start()
        storage = AsyncRedisStorage.from_url(proxy.url, **TIMEOUTS)
        resilient = AsyncResilientStorage(storage, deadline=1.0)
        await asyncio.gather(*(resilient.hit(f"w{i}", [throttle], 1) for i in (1, 2)))
        with fresh_redis_server.client() as admin:
            admin.function_flush()
            admin.config_resetstat()

        # A's load is held in the proxy; B finds the library missing, waits
        # for A's load, and finds it abandoned when A's caller gives up.
        a = asyncio.ensure_future(
            asyncio.wait_for(resilient.hit("a", [throttle], 1), 0.03)
        )
        await asyncio.sleep(0.01)
        b = await resilient.hit("b", [throttle], 1)
        with pytest.raises(TimeoutError):
            await a

        totals = [
            (await storage.peek(who, [throttle], 0)).records[0].total_hits
            for who in ("a", "b")
        ]
        await storage.close()
        await proxy.aclose()
        with fresh_redis_server.client() as admin:
            loads = admin.info("commandstats")["cmdstat_function|load"]["calls"]
        return (
            [b.records[0].total_hits, *totals],
            resilient.stats().errors_by_code,
            loads,
        )

    totals, errors, loads = asyncio.run(run())

    assert totals == [1, 0, 1]  # B admitted and counted once; A never ran
    assert errors == {}
    assert loads == 2  # A's, then B's own


class _SlowLoadProxy:
    """A TCP proxy to a server that holds each ``FUNCTION LOAD`` ``delay`` s."""

    def __init__(self, port: int, delay: float) -> None:
        self._target, self._delay = port, delay
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> _SlowLoadProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def aclose(self) -> None:
        """Stop listening, and wait for the connections (closed first) to end."""
        assert self._server is not None
        self._server.close()
        await asyncio.gather(*self._handlers)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        reader, writer = await asyncio.open_connection("127.0.0.1", self._target)
        await asyncio.gather(
            self._pump(client_reader, writer, self._delay),
            self._pump(reader, client_writer, 0.0),
            return_exceptions=True,
        )

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        try:
            while data := await reader.read(1 << 16):
                if delay and b"FUNCTION" in data:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
