"""
What a decision costs while Redis is down and the circuit breaker is open.

The breaker's promise is that a dead Redis costs nothing: decisions go
straight to the failure strategy, without touching the network. Compared in
the same run, rounds interleaved, best round of each:

- ``Throttler`` + ``MemoryStorage``: the reference;
- ``Throttler`` + ``ResilientStorage`` over a ``RedisStorage`` whose server is
  stopped (a free port nobody listens on), breaker open, with the ``local``
  strategy (a per-process ``MemoryStorage`` decides) and with ``fail-open``.

One throttle of 100 per minute over 100,000 keys taken in turn. Prints the
cost per decision and the ratio to memory; the target is at most 2x.

Run: ``.venv/bin/python bench/breaker_open.py``.
"""

from __future__ import annotations

import gc
import socket
import time
from collections.abc import Callable

from sliding_window_throttler import MemoryStorage, Storage, Throttle, Throttler
from sliding_window_throttler.recovery import (
    CircuitBreaker,
    LocalFallback,
    RecoveryStrategy,
    ResilientStorage,
)

LIMIT, TTL_S = 100, 60.0
KEYS = [f"client-{i % 100_000}" for i in range(200_000)]
ROUNDS = 7
MAX_PAIRS = 200_000
THROTTLE = Throttle("api", LIMIT, TTL_S)


def stopped_redis() -> Storage:
    """A ``RedisStorage`` for a port where no server listens."""
    from sliding_window_throttler.storage.redis import RedisStorage

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    return RedisStorage.from_url(f"redis://127.0.0.1:{port}/0")


def open_breaker(strategy: str | RecoveryStrategy) -> Throttler:
    """A throttler over a stopped Redis whose breaker is already open."""
    storage = ResilientStorage(
        stopped_redis(),
        failure_strategy=strategy,
        breaker=CircuitBreaker(failure_threshold=1, cool_down=3600),
    )
    storage.hit("warm-up", (THROTTLE,), 1)
    assert storage.breaker.state == "open", "the breaker should be open"
    return Throttler(storage)


def contenders() -> dict[str, Callable[[], Throttler]]:
    return {
        "memory": lambda: Throttler(MemoryStorage(max_pairs=MAX_PAIRS)),
        "breaker open, local": lambda: open_breaker(LocalFallback(max_pairs=MAX_PAIRS)),
        "breaker open, fail-open": lambda: open_breaker("fail-open"),
    }


def measure(throttler: Throttler) -> float:
    """
    Seconds per decision over ``KEYS``, in CPU time of this process (as
    memory_decisions.py): nothing here waits, and a round that other
    processes preempt is not counted slower.
    """
    hit = throttler.hit
    gc.collect()
    start = time.process_time()
    for key in KEYS:
        hit(key, THROTTLE)

    return (time.process_time() - start) / len(KEYS)


def main() -> None:
    """Interleave the contenders, keep each one's best round, print ratios."""
    best: dict[str, float] = {}
    makers = contenders()
    for _ in range(ROUNDS):
        for name, make in makers.items():
            seconds = measure(make())
            best[name] = min(best.get(name, seconds), seconds)

    memory = best["memory"]
    print(f"{len(KEYS):,} decisions over 100,000 keys, limit {LIMIT}/minute")
    for name, seconds in best.items():
        ratio = seconds / memory
        print(f"  {name:<26} {seconds * 1e6:6.2f} us/decision  {ratio:4.2f}x memory")

    worst = max(best[name] / memory for name in best if name != "memory")
    verdict = "ok" if worst <= 2 else "ABOVE TARGET"
    print(f"  worst ratio, breaker open: {worst:4.2f}x (target <= 2x): {verdict}")


if __name__ == "__main__":
    main()
