"""
How fast ``swt replay`` goes through the bundled access log.

Replays ``data/elastic-examples_apache_logs.log.gz`` (10,000 lines) under
``--limit 20/10s --limit 60/minute`` several times and prints the best rate in
lines per second against the 50,000 lines/s target, plus the same for the
plain file and, to show where the time goes, the rate of parsing alone.

Run: ``python bench/replay_speed.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sliding_window_throttler.cli.accesslog import parse_fields, read_lines
from sliding_window_throttler.cli.replay import Replay, make_throttles

TARGET_LINES_PER_S = 50_000
LOG = (
    Path(__file__).resolve().parent.parent / "data/elastic-examples_apache_logs.log.gz"
)
LIMITS = ("20/10s", "60/minute")


def best_seconds(run: Callable[[], object], rounds: int) -> float:
    """Return the fastest of ``rounds`` timed calls of ``run``."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)

    return best


def replay_rate(path: Path, rounds: int) -> tuple[float, int]:
    """Return ``(lines/s, requests)`` of the best full replay of ``path``."""
    throttles = make_throttles(LIMITS)
    requests = Replay([path], throttles).run().requests
    seconds = best_seconds(lambda: Replay([path], throttles).run(), rounds)
    return requests / seconds, requests


def parse_rate(path: Path, rounds: int) -> float:
    """Return the lines/s of reading and parsing ``path`` without replaying."""
    lines = sum(1 for _ in read_lines(path))

    def parse() -> None:
        for _, raw in read_lines(path):
            parse_fields(raw)

    return lines / best_seconds(parse, rounds)


def report(label: str, rate: float) -> None:
    """Print one rate against the target."""
    verdict = "meets" if rate >= TARGET_LINES_PER_S else "MISSES"
    ratio = rate / TARGET_LINES_PER_S
    print(
        f"{label:<28} {rate:>10,.0f} lines/s  {ratio:5.2f}x target "
        f"({verdict} {TARGET_LINES_PER_S:,} lines/s)"
    )


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rounds", type=int, default=7, help="best of this many")
    rounds = parser.parse_args().rounds

    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "apache.log"
        plain.write_bytes(gzip.decompress(LOG.read_bytes()))

        rate, requests = replay_rate(LOG, rounds)
        print(
            f"replay of {LOG.name}: {requests:,} requests, limits {', '.join(LIMITS)}"
        )
        report("replay, gzip", rate)
        report("replay, plain", replay_rate(plain, rounds)[0])
        report("read + parse only, plain", parse_rate(plain, rounds))


if __name__ == "__main__":
    main()
