"""Rendering a replay: the JSON object and the text for people."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sliding_window_throttler.cli.replay import Replay, make_throttles
from sliding_window_throttler.cli.report import iso_time, to_json, write_text

from cli_logs import WriteLog, clf

JSON_KEYS = [
    "files",
    "limits",
    "key",
    "requests",
    "admitted",
    "rejected",
    "rejected_percent",
    "clients_seen",
    "clients_throttled",
    "late",
    "malformed",
    "top_throttled",
    "busiest_windows",
    "span",
    "capacity_refused",
    "storage",
]


def test_iso_time_keeps_the_log_offset() -> None:
    assert iso_time(1_445_742_685_000_000, 3600) == "2015-10-25T04:11:25+01:00"
    assert iso_time(1_431_857_103_000_000, 0) == "2015-05-17T10:05:03+00:00"
    assert iso_time(1_431_857_103_500_000, -5400) == "2015-05-17T08:35:03.500000-01:30"


def test_json_holds_exactly_the_documented_fields(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["3/10s"], block="1m")).run()

    report = json.loads(json.dumps(to_json(result)))

    assert list(report) == JSON_KEYS
    assert report["limits"] == [
        {"name": "3-per-10s", "limit": 3, "ttl_ms": 10_000, "block_duration_ms": 60_000}
    ]
    assert report["top_throttled"] == [
        {
            "client": "10.0.0.1",
            "requests": 6,
            "rejected": 3,
            "first_throttled": "2015-05-17T10:05:03+00:00",
        }
    ]
    assert report["span"] == {
        "first": "2015-05-17T10:05:00+00:00",
        "last": "2015-05-17T10:05:11+00:00",
    }
    assert report["busiest_windows"][0] == {
        "start": "2015-05-17T10:05:00+00:00",
        "requests": 7,
        "rejected": 2,
    }
    assert report["malformed"] == {"count": 0, "examples": []}


def test_text_report_reads_well_without_a_terminal(write_log: WriteLog) -> None:
    log = write_log([clf("10.0.0.1", s) for s in range(5)] + ["junk [x]"])
    result = Replay([log], make_throttles(["3/10s"]), top=3).run()
    out = io.StringIO()

    write_text(result, out)

    text = out.getvalue()
    lines = text.splitlines()
    assert "\x1b" not in text
    assert all(line == line.rstrip() for line in lines)
    assert all(len(line) <= 100 for line in lines)
    assert "requests replayed  5" in lines
    assert "rejected           2 (40.00%)" in lines
    assert "top throttled clients (1 of 1)" in lines
    assert any(
        line.split() == ["10.0.0.1", "2", "5", "2015-05-17T10:05:03+00:00"]
        for line in lines
    )
    assert "busiest 10s windows (by requests)" in lines
    assert any(f"{log.name}:6" in line and "junk [x]" in line for line in lines)
