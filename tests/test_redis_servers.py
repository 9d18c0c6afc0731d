"""The private Redis servers and fixtures the suite runs against."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis_servers
from redis_fixtures import start_or_fail
from redis_servers import (
    HOST,
    RedisBinaryNotFoundError,
    RedisCluster,
    RedisServer,
    RedisServerError,
    SentinelSet,
)

# Some tests start servers without a fixture, so the marker is set here too.
pytestmark = pytest.mark.redis

NO_RETRY = Retry(NoBackoff(), 0)


def is_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False

    return True


def is_port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) == 0


def test_shared_server_answers_ping(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        assert client.ping()


def test_url_points_at_the_server(redis_server: RedisServer, redis_prefix: str) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(f"{redis_prefix}k", b"v")
        assert client.get(f"{redis_prefix}k") == b"v"


def test_redis_fixtures_mark_the_test(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    assert request.node.get_closest_marker("redis") is not None


def test_prefix_names_the_test_without_hash_tag(redis_prefix: str) -> None:
    assert redis_prefix.startswith("swt-test:test_prefix_names_the_test_without_")
    assert "{" not in redis_prefix
    assert "}" not in redis_prefix


def test_kill_drops_connections_and_restart_keeps_port_but_not_data(
    fresh_redis_server: RedisServer,
) -> None:
    port = fresh_redis_server.port
    with fresh_redis_server.client(retry=NO_RETRY) as client:
        client.set("k", "v")
        client.function_load(
            "#!lua name=probe\n"
            "redis.register_function('probe', function() return 1 end)"
        )
        fresh_redis_server.kill()

        assert not fresh_redis_server.is_running
        with pytest.raises(redis.ConnectionError):
            client.ping()

        fresh_redis_server.restart()

        assert fresh_redis_server.port == port
        assert client.get("k") is None
        assert client.function_list() == []


def test_pause_hangs_clients_until_resume(fresh_redis_server: RedisServer) -> None:
    with fresh_redis_server.client(socket_timeout=0.2, retry=NO_RETRY) as client:
        fresh_redis_server.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()

        fresh_redis_server.resume()

        assert client.ping()


def test_stop_leaves_nothing_behind() -> None:
    server = RedisServer().start()
    pid, port, directory = server.pid, server.port, server.directory
    assert pid is not None

    server.stop()

    assert not is_process_alive(pid)
    assert not is_port_open(port)
    assert not directory.exists()


def test_stop_ends_a_paused_server() -> None:
    server = RedisServer().start()
    pid = server.pid
    assert pid is not None
    server.pause()

    server.stop()

    assert not is_process_alive(pid)


def test_password_is_required_and_used_by_client(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory(password="s3cret")

    with server.client() as client:
        assert client.ping()
    with (
        redis.Redis(host=HOST, port=server.port, retry=NO_RETRY) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()
    assert server.url == f"redis://:s3cret@127.0.0.1:{server.port}/0"


def test_extra_arguments_reach_the_server(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory("--maxmemory", "2mb")

    with server.client() as client:
        assert client.config_get("maxmemory") == {"maxmemory": str(2 * 1024 * 1024)}


def test_bad_argument_fails_with_the_log_tail() -> None:
    server = RedisServer("--no-such-directive", "x")

    with pytest.raises(RedisServerError, match="no-such-directive"):
        server.start()

    assert not server.is_running


def test_start_moves_on_when_the_chosen_port_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        free_port = redis_servers.find_free_port
        monkeypatch.setattr(
            redis_servers, "find_free_port", lambda: next(ports, None) or free_port()
        )

        with RedisServer() as server:
            assert server.port != taken
            with server.client() as client:
                assert client.ping()


def test_restart_fails_clearly_when_its_port_was_taken(
    fresh_redis_server: RedisServer,
) -> None:
    fresh_redis_server.kill()

    with socket.socket() as squatter:
        squatter.bind((HOST, fresh_redis_server.port))
        squatter.listen()
        with pytest.raises(RedisServerError, match="is taken"):
            fresh_redis_server.restart()


def test_missing_binary_fails_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(RedisBinaryNotFoundError, match="apt-get install redis-server"):
        RedisServer().start()
    with pytest.raises(pytest.fail.Exception, match=r"make test. / .\.ci/run"):
        start_or_fail(RedisCluster())


def test_cluster_serves_keys_on_every_node(
    redis_cluster: RedisCluster, redis_prefix: str
) -> None:
    # Hash tags {b}, {c} and {a} fall in the first, second and third slot ranges.
    keys = [f"{redis_prefix}{{{tag}}}" for tag in "bca"]

    with redis_cluster.client() as client:
        for key in keys:
            client.set(key, key)
        owners = [client.get_node_from_key(key).port for key in keys]

        assert [client.get(key) for key in keys] == [key.encode() for key in keys]
    assert owners == [port for _, port in redis_cluster.startup_nodes]


def test_cluster_url_reaches_the_whole_cluster(redis_cluster: RedisCluster) -> None:
    with redis.RedisCluster.from_url(redis_cluster.url) as client:
        assert len(client.get_primaries()) == 3


def test_sentinel_leads_redis_py_to_the_master(redis_sentinel: SentinelSet) -> None:
    sentinel = redis_sentinel.sentinel_client()

    # redis-py leaves discover_master and master_for unannotated.
    address = sentinel.discover_master(redis_sentinel.service_name)  # type: ignore[no-untyped-call]
    master = sentinel.master_for(redis_sentinel.service_name)  # type: ignore[no-untyped-call]
    with master:
        master.set("k", "v")
        assert master.get("k") == b"v"

    assert address == redis_sentinel.master_address()
    assert redis_sentinel.master() is redis_sentinel.nodes[0]
    for client in sentinel.sentinels:
        client.close()


def test_failover_moves_the_master(redis_sentinel: SentinelSet) -> None:
    old_master = redis_sentinel.master()

    new_address = redis_sentinel.failover()

    assert new_address != old_master.address
    assert redis_sentinel.master() is not old_master
    with redis_sentinel.master().client(decode_responses=True) as client:
        assert client.execute_command("ROLE")[0] == "master"


@pytest.mark.slow
def test_cluster_and_sentinel_stop_leave_nothing_behind() -> None:
    cluster = RedisCluster().start()
    sentinel_set = SentinelSet().start()
    servers = [*cluster.nodes, *sentinel_set.nodes, sentinel_set.sentinel_server]
    pids = [server.pid for server in servers]

    cluster.stop()
    sentinel_set.stop()

    assert not [pid for pid in pids if pid is None or is_process_alive(pid)]
    assert not [server.port for server in servers if is_port_open(server.port)]
