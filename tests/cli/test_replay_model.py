"""
``swt replay`` of the bundled log agrees with the reference model.

Everything on this side is computed independently of the package: the log is
parsed with the regex of the data README, put in time order the way a 60 s
reorder buffer would, and decided by ``tests/model.py``.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from model import Model, Spec

REPO = Path(__file__).resolve().parents[2]
LOG = REPO / "data" / "elastic-examples_apache_logs.log.gz"

COMBINED = re.compile(
    r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "(.*)" (\d{3}|-) (\d+|-)( "(.*)" "(.*)")?$'
)
# Line 8899 lost the end of its User-Agent (see the data README). Its client
# and time are intact, so it is replayed: the server did receive the request.
TRUNCATED_LINE = 8899
HEAD = re.compile(r'^(\S+) (\S+) (\S+) \[([^\]]+)\] "(.*?)" (\d{3}|-) (\d+|-) ')
REORDER_WINDOW_S = 60
SPECS = [Spec("20-per-10s", 20, 10_000), Spec("60-per-minute", 60, 60_000)]


def _requests() -> list[tuple[int, int, str]]:
    """``(time_us, line_number, client)`` of every line, in file order."""
    requests = []
    text = gzip.decompress(LOG.read_bytes()).decode("ascii")
    for number, line in enumerate(text.splitlines(), start=1):
        match = COMBINED.match(line)
        if match is None:
            assert number == TRUNCATED_LINE, f"line {number} is not combined format"
            match = HEAD.match(line)
            assert match is not None

        logged = datetime.strptime(match[4], "%d/%b/%Y:%H:%M:%S %z")
        requests.append((int(logged.timestamp()) * 1_000_000, number, match[1]))

    return requests


def _latest_lateness_s(requests: list[tuple[int, int, str]]) -> int:
    """How far, at most, a line is older than a line before it."""
    newest = late = 0
    for time_us, _, _ in requests:
        newest = max(newest, time_us)
        late = max(late, newest - time_us)

    return late // 1_000_000


def _replay(requests: list[tuple[int, int, str]]) -> dict[str, int]:
    model = Model()
    refused: dict[str, int] = {}
    for time_us, _, client in requests:
        allowed = model.hit(client, SPECS, 1, time_us).allowed
        refused[client] = refused.get(client, 0) + (not allowed)

    rejected = sum(refused.values())
    return {
        "requests": len(requests),
        "admitted": len(requests) - rejected,
        "rejected": rejected,
        "clients_seen": len(refused),
        "clients_throttled": sum(1 for n in refused.values() if n),
    }


def test_bundled_log_is_late_by_less_than_the_reorder_window() -> None:
    # So a stable sort by (time, line) is the order a 60 s buffer releases.
    assert _latest_lateness_s(_requests()) == 59


def test_replay_of_the_bundled_log_matches_the_reference_model() -> None:
    requests = _requests()
    in_time_order = sorted(requests, key=lambda r: (r[0], r[1]))
    expected = _replay(in_time_order)

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "sliding_window_throttler",
            "replay",
            str(LOG),
            "--limit",
            "20/10s",
            "--limit",
            "60/minute",
            "--key",
            "ip",
            "--reorder-window",
            f"{REORDER_WINDOW_S}s",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert {key: report[key] for key in expected} == expected
    # From the data README: every line is a request, from 1,753 clients.
    assert (expected["requests"], expected["clients_seen"]) == (10_000, 1_753)
