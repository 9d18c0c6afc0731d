"""
What the Redis benchmarks share: a private server, the floor, the verdicts.

The server is the test suite's ``RedisServer`` (``tests/redis_servers.py``):
a ``redis-server`` of our own on a free loopback port, with no persistence,
stopped at the end. Never the Redis on 6379.

The floor is the least an exact sliding window can do in one call: a Redis
Function that trims a sorted set, counts it and adds the hit, members
``ms:random`` as the common recipe has them. It answers admitted or not, and
nothing of what response headers need.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_servers import RedisServer

FLOOR_FUNCTION = "bench_floor_hit"
FLOOR_LIBRARY = f"""#!lua name=bench_floor
-- Times in milliseconds, from the server's TIME. keys[1]: the sorted set;
-- args: limit, window_ms. Returns 1 when admitted (and recorded), else 0.
redis.register_function('{FLOOR_FUNCTION}', function(keys, args)
  local limit, window_ms = tonumber(args[1]), tonumber(args[2])
  local time = redis.call('TIME')
  local now_ms = time[1] * 1000 + math.floor(time[2] / 1000)
  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', now_ms - window_ms)
  if redis.call('ZCARD', keys[1]) >= limit then
    return 0
  end

  local member = string.format('%d:%d', now_ms, math.random(1e9, 1e10 - 1))
  redis.call('ZADD', keys[1], now_ms, member)
  redis.call('PEXPIRE', keys[1], window_ms)
  return 1
end)
"""
SCRIPT_COMMANDS = ("fcall", "fcall_ro", "eval", "eval_ro", "evalsha", "evalsha_ro")
"""Commands a client sends to run Lua; every other one counted ran inside it."""
SLOWLOG_LENGTH = 50_000
SLOWLOG_DEFAULT_US = 10_000


@contextmanager
def private_server() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on a free loopback port, with the floor loaded."""
    server = RedisServer().start()
    try:
        with server.client() as client:
            client.function_load(FLOOR_LIBRARY, replace=True)

        yield server
    finally:
        server.stop()


def describe_run(server: RedisServer) -> str:
    """One line naming the versions and the machine's load, for the record."""
    with server.client() as client:
        redis_server = client.info("server")["redis_version"]

    peers = ", ".join(
        f"{name} {version(name)}" for name in ("redis", "hiredis", "limits")
    )
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    busy = "  (other processes compete for the cores)" if load > cores / 2 else ""
    return (
        f"redis-server {redis_server}, {peers}, Python {sys.version.split()[0]}; "
        f"load {load:.1f} on {cores} cores{busy}"
    )


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What one untimed pass of decisions cost, seen from both ends."""

    calls: dict[str, float]
    """Calls per decision of every command, those run inside Lua included."""
    mean_us: float
    """Mean server time of the Lua calls the client sent (``INFO commandstats``)."""
    median_us: float
    """Their median server time (``SLOWLOG`` at threshold 0)."""
    client_cpu_us: float
    """CPU time of this process per decision: what other processes cannot inflate."""
    server_cpu_us: float
    """CPU time of ``redis-server`` per decision (``INFO cpu``), I/O included."""

    @property
    def round_trips(self) -> float:
        """Lua calls sent per decision: the contenders send nothing else."""
        return sum(self.calls.get(command, 0.0) for command in SCRIPT_COMMANDS)


class Profiler:
    """
    Count and time on both ends what runs between ``start`` and ``stop``.

    ``CONFIG RESETSTAT`` and ``SLOWLOG RESET`` at the start, with every
    command logged; ``INFO commandstats``, ``INFO cpu`` and ``SLOWLOG GET`` at
    the stop. ``client`` is a sync client that the measured code does not use.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._cpu = (0.0, 0.0)

    def start(self) -> None:
        self.client.config_set("slowlog-max-len", SLOWLOG_LENGTH)
        self.client.config_set("slowlog-log-slower-than", 0)
        self.client.config_resetstat()
        self.client.slowlog_reset()
        self._cpu = (time.process_time(), self._server_cpu())

    def stop(self, decisions: int) -> ServerProfile:
        client_cpu = time.process_time() - self._cpu[0]
        server_cpu = self._server_cpu() - self._cpu[1]
        self.client.config_set("slowlog-log-slower-than", SLOWLOG_DEFAULT_US)
        stats = self.client.info("commandstats")
        log = self.client.slowlog_get(SLOWLOG_LENGTH)

        calls = {
            name.removeprefix("cmdstat_"): entry["calls"] / decisions
            for name, entry in stats.items()
            if name != "cmdstat_info"
            and not name.startswith(("cmdstat_config|", "cmdstat_slowlog|"))
        }
        sent = [
            stats[f"cmdstat_{c}"] for c in SCRIPT_COMMANDS if f"cmdstat_{c}" in stats
        ]
        mean_us = sum(s["usec"] for s in sent) / max(sum(s["calls"] for s in sent), 1)
        durations = [
            entry["duration"]
            for entry in log
            if entry["command"].split(b" ", 1)[0].decode().lower() in SCRIPT_COMMANDS
        ]
        return ServerProfile(
            calls,
            mean_us,
            statistics.median(durations or [0]),
            client_cpu * 1e6 / decisions,
            server_cpu * 1e6 / decisions,
        )

    def _server_cpu(self) -> float:
        cpu = self.client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def server_profile(client: Any, run: Callable[[], Sized]) -> ServerProfile:
    """Profile ``run``, which returns its decisions."""
    profiler = Profiler(client)
    profiler.start()
    decisions = len(run())
    return profiler.stop(decisions)


@dataclass(frozen=True, slots=True)
class Target:
    """One target of issue 3 and what this run measured against it."""

    label: str
    measured: float
    bound: float
    at_least: bool = True
    unit: str = "x"

    @property
    def passed(self) -> bool:
        if self.at_least:
            return self.measured >= self.bound

        return self.measured <= self.bound

    def row(self) -> str:
        sign = ">=" if self.at_least else "<="
        verdict = "PASS" if self.passed else "MISS"
        measured = _number(self.measured, self.unit)
        bound = f"{sign} {_number(self.bound, self.unit)}"
        return f"  {self.label:<52} {measured:>10}  {bound:>12}  {verdict}"


def print_targets(targets: list[Target]) -> None:
    """The closing table: every target, measured value and verdict."""
    print("\nTargets (issue 3, Performance)")
    print(f"  {'':<52} {'measured':>10}  {'target':>12}  verdict")
    for target in targets:
        print(target.row())


def _number(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"

    if not unit:
        return f"{value:.2f}"

    return f"{value:,.0f} {unit}"
