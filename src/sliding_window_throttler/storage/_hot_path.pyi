# The C hot path of MemoryStorage (_hot_path.c); see memory.py.
from collections.abc import Callable
from typing import Any

from ..core.decision import Decision, Outcome
from ..core.rate import Throttle

def bind(
    storage_type: type,
    pair_type: type,
    throttle_type: type,
    decision_type: type,
    admitted: Outcome,
    limit_reached: Outcome,
    checked_time: Callable[[object, str], int],
    max_cost: int,
    max_time_us: int,
    max_identifier_length: int,
    /,
) -> None: ...
def hit_one(
    storage: Any,
    identifier: str,
    throttle: Throttle,
    cost: int,
    now_us: int | None = None,
    /,
) -> Decision: ...
def plain_hit(
    throttler: Any,
    storage: Any,
    identifier: str,
    throttles: tuple[Throttle, ...],
    cost: int,
    now_ms: float | None,
    /,
) -> Decision: ...
