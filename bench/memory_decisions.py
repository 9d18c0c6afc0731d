"""
Decisions per second through ``Throttler`` + ``MemoryStorage``, against peers.

Compared in the same run, on the same machine:

- ``limits``' in-memory moving window (``MovingWindowRateLimiter``), the
  exact sliding window of the best-known Python peer;
- a bare 20-line deque loop: the floor of what Python can do for an exact
  sliding window, with no validation, records or thread safety.

Two workloads, one throttle of 100 per minute: one hot key (after the first
100 hits every hit is refused) and 100,000 keys taken in turn, three times
(a new client, then two admitted hits each). The contenders take turns, and
each is timed in CPU time, best of seven rounds. Prints decisions per second
and the ratios the project targets: >= 3x limits' moving window and >= 0.25x
the bare loop.

Run: ``make bench`` (installs the pinned peers from bench/requirements.txt).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable

from limits import parse
from limits.storage import MemoryStorage as LimitsMemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sliding_window_throttler import MemoryStorage, Throttle, Throttler

LIMIT, TTL_S = 100, 60.0
ROUNDS = 7


def bare_loop() -> Callable[[str], bool]:
    """The floor: a dict of deques, nothing else."""
    windows: dict[str, deque[float]] = {}
    clock = time.monotonic

    def hit(key: str) -> bool:
        now = clock()
        q = windows.get(key)
        if q is None:
            q = windows[key] = deque()
        while q and q[0] <= now - TTL_S:
            q.popleft()
        if len(q) < LIMIT:
            q.append(now)
            return True
        return False

    return hit


def limits_moving_window() -> Callable[[str], bool]:
    """``limits`` 5: MovingWindowRateLimiter over its MemoryStorage."""
    limiter = MovingWindowRateLimiter(LimitsMemoryStorage())
    item = parse(f"{LIMIT}/minute")

    def hit(key: str) -> bool:
        return limiter.hit(item, key)

    return hit


def swt_memory() -> Callable[[str], bool]:
    """This project: the full Throttler + MemoryStorage path."""
    throttler = Throttler(MemoryStorage(max_pairs=200_000))
    throttle = Throttle("api", LIMIT, TTL_S)

    def hit(key: str) -> bool:
        return throttler.hit(key, throttle).allowed

    return hit


def measure(
    contenders: dict[str, Callable[[], Callable[[str], bool]]], keys: list[str]
) -> dict[str, float]:
    """
    Best decisions per second of each contender over ROUNDS runs through
    ``keys``, the contenders taking turns round by round so that each meets
    the same load from the rest of the machine. Timed in CPU time of this
    process: a round that other processes preempt is not counted slower.
    """
    best = dict.fromkeys(contenders, 0.0)
    for _ in range(ROUNDS):
        for name, make in contenders.items():
            hit = make()
            gc.collect()
            start = time.process_time()
            for key in keys:
                hit(key)
            elapsed = time.process_time() - start
            best[name] = max(best[name], len(keys) / elapsed)

    return best


def verdict(ratio: float, target: float) -> str:
    """``PASS`` or ``MISS`` against a target ratio."""
    return f"{'PASS' if ratio >= target else 'MISS'} (target >= {target:g}x)"


def main() -> None:
    """Run both workloads and print rates and ratios."""
    workloads = {
        "one hot key": ["client-1"] * 200_000,
        "100,000 keys": [f"client-{i % 100_000}" for i in range(300_000)],
    }
    contenders = {
        "swt Throttler+MemoryStorage": swt_memory,
        "limits moving window": limits_moving_window,
        "bare deque loop": bare_loop,
    }

    for workload, keys in workloads.items():
        print(f"\n{workload} ({len(keys):,} decisions, limit {LIMIT}/minute)")
        rates = measure(contenders, keys)
        for name, rate in rates.items():
            print(f"  {name:<30} {rate:>12,.0f} decisions/s")

        ours = rates["swt Throttler+MemoryStorage"]
        vs_limits = ours / rates["limits moving window"]
        vs_bare = ours / rates["bare deque loop"]
        print(f"  ratio vs limits:    {vs_limits:5.2f}x  {verdict(vs_limits, 3)}")
        print(f"  ratio vs bare loop: {vs_bare:5.2f}x  {verdict(vs_bare, 0.25)}")


if __name__ == "__main__":
    main()
