"""Helpers of the command line tests: the bundled log and hand-made lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLED_LOG = REPO / "data" / "elastic-examples_apache_logs.log.gz"

# 17/May/2015:10:05:00 +0000
T0 = 1_431_857_100


def clf(client: str, second: int, request: str = "GET / HTTP/1.1") -> str:
    """A combined-format line logged ``second`` seconds after 10:05:00 UTC."""
    minute, sec = divmod(second, 60)
    return (
        f'{client} - - [17/May/2015:10:{5 + minute:02d}:{sec:02d} +0000] "{request}" '
        f'200 512 "-" "test-agent/1.0"'
    )


def stamped(client: str, stamp: str, request: str = "GET / HTTP/1.1") -> str:
    """A common-format line logged at ``stamp`` (``17/May/2015:10:00:00 +0000``)."""
    return f'{client} - - [{stamp}] "{request}" 200 1'


WriteLog = Callable[..., Path]
