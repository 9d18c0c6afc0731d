"""
``AsyncRedisStorage``: the asyncio face of ``RedisStorage``.

One round trip decides a hit over all its throttles, in the Lua library of
``lua/throttle.lua``. Everything but the I/O lives in ``_redis_common``; this
module and ``redis`` differ only by ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

# First: it raises ConfigurationError naming the extra when redis is missing.
from ..config import ThrottlerSettings
from ..core.decision import Decision
from ..core.rate import Throttle
from ..errors import ConfigurationError
from ._redis_common import (
    DEFAULT_ASYNC_CONNECT_TIMEOUT,
    DEFAULT_COMMAND_TIMEOUT,
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
    cluster_url,
    parse_decision,
    pool_limits,
    settings_connection,
    url_from_env,
)
from ._watchdog import Watchdog
from .base import StorageHealth

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
    redis-py's timeouts, and a client passed in its own settings; both are
    cut at a resilient wrapper's deadline too (``bound_calls``).

    Clients built here keep at most ``max_connections`` commands in flight
    (100, so as many connections per server): a task beyond them waits up to
    ``pool_timeout`` (0.5 s), or the decision's deadline when that is
    shorter, for a free one, then fails with ``StorageOperationError``
    (nothing was sent). When the event loop that
    used the storage is closed (``asyncio.run`` returned) and another one
    calls it, they drop the old loop's connections and open new ones.

    Args:
        client: A ``redis.asyncio.Redis`` (standalone or Sentinel master) or a
            ``redis.asyncio.cluster.RedisCluster``. It stays yours: ``close``
            leaves it open. A ``redis.asyncio.Redis`` must not retry commands
            (redis-py 8 does by default): build it with
            ``retry=Retry(NoBackoff(), 0)``. Its connections belong to one
            event loop: create the storage inside the loop that uses it.
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
        self,
        client: redis.Redis | RedisCluster,
        core: RedisCore,
        owned: list[Any],
        deadlines: tuple[float | None, float | None] | None = None,
        limits: PoolLimits | None = None,
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

        # Every pool of our own clients (the sentinels' too): all belong to
        # the event loop of their connections.
        pooled = self._pool is not None
        self._pools = [c.connection_pool for c in owned] if pooled else []
        self._connect_timeout, self._command_timeout = deadlines or (None, None)
        self._pool_args = _connection_args(self._pool)
        core.limits = limits
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._flights: dict[str | None, asyncio.Future[Any]] = {}
        self._watchdog = Watchdog(self._connect_timeout, self._command_timeout)
        self._bound: float | None = None  # every decision's deadline (bound_calls)

    @classmethod
    def from_env(
        cls, settings: ThrottlerSettings | None = None, **options: Any
    ) -> AsyncRedisStorage:
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
        socket_connect_timeout: float | None = DEFAULT_ASYNC_CONNECT_TIMEOUT,
        socket_timeout: float | None = DEFAULT_COMMAND_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
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
            max_connections: Commands in flight at once, and so connections
                to the server (to each node of a Cluster).
            pool_timeout: Seconds a task waits for a free connection when
                ``max_connections`` commands are in flight (None: as long as
                it takes), or less when the decision's deadline comes first;
                then ``StorageOperationError`` (the breaker stays closed).
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
        deadlines = (socket_connect_timeout, socket_timeout)
        limits = pool_limits(max_connections, pool_timeout)
        if cluster_url(url) is not None:
            client = _KIT.from_url(url, timeouts, options, limits)
            return cls._owning(client, core, [client], deadlines, limits)

        plain = _without_socket_timeout(timeouts)
        client = _KIT.from_url(url, plain, options, limits)
        return cls._owning(client, core, [client], deadlines, limits)

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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
        **options: Any,
    ) -> AsyncRedisStorage:
        """
        Connect to a Redis Cluster.

        Args:
            startup_nodes: ``(host, port)`` of one or more nodes.
            url: Or the ``redis://`` (or ``redis+cluster://``) URL of one node.
            max_connections: Commands in flight at once, and so connections
                to each node.
            pool_timeout: Seconds a task waits for a free connection.
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
        deadlines = (socket_connect_timeout, socket_timeout)
        return cls._owning(client, core, [client], deadlines, limits)

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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
        sentinel_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncRedisStorage:
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
            max_connections: Commands in flight at once, and so connections
                to the master.
            pool_timeout: Seconds a task waits for a free connection.
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
            service_name,
            sentinels,
            timeouts,
            sentinel_options,
            options,
            _without_socket_timeout(timeouts),
            limits,
        )
        deadlines = (socket_connect_timeout, socket_timeout)
        return cls._owning(client, core, owned, deadlines, limits)

    @classmethod
    def _owning(
        cls,
        client: Any,
        core: RedisCore,
        owned: list[Any],
        deadlines: tuple[float | None, float | None],
        limits: PoolLimits,
    ) -> AsyncRedisStorage:
        storage = cls.__new__(cls)
        storage._setup(client, core, owned, deadlines, limits)
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
            KeyGenerationError: for an identifier that is not 1 to 65,536
                characters.
            StorageError: when Redis fails (see ``errors``).
        """
        command = self._core.decide_command(
            identifier, throttles, cost, now_us, record=record
        )
        return parse_decision(await self._send(command, record), throttles, cost)

    async def reset(self, identifier: str, throttles: Sequence[Throttle] = ()) -> None:
        """Forget the identifier's hits and blocks (all throttles when none given)."""
        await self._run(self._core.reset(identifier, throttles))

    async def health(self) -> StorageHealth:
        """
        Check that Redis answers ``PING`` and acknowledges a small write (a
        ``SET`` with a one-second expiry under the prefix), each within the
        command timeout (100 ms for a client passed in). It never raises.

        Returns:
            ``healthy`` when both worked, with ``answers_ping``,
            ``accepts_writes``, ``latency_ms`` (the whole check) and a
            sentence in ``detail``.
        """
        timeout: float | None = self._command_timeout or DEFAULT_COMMAND_TIMEOUT
        if self._pool is not None:
            timeout = None  # our pool's commands have their deadline already

        return await self._run(self._core.health(), timeout)

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
        """
        Close the connections this storage opened (not a client passed in).
        Those of an event loop that is closed cannot close through it: a
        standalone or Sentinel storage closes their sockets, a Cluster
        storage leaves them to the garbage collector.
        """
        old = self._loop
        gone = old is not None and old.is_closed()
        for pool in self._pools if gone else ():
            _abandon_connections(pool)

        owned, self._owned = self._owned, []
        if gone and not self._pools:
            return

        for resource in owned:
            await resource.aclose()

    async def __aenter__(self) -> AsyncRedisStorage:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def bound_calls(self, seconds: float) -> bool:
        """
        Cut every decision at ``seconds`` (the shortest asked), connecting and
        commands together, library reloads included. For a resilient storage
        around this one, which then need not cut the calls itself.

        A decision still waiting for a free connection then fails as one that
        found none (``StorageOperationError``, nothing sent); one cut after
        sending, with its outcome unknown.

        Returns:
            True: every topology does it (through its pool for a client built
            here from a URL or Sentinel settings; with a timer per command for
            a Cluster or a client passed in).
        """
        if self._bound is None or seconds < self._bound:
            self._bound = seconds

        return True

    async def _send(self, command: tuple[Any, ...], record: bool) -> Any:
        """Send a decision's command; a plan takes over if that fails."""
        until = None
        if self._bound is not None:
            until = asyncio.get_running_loop().time() + self._bound

        try:
            return await self._execute(command, command[3], until)
        except Exception as exc:  # the plan reloads the library, or maps it
            plan = self._core.resume(command, exc, record=record)
            return await self._run(plan, until=until)

    async def _run(
        self, plan: Plan[T], timeout: float | None = None, until: float | None = None
    ) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                command = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

            try:
                async with asyncio.timeout(timeout):
                    if command.once:
                        reply = await self._send_once(command, until)
                    else:
                        reply = await self._execute(command.args, command.key, until)
                error = None
            except Exception as exc:  # the plan decides, and maps it
                reply, error = None, exc

    async def _send_once(self, command: Command, until: float | None) -> Any:
        """
        Send ``command`` for every task that needs it now: a task that finds
        it in flight to the same node waits for that one (up to ``until``,
        loop time) and shares its reply or error (after a ``FUNCTION FLUSH``,
        one load, not one a task). When the task sending it is cancelled
        first, a waiting one sends it instead: their own hits never ran.
        """
        owner = None
        if self._cluster is not None:
            owner = self._cluster.get_node_from_key(command.key)

        node = getattr(owner, "name", None)

        while (flight := self._flights.get(node)) is not None:
            with contextlib.suppress(_AbandonedLoad):  # then take it over
                return await _cut_at(
                    until, asyncio.shield(flight), "no reply to the load"
                )

        flight = self._flights[node] = asyncio.get_running_loop().create_future()
        try:
            reply = await self._execute(command.args, command.key, until)
        except BaseException as exc:
            flight.set_exception(
                exc if isinstance(exc, Exception) else _AbandonedLoad()
            )
            flight.exception()  # retrieved, even if no task waits for it
            raise
        else:
            flight.set_result(reply)
            return reply
        finally:
            del self._flights[node]

    async def _execute(
        self, args: tuple[Any, ...], key: str, until: float | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._enter_loop(loop)  # before anything is sent

        if self._pool is not None:
            return await self._execute_pooled(args, loop, until)

        # Off our pool, a timer per command cuts it at the decision's
        # deadline; cut there, it may have been sent.
        if self._cluster is None:
            return await _cut_at(until, self.client.execute_command(*args))

        # Once; later calls return at once. Cut there, nothing was sent.
        await _cut_at(
            until, self._cluster.initialize(), "Timeout connecting to Cluster"
        )
        # Naming the node spares redis-py a COMMAND GETKEYS round trip per
        # FCALL; a MOVED reply still sends it to the new owner.
        node = self._cluster.get_node_from_key(key)
        slots = self._slots
        if slots is None:  # a client passed in keeps its own limits
            return await _cut_at(
                until, self._cluster.execute_command(*args, target_nodes=node)
            )

        await self._take(slots, until, loop)
        try:
            return await _cut_at(
                until, self._cluster.execute_command(*args, target_nodes=node)
            )
        finally:
            slots.release()

    async def _execute_pooled(
        self,
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        until: float | None,
    ) -> Any:
        """
        One command on a connection of our pool, as ``execute_command`` runs
        it without retries, under two deadlines: one to get the connection
        ready, one for the command; each cut shorter to end by ``until`` (loop
        time), the decision's own deadline (``bound_calls``). redis-py drops a
        connection whose connect, send or read is cancelled, so none is
        reused out of step.
        """
        pool, watchdog, slots = self._pool, self._watchdog, self._slots
        assert slots is not None  # set with the loop
        await self._take(slots, until, loop)
        connect_for = _within(self._connect_timeout, until, loop)
        task = watchdog.watch(loop, connect_for)
        try:
            connection = await pool.get_connection(*self._pool_args)
        except asyncio.CancelledError:
            slots.release()
            if watchdog.release(task):
                # Nothing was sent: the words tell map_redis_errors so.
                raise redis_errors.TimeoutError(
                    f"Timeout connecting to server within {connect_for:.3g} s"
                ) from None

            raise
        except BaseException:
            slots.release()
            watchdog.release(task)
            raise

        command_for = _within(self._command_timeout, until, loop)
        watchdog.watch(loop, command_for, task)
        try:
            if _pack is None:
                await connection.send_command(*args)
            else:
                await connection.send_packed_command(_pack(args))

            return await connection.read_response()
        except asyncio.CancelledError:
            if watchdog.release(task):
                raise redis_errors.TimeoutError(
                    f"no reply within {command_for:.3g} s"
                ) from None

            raise
        finally:
            watchdog.release(task)
            try:
                await pool.release(connection)
            finally:
                slots.release()

    async def _take(
        self,
        slots: asyncio.Semaphore,
        until: float | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """
        Take a slot for one command, waiting up to the pool timeout (cut
        shorter to end by ``until``, loop time, when given); else raise
        redis-py's ``MaxConnectionsError`` (nothing sent, outcome known).
        """
        if not slots.locked():
            await slots.acquire()  # returns at once
            return

        limits = self._core.limits
        assert limits is not None  # the slots come from them
        wait = limits.timeout
        if until is not None and loop is not None:
            wait = _within(wait, until, loop)

        try:
            async with asyncio.timeout(wait):
                await slots.acquire()
        except TimeoutError:
            # Mapped as redis-py's own: no free connection, nothing sent.
            raise redis_errors.MaxConnectionsError("Too many connections") from None

        if until is not None and loop is not None and loop.time() >= until:
            slots.release()  # freed with the deadline: as late as none
            raise redis_errors.MaxConnectionsError("Too many connections")

    def _enter_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """
        Start using ``loop``: the first one, or a new one after the old one
        closed. redis.asyncio connections belong to the loop that opened
        them: a command sent on one from another loop may run, and its reply
        never come back ("Event loop is closed"), so none is sent before the
        storage knows which loop it is in.
        """
        old = self._loop
        if old is not None and (not self._pools or not old.is_closed()):
            raise ConfigurationError(
                "client",
                "this storage was used from another event loop"
                + (
                    ", which is still open"
                    if self._pools
                    else " (its client, passed in or a Cluster client, cannot "
                    "move to this one)"
                )
                + ": redis.asyncio connections belong to the loop that opened "
                "them. Create the storage inside the event loop that uses it "
                "(in the app's lifespan, or inside the function asyncio.run runs)",
            )

        for pool in self._pools if old is not None else ():
            _abandon_connections(pool)

        self._loop = loop
        self._flights = {}
        self._watchdog = Watchdog(self._connect_timeout, self._command_timeout)
        if self._core.limits is not None:
            self._slots = asyncio.Semaphore(self._core.limits.max_connections)


def _within(
    seconds: float | None, until: float | None, loop: asyncio.AbstractEventLoop
) -> float | None:
    """``seconds``, cut shorter to end by ``until`` (loop time) when given."""
    if until is None:
        return seconds

    left = max(until - loop.time(), 0.0)
    return left if seconds is None else min(seconds, left)


async def _cut_at(
    until: float | None, call: Awaitable[T], timeout: str = "no reply in time"
) -> T:
    """
    Await ``call``, cut at ``until`` (loop time) when given; the cut raises
    redis-py's ``TimeoutError`` saying ``timeout``, whose words tell
    ``map_redis_errors`` whether the command may have run.
    """
    if until is None:
        return await call

    cut = asyncio.timeout_at(until)
    try:
        async with cut:
            return await call
    except TimeoutError:
        if not cut.expired():
            raise

        raise redis_errors.TimeoutError(
            f"{timeout} (the decision's deadline)"
        ) from None


class _AbandonedLoad(Exception):
    """A shared load whose sender was cancelled before its reply came."""


def _abandon_connections(pool: Any) -> None:
    """
    Forget the connections of a pool whose event loop is closed, and close
    their sockets, without sending or awaiting anything.

    redis.asyncio has no way to do it: its connections close through their
    loop, which refuses once closed, so this reaches into the pool (its lists
    and its lock, which may belong to the old loop) and into each transport
    (closing its socket, which the GC would otherwise close with a
    ResourceWarning).
    """
    connections = [*pool._available_connections, *pool._in_use_connections]
    pool.reset()
    pool._lock = asyncio.Lock()
    for connection in connections:
        writer = connection._writer
        with contextlib.suppress(RuntimeError):  # "Event loop is closed"
            connection._force_disconnect()

        connection._reader = connection._writer = None
        transport = getattr(writer, "transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            sock.close()
            transport._sock = None  # type: ignore[union-attr]


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
