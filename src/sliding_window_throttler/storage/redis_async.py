"""
``AsyncRedisStorage``: the asyncio face of ``RedisStorage``.

One round trip decides a hit over all its throttles, in the Lua library of
``lua/throttle.lua``. Everything but the I/O lives in ``_redis_common``; this
module and ``redis`` differ only by ``await``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.decision import Decision
from ..core.rate import Throttle

# First: it raises ConfigurationError naming the extra when redis is missing.
from ._redis_common import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_LOG_SIZE,
    DEFAULT_PREFIX,
    ClientKit,
    Command,
    Plan,
    RedisCore,
    T,
    check_client,
    client_timeouts,
)

# isort: split
import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel

_KIT = ClientKit(redis.Redis, RedisCluster, ClusterNode, Sentinel, Retry)


class AsyncRedisStorage:
    """
    The asyncio face of ``RedisStorage``: the same constructors and methods,
    the I/O awaited.

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
        self, client: redis.Redis | RedisCluster, core: RedisCore, owned: list[Any]
    ) -> None:
        self.client = client
        self._core = core
        self._cluster = client if isinstance(client, RedisCluster) else None
        self._owned = owned

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
        **options: Any,
    ) -> AsyncRedisStorage:
        """
        Connect to the Redis at ``url``.

        Args:
            url: ``redis://``, ``rediss://`` or ``unix://`` for one server, or
                ``redis+cluster://host:port`` (``rediss+cluster://``) for a
                Cluster reached through that node.
            socket_connect_timeout: Seconds to connect.
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
        client = _KIT.from_url(url, timeouts, options)
        return cls._owning(client, core, [client])

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
        socket_connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
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
            service_name, sentinels, timeouts, sentinel_options, options
        )
        return cls._owning(client, core, owned)

    @classmethod
    def _owning(
        cls, client: Any, core: RedisCore, owned: list[Any]
    ) -> AsyncRedisStorage:
        storage = cls.__new__(cls)
        storage._setup(client, core, owned)
        return storage

    async def hit(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Decide a hit and record it in every throttle, or in none."""
        return (await self.decide(identifier, throttles, cost, now_us))[0]

    async def peek(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None = None,
    ) -> Decision:
        """Return what ``hit`` would decide, changing nothing."""
        return (await self.decide(identifier, throttles, cost, now_us, record=False))[0]

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
        plan = self._core.decide(identifier, throttles, cost, now_us, record=record)
        return await self._run(plan)

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

    async def _run(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: Exception | None = None
        while True:
            try:
                command = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

            try:
                reply, error = await self._execute(command), None
            except Exception as exc:  # the plan decides, and maps it
                reply, error = None, exc

    async def _execute(self, command: Command) -> Any:
        if self._cluster is not None:
            await self._cluster.initialize()  # once; later calls return at once
            # Naming the node spares redis-py a COMMAND GETKEYS round trip per
            # FCALL; a MOVED reply still sends it to the new owner.
            node = self._cluster.get_node_from_key(command.key)
            return await self._cluster.execute_command(*command.args, target_nodes=node)

        return await self.client.execute_command(*command.args)
