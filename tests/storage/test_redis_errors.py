"""How Redis error replies reach the caller: typed, and to the failure strategy."""

from __future__ import annotations

import pytest

from sliding_window_throttler import (
    ConfigurationError,
    StorageOperationError,
    Throttle,
    Throttler,
)
from sliding_window_throttler.storage import AsyncRedisStorage, RedisStorage

from redis_servers import RedisServer

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
    assert Throttler(storage).hit("warm", API).allowed
    fill_memory(fresh_redis_server)

    with pytest.raises(StorageOperationError) as caught:
        Throttler(storage).hit("new", API)

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


@pytest.mark.parametrize("url", ["foo://x", "redis://127.0.0.1:99999/0"])
def test_a_malformed_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisStorage.from_url(url)

    assert caught.value.field == "url"


@pytest.mark.parametrize("face", [RedisStorage, AsyncRedisStorage])
def test_a_url_passed_as_the_client_is_refused_at_construction(face: type) -> None:
    with pytest.raises(ConfigurationError) as caught:
        face("redis://127.0.0.1:6379/0")

    assert caught.value.field == "client"
    assert "from_url" in str(caught.value)
