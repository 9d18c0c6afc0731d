"""
Where ``swt replay`` keeps its windows: in memory, or in Redis.

A Redis replay goes through one server, a Cluster, or the master that Sentinel
names, under a key prefix of its own (``swt-replay:<random hex>``), so it never
reads or changes live keys, nor those of an earlier run. The storage makes
every key expire a minute after its window (or block) ends in logged time;
once the replay is done, or has failed, the keys of the clients it saw are
deleted as well, for at most ``--redis-timeout``.

Only this module imports the Redis storage, and only when asked to: a memory
replay needs no redis-py.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.rate import Throttle
from ..errors import ConfigurationError
from .replay import IN_MEMORY, StorageInfo

if TYPE_CHECKING:
    from ..storage.redis import RedisStorage

logger = logging.getLogger(__name__)

REPLAY_PREFIX = "swt-replay"
REDIS_MAX_LIMIT = 10_000
"""The highest limit a Redis replay takes: Redis keeps 6 bytes per hit a
client may have in a window, allocated when the client first shows up."""
SENTINEL_PORT = 26379
FORGET_BATCH = 1_000
"""Keys deleted per round trip at the end of a Redis replay."""

_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_CLUSTER_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
_ADDRESS = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^\s:/\[\]]+))(?::(?P<port>\d{1,5}))?"
)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """
    The Redis a replay goes through, as the command line names it.

    Attributes:
        topology: ``standalone``, ``cluster`` or ``sentinel``.
        timeout_s: Seconds to connect, and to wait for each reply.
        url: The server's URL, or a Cluster node's; None with Sentinel.
        sentinels: ``(host, port)`` of the sentinels.
        service: The master's name in the Sentinel configuration.
    """

    topology: str
    timeout_s: float
    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""


def redis_target(
    url: str | None,
    cluster: bool,
    sentinels: Sequence[str],
    service: str | None,
    timeout_ms: int,
    throttles: Sequence[Throttle],
) -> RedisTarget | None:
    """
    Check the Redis options together; None when none asks for Redis.

    Raises:
        ConfigurationError: for options that do not go together, a URL or
            address that cannot be right, or a limit above ``REDIS_MAX_LIMIT``.
    """
    if url is None and not (cluster or sentinels or service):
        return None

    _check_combination(url, cluster, sentinels, service)
    if timeout_ms <= 0:
        raise ConfigurationError("redis_timeout", "--redis-timeout must be above 0")

    for throttle in throttles:
        _check_limit(throttle)

    timeout_s = timeout_ms / 1000
    if url is None:
        addresses = tuple(parse_address(s) for s in sentinels)
        return RedisTarget("sentinel", timeout_s, None, addresses, service or "")

    scheme = _scheme(url)
    if cluster or scheme.endswith("+cluster"):
        if scheme not in _CLUSTER_SCHEMES:
            raise ConfigurationError(
                "redis_url",
                "a Cluster is reached over TCP: give a redis:// or rediss:// "
                f"--redis-url, not {scheme}://",
            )

        return RedisTarget("cluster", timeout_s, url=url)

    return RedisTarget("standalone", timeout_s, url=url)


def _check_combination(
    url: str | None, cluster: bool, sentinels: Sequence[str], service: str | None
) -> None:
    if url is not None and sentinels:
        raise ConfigurationError(
            "redis_url", "give --redis-url or --redis-sentinel, not both"
        )

    if cluster and url is None:
        raise ConfigurationError(
            "redis_cluster", "--redis-cluster needs --redis-url, a node of the Cluster"
        )

    if sentinels and not service:
        raise ConfigurationError(
            "redis_service",
            "--redis-sentinel needs --redis-service, the master's name in the "
            "Sentinel configuration",
        )

    if service is not None and not sentinels:
        raise ConfigurationError(
            "redis_service", "--redis-service needs at least one --redis-sentinel"
        )


def _scheme(url: str) -> str:
    # Only the scheme is ever shown: the rest of a URL may hold a password.
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        shown = f"{scheme}://" if sep else "no scheme"
        raise ConfigurationError(
            "redis_url",
            "--redis-url must start with redis://, rediss://, unix:// or "
            f"redis+cluster:// (got {shown}), e.g. redis://localhost:6379/0",
        )

    return scheme.lower()


def _check_limit(throttle: Throttle) -> None:
    if throttle.limit > REDIS_MAX_LIMIT:
        raise ConfigurationError(
            "limit",
            f"--limit {throttle.limit:,} per window is above the {REDIS_MAX_LIMIT:,} "
            "a Redis replay takes (Redis keeps 6 bytes per hit in a client's "
            "window); replay it in memory, without --redis-*",
        )


def parse_address(text: str) -> tuple[str, int]:
    """
    Read ``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port`` (default 26379).

    Raises:
        ConfigurationError: for anything else, or a port out of range.
    """
    match = _ADDRESS.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(
            "redis_sentinel",
            f"--redis-sentinel {text!r} is not HOST:PORT (e.g. 10.0.0.5:26379, "
            "[2001:db8::5]:26379)",
        )

    port = int(match["port"] or SENTINEL_PORT)
    if not 0 < port < 65536:
        raise ConfigurationError(
            "redis_sentinel",
            f"--redis-sentinel must have a port from 1 to 65535, got {text!r}",
        )

    return match["v6"] or match["host"], port


@dataclass(frozen=True, slots=True)
class ReplayStorage:
    """
    The storage of one replay, and how the report names it.

    Attributes:
        info: What the report says.
        redis: The Redis storage, under a prefix of this run alone; None for
            memory, where ``Replay`` makes a fresh storage itself.
        timeout_s: ``--redis-timeout``: how long ``forget`` may take.
    """

    info: StorageInfo = IN_MEMORY
    redis: RedisStorage | None = None
    timeout_s: float = 0.0

    def forget(self, identifiers: Iterable[str], throttles: Sequence[Throttle]) -> None:
        """
        Delete the Redis keys of these identifiers, a batch per round trip.

        Best effort, and it never raises: the keys expire on their own a
        minute after their windows, so a failure here is not worth failing a
        finished replay, nor hiding why a replay failed. It stops at the
        first error, and sends no batch once ``timeout_s`` has passed (a
        stalled Redis costs one reply's timeout).
        """
        if self.redis is None:
            return

        from redis.exceptions import RedisClusterException, RedisError

        deadline = time.monotonic() + self.timeout_s
        batch = self.redis.client.pipeline(transaction=False)
        try:
            for number, identifier in enumerate(identifiers, 1):
                # A client's keys share a hash tag, so one UNLINK takes them
                # on Cluster too (where redis-py's `unlink` wants one key).
                keys = self.redis.keys(identifier, throttles)
                batch.execute_command("UNLINK", *keys)
                if not number % FORGET_BATCH:
                    _send(batch, deadline)

            _send(batch, deadline)
        except (RedisError, RedisClusterException, TimeoutError):
            logger.debug("could not delete the replay's keys", exc_info=True)


def _send(batch: Any, deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError("out of time to delete the replay's keys")

    batch.execute()


def cluster_redirect(exc: BaseException) -> str | None:
    """
    ``MOVED`` or ``ASK`` when a Redis error comes from a Cluster node's
    redirect (a node taken for a server), else None.
    """
    cause = exc.__cause__
    while cause is not None and not type(cause).__module__.startswith("redis."):
        cause = cause.__cause__

    if cause is None:
        return None

    # Imported only now: the error came from redis-py, so it is installed.
    from redis.exceptions import AskError, MovedError

    if isinstance(cause, MovedError):
        return "MOVED"

    return "ASK" if isinstance(cause, AskError) else None


@contextmanager
def open_storage(target: RedisTarget | None) -> Iterator[ReplayStorage]:
    """
    Yield the storage of one replay; a Redis one is closed afterwards.

    Raises:
        ConfigurationError: without the ``redis`` extra, or for a URL that
            redis-py refuses.
        RedisConnectionError: when a Cluster cannot be reached.
    """
    if target is None:
        yield ReplayStorage()
        return

    # Limitation: with logged times, Redis keeps a key for its window plus a
    # minute of real time after the client's last hit. A replay slower than
    # the log (a window holding more lines than the replay gets through in
    # that time: some 300,000 for a minute at 2,500 lines/s) finds the keys of
    # clients that come back late in the window gone, and admits too much.
    prefix = f"{REPLAY_PREFIX}:{secrets.token_hex(8)}"
    storage = _connect(target, prefix)
    info = StorageInfo("redis", target.topology, prefix)
    try:
        yield ReplayStorage(info, storage, target.timeout_s)
    finally:
        storage.close()


def _connect(target: RedisTarget, prefix: str) -> RedisStorage:
    from ..storage.redis import RedisStorage

    # Generous timeouts: a replay loses nothing by waiting for a slow reply,
    # while a live request would rather fall back fast (the storage's default).
    options: dict[str, Any] = {
        "prefix": prefix,
        "socket_connect_timeout": target.timeout_s,
        "socket_timeout": target.timeout_s,
    }
    if target.url is None:
        return RedisStorage.from_sentinel(target.service, target.sentinels, **options)

    try:
        if target.topology == "cluster":
            return RedisStorage.from_cluster(url=target.url, **options)

        return RedisStorage.from_url(target.url, **options)
    except ConfigurationError as exc:
        if exc.field != "url":
            raise
        raise ConfigurationError(
            "redis_url", f"bad --redis-url: {exc.message}"
        ) from None
    except ValueError as exc:
        # redis-py's own parse errors (a port that is not a number...).
        raise ConfigurationError("redis_url", f"bad --redis-url: {exc}") from None
