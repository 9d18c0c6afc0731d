"""
``AsyncRedisStorage``: the asyncio face of ``RedisStorage``.

One round trip decides a hit over all its throttles, in the Lua library of
``lua/throttle.lua``. Everything but the I/O lives in ``_redis_common``; this
module and ``redis`` differ only by ``await``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.decision import Decision
from ..core.rate import Throttle

# First: it raises ConfigurationError naming the extra when redis is missing.
from ._redis_common import (
    DEFAULT_ASYNC_CONNECT_TIMEOUT,
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_MAX_LOG_SIZE,
    DEFAULT_PREFIX,
    ClientKit,
    Plan,
    RedisCore,
    T,
    check_client,
    client_timeouts,
    cluster_url,
    parse_decision,
)

# isort: split
import redis.asyncio as redis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel

try:
    # redis.asyncio packs commands in Python, about 1 us per argument; the
    # sync face already uses hiredis for that.
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is in the redis extra
    _pack = None  # type: ignore[assignment]

_KIT = ClientKit(redis.Redis, RedisCluster, ClusterNode, Sentinel, Retry)


class AsyncRedisStorage:
    """
    The asyncio face of ``RedisStorage``: the same constructors and methods,
    the I/O awaited.

    Standalone and Sentinel clients built here take a connection from their
    pool within ``socket_connect_timeout`` (0.5 s: the handshake included,
    and room for many tasks connecting at once), then give each command
    ``socket_timeout`` (100 ms) as one deadline, instead of redis-py's socket
    timeouts, which cost a task per command sent. A Cluster client keeps
    redis-py's timeouts, and a client passed in its own settings.

    Args:
        client: A ``redis.asyncio.Redis`` (standalone or Sentinel master) or a
            ``redis.asyncio.cluster.RedisCluster``. It stays yours: ``close``
            leaves it open.
        prefix: The first part of every key (``throttle:{digest}:name``).
        enable_redis_functions: Call the library with ``FCALL``; when False,
            or when the server has no functions (before Redis 7), run the same
            code through ``EVALSHA``.
        max_log_size: The highest throttle limit accepted: Redis keeps one
            6-byte entry per admitted hit in the window.

    Raises:
        ConfigurationError: for a bad prefix or max_log_size.
    """

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
    ) -> None:
        check_client(client)
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        self._setup(client, core, [])

    def _setup(
        self,
        client: redis.Redis | RedisCluster,
        core: RedisCore,
        owned: list[Any],
        deadlines: tuple[float | None, float | None] | None = None,
    ) -> None:
        self.client = client
        self._core = core
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._owned = owned
        # Our own standalone or Sentinel client: driven through its pool with
        # (connect, command) deadlines; otherwise through execute_command.
        self._pool: Any = None
        if deadlines is not None and not isinstance(client, RedisCluster):
            self._pool = client.connection_pool

        self._connect_timeout, self._command_timeout = deadlines or (None, None)
        self._pool_args = _connection_args(self._pool)
        self._watchdog = _Watchdog(self._connect_timeout, self._command_timeout)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
        socket_connect_timeout: float | None = DEFAULT_ASYNC_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        **options: Any,
    ) -> AsyncRedisStorage:
        """
        Connect to the Redis at ``url``.

        Args:
            url: ``redis://``, ``rediss://`` or ``unix://`` for one server, or
                ``redis+cluster://host:port`` (``rediss+cluster://``) for a
                Cluster reached through that node.
            socket_connect_timeout: Seconds to get a connection ready.
            socket_timeout: Seconds to wait for each reply.
            options: More redis-py client options (they win over ours).

        Raises:
            ConfigurationError: for bad settings.
            RedisConnectionError: when a Cluster cannot be reached to learn its
                slots.
        """
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        timeouts = client_timeouts(socket_connect_timeout, socket_timeout)
        if cluster_url(url) is not None:
            client = _KIT.from_url(url, timeouts, options)
            return cls._owning(client, core, [client])

        client = _KIT.from_url(url, _without_socket_timeout(timeouts), options)
        deadlines = (socket_connect_timeout, socket_timeout)
        return cls._owning(client, core, [client], deadlines)

    @classmethod
    def from_cluster(
        cls,
        startup_nodes: Sequence[tuple[str, int]] = (),
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
        socket_connect_timeout: float | None = DEFAULT_ASYNC_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        **options: Any,
    ) -> AsyncRedisStorage:
        """
        Connect to a Redis Cluster.

        Args:
            startup_nodes: ``(host, port)`` of one or more nodes.
            url: Or the ``redis://`` (or ``redis+cluster://``) URL of one node.
            options: More ``RedisCluster`` options (they win over ours).

        Raises:
            ConfigurationError: without nodes or URL.
            RedisConnectionError: when no node answers.
        """
        core = RedisCore(
            prefix=prefix,
            enable_redis_functions=enable_redis_functions,
            max_log_size=max_log_size,
        )
        timeouts = client_timeouts(socket_connect_timeout, socket_timeout)
        client = _KIT.from_cluster(startup_nodes, url, timeouts, options)
        return cls._owning(client, core, [client])

    @classmethod
    def from_sentinel(
        cls,
        service_name: str,
        sentinels: Sequence[tuple[str, int]],
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
        socket_connect_timeout: float | None = DEFAULT_ASYNC_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        sentinel_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncRedisStorage:
        """
        Use the master that Sentinel names for ``service_name``.

        After a failover the first command on the old master fails with
        ``RedisConnectionError``; the next one asks the sentinels again and
        goes to the new master.

        Args:
            service_name: The master's name in the Sentinel configuration.
            sentinels: ``(host, port)`` of the sentinels.
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
        client, owned = _KIT.from_sentinel(
            service_name,
            sentinels,
            timeouts,
            sentinel_options,
            options,
            _without_socket_timeout(timeouts),
        )
        deadlines = (socket_connect_timeout, socket_timeout)
        return cls._owning(client, core, owned, deadlines)

    @classmethod
    def _owning(
        cls,
        client: Any,
        core: RedisCore,
        owned: list[Any],
        deadlines: tuple[float | None, float | None] | None = None,
    ) -> AsyncRedisStorage:
        storage = cls.__new__(cls)
        storage._setup(client, core, owned, deadlines)
        return storage

    async def hit(
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
        return parse_decision(await self._send(command, True), throttles, cost)[0]

    async def peek(
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
        return parse_decision(await self._send(command, False), throttles, cost)[0]

    async def decide(
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
            KeyGenerationError: for an empty identifier.
            StorageError: when Redis fails (see ``errors``).
        """
        command = self._core.decide_command(
            identifier, throttles, cost, now_us, record=record
        )
        return parse_decision(await self._send(command, record), throttles, cost)

    async def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        await self._run(self._core.reset(identifier, throttles))

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

    async def close(self) -> None:
        """Close the connections this storage opened (not a client passed in)."""
        owned, self._owned = self._owned, []
        for resource in owned:
            await resource.aclose()

    async def __aenter__(self) -> AsyncRedisStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _send(self, command: tuple[Any, ...], record: bool) -> Any:
        """Send a decision's command; a plan takes over if that fails."""
        try:
            return await self._execute(command, command[3])
        except Exception as exc:  # the plan reloads the library, or maps it
            return await self._run(self._core.resume(command, exc, record=record))

    async def _run(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                command = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

            try:
                reply, error = await self._execute(command.args, command.key), None
            except Exception as exc:  # the plan decides, and maps it
                reply, error = None, exc

    async def _execute(self, args: tuple[Any, ...], key: str) -> Any:
        if self._pool is not None:
            return await self._execute_pooled(args)

        if self._cluster is None:
            return await self.client.execute_command(*args)

        await self._cluster.initialize()  # once; later calls return at once
        # Naming the node spares redis-py a COMMAND GETKEYS round trip per
        # FCALL; a MOVED reply still sends it to the new owner.
        node = self._cluster.get_node_from_key(key)
        return await self._cluster.execute_command(*args, target_nodes=node)

    async def _execute_pooled(self, args: tuple[Any, ...]) -> Any:
        """
        One command on a connection of our pool, as ``execute_command`` runs
        it without retries, under two deadlines: one to get the connection
        ready, one for the command. redis-py drops a connection whose connect,
        send or read is cancelled, so none is reused out of step.
        """
        pool, watchdog = self._pool, self._watchdog
        task = watchdog.watch(self._connect_timeout)
        try:
            connection = await pool.get_connection(*self._pool_args)
        except asyncio.CancelledError:
            if watchdog.release(task):
                # Nothing was sent: the words tell map_redis_errors so.
                raise redis_errors.TimeoutError(
                    f"Timeout connecting to server within {self._connect_timeout} s"
                ) from None

            raise
        except BaseException:
            watchdog.release(task)
            raise

        watchdog.watch(self._command_timeout)
        try:
            if _pack is None:
                await connection.send_command(*args)
            else:
                await connection.send_packed_command(_pack(args))

            return await connection.read_response()
        except asyncio.CancelledError:
            if watchdog.release(task):
                raise redis_errors.TimeoutError(
                    f"no reply within {self._command_timeout} s"
                ) from None

            raise
        finally:
            watchdog.release(task)
            await pool.release(connection)


class _Watchdog:
    """
    Deadlines for the commands in flight on one event loop, all checked by
    one timer every ``tick`` seconds: ``asyncio.timeout`` schedules a timer
    per command, which with 50 tasks costs more than the command's own
    Python. A deadline fires up to one tick late.
    """

    __slots__ = ("_deadlines", "_expired", "_loop", "_tick", "_timer")

    def __init__(self, *timeouts: float | None) -> None:
        shortest = min((t for t in timeouts if t is not None), default=1.0)
        self._tick = min(0.01, shortest / 5)
        self._deadlines: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, seconds: float | None) -> asyncio.Task[Any]:
        """Cancel the current task ``seconds`` from now (None: never)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None  # an async function always runs in a task
        if loop is not self._loop:  # a new event loop: the old one's state is moot
            self._loop, self._timer = loop, None
            self._deadlines.clear()
            self._expired.clear()

        if seconds is None:
            self._deadlines.pop(task, None)
            return task

        self._deadlines[task] = (loop.time() + seconds, task.cancelling())
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._sweep)

        return task

    def release(self, task: asyncio.Task[Any]) -> bool:
        """
        Stop watching ``task``. True when its deadline passed: the
        cancellation this caused is then taken back, and the caller raises a
        timeout instead. False when it did not, or others cancelled it too.
        """
        watched = self._deadlines.pop(task, None)
        if watched is None or task not in self._expired:
            return False

        self._expired.discard(task)
        return task.uncancel() <= watched[1]

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, (deadline, _) in self._deadlines.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()  # lands at the await the task waits in

        self._timer = None
        if self._deadlines:
            self._timer = self._loop.call_later(self._tick, self._sweep)


def _without_socket_timeout(timeouts: Mapping[str, Any]) -> dict[str, Any]:
    """Client timeouts under our deadlines: redis-py's only for connecting."""
    return {**timeouts, "socket_timeout": None}


def _connection_args(pool: Any) -> tuple[str, ...]:
    """What ``get_connection`` needs: redis-py before 5.3 a command name."""
    if pool is None:
        return ()

    try:
        signature = inspect.signature(pool.get_connection)
    except (TypeError, ValueError):  # pragma: no cover - an exotic pool
        return ()

    name = signature.parameters.get("command_name")
    if name is not None and name.default is inspect.Parameter.empty:
        return ("FCALL",)  # pragma: no cover - redis-py < 5.3

    return ()
