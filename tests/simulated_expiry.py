"""
Keeping a Redis storage's state as a memory storage's on simulated time.

With explicit times a Redis key expires on the server's clock, which those
times do not move (only a grace later), while a memory storage forgets an
idle pair as soon as its own clock passes the pair's end. After a window is
lengthened the two would then disagree: Redis still counts admissions that
memory forgot. Tests comparing them forget such pairs in Redis by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sliding_window_throttler import MemoryStorage, Throttle


def forget_as_memory_does(
    memory: MemoryStorage,
    redis_storage: Any,
    identifier: str,
    throttles: Sequence[Throttle],
    now_us: int,
) -> None:
    """
    Move ``memory``'s clock to ``now_us`` (a hit of cost 0, which records
    nothing) and, if it forgot a pair of ``identifier`` then, reset the
    identifier in ``redis_storage`` too. For tests whose identifiers use one
    throttle name.
    """
    reclaimed = memory.stats().reclaimed
    memory.hit(identifier, throttles, 0, now_us)
    if memory.stats().reclaimed > reclaimed:
        redis_storage.reset(identifier)
