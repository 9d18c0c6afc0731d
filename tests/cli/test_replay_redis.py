"""``swt replay`` through Redis: the memory report, keys of its own, one-line errors."""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sliding_window_throttler.cli import cli
from sliding_window_throttler.cli.accesslog import LogFileError
from sliding_window_throttler.cli.replay import Replay
from sliding_window_throttler.cli.storage import (
    ReplayStorage,
    parse_address,
    redis_target,
)

from cli_logs import BUNDLED_LOG, WriteLog, clf, stamped
from redis_servers import RedisCluster, RedisServer, SentinelSet, find_free_port

DEMO = ["--limit", "20/10s", "--limit", "60/minute", "--json"]
PREFIX = re.compile(r"swt-replay:[0-9a-f]{16}")


def swt(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def replay_json(*args: str | Path) -> dict[str, Any]:
    result = swt("replay", *args)
    assert result.exit_code == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def without_storage(report: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in report.items() if name != "storage"}


def assert_one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("swt: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def keys_under(clients: list[Any], prefix: str) -> list[bytes]:
    return [key for client in clients for key in client.keys(f"{prefix}*")]


@pytest.fixture
def out_of_order_log(write_log: WriteLog) -> Path:
    """Bursts that overflow 3/10s, lines late past a 2 s reorder window, and
    a client that comes back while blocked."""
    first = [clf("10.0.0.1", s) for s in (0, 1, 2, 3, 9, 4, 5, 1, 12, 14)]
    second = [clf("10.0.0.2", s, "POST /login HTTP/1.1") for s in (13, 13, 13, 12)]
    again = [clf("10.0.0.1", s) for s in (40, 41, 42, 43, 44, 45, 30, 80, 81)]
    return write_log(first + second + again)


@pytest.mark.redis
def test_the_bundled_log_through_redis_gives_the_memory_report(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    live = f"{redis_prefix}live"
    with redis_server.client() as client:
        client.set(live, "untouched")

        memory = replay_json(BUNDLED_LOG, *DEMO)
        redis = replay_json(BUNDLED_LOG, *DEMO, "--redis-url", redis_server.url)

        assert without_storage(redis) == without_storage(memory)
        assert (redis["requests"], redis["rejected"]) == (10_000, 87)
        assert redis["clients_throttled"] == 2
        assert memory["storage"] == {"kind": "memory"}
        assert redis["storage"]["kind"] == "redis"
        assert redis["storage"]["topology"] == "standalone"
        assert PREFIX.fullmatch(redis["storage"]["prefix"])
        assert keys_under([client], redis["storage"]["prefix"]) == []
        assert client.get(live) == b"untouched"


@pytest.mark.redis
def test_the_bundled_log_through_a_cluster_gives_the_memory_report(
    redis_cluster: RedisCluster,
) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://", 1)

    memory = replay_json(BUNDLED_LOG, *DEMO)
    redis = replay_json(BUNDLED_LOG, *DEMO, "--redis-url", url)

    assert without_storage(redis) == without_storage(memory)
    assert redis["storage"]["topology"] == "cluster"
    clients = [node.client() for node in redis_cluster.nodes]
    assert keys_under(clients, redis["storage"]["prefix"]) == []
    for client in clients:
        client.close()


@pytest.mark.redis
def test_redis_cluster_flag_takes_a_plain_url_of_one_node(
    redis_cluster: RedisCluster, out_of_order_log: Path
) -> None:
    args: list[str | Path] = [out_of_order_log, "--limit", "3/10s", "--json"]

    memory = replay_json(*args)
    redis = replay_json(*args, "--redis-url", redis_cluster.url, "--redis-cluster")

    assert without_storage(redis) == without_storage(memory)
    assert redis["storage"]["topology"] == "cluster"


@pytest.mark.redis
def test_a_small_log_through_sentinel_gives_the_memory_report(
    redis_sentinel: SentinelSet, out_of_order_log: Path
) -> None:
    (host, port), *_ = redis_sentinel.sentinels
    args: list[str | Path] = [
        out_of_order_log,
        "--limit",
        "3/10s",
        "--limit",
        "5/minute",
        "--json",
    ]

    memory = replay_json(*args)
    redis = replay_json(
        *args,
        "--redis-sentinel",
        f"{host}:{port}",
        "--redis-service",
        redis_sentinel.service_name,
    )

    assert without_storage(redis) == without_storage(memory)
    assert redis["rejected"] > 0
    assert redis["storage"]["topology"] == "sentinel"
    with redis_sentinel.master().client() as master:
        assert keys_under([master], redis["storage"]["prefix"]) == []


@pytest.mark.redis
def test_blocks_and_late_lines_through_redis_equal_memory(
    redis_server: RedisServer, out_of_order_log: Path
) -> None:
    args: list[str | Path] = [
        out_of_order_log,
        "--limit",
        "3/10s",
        "--block",
        "30s",
        "--json",
    ]
    args += ["--reorder-window", "2s"]

    memory = replay_json(*args)
    redis = replay_json(*args, "--redis-url", redis_server.url)

    assert without_storage(redis) == without_storage(memory)
    assert memory["late"] > 0
    assert memory["rejected"] > 0


@pytest.mark.redis
def test_block_on_the_bundled_log_through_redis_equals_memory(
    redis_server: RedisServer,
) -> None:
    args: list[str | Path] = [BUNDLED_LOG, *DEMO, "--block", "5m"]

    memory = replay_json(*args)
    redis = replay_json(*args, "--redis-url", redis_server.url)

    assert without_storage(redis) == without_storage(memory)
    assert memory["rejected"] > 87


@pytest.mark.redis
def test_times_redis_cannot_take_are_malformed_not_fatal(
    redis_server: RedisServer, write_log: WriteLog
) -> None:
    # Redis takes explicit times within 2**52 us of the epoch (1827-2112);
    # the replay takes 1970-2100 whatever the storage.
    stamps = ["01/Jan/1800:00:00:00 +0000", "01/Jan/2150:00:00:00 +0000"]
    stamps += ["01/Jan/2105:00:00:00 +0000", "31/Dec/9999:23:59:60 +0000"]
    lines = [clf("10.0.0.1", s) for s in (0, 1, 2)]
    log = write_log(lines[:2] + [stamped("10.0.0.2", s) for s in stamps] + lines[2:])
    args: list[str | Path] = [log, "--limit", "2/10s", "--json"]

    memory = replay_json(*args)
    redis = replay_json(*args, "--redis-url", redis_server.url)

    assert without_storage(redis) == without_storage(memory)
    assert (redis["requests"], redis["rejected"]) == (3, 1)
    assert redis["malformed"]["count"] == 4
    assert {m["reason"] for m in redis["malformed"]["examples"]} == {
        "time out of range (replay takes 1970 to 2100, UTC)"
    }


@pytest.mark.redis
def test_each_run_writes_under_a_prefix_of_its_own(
    redis_server: RedisServer, small_log: Path
) -> None:
    args: list[str | Path] = [
        small_log,
        "--limit",
        "3/10s",
        "--json",
        "--redis-url",
        redis_server.url,
    ]

    first, second = replay_json(*args), replay_json(*args)

    assert first["storage"]["prefix"] != second["storage"]["prefix"]
    assert without_storage(first) == without_storage(second)


@pytest.mark.redis
def test_text_report_names_the_redis_storage(
    redis_server: RedisServer, small_log: Path
) -> None:
    result = swt(
        "replay", small_log, "--limit", "3/10s", "--redis-url", redis_server.url
    )

    assert result.exit_code == 0, result.stderr
    line = next(s for s in result.stdout.splitlines() if s.startswith("storage"))
    assert re.fullmatch(
        r"storage +redis standalone, key prefix swt-replay:[0-9a-f]{16}", line
    )


@pytest.mark.redis
def test_shows_a_progress_bar_for_a_redis_replay_of_64_kib(
    redis_server: RedisServer, write_log: WriteLog
) -> None:
    log = write_log([clf(f"10.0.{n // 250}.{n % 250}", n % 60) for n in range(900)])
    assert log.stat().st_size >= 64 * 1024
    args: list[str | Path] = ["replay", log, "--limit", "3/10s", "--json"]
    terminal = {"TTY_COMPATIBLE": "1"}

    through_redis = swt(*args, "--redis-url", redis_server.url, env=terminal)
    in_memory = swt(*args, env=terminal)

    assert through_redis.exit_code == 0, through_redis.stderr
    assert "replaying" in through_redis.stderr
    assert in_memory.stderr == ""


@pytest.mark.redis
def test_a_wrong_password_is_one_line_without_the_password(
    redis_server_factory: Callable[..., RedisServer], small_log: Path
) -> None:
    server = redis_server_factory(password="right-secret")
    url = server.url.replace("right-secret", "wrong-secret")

    result = swt("replay", small_log, "--limit", "3/10s", "--redis-url", url)

    assert_one_line_error(result, "invalid username-password pair")
    assert "secret" not in result.stderr


@pytest.mark.redis
def test_a_replay_that_fails_midway_deletes_its_keys(
    fresh_redis_server: RedisServer, tmp_path: Path
) -> None:
    lines = [clf(f"10.0.{n % 40}.{n % 7}", n // 2) for n in range(6_000)]
    data = gzip.compress("".join(f"{line}\n" for line in lines).encode())
    log = tmp_path / "cut.log.gz"
    # Cut short: the gzip error comes at the end, after thousands of hits.
    log.write_bytes(data[:-200])
    url = fresh_redis_server.url

    result = swt("replay", log, "--limit", "3/10s", "--redis-url", url)

    assert result.exit_code == 2
    assert result.stderr == (
        f"swt: error: {str(log)!r} is not valid gzip: Compressed file ended before "
        "the end-of-stream marker was reached\n"
    )
    with fresh_redis_server.client() as client:
        assert client.keys("swt-replay:*") == []


@pytest.mark.redis
def test_the_cleanup_after_a_failure_gives_up_on_a_stalled_redis(
    fresh_redis_server: RedisServer, small_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replay = Replay.run

    def replay_then_stall(self: Replay) -> object:
        replay(self)
        fresh_redis_server.pause()
        raise LogFileError("'next.log' is not valid gzip: cut short")

    monkeypatch.setattr(Replay, "run", replay_then_stall)
    options = ["--redis-url", fresh_redis_server.url, "--redis-timeout", "1s"]
    started = time.monotonic()

    result = swt("replay", small_log, "--limit", "3/10s", *options)

    assert time.monotonic() - started < 4
    assert result.exit_code == 2
    assert result.stderr == "swt: error: 'next.log' is not valid gzip: cut short\n"


@pytest.mark.redis
def test_a_stalled_redis_fails_the_replay_without_a_clean_up(
    fresh_redis_server: RedisServer, small_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clean-up would wait as long again on a Redis that does not answer,
    # and the keys expire on their own.
    cleanups: list[object] = []
    monkeypatch.setattr(ReplayStorage, "forget", lambda *args: cleanups.append(args))
    options = ["--redis-url", fresh_redis_server.url, "--redis-timeout", "1s"]
    fresh_redis_server.pause()
    try:
        result = swt("replay", small_log, "--limit", "3/10s", *options)
    finally:
        fresh_redis_server.resume()

    assert_one_line_error(result, "Redis did not answer in time")
    assert cleanups == []


@pytest.mark.redis
def test_a_cluster_node_taken_for_a_server_is_one_line_that_says_so(
    redis_cluster: RedisCluster, write_log: WriteLog
) -> None:
    log = write_log([clf(f"10.0.0.{n}", n) for n in range(30)])

    result = swt("replay", log, "--limit", "3/10s", "--redis-url", redis_cluster.url)

    assert result.exit_code == 2
    assert result.stderr == (
        "swt: error: the Redis at --redis-url is a Cluster node (it answered "
        "MOVED): give --redis-url redis+cluster://host:port, or add --redis-cluster\n"
    )
    clients = [node.client() for node in redis_cluster.nodes]
    assert keys_under(clients, "swt-replay:") == []
    for client in clients:
        client.close()


@pytest.mark.redis
def test_a_server_taken_for_a_cluster_node_is_one_line_that_says_so(
    redis_server: RedisServer, small_log: Path
) -> None:
    url = redis_server.url.replace("redis://", "redis+cluster://")

    result = swt("replay", small_log, "--limit", "3/10s", "--redis-url", url)

    assert_one_line_error(
        result,
        "swt: error: the Redis reached is not a Cluster node (connecting: Cluster "
        "mode is not enabled on it): for one server use a redis:// URL, not "
        "redis+cluster://, and from_url, not from_cluster\n",
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:{free}", "Redis is unreachable"),
        ("redis+cluster://127.0.0.1:{free}", "Redis is unreachable"),
        ("redis://no-such-host.invalid:6379", "no-such-host.invalid"),
        ("unix:///nonexistent/redis.sock", "Redis is unreachable"),
        ("http://localhost:6379", "--redis-url must start with redis://"),
        ("localhost:6379", "(got no scheme), e.g. redis://localhost:6379/0"),
        (
            "redis://:hunter2@localhost:port",
            "bad --redis-url: not a Redis URL (Port could not be",
        ),
    ],
)
def test_an_unusable_redis_url_is_one_line(
    small_log: Path, url: str, message: str
) -> None:
    url = url.format(free=find_free_port())

    result = swt("replay", small_log, "--limit", "3/10s", "--redis-url", url)

    assert_one_line_error(result, message)
    assert "hunter2" not in result.stderr


def test_an_unreachable_sentinel_is_one_line(small_log: Path) -> None:
    sentinel = f"127.0.0.1:{find_free_port()}"
    options = ["--redis-sentinel", sentinel, "--redis-service", "mymaster"]

    result = swt("replay", small_log, "--limit", "3/10s", *options)

    assert_one_line_error(result, "No master found for 'mymaster'")
    assert len(result.stderr) < 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--redis-cluster"], "--redis-cluster needs --redis-url"),
        (["--redis-sentinel", "h:1"], "--redis-sentinel needs --redis-service"),
        (["--redis-service", "mymaster"], "--redis-service needs at least one"),
        (
            ["--redis-url", "redis://h", "--redis-sentinel", "h:1"],
            "give --redis-url or --redis-sentinel, not both",
        ),
        (
            ["--redis-url", "unix:///tmp/r.sock", "--redis-cluster"],
            "a Cluster is reached over TCP",
        ),
        (
            ["--redis-sentinel", "h:99999", "--redis-service", "m"],
            "--redis-sentinel must have a port from 1 to 65535, got 'h:99999'",
        ),
        (
            ["--redis-sentinel", "h:port", "--redis-service", "m"],
            "--redis-sentinel 'h:port' is not HOST:PORT",
        ),
        (["--redis-url", "redis://h", "--redis-timeout", "0"], "above 0"),
        (["--redis-url", "redis://h", "--redis-timeout", "soon"], "--redis-timeout"),
        (
            ["--redis-url", "redis://h", "--limit", "20000/hour"],
            "above the 10,000 a Redis replay takes",
        ),
    ],
)
def test_redis_options_that_do_not_go_together_are_one_line(
    small_log: Path, options: list[str], message: str
) -> None:
    result = swt("replay", small_log, "--limit", "3/10s", *options)

    assert_one_line_error(result, message)


def test_without_the_redis_extra_says_how_to_install_it(
    small_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    for name in ("redis", "_redis_common"):
        module = f"sliding_window_throttler.storage.{name}"
        monkeypatch.delitem(sys.modules, module, raising=False)

    options = ["--redis-url", "redis://localhost:6379"]
    result = swt("replay", small_log, "--limit", "3/10s", *options)

    assert_one_line_error(
        result,
        "install the redis extra, pip install 'sliding-window-throttler[redis]' "
        "(from a checkout: pip install '.[redis]')",
    )


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.5:26380", ("10.0.0.5", 26380)),
        ("sentinel-1", ("sentinel-1", 26379)),
        ("[2001:db8::5]:26380", ("2001:db8::5", 26380)),
        ("[::1]", ("::1", 26379)),
    ],
)
def test_reads_sentinel_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


def test_without_redis_options_the_replay_stays_in_memory() -> None:
    assert redis_target(None, False, (), None, 5_000, ()) is None
