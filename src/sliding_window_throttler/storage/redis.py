"""
``RedisStorage``: exact sliding windows shared through Redis.

One round trip decides a hit over all its throttles, in the Lua library of
``lua/throttle.lua``. Everything but the I/O lives in ``_redis_common``; this
module and ``redis_async`` differ only by ``await``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

# First: it raises ConfigurationError naming the extra when redis is missing.
from ..config import ThrottlerSettings
from ..core.decision import Decision
from ..core.rate import Throttle
from ._redis_common import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_LOG_SIZE,
    DEFAULT_POOL_TIMEOUT,
    DEFAULT_PREFIX,
    ClientKit,
    Command,
    Plan,
    PoolLimits,
    RedisCore,
    T,
    check_client,
    client_timeouts,
    parse_decision,
    pool_limits,
    settings_connection,
    url_from_env,
)
from .base import StorageHealth

# isort: split
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """
    A Sentinel master's pool in which a thread beyond ``max_connections``
    waits ``timeout`` seconds for a free connection, as in a
    ``BlockingConnectionPool``: redis-py has no such pool for Sentinel. The
    Sentinel half finds the master and drops connections to an old one; the
    blocking half hands connections out.
    """


_KIT = ClientKit(
    redis.Redis,
    RedisCluster,
    ClusterNode,
    Sentinel,
    Retry,
    blocking_pool=redis.BlockingConnectionPool,
    sentinel_pool=_BlockingSentinelPool,
)


class RedisStorage:
    """
    Exact sliding-window storage in Redis: standalone, Sentinel or Cluster.

    Build it from a URL (``from_url``), Sentinel settings (``from_sentinel``),
    Cluster settings (``from_cluster``), or a redis-py client of your own.
    Clients built here time out fast (50 ms to connect, 100 ms per command),
    never retry on their own, since a retried hit may count twice, and keep
    up to ``max_connections`` connections per server (100): a thread beyond
    them waits up to ``pool_timeout`` (0.5 s) for a free one.

    Args:
        client: A ``redis.Redis`` (standalone or Sentinel master) or a
            ``redis.cluster.RedisCluster``. It stays yours: ``close`` leaves it
            open. A ``redis.Redis`` must not retry commands (redis-py 8 does
            by default): build it with ``retry=Retry(NoBackoff(), 0)``.
        prefix: The first part of every key (``throttle:{digest}:name``).
        enable_redis_functions: Call the library with ``FCALL``; when False,
            or when the server has no functions (before Redis 7), run the same
            code through ``EVALSHA``.
        max_log_size: The highest throttle limit accepted: Redis keeps one
            6-byte entry per admitted hit in the window.

    Raises:
        ConfigurationError: for a bad prefix or max_log_size, or a client
            that retries commands.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
    ) -> None:
        check_client(client, RedisCluster)
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        self._setup(client, core, [])

    def _setup(
        self, client: redis.Redis | RedisCluster, core: RedisCore, owned: list[Any]
    ) -> None:
        self.client = client
        self._core = core
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._owned = owned
        self._flights: dict[str | None, Future[Any]] = {}
        self._flights_lock = threading.Lock()

    @classmethod
    def from_env(
        cls, settings: ThrottlerSettings | None = None, **options: Any
    ) -> RedisStorage:
        """
        Connect to the Redis the environment names: ``REDIS_URL`` (or
        ``SWT_REDIS_URL``), with ``SWT_CONNECT_TIMEOUT`` and
        ``SWT_COMMAND_TIMEOUT`` when they are set (``ThrottlerSettings``).

        Args:
            settings: The settings to use instead of the environment's.
            options: As for ``from_url``; they win over the settings.

        Raises:
            ConfigurationError: without a URL, or for a bad variable or
                setting (naming it).
        """
        url, timeouts = settings_connection(settings)
        with url_from_env():
            return cls.from_url(url, **{**timeouts, **options})

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
        socket_connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
        **options: Any,
    ) -> RedisStorage:
        """
        Connect to the Redis at ``url``.

        Args:
            url: ``redis://``, ``rediss://`` or ``unix://`` for one server, or
                ``redis+cluster://host:port`` (``rediss+cluster://``) for a
                Cluster reached through that node.
            socket_connect_timeout: Seconds to connect.
            socket_timeout: Seconds to wait for each reply.
            max_connections: Connections kept to the server (to each node of
                a Cluster).
            pool_timeout: Seconds a thread waits for a free connection when
                all ``max_connections`` are in use (None: as long as it
                takes); then ``StorageOperationError``.
            options: More redis-py client options (they win over ours).

        Raises:
            ConfigurationError: for bad settings, a malformed URL included.
            RedisConnectionError: when a Cluster cannot be reached to learn its
                slots.
        """
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        timeouts = client_timeouts(socket_connect_timeout, socket_timeout)
        limits = pool_limits(max_connections, pool_timeout)
        client = _KIT.from_url(url, timeouts, options, limits)
        return cls._owning(client, core, [client], limits)

    @classmethod
    def from_cluster(
        cls,
        startup_nodes: Sequence[tuple[str, int]] = (),
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
        socket_connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
        **options: Any,
    ) -> RedisStorage:
        """
        Connect to a Redis Cluster.

        Args:
            startup_nodes: ``(host, port)`` of one or more nodes.
            url: Or the ``redis://`` (or ``redis+cluster://``) URL of one node.
            max_connections: Connections kept to each node.
            pool_timeout: Seconds a thread waits for a free connection.
            options: More ``RedisCluster`` options (they win over ours).

        Raises:
            ConfigurationError: without nodes or URL, or for a malformed URL.
            RedisConnectionError: when no node answers.
        """
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        timeouts = client_timeouts(socket_connect_timeout, socket_timeout)
        limits = pool_limits(max_connections, pool_timeout)
        client = _KIT.from_cluster(startup_nodes, url, timeouts, options, limits)
        return cls._owning(client, core, [client], limits)

    @classmethod
    def from_sentinel(
        cls,
        service_name: str,
        sentinels: Sequence[tuple[str, int]],
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
        socket_connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
        sentinel_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RedisStorage:
        """
        Use the master that Sentinel names for ``service_name``.

        Once Sentinel has made the old master a replica, the first command
        sent to it fails with ``RedisConnectionError`` and the next one asks
        the sentinels again and goes to the new master.

        Limitation: until then (seconds, in a failover Sentinel runs) the old
        master still takes hits, and loses them when it becomes a replica;
        the new master counts from its copy, which replication keeps a little
        behind. Around a failover a client may get up to about twice its
        limit.

        Args:
            service_name: The master's name in the Sentinel configuration.
            sentinels: ``(host, port)`` of the sentinels.
            max_connections: Connections kept to the master.
            pool_timeout: Seconds a thread waits for a free connection.
            sentinel_options: redis-py options for the sentinel connections
                (password...); the timeouts apply to them too.
            options: More redis-py options for the master connections.
        """
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        timeouts = client_timeouts(socket_connect_timeout, socket_timeout)
        limits = pool_limits(max_connections, pool_timeout)
        client, owned = _KIT.from_sentinel(
            service_name, sentinels, timeouts, sentinel_options, options, limits=limits
        )
        return cls._owning(client, core, owned, limits)

    @classmethod
    def _owning(
        cls, client: Any, core: RedisCore, owned: list[Any], limits: PoolLimits
    ) -> RedisStorage:
        core.limits = limits
        storage = cls.__new__(cls)
        storage._setup(client, core, owned)
        return storage

    def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        command = self._core.decide_command(
            identifier, throttles, cost, now_us, record=True
        )
        return parse_decision(self._send(command, True), throttles, cost)[0]

    def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        command = self._core.decide_command(
            identifier, throttles, cost, now_us, record=False
        )
        return parse_decision(self._send(command, False), throttles, cost)[0]

    def decide(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
        *,
        record: bool = True,
    ) -> tuple[Decision, int]:
        """
        Decide a hit (or peek, with ``record=False``) and say when.

        Returns:
            The decision and the time it was made at in microseconds: the
            server's ``TIME`` (or ``now_us``), raised to the newest admission
            of the pairs involved. Admission times let tests and tools check
            the sliding-window invariant on the server's own clock.

        Raises:
            ConfigurationError: for a bad throttle, cost or time.
            KeyGenerationError: for an identifier that is not 1 to 65,536
                characters.
            StorageError: when Redis fails (see ``errors``).
        """
        command = self._core.decide_command(
            identifier, throttles, cost, now_us, record=record
        )
        return parse_decision(self._send(command, record), throttles, cost)

    def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        self._run(self._core.reset(identifier, throttles))

    def socket_timeouts(self) -> tuple[float | None, float | None]:
        """
        Seconds the client's connections wait to connect and for each reply
        (None: without limit). A thread cannot be interrupted, so these bound
        how long a decision waits for a stalled server.
        """
        options = self.client.get_connection_kwargs()
        return options.get("socket_connect_timeout"), options.get("socket_timeout")

    def health(self) -> StorageHealth:
        """
        Check that Redis answers ``PING`` and acknowledges a small write (a
        ``SET`` with a one-second expiry under the prefix), each within the
        client's command timeout. It never raises.

        Returns:
            ``healthy`` when both worked, with ``answers_ping``,
            ``accepts_writes``, ``latency_ms`` (the whole check) and a
            sentence in ``detail``.
        """
        return self._run(self._core.health())

    def check_throttle(self, throttle: Throttle) -> None:
        """
        Refuse, at configuration time, a throttle this storage cannot keep.

        Raises:
            ConfigurationError: if its limit is above ``max_log_size``.
        """
        self._core.check_throttle(throttle)

    def keys(self, identifier: str, throttles: Sequence[Throttle] = ()) -> list[str]:
        """The identifier's index key, then one ring key per throttle given."""
        return self._core.keys_for(identifier, throttles)

    def close(self) -> None:
        """Close the connections this storage opened (not a client passed in)."""
        owned, self._owned = self._owned, []
        for resource in owned:
            resource.close()

    def __enter__(self) -> RedisStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, command: tuple[Any, ...], record: bool) -> Any:
        """Send a decision's command; a plan takes over if that fails."""
        try:
            return self._execute(command, command[3])
        except Exception as exc:  # the plan reloads the library, or maps it
            return self._run(self._core.resume(command, exc, record=record))

    def _run(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                command = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

            try:
                if command.once:
                    reply = self._send_once(command)
                else:
                    reply = self._execute(command.args, command.key)
                error = None
            except Exception as exc:  # the plan decides, and maps it
                reply, error = None, exc

    def _send_once(self, command: Command) -> Any:
        """
        Send ``command`` for every thread that needs it now: a thread that
        finds it in flight to the same node waits for that one and shares its
        reply or error (after a ``FUNCTION FLUSH``, one load, not one a thread).
        """
        node = None
        if self._cluster is not None:
            node = self._cluster.get_node_from_key(command.key).name  # type: ignore[no-untyped-call]

        with self._flights_lock:
            flight = self._flights.get(node)
            leading = flight is None
            if flight is None:
                flight = self._flights[node] = Future()

        if not leading:
            return flight.result()

        try:
            reply = self._execute(command.args, command.key)
        except BaseException as exc:
            flight.set_exception(exc if isinstance(exc, Exception) else _interrupted())
            raise
        else:
            flight.set_result(reply)
            return reply
        finally:
            with self._flights_lock:
                del self._flights[node]

    def _execute(self, args: tuple[Any, ...], key: str) -> Any:
        if self._cluster is None:
            return self.client.execute_command(*args)  # type: ignore[no-untyped-call]

        # Naming the node spares redis-py a COMMAND GETKEYS round trip per
        # FCALL; a MOVED reply still sends it to the new owner.
        # Limitation: while the slot migrates, TRYAGAIN and ASK replies keep
        # redis-py in its redirect loop for up to 16 attempts, sleeping 50 ms
        # in each of the last eight: a call may take some 0.4 s past any
        # deadline (a thread cannot be interrupted) before it fails with
        # RedisConnectionError. The asyncio face is cancelled at its deadline.
        node = self._cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
        return self._cluster.execute_command(*args, target_nodes=node)  # type: ignore[no-untyped-call]


def _interrupted() -> Exception:
    """What the threads waiting for a load get when it was interrupted."""
    return redis.exceptions.ConnectionError("another caller's load was interrupted")
