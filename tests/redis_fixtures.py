"""
pytest fixtures that start private Redis servers (see ``redis_servers.py``).

Loaded by ``conftest.py`` as a plugin. Every test that uses one of these
fixtures, directly or through another fixture, gets the ``redis`` marker at
collection, so ``-m "not redis"`` deselects it; a test that reaches a server
only through ``request.getfixturevalue()`` must add ``@pytest.mark.redis``
itself.

Which fixture to take:

- ``redis_server``: one standalone server for the whole session. Other tests
  write to it too: build keys from ``redis_prefix``, never flush it, never
  rely on it being empty or on which functions are loaded.
- ``fresh_redis_server``: a server of your own for one test; kill, pause,
  restart, flush or fill it freely.
- ``redis_server_factory``: start servers with your own arguments (password,
  ``--maxmemory``...); all are stopped after the test.
- ``redis_cluster``: a three-master cluster for the whole session, under the
  same rules as ``redis_server``.
- ``redis_sentinel``: a master, a replica and a sentinel for one test.

A missing ``redis-server`` or ``redis-cli`` fails the test with install
instructions; it is never skipped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest

from redis_servers import (
    RedisBinaryNotFoundError,
    RedisCluster,
    RedisServer,
    SentinelSet,
)

REDIS_FIXTURES = frozenset(
    {
        "redis_server",
        "fresh_redis_server",
        "redis_server_factory",
        "redis_cluster",
        "redis_sentinel",
    }
)


class _Startable(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


_T = TypeVar("_T", bound=_Startable)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # tryfirst: the marker must be in place before `-m` deselects by it.
    for item in items:
        if REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


def start_or_fail(service: _T) -> _T:
    """
    Start ``service``; turn a missing binary into a test failure, not an error.

    ``pytest.fail`` keeps the report to the install instructions instead of a
    traceback through this module.
    """
    try:
        service.start()
    except RedisBinaryNotFoundError as exc:
        message = str(exc)
    else:
        return service

    # Outside the except block, so the report does not chain the two errors.
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A standalone server shared by the session; keys must use ``redis_prefix``."""
    server = start_or_fail(RedisServer())
    yield server
    server.stop()


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A standalone server for this test alone; stopped (even if paused) after it."""
    server = start_or_fail(RedisServer())
    yield server
    server.stop()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """
    Start servers with extra arguments and a password; all stop after the test.

    ``redis_server_factory("--maxmemory", "1mb", password="secret")``
    """
    servers: list[RedisServer] = []

    def start(*args: str, password: str | None = None) -> RedisServer:
        server = RedisServer(*args, password=password)
        servers.append(server)
        return start_or_fail(server)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-master cluster shared by the session; keys must use ``redis_prefix``."""
    cluster = start_or_fail(RedisCluster())
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelSet]:
    """A master, a replica and a sentinel for this test (failover changes them)."""
    sentinel_set = start_or_fail(SentinelSet())
    yield sentinel_set
    sentinel_set.stop()


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """
    A key prefix unique to this test, e.g. ``swt-test:test_name:1f2e3d4c:``.

    Only ``[A-Za-z0-9_.-]`` from the test name is kept, so the prefix never
    holds ``{`` or ``}`` and never changes which hash tag a key has.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:48]
    return f"swt-test:{name}:{uuid.uuid4().hex[:8]}:"
