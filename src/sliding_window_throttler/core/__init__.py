"""Pure building blocks: throttle specs, the window arithmetic, decision records."""

from .clock import Clock, ManualClock, MonotonicClock
from .decision import Decision, Outcome, ThrottleRecord
from .rate import Throttle, parse_duration_ms, parse_rate

__all__ = [
    "Clock",
    "Decision",
    "ManualClock",
    "MonotonicClock",
    "Outcome",
    "Throttle",
    "ThrottleRecord",
    "parse_duration_ms",
    "parse_rate",
]
