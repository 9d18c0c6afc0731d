"""
Decisions per second through Redis: this project against the floor and ``limits``.

One run against one private ``redis-server`` (never the one on 6379), every
contender in a key space of its own, contenders interleaved round by round and
the best of ROUNDS short timed rounds kept, after one warm-up round that
creates the keys and connections:

- the floor: a bare redis-py ``fcall`` of a minimal sorted-set function;
- ``limits`` 5 moving window (``MovingWindowRateLimiter`` over its
  ``RedisStorage``): ``hit`` alone, and ``hit`` + ``get_window_stats``, which
  is what response headers need (remaining, reset);
- ours: ``Throttler(RedisStorage.from_url(url)).hit``, whose ``Decision``
  already holds what headers need.

Many keys, not one hot key: IDENTIFIERS clients taken in turn, limits high
enough that every hit is admitted, so every decision writes (the common case
of a healthy API). Sync runs use one client; async runs TASKS tasks over one
client (a pool of connections). After the timed rounds, one untimed pass per
contender counts round trips (``INFO commandstats``), the server time of each
call (``SLOWLOG`` at threshold 0, median) and the CPU time per decision of
this process and of ``redis-server``: figures that other processes on a busy
machine inflate far less than rates.

Then ``redis_memory`` measures, on the same server, the bytes of one
identifier and the server time per call at limit 10 and 10,000; the run ends
with every target of issue 3 and PASS or MISS.

Run: ``make bench`` (its own environment, with the peers pinned in
bench/requirements.txt), or ``.venv-bench/bin/python bench/redis_decisions.py``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis
import redis.asyncio
from limits import parse
from limits.aio.storage import RedisStorage as LimitsAsyncRedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as LimitsAsyncMovingWindow
from limits.storage import RedisStorage as LimitsRedisStorage
from limits.strategies import MovingWindowRateLimiter

from _redis_bench import (
    FLOOR_FUNCTION,
    SCRIPT_COMMANDS,
    Profiler,
    ServerProfile,
    Target,
    describe_run,
    print_targets,
    private_server,
)
from redis_memory import measure_window
from sliding_window_throttler import AsyncThrottler, Throttle, Throttler
from sliding_window_throttler.storage.redis import RedisStorage
from sliding_window_throttler.storage.redis_async import AsyncRedisStorage

IDENTIFIERS = [f"client-{i}" for i in range(1_000)]
ROUNDS = 10
"""Timed rounds: many short ones, so that some escape the other processes."""
SYNC_ROUND = 400
ASYNC_ROUND = 1_500
"""Decisions per round; a contender goes on through IDENTIFIERS in a cycle."""
TASKS = 50

API = Throttle("api", 100, 60)
BURST = Throttle("burst", 20, 1)
API_ITEM = parse("100/minute")
BURST_ITEM = parse("20/second")
FLOOR_ARGS = (API.limit, API.ttl_ms)
SWT_TIMEOUT_S = 0.1
"""The command timeout of our storages by default, given to one async floor."""

Hit = Callable[[str], bool]
AsyncHit = Callable[[str], Awaitable[bool]]

SYNC = "floor", "limits hit", "limits hit+stats", "swt hit"
TWO = "limits 2x(hit+stats)", "swt hit, 2 throttles"
ASYNC = "floor", "floor, 100 ms timeout", "limits hit", "limits hit+stats", "swt hit"
DESCRIPTIONS = {
    "floor": "floor: bare fcall, sorted set",
    "floor, 100 ms timeout": "floor, with swt's 100 ms command timeout",
    "limits hit": "limits: hit",
    "limits hit+stats": "limits: hit + get_window_stats",
    "swt hit": "swt: Throttler.hit",
    "limits 2x(hit+stats)": "limits: 2 x (hit + get_window_stats)",
    "swt hit, 2 throttles": "swt: Throttler.hit(id, burst, api)",
}


def sync_contenders(url: str) -> dict[str, Hit]:
    """Each contender's sync hit, in its own key space; True when admitted."""
    floor = redis.Redis.from_url(url)
    ours = Throttler(RedisStorage.from_url(url, prefix="swt1"))
    ours_two = Throttler(RedisStorage.from_url(url, prefix="swt2"))
    alone = MovingWindowRateLimiter(LimitsRedisStorage(url, key_prefix="limits1"))
    stats = MovingWindowRateLimiter(LimitsRedisStorage(url, key_prefix="limits2"))
    two = MovingWindowRateLimiter(LimitsRedisStorage(url, key_prefix="limits3"))

    def floor_hit(identifier: str) -> bool:
        return floor.fcall(FLOOR_FUNCTION, 1, f"floor:{identifier}", *FLOOR_ARGS) == 1

    def limits_with_stats(identifier: str) -> bool:
        admitted = stats.hit(API_ITEM, identifier)
        stats.get_window_stats(API_ITEM, identifier)
        return admitted

    def limits_two(identifier: str) -> bool:
        admitted = [two.hit(item, identifier) for item in (BURST_ITEM, API_ITEM)]
        for item in (BURST_ITEM, API_ITEM):
            two.get_window_stats(item, identifier)

        return all(admitted)

    return {
        "floor": floor_hit,
        "limits hit": lambda i: alone.hit(API_ITEM, i),
        "limits hit+stats": limits_with_stats,
        "swt hit": lambda i: ours.hit(i, API).allowed,
        "limits 2x(hit+stats)": limits_two,
        "swt hit, 2 throttles": lambda i: ours_two.hit(i, BURST, API).allowed,
    }


def async_contenders(url: str) -> dict[str, AsyncHit]:
    """Each contender's async hit, in its own key space; True when admitted."""
    floor = redis.asyncio.Redis.from_url(url)
    floor_timeout = redis.asyncio.Redis.from_url(url, socket_timeout=SWT_TIMEOUT_S)
    # The warm-up round opens 50 connections at once, which on a busy machine
    # takes longer than the 50 ms connect timeout of our defaults.
    storage = AsyncRedisStorage.from_url(url, prefix="aswt", socket_connect_timeout=1)
    ours = AsyncThrottler(storage)
    alone, stats = (
        LimitsAsyncMovingWindow(
            LimitsAsyncRedisStorage(
                f"async+{url}", implementation="redispy", key_prefix=prefix
            )
        )
        for prefix in ("alimits1", "alimits2")
    )

    async def floor_hit(identifier: str) -> bool:
        reply = await floor.fcall(FLOOR_FUNCTION, 1, f"af:{identifier}", *FLOOR_ARGS)
        return reply == 1

    async def floor_timeout_hit(identifier: str) -> bool:
        key = f"aft:{identifier}"
        return await floor_timeout.fcall(FLOOR_FUNCTION, 1, key, *FLOOR_ARGS) == 1

    async def limits_with_stats(identifier: str) -> bool:
        admitted = await stats.hit(API_ITEM, identifier)
        await stats.get_window_stats(API_ITEM, identifier)
        return admitted

    async def ours_hit(identifier: str) -> bool:
        return (await ours.hit(identifier, API)).allowed

    return {
        "floor": floor_hit,
        "floor, 100 ms timeout": floor_timeout_hit,
        "limits hit": lambda i: alone.hit(API_ITEM, i),
        "limits hit+stats": limits_with_stats,
        "swt hit": ours_hit,
    }


class Tally:
    """Rates and refusals per contender over the rounds."""

    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {}
        self.refused: dict[str, int] = {}

    def add(self, name: str, rate: float, refused: int, *, timed: bool) -> None:
        self.refused[name] = self.refused.get(name, 0) + refused
        if timed:
            self.rates.setdefault(name, []).append(rate)

    def best(self, name: str) -> float:
        """The best timed round: the one least disturbed by the machine."""
        return max(self.rates[name])


def rounds(size: int) -> Iterator[tuple[bool, list[str]]]:
    """``(timed, identifiers)`` per round: one warm-up over all, then ROUNDS."""
    yield False, IDENTIFIERS
    cycle = itertools.cycle(IDENTIFIERS)
    for _ in range(ROUNDS):
        yield True, list(itertools.islice(cycle, size))


def run_sync(url: str) -> tuple[Tally, dict[str, Hit]]:
    """Interleaved sync rounds."""
    contenders = sync_contenders(url)
    tally = Tally()
    for timed, identifiers in rounds(SYNC_ROUND):
        for name, hit in contenders.items():
            gc.collect()
            rate, refused = sync_pass(hit, identifiers)
            tally.add(name, rate, refused, timed=timed)

    return tally, contenders


def sync_pass(hit: Hit, identifiers: list[str]) -> tuple[float, int]:
    """Decisions per second and refusals of one hit per identifier."""
    start = time.perf_counter()
    refused = sum(not hit(identifier) for identifier in identifiers)
    return len(identifiers) / (time.perf_counter() - start), refused


def profile_sync(contenders: dict[str, Hit], probe: Any) -> dict[str, ServerProfile]:
    """One untimed, profiled pass over IDENTIFIERS per contender."""
    profiler = Profiler(probe)
    profiles = {}
    for name, hit in contenders.items():
        profiler.start()
        sync_pass(hit, IDENTIFIERS)
        profiles[name] = profiler.stop(len(IDENTIFIERS))

    return profiles


async def run_async(url: str, probe: Any) -> tuple[Tally, dict[str, ServerProfile]]:
    """Interleaved rounds of TASKS concurrent tasks, then a profiled pass each."""
    contenders = async_contenders(url)
    tally = Tally()
    for timed, identifiers in rounds(ASYNC_ROUND):
        for name, hit in contenders.items():
            gc.collect()
            rate, refused = await concurrent_pass(hit, identifiers)
            tally.add(name, rate, refused, timed=timed)

    profiler = Profiler(probe)
    profiles = {}
    for name, hit in contenders.items():
        profiler.start()
        await concurrent_pass(hit, IDENTIFIERS)
        profiles[name] = profiler.stop(len(IDENTIFIERS))

    return tally, profiles


async def concurrent_pass(hit: AsyncHit, decisions: list[str]) -> tuple[float, int]:
    """Decisions per second and refusals of TASKS tasks sharing ``decisions``."""

    async def task(share: list[str]) -> int:
        return sum([not await hit(identifier) for identifier in share])

    loop = asyncio.get_running_loop()
    start = loop.time()
    shares = (decisions[i::TASKS] for i in range(TASKS))
    refused = sum(await asyncio.gather(*(task(share) for share in shares)))
    return len(decisions) / (loop.time() - start), refused


def print_rates(
    title: str,
    names: tuple[str, ...],
    tally: Tally,
    base: str,
    profiles: dict[str, ServerProfile],
) -> None:
    print(f"\n{title}")
    print(
        f"  {'':<42} {'decisions/s':>11} {'vs ' + base:>24} {'round':>6} "
        f"{'server us':>10} {'CPU us per decision':>20}"
    )
    print(
        f"  {'':<42} {'':>11} {'':>24} {'trips':>6} {'per call':>10} "
        f"{'client':>9} {'server':>10}"
    )
    for name in names:
        rate = tally.best(name)
        ratio = rate / tally.best(base)
        profile = profiles[name]
        print(
            f"  {DESCRIPTIONS[name]:<42} {rate:>11,.0f} {ratio:>23.2f}x "
            f"{profile.round_trips:>6.2f} {profile.median_us:>10.0f} "
            f"{profile.client_cpu_us:>9.0f} {profile.server_cpu_us:>10.0f}"
        )

    refused = sum(tally.refused[name] for name in names)
    if refused:
        print(f"  WARNING: {refused} hits refused; the workload meant all admitted")


def print_inside(profiles: dict[str, ServerProfile]) -> None:
    print(
        f"\nCommands per decision inside the Lua call (INFO commandstats, "
        f"{len(IDENTIFIERS):,} decisions after CONFIG RESETSTAT)"
    )
    for name, profile in profiles.items():
        inside = ", ".join(
            f"{command} {calls:.2f}"
            for command, calls in sorted(profile.calls.items())
            if command not in SCRIPT_COMMANDS
        )
        sent = ", ".join(
            f"{command} {calls:.2f}"
            for command, calls in profile.calls.items()
            if command in SCRIPT_COMMANDS
        )
        print(f"  {DESCRIPTIONS[name]:<42} sent: {sent}")
        print(f"  {'':<42} inside: {inside}")


def main() -> None:
    """Run every measurement against one private server and print the verdicts."""
    began = time.perf_counter()
    with private_server() as server, server.client() as probe:
        print(f"Redis benchmarks: {describe_run(server)}")
        print(
            f"{len(IDENTIFIERS):,} identifiers taken in turn, every hit admitted; "
            f"best of {ROUNDS} rounds ({SYNC_ROUND} decisions sync, {ASYNC_ROUND:,} "
            "async) after a warm-up, contenders interleaved"
        )
        sync, contenders = run_sync(server.url)
        profiles = profile_sync(contenders, probe)
        print_rates(
            "Sync, one client, one throttle (api 100/minute)",
            SYNC,
            sync,
            "limits hit+stats",
            profiles,
        )
        print_rates(
            "Sync, two throttles (burst 20/second + api 100/minute)",
            TWO,
            sync,
            "limits 2x(hit+stats)",
            profiles,
        )
        print_inside({name: profiles[name] for name in ("swt hit", *TWO)})

        concurrent, async_profiles = asyncio.run(run_async(server.url, probe))
        print_rates(
            f"Async, {TASKS} tasks, one client, one throttle (api 100/minute)",
            ASYNC,
            concurrent,
            "limits hit",
            async_profiles,
        )

        window_targets = measure_window(server)

    print_targets(
        [
            Target(
                "sync: swt hit / limits hit+stats",
                sync.best("swt hit") / sync.best("limits hit+stats"),
                1.8,
            ),
            Target(
                "two throttles: swt / limits 2x(hit+stats)",
                sync.best("swt hit, 2 throttles") / sync.best("limits 2x(hit+stats)"),
                3.0,
            ),
            Target(
                "two throttles: swt round trips per decision",
                profiles["swt hit, 2 throttles"].round_trips,
                1.0,
                at_least=False,
                unit="",
            ),
            Target(
                f"async, {TASKS} tasks: swt / limits hit",
                concurrent.best("swt hit") / concurrent.best("limits hit"),
                1.15,
            ),
            Target(
                f"async, {TASKS} tasks: swt / floor",
                concurrent.best("swt hit") / concurrent.best("floor"),
                0.95,
            ),
            *window_targets,
        ]
    )
    print(f"\n(run took {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
