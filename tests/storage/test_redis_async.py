"""``AsyncRedisStorage``: the asyncio face, and many clients hammering one key."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import Any

import pytest

from sliding_window_throttler import StorageTimeoutError, Throttle
from sliding_window_throttler.storage import AsyncRedisStorage, RedisStorage
from sliding_window_throttler.storage._redis_common import LIBRARY

from redis_servers import RedisCluster, RedisServer, SentinelSet

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
