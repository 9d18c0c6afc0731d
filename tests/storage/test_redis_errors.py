"""How Redis error replies reach the caller: typed, and to the failure strategy."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from sliding_window_throttler import (
    ConfigurationError,
    RedisConnectionError,
    StorageOperationError,
    StorageTimeoutError,
    Throttle,
    Throttler,
)
from sliding_window_throttler.recovery.backoff import RetryWithBackoff, is_retry_safe
from sliding_window_throttler.storage import AsyncRedisStorage, RedisStorage
from sliding_window_throttler.storage._redis_common import (
    CREDENTIALS_SUGGESTION,
    PERMISSIONS_SUGGESTION,
    index_key,
    ring_key,
)

from redis_servers import RedisCluster, RedisServer

pytestmark = pytest.mark.redis

TIMEOUTS = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0}
API = Throttle("api", 3, 60)


def fill_memory(server: RedisServer) -> None:
    client = server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    client.close()


@pytest.mark.parametrize("functions", [True, False])
def test_out_of_memory_is_a_storage_operation_error_on_both_call_paths(
    fresh_redis_server: RedisServer, functions: bool
) -> None:
    storage = RedisStorage.from_url(
        fresh_redis_server.url, enable_redis_functions=functions, **TIMEOUTS
    )
    assert storage.hit("warm", [API], 1).allowed
    fill_memory(fresh_redis_server)

    with pytest.raises(StorageOperationError) as caught:
        storage.hit("new", [API], 1)

    assert caught.value.context["redis_error"] == "OOM"
    storage.close()


@pytest.mark.parametrize("functions", [True, False])
def test_out_of_memory_goes_to_the_failure_strategy(
    fresh_redis_server: RedisServer, functions: bool
) -> None:
    storage = RedisStorage.from_url(
        fresh_redis_server.url, enable_redis_functions=functions, **TIMEOUTS
    )
    throttler = Throttler(storage, failure_strategy="fail-open")
    assert throttler.hit("warm", API).allowed
    fill_memory(fresh_redis_server)

    decision = throttler.hit("new", API)

    assert (decision.allowed, decision.degraded, decision.strategy) == (
        True,
        True,
        "fail-open",
    )
    storage.close()


@pytest.mark.parametrize("forbidden", ["-fcall", "-function"])
def test_an_acl_without_functions_falls_back_to_scripts(
    fresh_redis_server: RedisServer, forbidden: str
) -> None:
    admin = fresh_redis_server.client()
    admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", forbidden
    )
    admin.close()
    url = fresh_redis_server.url.replace("redis://", "redis://app:pw@")
    storage = RedisStorage.from_url(url, **TIMEOUTS)
    throttler = Throttler(storage)

    allowed = [throttler.hit("a", API, now_ms=0).allowed for _ in range(4)]

    assert allowed == [True, True, True, False]
    assert storage._core.functions is False
    storage.close()


def test_an_acl_without_fcall_ro_peeks_through_fcall_and_keeps_functions(
    fresh_redis_server: RedisServer,
) -> None:
    # Functions allowed, FCALL_RO and scripts not: a peek must not switch the
    # storage to EVALSHA, which this user may not run.
    admin = fresh_redis_server.client()
    admin.execute_command(
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">pw",
        "~*",
        "&*",
        "+@all",
        "-fcall_ro",
        "-evalsha",
        "-eval",
    )
    admin.close()
    url = fresh_redis_server.url.replace("redis://", "redis://app:pw@")
    storage = RedisStorage.from_url(url, **TIMEOUTS)
    throttler = Throttler(storage)

    first = throttler.hit("a", API, now_ms=0).allowed
    peeked = throttler.peek("a", API, now_ms=0).records[0].total_hits
    after = [throttler.hit("a", API, now_ms=0).allowed for _ in range(3)]

    assert (first, peeked, after) == (True, 2, [True, True, False])
    assert (storage._core.functions, storage._core.read_only) == (True, False)
    storage.close()


@pytest.mark.parametrize("url", ["foo://x", "redis://127.0.0.1:99999/0"])
@pytest.mark.parametrize("face", [RedisStorage, AsyncRedisStorage])
@pytest.mark.parametrize("constructor", ["from_url", "from_cluster"])
def test_a_malformed_url_is_a_configuration_error(
    url: str, face: type, constructor: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        getattr(face, constructor)(url=url)

    assert caught.value.field == "url"
    assert str(caught.value).startswith("not a Redis URL (")


@pytest.mark.parametrize("face", [RedisStorage, AsyncRedisStorage])
def test_a_url_passed_as_the_client_is_refused_at_construction(face: type) -> None:
    with pytest.raises(ConfigurationError) as caught:
        face("redis://127.0.0.1:6379/0")

    assert caught.value.field == "client"
    assert "from_url" in str(caught.value)


# Credentials and permissions: refusals no retry can cure


def _hit_error(url: str, *, functions: bool = True, face: str = "sync") -> Exception:
    """What one hit through a storage at ``url`` raised."""
    options: dict[str, Any] = {"enable_redis_functions": functions, **TIMEOUTS}
    if face == "sync":
        with RedisStorage.from_url(url, **options) as storage:
            with pytest.raises(Exception) as caught:
                storage.hit("alice", [API], 1)
            return caught.value

    async def run() -> Exception:
        async with AsyncRedisStorage.from_url(url, **options) as storage:
            with pytest.raises(Exception) as caught:
                await storage.hit("alice", [API], 1)
            return caught.value

    return asyncio.run(run())


def _assert_never_retried(error: Exception) -> None:
    assert isinstance(error, StorageOperationError)
    assert not isinstance(error, RedisConnectionError)  # the breaker stays closed
    assert error.outcome_unknown is False
    assert not RetryWithBackoff().can_recover(error)
    assert not is_retry_safe(error, counts=False)


@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("wrong", "invalid username-password pair or user is disabled."),
        (
            None,
            "the server needs a password (redis://:password@host:port): HELLO must "
            "be called with the client already authenticated",
        ),
    ],
)
def test_refused_credentials_are_an_operation_error_with_their_own_advice(
    redis_server_factory: Callable[..., RedisServer],
    face: str,
    password: str | None,
    reason: str,
) -> None:
    server = redis_server_factory(password="secret")
    auth = "" if password is None else f":{password}@"

    error = _hit_error(f"redis://{auth}127.0.0.1:{server.port}/0", face=face)

    _assert_never_retried(error)
    assert str(error).startswith(
        f"Redis refused the credentials (deciding a hit): {reason}"
    )
    assert error.get_recovery_suggestion() == CREDENTIALS_SUGGESTION  # type: ignore[attr-defined]
    assert error.context["redis_error"] == "AUTH"  # type: ignore[attr-defined]


@pytest.mark.parametrize("functions", [True, False])
@pytest.mark.parametrize("face", ["sync", "async"])
def test_an_acl_denying_a_command_of_the_lua_code_is_a_permissions_error(
    fresh_redis_server: RedisServer, functions: bool, face: str
) -> None:
    admin = fresh_redis_server.client()
    admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-time"
    )
    admin.close()
    url = fresh_redis_server.url.replace("redis://", "redis://app:pw@")

    error = _hit_error(url, functions=functions, face=face)

    _assert_never_retried(error)
    assert str(error).startswith(
        "the Redis ACL forbids it (NOPERM, deciding a hit): The user executing "
        "the script can't run this command or subcommand script: "
    )
    assert error.get_recovery_suggestion() == PERMISSIONS_SUGGESTION  # type: ignore[attr-defined]
    assert error.context["redis_error"] == "NOPERM"  # type: ignore[attr-defined]


@pytest.mark.parametrize("functions", [True, False])
def test_an_acl_denying_the_keys_is_a_permissions_error(
    fresh_redis_server: RedisServer, functions: bool
) -> None:
    admin = fresh_redis_server.client()
    admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~other:*", "&*", "+@all"
    )
    admin.close()
    url = fresh_redis_server.url.replace("redis://", "redis://app:pw@")

    error = _hit_error(url, functions=functions)

    _assert_never_retried(error)
    assert str(error) == (
        "the Redis ACL forbids it (NOPERM, deciding a hit): this user has no "
        "permissions to access one of the keys used as arguments"
    )
    assert error.get_recovery_suggestion() == PERMISSIONS_SUGGESTION  # type: ignore[attr-defined]


# Clients passed in: redis-py's own retries would count a hit twice


def _ring_count(client: Any, key: str) -> int:
    return int.from_bytes(client.getrange(key, 0, 28)[9:13], "big")


def test_a_client_with_redis_py_retries_is_refused(redis_server: RedisServer) -> None:
    client = redis_server.client(socket_timeout=0.1)  # redis.Redis(...)

    with pytest.raises(ConfigurationError) as caught:
        RedisStorage(client)

    assert caught.value.field == "client"
    assert "retry=Retry(NoBackoff(), 0)" in str(caught.value)
    client.close()


def test_an_async_client_with_redis_py_retries_is_refused(
    redis_server: RedisServer,
) -> None:
    client = redis.asyncio.Redis(port=redis_server.port, socket_timeout=0.1)

    with pytest.raises(ConfigurationError) as caught:
        AsyncRedisStorage(client)

    assert caught.value.field == "client"
    asyncio.run(client.aclose())


def _stall(server: RedisServer) -> threading.Thread:
    """Keep ``server`` busy in DEBUG SLEEP 0.25 from about now on."""
    admin = server.client()
    thread = threading.Thread(
        target=admin.execute_command, args=("DEBUG", "SLEEP", 0.25)
    )
    thread.start()
    time.sleep(0.05)  # DEBUG SLEEP has begun
    return thread


def test_a_client_without_retries_counts_a_hit_with_a_lost_reply_once(
    fresh_redis_server: RedisServer,
) -> None:
    client = fresh_redis_server.client(socket_timeout=0.1, retry=Retry(NoBackoff(), 0))
    storage = RedisStorage(client)
    storage.hit("alice", [API], 1)
    stall = _stall(fresh_redis_server)

    with pytest.raises(StorageTimeoutError) as caught:
        storage.hit("alice", [API], 1)

    stall.join()
    time.sleep(0.05)  # a resent FCALL would have run by now
    assert caught.value.outcome_unknown
    assert _ring_count(client, storage.keys("alice", [API])[1]) == 2
    client.close()


@pytest.mark.parametrize("face", ["sync", "async"])
def test_cluster_clients_with_redis_py_retries_never_send_a_hit_twice(
    redis_cluster: RedisCluster, redis_prefix: str, face: str
) -> None:
    # Every command of the storages names its node, and redis-py retries only
    # the commands it routes itself: its default retries are harmless here.
    prefix = redis_prefix.rstrip(":")
    probe = redis_cluster.client()
    ring = ring_key(index_key(prefix, "alice"), API.name)
    owner = probe.get_node_from_key(ring)
    node = next(n for n in redis_cluster.nodes if n.port == owner.port)

    async def run_async() -> StorageTimeoutError:
        client = redis.asyncio.RedisCluster(
            host=node.host, port=node.port, socket_timeout=0.1
        )
        assert client.retry.get_retries() > 0
        storage = AsyncRedisStorage(client, prefix=prefix)
        await storage.hit("alice", [API], 1)  # connected to the node
        stalls.append(_stall(node))
        with pytest.raises(StorageTimeoutError) as caught:
            await storage.hit("alice", [API], 1)
        await client.aclose()
        return caught.value

    stalls: list[threading.Thread] = []
    if face == "sync":
        client = redis_cluster.client(socket_timeout=0.1)
        assert client.retry.get_retries() > 0
        storage = RedisStorage(client, prefix=prefix)
        storage.hit("alice", [API], 1)
        stalls.append(_stall(node))
        with pytest.raises(StorageTimeoutError) as caught:
            storage.hit("alice", [API], 1)
        client.close()
        error = caught.value
    else:
        error = asyncio.run(run_async())

    stalls[0].join()
    time.sleep(0.05)  # a resent FCALL would have run by now
    assert error.outcome_unknown
    assert _ring_count(probe, ring) == 2
    probe.close()
