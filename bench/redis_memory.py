"""
What one identifier's window costs Redis: bytes, and server time per decision.

Memory: ``MEMORY USAGE key SAMPLES 0`` summed over every key of one identifier
after 100 and after 1,000 hits, the limit equal to the hits so all are
admitted: ours (its index and ring), ``limits``' moving window (a list of
float timestamps) and the floor's sorted set of ``ms:random`` members. Ours
also after 100 hits under a limit of 1,000, since a ring takes the room of its
whole limit from the first hit.

Server time of ``FCALL``: the median of ``SLOWLOG`` at threshold 0 (robust
to the scheduler) and the mean of ``INFO commandstats``, with the window
filling and full, at limit 10 and at limit 10,000. Hits carry explicit times
one ``ttl / limit`` apart, so once the window is full every hit is still
admitted (one old hit leaves as one comes): the costly case, a full window
that is written to. Then the same window refusing hits. Batches of both
limits alternate and the best of each is kept.

Run alone (its own private server) with
``.venv-bench/bin/python bench/redis_memory.py``; ``redis_decisions.py`` runs
it on its server.
"""

from __future__ import annotations

import redis
from limits import parse
from limits.storage import RedisStorage as LimitsRedisStorage
from limits.strategies import MovingWindowRateLimiter

from _redis_bench import (
    FLOOR_FUNCTION,
    RedisServer,
    ServerProfile,
    Target,
    describe_run,
    print_targets,
    private_server,
    server_profile,
)
from sliding_window_throttler import Throttle, Throttler
from sliding_window_throttler.storage.redis import RedisStorage

IDENTIFIER = "client-1"
HITS = (100, 1_000)
MEMORY_TARGETS = {100: 900, 1_000: 8_500}
"""Bytes per identifier, issue 3."""

TIME_LIMITS = (10, 10_000)
TTL_MS = 60_000
START_MS = 1_000_000_000
STEADY_HITS = 100
TIME_REPEATS = 10
GROWTH_BOUND = 2.0
"""Server time at limit 10,000 over limit 10, both full: at most this.

The issue sets no number; a ring is searched in O(log limit) reads, so the
cost may rise a little with the limit, but not with the 1,000 times more hits
the window holds.
"""


def measure_window(server: RedisServer) -> list[Target]:
    """Print memory and server time tables; return their targets."""
    with server.client() as client:
        targets = measure_memory(server.url, client)
        targets.append(measure_server_time(server.url, client))

    return targets


def measure_memory(url: str, client: redis.Redis) -> list[Target]:
    """Bytes of one identifier after each count of HITS, per contender."""
    rows: dict[str, dict[int, int]] = {"swt": {}, "limits": {}, "floor": {}}
    for hits in HITS:
        rows["swt"][hits] = swt_bytes(url, client, hits, limit=hits)
        rows["limits"][hits] = limits_bytes(url, client, hits)
        rows["floor"][hits] = floor_bytes(client, hits)

    spare = swt_bytes(url, client, 100, limit=1_000)
    print(
        "\nMemory of one identifier (MEMORY USAGE SAMPLES 0 over all its keys, "
        "limit = hits)"
    )
    print(f"  {'':<40} {'100 hits':>10} {'1,000 hits':>11}")
    for name, label in (
        ("swt", "swt: index + ring"),
        ("limits", "limits: list of timestamps"),
        ("floor", "floor: sorted set of ms:random"),
    ):
        print(f"  {label:<40} {rows[name][100]:>10,} {rows[name][1_000]:>11,}")

    print(f"  {'swt, limit 1,000 after 100 hits':<40} {spare:>10,}")
    return [
        Target(
            f"memory at {hits:,} hits: swt",
            rows["swt"][hits],
            bound,
            at_least=False,
            unit="bytes",
        )
        for hits, bound in MEMORY_TARGETS.items()
    ]


def swt_bytes(url: str, client: redis.Redis, hits: int, *, limit: int) -> int:
    prefix = f"mem-swt-{hits}-{limit}"
    throttle = Throttle("api", limit, TTL_MS / 1000)
    with RedisStorage.from_url(url, prefix=prefix) as storage:
        throttler = Throttler(storage)
        admitted = sum(throttler.hit(IDENTIFIER, throttle).allowed for _ in range(hits))
        keys = set(storage.keys(IDENTIFIER, [throttle]))

    found = key_bytes(client, f"{prefix}:*")
    assert set(found) == keys, f"unexpected keys {sorted(found)}"
    return checked_total(found, admitted, hits)


def limits_bytes(url: str, client: redis.Redis, hits: int) -> int:
    prefix = f"mem-limits-{hits}"
    limiter = MovingWindowRateLimiter(LimitsRedisStorage(url, key_prefix=prefix))
    item = parse(f"{hits}/minute")
    admitted = sum(limiter.hit(item, IDENTIFIER) for _ in range(hits))
    return checked_total(key_bytes(client, f"{prefix}*"), admitted, hits)


def floor_bytes(client: redis.Redis, hits: int) -> int:
    key = f"mem-floor-{hits}:{IDENTIFIER}"
    admitted = sum(
        client.fcall(FLOOR_FUNCTION, 1, key, hits, TTL_MS) for _ in range(hits)
    )
    return checked_total(key_bytes(client, key), admitted, hits)


def key_bytes(client: redis.Redis, pattern: str) -> dict[str, int]:
    """``MEMORY USAGE`` of every key matching ``pattern``, counting all elements."""
    return {
        key.decode(): client.memory_usage(key, samples=0)
        for key in client.scan_iter(match=pattern, count=1000)
    }


def checked_total(found: dict[str, int], admitted: int, hits: int) -> int:
    assert admitted == hits, f"only {admitted} of {hits} hits admitted"
    return sum(found.values())


class Window:
    """
    One identifier's window at one limit, driven with explicit times one
    ``ttl / limit`` apart: once full, every hit still gets in as the oldest
    leaves.
    """

    def __init__(self, url: str, limit: int) -> None:
        self.limit = limit
        self.throttle = Throttle("window", limit, TTL_MS / 1000)
        self.step_ms = TTL_MS // limit
        self.now_ms = START_MS - self.step_ms
        self.storage = RedisStorage.from_url(url, prefix=f"time-{limit}")
        self.throttler = Throttler(self.storage)

    def hit(self, count: int, *, advance: bool = True) -> list[bool]:
        """``count`` hits, each a step later than the last (or all at once)."""
        allowed = []
        for _ in range(count):
            self.now_ms += self.step_ms if advance else 0
            decision = self.throttler.hit(IDENTIFIER, self.throttle, now_ms=self.now_ms)
            allowed.append(decision.allowed)

        return allowed

    def profile(
        self, client: redis.Redis, count: int, *, admitted: bool, advance: bool = True
    ) -> ServerProfile:
        """The server's view of ``count`` hits, which must all be admitted or not."""
        allowed: list[bool] = []

        def run() -> list[bool]:
            allowed.extend(self.hit(count, advance=advance))
            return allowed

        found = server_profile(client, run)
        assert allowed == [admitted] * count, f"expected admitted={admitted}"
        return found


def measure_server_time(url: str, client: redis.Redis) -> Target:
    """Server microseconds per FCALL as the window fills, at each TIME_LIMITS."""
    windows = [Window(url, limit) for limit in TIME_LIMITS]
    rows: dict[tuple[int, str, str], list[ServerProfile]] = {}
    for window in windows:
        # The first hit builds the ring, once per pair: O(limit), not shown.
        window.hit(1)
        filling = window.limit // 10
        if filling > 1:
            early = window.profile(client, filling - 1, admitted=True)
            rows[window.limit, f"2 to {filling:,}", "admitted"] = [early]

        window.hit(window.limit - max(filling, 1))

    for _ in range(TIME_REPEATS):
        for window in windows:
            full = f"{window.limit:,} (full)"
            admitting = window.profile(client, STEADY_HITS, admitted=True)
            refusing = window.profile(
                client, STEADY_HITS, admitted=False, advance=False
            )
            rows.setdefault((window.limit, full, "admitted"), []).append(admitting)
            rows.setdefault((window.limit, full, "refused"), []).append(refusing)

    for window in windows:
        window.storage.close()

    best = {row: min(p.median_us for p in found) for row, found in rows.items()}
    print_server_time(rows, best)
    small, large = ((limit, f"{limit:,} (full)", "admitted") for limit in TIME_LIMITS)
    return Target(
        f"server time, full window: limit {TIME_LIMITS[-1]:,} / {TIME_LIMITS[0]}",
        best[large] / best[small],
        GROWTH_BOUND,
        at_least=False,
    )


def print_server_time(
    rows: dict[tuple[int, str, str], list[ServerProfile]],
    best: dict[tuple[int, str, str], float],
) -> None:
    print(
        f"\nServer time per decision (FCALL, explicit times, window {TTL_MS // 1000} "
        f"s): median from SLOWLOG, best of {TIME_REPEATS} batches of "
        f"{STEADY_HITS} with the limits interleaved; mean from INFO commandstats"
    )
    print(
        f"  {'limit':>8} {'hits in window':>16} {'hit':>9} {'median us':>10} "
        f"{'mean us':>8} {'commands inside':>16}"
    )
    for row, found in sorted(rows.items(), key=lambda item: item[0][0]):
        limit, in_window, outcome = row
        inside = sum(found[0].calls.values()) - found[0].round_trips
        mean = min(p.mean_us for p in found)
        print(
            f"  {limit:>8,} {in_window:>16} {outcome:>9} {best[row]:>10.0f} "
            f"{mean:>8.1f} {inside:>16.1f}"
        )


def main() -> None:
    """Measure on a private server of its own and print the verdicts."""
    with private_server() as server:
        print(f"Redis window costs: {describe_run(server)}")
        print_targets(measure_window(server))


if __name__ == "__main__":
    main()
