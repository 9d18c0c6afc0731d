"""
What the sync and async Redis storages share: everything but the I/O.

Keys, arguments and reply parsing are pure functions. The calls themselves are
plans: generators that yield the ``Command`` to run next and receive its reply
(or have its exception thrown in), so the loader (``NOSCRIPT`` and "Function
not found" handling, the switch to ``EVALSHA`` on servers without functions)
and the translation of redis-py errors exist once; ``redis.py`` and
``redis_async.py`` only drive plans, one with ``await``.

A decision takes a shorter road: ``RedisCore.decide_command`` checks the call
and builds its one command, the storage sends it, and only an exception hands
over to a plan (``RedisCore.resume``), which picks up from that failed send.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from ..config import ThrottlerSettings
from ..core.decision import Decision, Outcome, RawRecord
from ..core.keys import MAX_IDENTIFIER_LENGTH, check_identifier
from ..core.rate import MAX_LIMIT, Throttle
from ..errors import (
    ConfigurationError,
    RedisConnectionError,
    RedisFunctionError,
    StorageOperationError,
    StorageTimeoutError,
    ThrottlerError,
    shown,
)
from .base import StorageHealth

try:
    from redis import exceptions as redis_errors
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ConfigurationError(
        "redis",
        "the Redis storage needs redis-py: install the redis extra, "
        "pip install 'sliding-window-throttler[redis]' (from a checkout: "
        "pip install '.[redis]')",
    ) from exc

logger = logging.getLogger(__name__)

T = TypeVar("T")

Plan = Generator["Command", Any, T]
"""A storage call: yields commands, receives their replies, returns a result."""

DEFAULT_PREFIX = "throttle"
DEFAULT_MAX_LOG_SIZE = 10_000
DEFAULT_CONNECT_TIMEOUT = 0.05
DEFAULT_ASYNC_CONNECT_TIMEOUT = 0.5
"""Seconds an asyncio storage may take to get a connection ready, handshake
included: one event loop opening 50 connections at once needs some 50 ms on an
idle machine, and several times that on a busy one. A server that is down
still fails at once (connection refused)."""
DEFAULT_COMMAND_TIMEOUT = 0.1
DEFAULT_MAX_CONNECTIONS = 100
"""Connections a storage keeps to one server (per node on Cluster), redis-py's
own pool size. A call beyond them waits for a free one instead of failing."""
DEFAULT_POOL_TIMEOUT = 0.5
"""Seconds a call beyond ``max_connections`` waits for a free connection. On a
healthy server one comes free within a command's time, but 150 threads
starting at once waited up to 0.12 s on an idle two-CPU machine (the first
hundred connecting) and 0.4 s on a busy one; a stalled server frees them
within its command timeout, as their commands time out."""
HEALTH_TTL_MS = 1_000
"""Milliseconds the key written by a health check lives."""
MAX_TIME_US = 2**52
"""Times and costs beyond this would lose precision as Lua doubles."""

SLOT_BYTES = 6
"""Bytes per admitted hit in a ring (see the header of ``lua/throttle.lua``)."""
TAG_LENGTH = 26
"""Hex digits of an identifier's digest in its keys."""

_PREFIX_PATTERN = re.compile(r"[!-z|~]{1,128}")
"""Printable ASCII without ``{`` and ``}``, which would move the hash tag."""

_OUTCOMES = (
    Outcome.ADMITTED,
    Outcome.LIMIT_REACHED,
    Outcome.BLOCKED,
    Outcome.COST_EXCEEDS_LIMIT,
)
_FIELDS = 6
"""Integers per throttle in the decide entry's reply."""
_RESET_ATTEMPTS = 5
_CHECKED_MAX = 1024
_INDEX_KEYS_MAX = 4096
_CACHED_IDENTIFIER_MAX = 256
"""Index keys of at most this many identifiers, this long, are kept (1 MB)."""


@dataclass(frozen=True, slots=True)
class Command:
    """
    One Redis command of a plan.

    Attributes:
        args: The command and its arguments.
        key: A key of the command; on Cluster the command goes to its node.
        once: Callers that need it at the same time (on the same node) send
            it once and share its reply: the library's ``FUNCTION LOAD``,
            which every caller needs after a ``FUNCTION FLUSH``.
    """

    args: tuple[str | int | bytes, ...]
    key: str
    once: bool = False


@dataclass(frozen=True, slots=True)
class LuaEntry:
    """An entry point of the Lua library, as a function and as a script."""

    function: str
    """The name registered by ``FUNCTION LOAD``."""
    fcall: str
    """How to call it: ``FCALL``, or ``FCALL_RO`` for a read-only one."""
    body: str
    """The script run by ``EVAL``: the library with a ``return entry(...)`` tail."""
    sha: str
    """The SHA-1 of ``body``, for ``EVALSHA``."""


@dataclass(frozen=True, slots=True)
class LuaLibrary:
    """The Lua source file and the entry points built from it."""

    name: str
    """``swt_`` and 8 hex digits of the SHA-1 of the file: changed code is a
    new library, never an old one replaced (or not) under the same name."""
    source: str
    """The text given to ``FUNCTION LOAD``: the file under ``name``."""
    decide: LuaEntry
    peek: LuaEntry
    reset: LuaEntry


_SHEBANG = re.compile(r"#!lua name=(\w+)")
_REGISTRATION = re.compile(
    r"redis\.register_function(?:\('(\w+)', (\w+)\)"
    r"|\{function_name='(\w+)', callback=(\w+), flags=\{'no-writes'\}\})"
)


def load_library(text: str | None = None) -> LuaLibrary:
    """
    Read ``lua/throttle.lua`` (or ``text``) and build its function and script
    forms, named after a digest of the text.

    The file registers its functions as ``<prefix>_<entry>`` under the library
    ``<prefix>``; both become ``<prefix>_<digest>``, so no server that has
    loaded other code under that name keeps running it (``FUNCTION LOAD``
    never replaces a library it has unless told to, and then only on one node).
    """
    if text is None:
        text = resources.files(__package__).joinpath("lua/throttle.lua").read_text()

    shebang, _, rest = text.partition("\n")
    name_match = _SHEBANG.fullmatch(shebang)
    body, marker, registration = rest.partition("\nredis.register_function(")
    entries: dict[str, str] = {}
    read_only: set[str] = set()
    for found in _REGISTRATION.finditer(marker + registration):
        if found.group(1):
            entries[found.group(2)] = found.group(1)
        else:
            entries[found.group(4)] = found.group(3)
            read_only.add(found.group(4))

    if name_match is None or not marker or set(entries) != {"decide", "peek", "reset"}:
        raise RuntimeError("lua/throttle.lua lost its shebang or registration block")

    prefix = name_match.group(1)
    name = f"{prefix}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    if any(function != f"{prefix}_{entry}" for entry, function in entries.items()):
        raise RuntimeError(f"lua/throttle.lua must register {prefix}_<entry>")

    prefixed = marker + registration
    for entry in entries:
        prefixed = prefixed.replace(f"'{prefix}_{entry}'", f"'{name}_{entry}'")

    def made(entry: str) -> LuaEntry:
        command = "FCALL_RO" if entry in read_only else "FCALL"
        return _entry(f"{name}_{entry}", command, body, entry)

    return LuaLibrary(
        name,
        f"#!lua name={name}\n{body}{prefixed}",
        made("decide"),
        made("peek"),
        made("reset"),
    )


def _entry(function: str, fcall: str, body: str, entry: str) -> LuaEntry:
    script = f"{body}\nreturn {entry}(KEYS, ARGV)\n"
    return LuaEntry(function, fcall, script, hashlib.sha1(script.encode()).hexdigest())


LIBRARY = load_library()


def settings_connection(
    settings: ThrottlerSettings | None,
) -> tuple[str, dict[str, float]]:
    """
    The URL and the timeouts (as ``from_url`` keywords) that the settings, or
    the environment, set; timeouts left unset keep the face's own defaults.

    Raises:
        ConfigurationError: without a URL, or for a bad variable (naming it).
    """
    if settings is None:
        settings = ThrottlerSettings.from_env()

    if settings.redis_url is None:
        raise ConfigurationError(
            "redis_url",
            "no Redis URL in the environment: set REDIS_URL (or SWT_REDIS_URL), "
            "such as redis://localhost:6379/0",
        )

    given = settings.model_fields_set
    timeouts = {}
    if "connect_timeout" in given:
        timeouts["socket_connect_timeout"] = settings.connect_timeout

    if "command_timeout" in given:
        timeouts["socket_timeout"] = settings.command_timeout

    return settings.redis_url, timeouts


@contextmanager
def url_from_env() -> Iterator[None]:
    """Name the variable when the URL it holds is refused (``from_env``)."""
    try:
        yield
    except ConfigurationError as exc:
        if exc.field != "url":
            raise

        raise ConfigurationError(
            "redis_url",
            f"setting redis_url (env REDIS_URL or SWT_REDIS_URL): {exc.message}",
        ) from None


def identifier_tag(identifier: str) -> str:
    """
    The fixed-length digest of an identifier used as its Cluster hash tag.

    The first 13 bytes of SHA-256 of the UTF-8 text, in hex (26 characters,
    104 bits): nothing a client sends can move its slot or reach another
    client's keys, and finding a second identifier with the tag of a given one
    takes some 2^104 hashes.
    """
    return hashlib.sha256(identifier.encode("utf-8", "surrogatepass")).hexdigest()[
        :TAG_LENGTH
    ]


def index_key(prefix: str, identifier: str) -> str:
    """The key of an identifier's index of throttle names: ``prefix:{tag}``."""
    return f"{prefix}:{{{identifier_tag(identifier)}}}"


def ring_key(index: str, name: str) -> str:
    """The key of one pair's ring: ``prefix:{tag}:name``, beside its index."""
    return f"{index}:{name}"


def decide_args(
    mode: str, now_us: int | None, cost: int, throttles: Sequence[Throttle]
) -> list[str | int]:
    """The ``ARGV`` of the decide entry (see ``lua/throttle.lua``)."""
    args: list[str | int] = [mode, "" if now_us is None else now_us, cost]
    for throttle in throttles:
        args += (throttle.name, throttle.limit, throttle.ttl_ms)
        args.append(throttle.block_duration_ms)

    return args


def parse_decision(
    reply: object, throttles: Sequence[Throttle], cost: int
) -> tuple[Decision, int]:
    """
    Turn the decide entry's reply into a ``Decision``.

    Returns:
        The decision and the time it was made at, in microseconds (the
        server's ``TIME`` or the explicit time, raised to the newest admission
        of the pairs involved).
    """
    if not isinstance(reply, list) or len(reply) != 1 + _FIELDS * len(throttles):
        raise RedisFunctionError(
            f"the decision function replied {reply!r:.200}, expected "
            f"{1 + _FIELDS * len(throttles)} integers",
            "execution_failed",
            context={"backend": "redis"},
        )

    if len(throttles) == 1:
        # Most hits carry one throttle: no loop, no slicing.
        throttle = throttles[0]
        at, outcome, in_window, wait_us, expires_in_us, recorded, blocked = reply
        raw: list[RawRecord] = [
            (
                throttle.name,
                throttle.limit,
                _OUTCOMES[outcome],
                in_window,
                cost,
                wait_us,
                expires_in_us,
                recorded == 1,
                blocked == 1,
            )
        ]
        return Decision.from_raw(raw), int(at)

    raw = []
    for i, throttle in enumerate(throttles):
        at = 1 + _FIELDS * i
        outcome, in_window, wait_us, expires_in_us, recorded, blocked = reply[
            at : at + _FIELDS
        ]
        raw.append(
            (
                throttle.name,
                throttle.limit,
                _OUTCOMES[outcome],
                in_window,
                cost,
                wait_us,
                expires_in_us,
                recorded == 1,
                blocked == 1,
            )
        )

    return Decision.from_raw(raw), int(reply[0])


def client_timeouts(
    socket_connect_timeout: float | None, socket_timeout: float | None
) -> dict[str, float | None]:
    """Check the timeouts (seconds) and return them as redis-py options."""
    return {
        "socket_connect_timeout": _seconds(
            "socket_connect_timeout", socket_connect_timeout
        ),
        "socket_timeout": _seconds("socket_timeout", socket_timeout),
    }


def _seconds(field: str, value: float | None) -> float | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
    ):
        raise ConfigurationError(
            field, f"{field} must be a positive number of seconds, got {shown(value)}"
        )

    return value


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """
    How many connections a storage keeps to one server (to each node of a
    Cluster), and how long a call beyond them waits for a free one.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    timeout: float | None = DEFAULT_POOL_TIMEOUT
    """Seconds; None waits as long as it takes."""


DEFAULT_LIMITS = PoolLimits()


def pool_limits(max_connections: int, pool_timeout: float | None) -> PoolLimits:
    """Check the pool settings and return them."""
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ConfigurationError(
            "max_connections",
            "max_connections must be a whole number of connections, at least 1, "
            f"got {shown(max_connections)}",
        )

    return PoolLimits(max_connections, _seconds("pool_timeout", pool_timeout))


def cluster_url(url: str) -> str | None:
    """The plain URL of a ``redis+cluster://`` URL, or None for other URLs."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("redis+cluster", "rediss+cluster"):
        return f"{scheme.lower().removesuffix('+cluster')}://{rest}"

    return None


@contextmanager
def _url_errors() -> Iterator[None]:
    try:
        yield
    except ConfigurationError:
        raise
    except ValueError as exc:  # redis-py's word for a malformed URL
        raise ConfigurationError(
            "url",
            f"not a Redis URL ({exc}); write redis://[:password@]host[:port][/db],"
            " rediss://..., unix:///path or redis+cluster://host:port",
        ) from exc


@dataclass(frozen=True, slots=True)
class ClientKit:
    """
    The redis-py classes of one face (sync or asyncio), and how both faces
    build clients from settings: with our timeouts, without retries (a
    retried hit may count twice; retrying is the recovery layer's job), and
    with the pool's limits. The caller's options win over ours.
    """

    redis: Any
    cluster: Any
    cluster_node: Any
    sentinel: Any
    retry: Any
    blocking_pool: Any = None
    """The sync face's ``BlockingConnectionPool``: a thread beyond
    ``max_connections`` waits up to the pool timeout for a free connection.
    None on the asyncio face, whose storage makes tasks wait itself
    (redis.asyncio's Sentinel and Cluster clients have no waiting pool)."""
    sentinel_pool: Any = None
    """The same for a Sentinel master (see ``redis.py``)."""

    def _options(
        self,
        timeouts: Mapping[str, Any],
        options: Mapping[str, Any],
        limits: PoolLimits,
        pool: Any = None,
    ) -> dict[str, Any]:
        ours: dict[str, Any] = {
            **timeouts,
            "retry": self.retry(NoBackoff(), 0),
            "max_connections": limits.max_connections,
        }
        if pool is not None:
            ours["connection_pool_class"] = pool
            ours["timeout"] = limits.timeout

        return {**ours, **options}

    def from_url(
        self,
        url: str,
        timeouts: Mapping[str, Any],
        options: Mapping[str, Any],
        limits: PoolLimits = DEFAULT_LIMITS,
    ) -> Any:
        """A client for ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://``."""
        plain = cluster_url(url)
        settings = self._options(timeouts, options, limits, self.blocking_pool)
        with _url_errors(), map_redis_errors("connect"):
            if plain is not None:
                return self.cluster.from_url(plain, **settings)

            pool = settings.pop("connection_pool_class", None)
            if pool is None:
                return self.redis.from_url(url, **settings)

            return self.redis.from_pool(pool.from_url(url, **settings))

    def from_cluster(
        self,
        startup_nodes: Sequence[tuple[str, int]],
        url: str | None,
        timeouts: Mapping[str, Any],
        options: Mapping[str, Any],
        limits: PoolLimits = DEFAULT_LIMITS,
    ) -> Any:
        """A Cluster client from nodes or a node's URL."""
        if not startup_nodes and url is None:
            raise ConfigurationError(
                "startup_nodes", "a Cluster needs startup_nodes or a url"
            )

        settings = self._options(timeouts, options, limits, self.blocking_pool)
        with map_redis_errors("connect"):
            if url is not None:
                with _url_errors():
                    return self.cluster.from_url(cluster_url(url) or url, **settings)

            nodes = [self.cluster_node(host, port) for host, port in startup_nodes]
            return self.cluster(startup_nodes=nodes, **settings)

    def from_sentinel(
        self,
        service_name: str,
        sentinels: Sequence[tuple[str, int]],
        timeouts: Mapping[str, Any],
        sentinel_options: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        master_timeouts: Mapping[str, Any] | None = None,
        limits: PoolLimits = DEFAULT_LIMITS,
    ) -> tuple[Any, list[Any]]:
        """
        The master client of ``service_name``, and every client to close.
        The sentinels get ``timeouts``; the master ``master_timeouts`` if given.
        """
        if not sentinels:
            raise ConfigurationError("sentinels", "give at least one (host, port)")

        master = master_timeouts or timeouts
        settings = self._options(master, options, limits, self.sentinel_pool)
        sentinel = self.sentinel(
            list(sentinels),
            sentinel_kwargs={**timeouts, **(sentinel_options or {})},
            **self._options(master, options, limits),
        )
        # master_for passes its own keywords to the master's pool only.
        pool_settings = {k: v for k, v in settings.items() if k in _POOL_OPTIONS}
        client = sentinel.master_for(service_name, **pool_settings)
        return client, [client, *sentinel.sentinels]


_POOL_OPTIONS = frozenset({"connection_pool_class", "max_connections", "timeout"})


@contextmanager
def map_redis_errors(
    operation: str, limits: PoolLimits | None = None
) -> Iterator[None]:
    """
    Translate redis-py exceptions into this package's errors.

    The only place where that happens: timeouts become ``StorageTimeoutError``,
    unreachable servers (and Cluster redirects that never ended)
    ``RedisConnectionError``, failures of the Lua code ``RedisFunctionError``,
    and other error replies, refused credentials and a pool with no free
    connection ``StorageOperationError`` (naming the pool's ``limits`` when
    known).
    """
    try:
        yield
    except ThrottlerError:
        raise
    except redis_errors.TimeoutError as exc:
        raise StorageTimeoutError(
            f"Redis did not answer in time ({_doing(operation)}): {exc}",
            outcome_unknown=_may_have_run(exc),
            context={"backend": "redis", "operation": operation},
        ) from exc
    except (redis_errors.AuthenticationError, redis_errors.AuthorizationError) as exc:
        # Not an outage: every retry would be refused the same way.
        raise StorageOperationError(
            f"Redis refused the credentials ({_doing(operation)})"
            f"{_auth_hint(exc)}: {exc}",
            context={"backend": "redis", "operation": operation, "redis_error": "AUTH"},
            suggestion=CREDENTIALS_SUGGESTION,
        ) from exc
    except (
        redis_errors.ConnectionError,
        redis_errors.ClusterError,
        redis_errors.TryAgainError,
        redis_errors.RedisClusterException,
    ) as exc:
        if is_pool_exhausted(exc):
            raise pool_exhausted(operation, limits) from exc

        message = f"Redis is unreachable ({_doing(operation)}): {exc}"
        if "Cluster mode is not enabled" in str(exc):
            message = (
                f"the Redis reached is not a Cluster node ({_doing(operation)}: "
                "Cluster mode is not enabled on it): for one server use a "
                "redis:// URL, not redis+cluster://, and from_url, not from_cluster"
            )
        elif type(exc) in (redis_errors.ClusterError, redis_errors.TryAgainError):
            message = (
                f"the Redis Cluster kept redirecting ({_doing(operation)}) until "
                f"redis-py gave up (a slot is migrating; the command never ran): {exc}"
            )

        raise RedisConnectionError(
            message,
            outcome_unknown=_may_have_run(exc),
            context={"backend": "redis", "operation": operation},
        ) from exc
    except redis_errors.ResponseError as exc:
        raise _response_error(exc, operation) from exc
    except redis_errors.InvalidResponse as exc:
        # Something that does not speak Redis answered: as bad as no answer.
        raise RedisConnectionError(
            "the server at the Redis address does not speak Redis "
            f"({_doing(operation)}): {exc}",
            outcome_unknown=False,
            context={"backend": "redis", "operation": operation},
        ) from exc
    except redis_errors.RedisError as exc:
        raise StorageOperationError(
            f"Redis failed ({_doing(operation)}): {exc}",
            context={"backend": "redis", "operation": operation},
        ) from exc


_DOING = {
    "hit": "deciding a hit",
    "peek": "a peek",
    "reset": "a reset",
    "connect": "connecting",
    "health": "a health check",
}


def _doing(operation: str) -> str:
    """What the storage was doing, in words: ``"deciding a hit"``."""
    return _DOING.get(operation, operation)


def _auth_hint(exc: Exception) -> str:
    """Say so when the server wants a password and got none."""
    text = str(exc)
    if (
        "NOAUTH" in text
        or "must be called with the client already authenticated" in text
    ):
        return ": the server needs a password (redis://:password@host:port)"

    return ""


CREDENTIALS_SUGGESTION = (
    "Redis refused the username or password: check them in the URL or the client "
    "options against the server's requirepass or ACL users (ACL LIST). Retrying "
    "cannot help; the failure strategy decides until the configuration is fixed."
)
PERMISSIONS_SUGGESTION = (
    "The Redis ACL user lacks a permission the throttle needs: allow its keys "
    "(~<prefix>:*), FCALL, FCALL_RO, FUNCTION LOAD, EVALSHA and EVAL, and the "
    "commands the Lua library runs (GET, SET, GETRANGE, SETRANGE, PEXPIRE, "
    "PEXPIREAT, PTTL, DEL, TIME; health checks add PING). Retrying cannot help; "
    "the failure strategy decides until the ACL is fixed."
)
CLUSTER_SUGGESTION = (
    "The URL names a node of a Redis Cluster, reached as one server: build the "
    "storage with from_url('redis+cluster://host:port') or from_cluster, so "
    "that each client's keys go to the node that holds them."
)
POOL_SUGGESTION = (
    "Every connection of the storage's pool stayed busy: raise max_connections "
    "(default 100 per server) or pool_timeout (default 0.5 s), or run fewer "
    "concurrent requests per process. Redis itself may be fine; the failure "
    "strategy decides this call."
)


def is_pool_exhausted(exc: BaseException) -> bool:
    """Whether redis-py found no free connection in its pool (nothing was sent)."""
    # BlockingConnectionPool says so with a plain ConnectionError.
    return isinstance(exc, redis_errors.MaxConnectionsError) or (
        type(exc) is redis_errors.ConnectionError
        and str(exc) == "No connection available."
    )


def pool_exhausted(
    operation: str, limits: PoolLimits | None = None
) -> StorageOperationError:
    """The error of a call that found no free connection (in time)."""
    pool = "all max_connections of the pool are in use"
    if limits is not None:
        pool = (
            f"all max_connections={limits.max_connections} stayed in use for "
            f"pool_timeout={limits.timeout} s"
        )

    return StorageOperationError(
        f"no free Redis connection ({_doing(operation)}): {pool} (nothing was sent)",
        context={
            "backend": "redis",
            "operation": operation,
            "redis_error": "max_connections",
        },
        suggestion=POOL_SUGGESTION,
    )


_NEVER_SENT = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.BusyLoadingError,
    redis_errors.MaxConnectionsError,
    # ClusterDownError, and "TTL exhausted.": the redirects (MOVED, ASK,
    # TRYAGAIN during a slot migration) never ended, and each one is a reply
    # that the command did not run.
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.RedisClusterException,
)
_NEVER_SENT_TEXT = (
    "connecting",
    "no master found",
    "no slave found",
    "previous master",
)


def _may_have_run(exc: Exception) -> bool:
    """
    Whether the command may have run before ``exc``: the recovery layer never
    retries a counting hit that may have. Only errors raised before sending
    (connecting, refused by the server without running) say no.
    """
    if isinstance(exc, _NEVER_SENT):
        return False

    text = str(exc).lower()
    return not any(marker in text for marker in _NEVER_SENT_TEXT)


# Error replies about the server's state, not the function: through EVALSHA
# they carry "script:" too, and must still reach the failure strategy.
_SERVER_STATE_ERRORS = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
)
_LUA_NOPERM = "user executing the script can't run this command"
"""The reply when the ACL forbids a command the Lua code calls (``-time``)."""


def _response_error(exc: redis_errors.ResponseError, operation: str) -> Exception:
    message = str(exc)
    context = {"backend": "redis", "operation": operation}
    if isinstance(exc, redis_errors.AskError):  # MOVED too: to a plain client
        redirect = "MOVED" if isinstance(exc, redis_errors.MovedError) else "ASK"
        return StorageOperationError(
            f"the Redis reached is a Cluster node ({_doing(operation)}): it "
            f"answered {redirect} {message}; connect with a redis+cluster:// URL "
            "or RedisStorage.from_cluster",
            context={**context, "redis_error": redirect},
            suggestion=CLUSTER_SUGGESTION,
        )
    if isinstance(exc, redis_errors.NoPermissionError) or _LUA_NOPERM in message:
        return StorageOperationError(
            f"the Redis ACL forbids it (NOPERM, {_doing(operation)}): {message}",
            context={**context, "redis_error": "NOPERM"},
            suggestion=PERMISSIONS_SUGGESTION,
        )

    if isinstance(exc, _SERVER_STATE_ERRORS):
        code = getattr(exc, "status_code", None) or type(exc).__name__
        return StorageOperationError(
            f"Redis refused ({_doing(operation)}, {code}): {message}",
            context={**context, "redis_error": code},
        )

    if message.startswith("SWT ") or "user_script" in message or "script:" in message:
        return RedisFunctionError(
            f"the decision function failed ({_doing(operation)}): {message}",
            "execution_failed",
            context=context,
        )

    return StorageOperationError(
        f"Redis refused ({_doing(operation)}): {message}", context=context
    )


def _is_unknown_command(exc: redis_errors.ResponseError) -> bool:
    message = str(exc).lower()
    if isinstance(exc, redis_errors.NoPermissionError):
        # An ACL that forbids functions may still allow scripts.
        return "fcall" in message or "function" in message

    return message.startswith("unknown command")


def _is_refused(exc: redis_errors.ResponseError, command: str) -> bool:
    """Whether the ACL refused ``command`` (NOPERM naming it)."""
    return isinstance(exc, redis_errors.NoPermissionError) and (
        f"'{command}'" in str(exc).lower()
    )


def _is_function_missing(exc: redis_errors.ResponseError) -> bool:
    return str(exc).startswith("Function not found")


class RedisCore:
    """
    The state and logic both Redis storages share: settings, validation,
    the plans of ``hit``/``peek``/``reset``, and the loader.

    Args:
        prefix: The first part of every key.
        enable_redis_functions: Call the library with ``FCALL`` (Redis 7+);
            otherwise, or when the server has no functions, run the same code
            through ``EVALSHA``.
        max_log_size: The highest limit a throttle may have here.
    """

    __slots__ = (
        "_checked",
        "_index_keys",
        "_prepared",
        "functions",
        "limits",
        "max_log_size",
        "prefix",
        "read_only",
    )

    def __init__(
        self,
        *,
        prefix: str = DEFAULT_PREFIX,
        enable_redis_functions: bool = True,
        max_log_size: int = DEFAULT_MAX_LOG_SIZE,
    ) -> None:
        if not isinstance(prefix, str) or not _PREFIX_PATTERN.fullmatch(prefix):
            raise ConfigurationError(
                "prefix",
                "prefix must be 1-128 printable ASCII characters without spaces, "
                "'{' or '}' (they would move the Cluster hash tag), "
                f"got {shown(prefix)}",
            )

        if not isinstance(enable_redis_functions, bool):
            raise ConfigurationError(
                "enable_redis_functions",
                "enable_redis_functions must be True or False, "
                f"got {shown(enable_redis_functions)}",
            )

        if (
            isinstance(max_log_size, bool)
            or not isinstance(max_log_size, int)
            or not 1 <= max_log_size <= MAX_LIMIT
        ):
            raise ConfigurationError(
                "max_log_size",
                f"max_log_size must be an integer from 1 to {MAX_LIMIT:,}, "
                f"got {shown(max_log_size)}",
            )

        self.prefix = prefix
        self.functions = enable_redis_functions
        # Peeks call the no-writes function through FCALL_RO, unless the ACL
        # forbids that command (they then go through FCALL).
        self.read_only = True
        self.max_log_size = max_log_size
        self._checked: set[Throttle] = set()
        self._prepared: dict[tuple[Throttle, ...], _Prepared] = {}
        # The index keys of recent identifiers: a hash costs more than the
        # rest of building a command.
        self._index_keys: dict[str, str] = {}
        self.limits: PoolLimits | None = None
        """The pool's limits, when the storage built its client."""

    def check_throttle(self, throttle: Throttle) -> None:
        """
        Refuse a throttle this storage cannot keep.

        Raises:
            ConfigurationError: if it is not a ``Throttle``, or its limit is
                above ``max_log_size``.
        """
        if not isinstance(throttle, Throttle):
            raise ConfigurationError(
                "throttles",
                f"expected Throttle objects, got {type(throttle).__name__} "
                f"{throttle!r}",
            )

        if throttle in self._checked:
            return

        if throttle.limit > self.max_log_size:
            raise ConfigurationError(
                "limit",
                f"throttle {throttle.name!r}: limit {throttle.limit:,} is above "
                f"max_log_size={self.max_log_size:,}. Redis keeps one exact entry "
                f"({SLOT_BYTES} bytes) per admitted hit in the window, so every "
                f"client of this throttle may hold {throttle.limit * SLOT_BYTES:,} "
                "bytes; raise max_log_size if that is intended",
            )

        if len(self._checked) >= _CHECKED_MAX:
            self._checked.clear()  # throttles made per request must not pile up

        self._checked.add(throttle)

    def keys_for(self, identifier: str, throttles: Sequence[Throttle]) -> list[str]:
        """The index key of ``identifier``, then its ring key per throttle."""
        index = index_key(self.prefix, identifier)
        return [index, *(ring_key(index, t.name) for t in throttles)]

    def decide_command(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
        *,
        record: bool,
    ) -> tuple[Any, ...]:
        """
        Check a ``hit`` (``record=True``) or ``peek`` and return the one
        command that decides it: ``FCALL``, or ``EVALSHA`` once the server
        has shown it runs no functions. Send it; on an exception, run
        ``resume``.

        Raises:
            KeyGenerationError: for an identifier that is not 1 to 65,536
                characters.
            ConfigurationError: for bad throttles, cost or time.
        """
        if (
            type(identifier) is not str
            or not identifier
            or len(identifier) > MAX_IDENTIFIER_LENGTH
        ):
            check_identifier(identifier)

        key = throttles if type(throttles) is tuple else tuple(throttles)
        try:
            prepared = self._prepared.get(key)
        except TypeError:  # an unhashable item, which _prepare refuses
            prepared = None

        if prepared is None:
            prepared = self._prepare(key)

        if (
            type(cost) is not int
            or not 0 <= cost <= MAX_TIME_US
            or (now_us is not None and type(now_us) is not int)
            or (now_us is not None and not -MAX_TIME_US <= now_us <= MAX_TIME_US)
        ):
            _check_call(throttles, cost, now_us)

        index = self._index_keys.get(identifier)
        if index is None:
            index = f"{self.prefix}:{{{identifier_tag(identifier)}}}"
            if len(identifier) <= _CACHED_IDENTIFIER_MAX:
                if len(self._index_keys) >= _INDEX_KEYS_MAX:
                    self._index_keys.clear()

                self._index_keys[identifier] = index

        if not self.functions:
            entry = prepared.evalsha if record else prepared.evalsha_peek
        elif record or not self.read_only:
            entry = prepared.fcall
        else:
            entry = prepared.fcall_peek
        mode = "hit" if record else "peek"
        now = "" if now_us is None else now_us
        if len(prepared.suffixes) == 1:
            ring = index + prepared.suffixes[0]
            return (*entry, index, ring, mode, now, cost, *prepared.args)

        rings = [index + suffix for suffix in prepared.suffixes]
        return (*entry, index, *rings, mode, now, cost, *prepared.args)

    def resume(
        self, command: tuple[Any, ...], error: Exception, *, record: bool
    ) -> Plan[Any]:
        """
        The plan that takes over when sending ``command`` (from
        ``decide_command``) raised ``error``: it loads the library and sends
        the call again when the error proves it never ran, and maps the error
        otherwise. Returns the reply.
        """
        count = command[2]
        keys, args = command[3 : 3 + count], command[3 + count :]
        with map_redis_errors("hit" if record else "peek", self.limits):
            return (
                yield from self._call(
                    self._entry(record), keys, args, (command[0] != "EVALSHA", error)
                )
            )

    def decide(
        self,
        identifier: str,
        throttles: Sequence[Throttle],
        cost: int,
        now_us: int | None,
        *,
        record: bool,
    ) -> Plan[tuple[Decision, int]]:
        """The plan of ``hit`` (``record=True``) or ``peek``, all of it."""
        command = self.decide_command(
            identifier, throttles, cost, now_us, record=record
        )
        count = command[2]
        keys, args = command[3 : 3 + count], command[3 + count :]
        with map_redis_errors("hit" if record else "peek", self.limits):
            reply = yield from self._call(self._entry(record), keys, args)

        return parse_decision(reply, throttles, cost)

    def _entry(self, record: bool) -> LuaEntry:
        """The entry that decides a hit (``record``) or a peek."""
        return LIBRARY.peek if not record and self.read_only else LIBRARY.decide

    def _prepare(self, throttles: tuple[Throttle, ...]) -> _Prepared:
        """Check throttles met for the first time and keep their arguments."""
        for throttle in throttles:
            self.check_throttle(throttle)

        _check_throttle_set(throttles)
        count = len(throttles) + 1
        prepared = _Prepared(
            (LIBRARY.decide.fcall, LIBRARY.decide.function, count),
            ("EVALSHA", LIBRARY.decide.sha, count),
            (LIBRARY.peek.fcall, LIBRARY.peek.function, count),
            ("EVALSHA", LIBRARY.peek.sha, count),
            tuple(f":{t.name}" for t in throttles),
            tuple(decide_args("hit", None, 0, throttles)[3:]),
        )
        if len(self._prepared) >= _CHECKED_MAX:
            self._prepared.clear()  # throttles made per request must not pile up

        self._prepared[throttles] = prepared
        return prepared

    def reset(self, identifier: str, throttles: Sequence[Throttle]) -> Plan[None]:
        """The plan of ``reset``: delete the identifier's keys (all, or some)."""
        check_identifier(identifier)
        for throttle in throttles:
            self.check_throttle(throttle)

        keys = self.keys_for(identifier, throttles)
        with map_redis_errors("reset", self.limits):
            if throttles:
                yield Command(("DEL", *keys[1:]), keys[0])
                return

            # Limitation: the index is the only list of the rings; once
            # evicted (allkeys-*, volatile-*), rings written before are
            # missed here until they expire (see reset in lua/throttle.lua).
            rings: list[str] = []
            for _ in range(_RESET_ATTEMPTS):
                reply = yield from self._call(LIBRARY.reset, [keys[0], *rings], [])
                if isinstance(reply, int):
                    return

                # Names are ASCII; bytes that are not can only name no ring.
                listed = (
                    reply.decode("utf-8", "replace")
                    if isinstance(reply, bytes)
                    else str(reply)
                )
                rings = [ring_key(keys[0], name) for name in listed.split()]

        raise StorageOperationError(
            f"reset gave up: the identifier's throttles changed {_RESET_ATTEMPTS} "
            "times while it ran",
            context={"backend": "redis", "operation": "reset"},
        )

    def health(self) -> Plan[StorageHealth]:
        """
        The plan of a health check: ``PING``, then a ``SET`` of
        ``<prefix>:{health}`` that expires in a second (its hash tag picks
        the node on Cluster, as for every other key). It reports every
        failure in the result and never raises.
        """
        began = time.perf_counter()
        key = f"{self.prefix}:{{health}}"
        try:
            yield Command(("PING",), key)
        except Exception as exc:  # a check reports, whatever failed
            return _health(
                began, False, f"Redis did not answer PING: {_reason(exc, self.limits)}"
            )

        try:
            yield Command(("SET", key, "ok", "PX", HEALTH_TTL_MS), key)
        except redis_errors.AskError as exc:  # MOVED too: a Cluster node
            return _health(began, True, _reason(exc, self.limits))
        except Exception as exc:
            return _health(
                began,
                True,
                "Redis answered PING but did not acknowledge a write (as under "
                "CLIENT PAUSE WRITE, on a read-only replica or with memory "
                f"full): {_reason(exc, self.limits)}",
            )

        return _health(began, True, "")

    def _call(
        self,
        entry: LuaEntry,
        keys: Sequence[str],
        args: Sequence[str | int],
        sent: tuple[bool, Exception] | None = None,
    ) -> Plan[Any]:
        """
        Run an entry point: ``FCALL`` if possible, else ``EVALSHA``. ``sent``:
        the first call went out already (``FCALL`` or not) and raised this.
        """
        if self.functions if sent is None else sent[0]:
            fcall = Command(
                (entry.fcall, entry.function, len(keys), *keys, *args), keys[0]
            )
            try:
                return (yield from _send(fcall, sent))
            except redis_errors.ResponseError as exc:
                if entry.fcall == "FCALL_RO" and _is_refused(exc, "fcall_ro"):
                    # An ACL that allows FCALL but not FCALL_RO: peeks go
                    # through the deciding function, which writes nothing for
                    # them (and whose own refusal, if any, is handled there).
                    self.read_only = False
                    return (yield from self._call(LIBRARY.decide, keys, args))

                if _is_function_missing(exc):
                    # The error comes before the function runs (a restart
                    # without persistence, FUNCTION FLUSH, a failover to a
                    # server without the library): after loading, the same
                    # call cannot count the hit twice.
                    if (yield from self._load(keys[0])):
                        return (yield from self._call_loaded(fcall, entry))
                elif not _is_unknown_command(exc):
                    raise

                self.functions = False
                logger.warning(
                    "Redis has no FCALL (before 7.0) or the ACL forbids "
                    "functions: running the throttle library through EVALSHA "
                    "from now on"
                )

        evalsha = ("EVALSHA", entry.sha, len(keys), *keys, *args)
        try:
            if sent is not None and not sent[0]:
                return (yield from _send(Command(evalsha, keys[0]), sent))

            return (yield Command(evalsha, keys[0]))
        except redis_errors.NoScriptError:
            # As above, NOSCRIPT comes before the script runs; EVAL caches it
            # on the node that owns the keys and runs it once.
            return (yield Command(("EVAL", entry.body, *evalsha[2:]), keys[0]))

    def _call_loaded(self, fcall: Command, entry: LuaEntry) -> Plan[Any]:
        try:
            return (yield fcall)
        except redis_errors.ResponseError as exc:
            if not _is_function_missing(exc):
                raise

        # Still missing: the call went to another node than the one loaded (a
        # Cluster slot moving to a node without the library answers through
        # ASK), or the library was flushed again. EVAL carries the code to
        # whichever node runs it; the error proved the call never ran.
        logger.debug("library %s missing where the call ran: EVAL", LIBRARY.name)
        return (yield Command(("EVAL", entry.body, *fcall.args[2:]), fcall.key))

    def _load(self, key: str) -> Plan[bool]:
        """Load the library; False when the ACL forbids it (scripts may work)."""
        load = ("FUNCTION", "LOAD", "REPLACE", LIBRARY.source)
        try:
            yield Command(load, key, once=True)
        except redis_errors.NoPermissionError:
            return False
        except redis_errors.ResponseError as exc:
            raise RedisFunctionError(
                f"loading the Lua library {LIBRARY.name} failed: {exc}",
                "load_failed",
                context={"backend": "redis", "library": LIBRARY.name},
            ) from exc

        logger.info("loaded the Lua library %s into Redis", LIBRARY.name)
        return True


def _health(began: float, answers_ping: bool, failure: str) -> StorageHealth:
    latency_ms = (time.perf_counter() - began) * 1000
    detail = failure or (
        f"Redis answered PING and acknowledged a write in {latency_ms:.1f} ms"
    )
    return StorageHealth(
        not failure,
        "redis",
        detail.rstrip(".") + ".",
        latency_ms,
        answers_ping=answers_ping,
        accepts_writes=not failure,
    )


def _reason(exc: Exception, limits: PoolLimits | None) -> str:
    """What went wrong, in the words of the error it maps to."""
    if isinstance(exc, TimeoutError):  # the asyncio face's deadline
        return "no reply within the command timeout"

    try:
        with map_redis_errors("health", limits):
            raise exc
    except ThrottlerError as mapped:
        return mapped.message
    except Exception:  # not a redis-py error
        return f"{type(exc).__name__}: {exc}"


def _send(command: Command, sent: tuple[bool, Exception] | None) -> Plan[Any]:
    """Yield ``command``, or raise what it raised when it was sent already."""
    if sent is not None:
        raise sent[1]

    return (yield command)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What the command of a hit on one list of throttles always holds."""

    fcall: tuple[str, str, int]
    evalsha: tuple[str, str, int]
    fcall_peek: tuple[str, str, int]
    evalsha_peek: tuple[str, str, int]
    suffixes: tuple[str, ...]
    """``:name`` of each ring key, after the index key."""
    args: tuple[str | int, ...]
    """Name, limit, ttl_ms and block_ms of each throttle."""


def check_client(client: object, cluster: type) -> None:
    """
    Refuse what is not a redis-py client (a URL string, say), and a client
    that sends a command again after a lost reply, which counts a hit twice.

    ``Redis`` clients (sync and asyncio) keep their retry settings in their
    pool's ``connection_kwargs``; redis-py 8 retries on connection errors and
    timeouts by default. ``cluster`` clients retry only commands they route
    themselves: every command of the storages names its node
    (``target_nodes``), which redis-py never retries, so any cluster client
    is accepted.
    """
    if not callable(getattr(client, "execute_command", None)):
        raise ConfigurationError(
            "client",
            "a Redis storage takes a redis-py client; for a URL use "
            f"from_url(...), got {shown(client)}",
        )

    if isinstance(client, cluster):
        return

    retries = _retries(
        getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    )
    if retries:
        raise ConfigurationError(
            "client",
            f"this client sends a failed command again (retries={retries}; "
            "redis-py 8 retries by default): a hit whose reply was lost would be "
            "counted twice. Build it with retry=Retry(NoBackoff(), 0) (redis.retry or "
            "redis.asyncio.retry, and redis.backoff) and without retry_on_timeout "
            "or retry_on_error, or let from_url(...) build it; the recovery "
            "layer retries only what is safe",
        )


def _retries(connection_kwargs: object) -> int:
    """How often connections made with these settings resend a command."""
    if not isinstance(connection_kwargs, Mapping):
        return 0

    retry = connection_kwargs.get("retry")
    if retry is not None:
        return int(retry.get_retries())

    # redis-py's connections retry once when only these are set.
    on_error = connection_kwargs.get("retry_on_timeout") or connection_kwargs.get(
        "retry_on_error"
    )
    return 1 if on_error else 0


def _check_throttle_set(throttles: Sequence[Throttle]) -> None:
    if not throttles:
        raise ConfigurationError("throttles", "a hit needs at least one Throttle")

    if len(throttles) > 1 and len({t.name for t in throttles}) != len(throttles):
        raise ConfigurationError(
            "throttles", "throttle names must be distinct within one hit"
        )


def _check_call(throttles: Sequence[Throttle], cost: int, now_us: int | None) -> None:
    _check_throttle_set(throttles)

    if (
        isinstance(cost, bool)
        or not isinstance(cost, int)
        or not 0 <= cost <= MAX_TIME_US
    ):
        raise ConfigurationError(
            "cost", f"cost must be a whole number from 0 to 2**52, got {shown(cost)}"
        )

    if now_us is not None and (
        isinstance(now_us, bool)
        or not isinstance(now_us, int)
        or not -MAX_TIME_US <= now_us <= MAX_TIME_US
    ):
        raise ConfigurationError(
            "now_us",
            f"now_us must be whole microseconds within +-2**52, got {shown(now_us)}",
        )
