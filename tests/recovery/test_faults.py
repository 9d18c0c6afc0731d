"""
Fault injection against a real, private redis-server.

Each test gets a server of its own (``fresh_redis_server`` or
``redis_server_factory``) and breaks it: kill, SIGSTOP, ``CLIENT PAUSE``,
``FUNCTION FLUSH``/``SCRIPT FLUSH``, a full ``maxmemory``, bad addresses.
The breaker runs on the real monotonic clock with a short cool-down; timing
assertions are only "no longer than the deadline plus a generous margin".
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from sliding_window_throttler import Decision, Throttle
from sliding_window_throttler.errors import (
    RedisConnectionError,
    StorageError,
    StorageOperationError,
    StorageTimeoutError,
    StorageUnavailableError,
)
from sliding_window_throttler.recovery import (
    AsyncResilientStorage,
    BreakerState,
    CircuitBreaker,
    ExponentialBackoff,
    ResilientStorage,
)
from sliding_window_throttler.storage.redis import RedisStorage
from sliding_window_throttler.storage.redis_async import AsyncRedisStorage

from redis_servers import RedisServer

pytestmark = pytest.mark.redis

COMMAND_TIMEOUT = 0.05
DEADLINE = 0.1
COOL_DOWN = 0.3
MARGIN = 0.5
"""Generous slack for a loaded CI machine; the claims are about seconds."""

MANY = Throttle("many", 10_000, 600)
FEW = Throttle("few", 5, 600)


def redis_storage(url: str, **options: object) -> RedisStorage:
    return RedisStorage.from_url(
        url,
        socket_timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=COMMAND_TIMEOUT,
        **options,  # type: ignore[arg-type]
    )


def resilient(
    server: RedisServer, strategy: str, **options: object
) -> ResilientStorage:
    return ResilientStorage(
        redis_storage(server.url, **options),
        failure_strategy=strategy,
        breaker=CircuitBreaker(failure_threshold=3, cool_down=COOL_DOWN),
        retry=ExponentialBackoff(attempt_timeout=COMMAND_TIMEOUT),
        deadline=DEADLINE,
    )


def counted(server: RedisServer, identifier: str, throttle: Throttle = MANY) -> int:
    """Hits Redis holds for the pair (a peek of cost 0 counts nothing)."""
    storage = RedisStorage.from_url(server.url)
    try:
        return storage.peek(identifier, (throttle,), 0).records[0].total_hits
    finally:
        storage.close()


def timed(call: Callable[[], Decision]) -> tuple[Decision | BaseException, float]:
    start = time.monotonic()
    try:
        result: Decision | BaseException = call()
    except StorageError as exc:
        result = exc

    return result, time.monotonic() - start


def until_normal(
    storage: ResilientStorage, identifier: str, limit_s: float
) -> tuple[list[Decision], float]:
    """Hit until a decision is not degraded; return the decisions and the wait."""
    start = time.monotonic()
    decisions = []
    while time.monotonic() - start < limit_s:
        decision = storage.hit(identifier, (MANY,), 1)
        decisions.append(decision)
        if not decision.degraded:
            break

        time.sleep(0.01)

    return decisions, time.monotonic() - start


@pytest.fixture
def server(fresh_redis_server: RedisServer) -> Iterator[RedisServer]:
    yield fresh_redis_server
    if fresh_redis_server.is_running:
        fresh_redis_server.resume()


# Kill under steady traffic.


def test_kill_fail_open_admits_everything_marked_then_resumes(
    server: RedisServer,
) -> None:
    storage = resilient(server, "fail-open")
    before = [storage.hit("c", (MANY,), 1) for _ in range(20)]

    server.kill()
    down = [storage.hit("c", (MANY,), 1) for _ in range(50)]

    assert not any(d.degraded for d in before)
    assert all(d.allowed and d.degraded for d in down)
    assert {d.strategy for d in down} == {"fail-open"}
    assert storage.breaker.state is BreakerState.OPEN
    assert storage.stats().degraded_total == 50

    server.restart()
    waiting, waited = until_normal(storage, "c", COOL_DOWN + 5)
    after = [storage.hit("c", (MANY,), 1) for _ in range(10)]

    assert not waiting[-1].degraded
    assert waited <= COOL_DOWN + MARGIN
    assert not any(d.degraded for d in after)
    # The restarted server lost everything before the kill; from then on every
    # hit it decided is counted exactly once.
    assert counted(server, "c") == 1 + 10
    storage.close()


def test_kill_fail_closed_refuses_with_the_503_error(server: RedisServer) -> None:
    storage = resilient(server, "fail-closed")
    storage.hit("c", (MANY,), 1)

    server.kill()
    errors = []
    for _ in range(10):
        with pytest.raises(StorageUnavailableError) as info:
            storage.hit("c", (MANY,), 1)

        errors.append(info.value)

    assert all(isinstance(e, StorageError) for e in errors)
    assert all(e.get_recovery_suggestion() for e in errors)
    assert isinstance(errors[0].__cause__, RedisConnectionError)
    assert errors[-1].retry_after > 0

    server.restart()
    time.sleep(COOL_DOWN)
    assert not storage.hit("c", (MANY,), 1).degraded
    storage.close()


def test_kill_local_keeps_enforcing_per_process(server: RedisServer) -> None:
    storage = resilient(server, "local")
    server.kill()

    down = [storage.hit("c", (FEW,), 1) for _ in range(8)]

    assert [d.allowed for d in down] == [True] * 5 + [False] * 3
    assert all(d.degraded and d.strategy == "local" for d in down)

    server.restart()
    time.sleep(COOL_DOWN)
    back = storage.hit("c", (FEW,), 1)

    assert back.allowed and not back.degraded
    assert counted(server, "c", FEW) == 1
    storage.close()


# Stalls.


def test_sigstop_never_holds_a_decision_past_the_deadline(server: RedisServer) -> None:
    storage = resilient(server, "fail-open")
    storage.hit("c", (MANY,), 1)

    server.pause()
    results = [timed(lambda: storage.hit("c", (MANY,), 1)) for _ in range(20)]

    assert all(elapsed <= DEADLINE + MARGIN for _, elapsed in results)
    assert all(isinstance(r, Decision) and r.degraded for r, _ in results)
    assert storage.breaker.state is BreakerState.OPEN
    assert storage.stats().errors_by_code.get("REDIS_TIMEOUT", 0) >= 3

    server.resume()
    waiting, waited = until_normal(storage, "c", COOL_DOWN + 5)

    assert not waiting[-1].degraded
    assert waited <= COOL_DOWN + MARGIN
    # Hits that timed out may have run once the server thawed (their outcome
    # was unknown); none ran twice.
    admitted_by_redis = 1 + sum(not d.degraded for d in waiting)
    sent_to_redis = admitted_by_redis + storage.stats().errors_by_code["REDIS_TIMEOUT"]
    assert admitted_by_redis <= counted(server, "c") <= sent_to_redis
    storage.close()


def test_client_pause_write_is_handled_by_deadline_and_breaker(
    server: RedisServer,
) -> None:
    storage = resilient(server, "fail-open")
    storage.hit("c", (MANY,), 1)
    admin = server.client()
    admin.client_pause(10_000, all=False)  # CLIENT PAUSE 10000 WRITE
    try:
        assert admin.ping()
        results = [timed(lambda: storage.hit("c", (MANY,), 1)) for _ in range(10)]

        assert all(elapsed <= DEADLINE + MARGIN for _, elapsed in results)
        assert all(isinstance(r, Decision) and r.degraded for r, _ in results)
        assert storage.stats().breaker.state is BreakerState.OPEN
    finally:
        admin.client_unpause()
        admin.close()

    waiting, waited = until_normal(storage, "c", COOL_DOWN + 5)

    assert not waiting[-1].degraded
    assert waited <= COOL_DOWN + MARGIN
    storage.close()


# Flushed code.


@pytest.mark.parametrize(
    ("functions", "flush"),
    [(True, "function_flush"), (False, "script_flush"), (True, "script_flush")],
)
def test_flushed_code_under_traffic_is_reloaded_without_errors(
    server: RedisServer, functions: bool, flush: str
) -> None:
    storage = resilient(server, "fail-closed", enable_redis_functions=functions)
    stop = threading.Event()
    flushes = 0

    def flusher() -> None:
        nonlocal flushes
        admin = server.client()
        while not stop.is_set() and flushes < 12:
            time.sleep(0.04)
            getattr(admin, flush)()
            flushes += 1

        admin.close()

    thread = threading.Thread(target=flusher)
    thread.start()
    decisions: list[Decision] = []
    try:
        while thread.is_alive() or len(decisions) < 100:
            decisions.append(storage.hit("c", (MANY,), 1))
    finally:
        stop.set()
        thread.join()

    assert flushes == 12
    assert not any(d.degraded for d in decisions)
    assert counted(server, "c") == len(decisions)
    assert storage.stats().refused_total == 0
    storage.close()


# A full server.


def test_full_maxmemory_is_a_typed_operation_error_then_the_strategy(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(
        "--maxmemory", "2mb", "--maxmemory-policy", "noeviction"
    )
    bare = redis_storage(server.url)
    wrapped = resilient(server, "fail-open")
    bare.hit("c", (MANY,), 1)  # loads the library while there is room
    fill(server)

    with pytest.raises(StorageOperationError) as info:
        bare.hit("new-client", (MANY,), 1)

    decisions = [wrapped.hit(f"client-{i}", (MANY,), 1) for i in range(10)]

    assert "maxmemory" in info.value.get_recovery_suggestion()
    assert "maxmemory" in info.value.message
    assert all(d.allowed and d.degraded for d in decisions)
    assert wrapped.breaker.state is BreakerState.CLOSED
    assert wrapped.stats().errors_by_code == {"STORAGE_OPERATION_FAILED": 10}
    bare.close()
    wrapped.close()


def fill(server: RedisServer) -> None:
    """
    Write until Redis refuses with OOM, then keep it over the limit.

    Freeing the refused command's buffer can take memory back under
    ``maxmemory``; halving the limit keeps every later write refused.
    """
    client = server.client()
    try:
        for i in range(10_000):
            try:
                client.set(f"filler:{i}", b"x" * 10_000)
            except redis.exceptions.OutOfMemoryError:
                used = client.info("memory")["used_memory"]
                client.config_set("maxmemory", used // 2)
                return
    finally:
        client.close()

    raise AssertionError("the server never filled up")


# Bad addresses at start-up.


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_wrong_password_is_a_typed_error_with_a_suggestion(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(password="right")
    url = f"redis://:wrong@127.0.0.1:{server.port}/0"

    error = startup_error(url)

    # Refused credentials are an error reply, not an outage: every retry would
    # be refused the same way, so they never open the breaker.
    assert isinstance(error, StorageOperationError)
    assert error.context["redis_error"] == "AUTH"
    assert "username or password" in error.get_recovery_suggestion()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"redis://127.0.0.1:{free_port()}/0", id="wrong-port"),
        pytest.param("redis://no-such-host.invalid:6399/0", id="unknown-host"),
    ],
)
def test_unreachable_address_is_a_typed_error_with_a_suggestion(url: str) -> None:
    error = startup_error(url)

    assert isinstance(error, RedisConnectionError)
    assert "reachable" in error.get_recovery_suggestion()


def startup_error(url: str) -> StorageError:
    """What the first decision against ``url`` raises, with no strategy around."""
    try:
        storage = redis_storage(url)
        storage.hit("c", (MANY,), 1)
    except StorageError as exc:
        return exc

    raise AssertionError(f"{url} answered")


def test_startup_error_through_fail_closed_keeps_the_cause() -> None:
    storage = ResilientStorage(
        redis_storage(f"redis://127.0.0.1:{free_port()}/0"),
        failure_strategy="fail-closed",
    )

    with pytest.raises(StorageUnavailableError) as info:
        storage.hit("c", (MANY,), 1)

    assert isinstance(info.value.__cause__, RedisConnectionError)


# The async face.


def test_async_kill_and_sigstop_follow_the_strategy_within_the_deadline(
    server: RedisServer,
) -> None:
    async def scenario() -> None:
        storage = AsyncResilientStorage(
            AsyncRedisStorage.from_url(
                server.url,
                socket_timeout=COMMAND_TIMEOUT,
                socket_connect_timeout=COMMAND_TIMEOUT,
            ),
            failure_strategy="local",
            breaker=CircuitBreaker(failure_threshold=3, cool_down=COOL_DOWN),
            retry=ExponentialBackoff(attempt_timeout=COMMAND_TIMEOUT),
            deadline=DEADLINE,
        )
        assert not (await storage.hit("c", (FEW,), 1)).degraded

        server.pause()
        for _ in range(5):
            start = time.monotonic()
            decision = await storage.hit("c", (FEW,), 1)
            assert time.monotonic() - start <= DEADLINE + MARGIN
            assert decision.degraded

        server.resume()
        server.kill()
        assert (await storage.hit("c", (FEW,), 1)).degraded

        server.restart()
        await asyncio.sleep(COOL_DOWN)
        back = await storage.hit("c", (FEW,), 1)
        assert not back.degraded
        await storage.close()

    asyncio.run(scenario())


@pytest.mark.redis
def test_async_storage_cuts_its_own_calls_at_the_deadline_it_is_given(
    server: RedisServer,
) -> None:
    # Timeouts far longer than the deadline: only the deadline handed to the
    # storage (bound_calls, as a resilient storage does) ends the wait in time.
    async def scenario() -> tuple[bool, float, StorageTimeoutError]:
        storage = AsyncRedisStorage.from_url(
            server.url, socket_timeout=5, socket_connect_timeout=5
        )
        bound = storage.bound_calls(DEADLINE)
        try:
            await storage.hit("c", (FEW,), 1)
            server.pause()
            start = time.monotonic()
            with pytest.raises(StorageTimeoutError) as caught:
                await storage.hit("c", (FEW,), 1)

            return bound, time.monotonic() - start, caught.value
        finally:
            server.resume()
            await storage.close()

    bound, elapsed, error = asyncio.run(scenario())

    assert bound is True
    assert elapsed <= DEADLINE + MARGIN
    assert error.outcome_unknown  # the hit was sent: it may have counted


@pytest.mark.redis
def test_a_resilient_async_storage_keeps_its_deadline_over_long_timeouts(
    server: RedisServer,
) -> None:
    async def scenario() -> tuple[list[float], dict[str, int]]:
        storage = AsyncResilientStorage(
            AsyncRedisStorage.from_url(
                server.url, socket_timeout=5, socket_connect_timeout=5
            ),
            failure_strategy="fail-open",
            retry=ExponentialBackoff(max_attempts=1),
            deadline=DEADLINE,
        )
        elapsed = []
        try:
            assert not (await storage.hit("c", (FEW,), 1)).degraded
            server.pause()
            for _ in range(3):
                start = time.monotonic()
                assert (await storage.hit("c", (FEW,), 1)).degraded
                elapsed.append(time.monotonic() - start)
        finally:
            server.resume()
            await storage.close()

        return elapsed, storage.stats().errors_by_code

    elapsed, errors = asyncio.run(scenario())

    assert max(elapsed) <= DEADLINE + MARGIN
    assert errors == {"REDIS_TIMEOUT": 3}
