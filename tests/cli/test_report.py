"""Rendering a replay: the JSON object and the text for people."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sliding_window_throttler.cli.replay import Replay, ReplayResult, make_throttles
from sliding_window_throttler.cli.report import (
    iso_time,
    to_json,
    write_json,
    write_text,
)

from cli_logs import WriteLog, clf, stamped

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
    "files_reordered",
    "outliers",
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
        "end": "2015-05-17T10:05:10+00:00",
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
    assert "limits             3-per-10s: 3/10s" in lines
    assert "requests replayed  5" in lines
    assert "rejected           2 (40.00%)" in lines
    assert "top throttled clients (1 of 1)" in lines
    assert any(
        line.split() == ["10.0.0.1", "2", "5", "2015-05-17T10:05:03+00:00"]
        for line in lines
    )
    assert "busiest 10s windows (by requests)" in lines
    assert any(f"{log.name}:6" in line and "junk [x]" in line for line in lines)


def text_of(result: ReplayResult) -> list[str]:
    out = io.StringIO()
    write_text(result, out)
    return out.getvalue().splitlines()


def test_long_keys_keep_one_line_per_client_and_json_keeps_them_whole(
    write_log: WriteLog,
) -> None:
    path = "/" + "a" * 70 + "/end"
    v6 = "2001:db8:1234:5678:9abc:def0:1234:5678"
    lines = [
        clf(ip, s, f"GET {path} HTTP/1.1") for ip in ("10.0.0.1", v6) for s in (0, 1)
    ]
    result = Replay([write_log(lines)], make_throttles(["1/10s"]), key="ip+path").run()

    text = text_of(result)

    rows = text[text.index("top throttled clients (2 of 2)") + 3 :][:2]
    assert [row.rsplit(maxsplit=3) for row in rows] == [
        [
            "10.0.0.1 /aaaaaaaaaaaaaa…aaaaaaaaaaaaaaaaaaa/end",
            "1",
            "2",
            "2015-05-17T10:05:01+00:00",
        ],
        [
            "2001:db8:1234:5678:9abc:…aaaaaaaaaaaaaaaaaaa/end",
            "1",
            "2",
            "2015-05-17T10:05:01+00:00",
        ],
    ]
    assert all(len(line) <= 100 for line in text)
    assert [c["client"] for c in to_json(result)["top_throttled"]] == [
        f"10.0.0.1 {path}",
        f"{v6} {path}",
    ]


def test_text_says_when_files_were_reordered_and_counts_outliers(
    write_log: WriteLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    next_day = [clf("b", s).replace("17/May", "18/May") for s in (0, 1)]
    write_log(next_day, name="access.log")
    far = stamped("x", "01/Jan/2030:00:00:00 +0000")
    write_log([clf("a", 0), far, clf("a", 1)], name="access.log.1")
    monkeypatch.chdir(tmp_path)
    given = [Path("access.log"), Path("access.log.1")]

    result = Replay(given, make_throttles(["5/s"])).run()

    text = text_of(result)
    assert text[1] == (
        "files              access.log.1, access.log "
        "(reordered: oldest first, by when each starts)"
    )
    assert text[12] == (
        "malformed lines    1 (outliers: 1, dated over 1d after the lines around it)"
    )
    report = to_json(result)
    assert report["files"] == ["access.log.1", "access.log"]
    assert (report["files_reordered"], report["outliers"]) == (True, 1)


def test_escapes_control_characters_in_every_table_and_in_json_keys(
    write_log: WriteLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = "\x1b]0;pwned\x07\x1b[2J"
    shown = "\\x1b]0;pwned\\x07\\x1b[2J"
    lines = [clf(evil, s, "GET /\x1b[31mred HTTP/1.1") for s in (0, 1)]
    log = write_log([*lines, "\x1b[2Jjunk"], name="in\x1b[5mside.log")
    monkeypatch.chdir(log.parent)
    throttles = make_throttles(["1/10s"])
    by_ip = Replay([log.name], throttles).run()
    by_path = Replay([log.name], throttles, key="ip+path").run()

    texts = [text_of(by_ip), text_of(by_path)]

    for text in texts:
        assert not any(c in line for line in text for c in "\x1b\x07")
        assert text[1] == "files              in\\x1b[5mside.log"
        assert text[-1].split(maxsplit=1) == [
            "in\\x1b[5mside.log:3",
            "not a log line: no fields after the client   \\x1b[2Jjunk",
        ]

    rows = [text[text.index("top throttled clients (1 of 1)") + 3] for text in texts]
    assert [row.rsplit(maxsplit=3)[0] for row in rows] == [
        shown,
        f"{shown} /\\x1b[31mred",
    ]
    # Keys are escaped as they are read: JSON readers (jq -r) get them safe.
    assert to_json(by_ip)["top_throttled"][0]["client"] == shown
    assert to_json(by_path)["top_throttled"][0]["client"] == f"{shown} /\\x1b[31mred"
    assert to_json(by_ip)["files"] == [log.name]  # as given on the command line


def ascii_stream() -> tuple[io.BytesIO, io.TextIOWrapper]:
    raw = io.BytesIO()
    return raw, io.TextIOWrapper(raw, encoding="ascii")


def test_a_stream_without_box_characters_gets_ascii_rules_and_escaped_data(
    write_log: WriteLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = write_log([clf("caf\u00e9", s) for s in (0, 1)] + ["junk \u00e9"])
    monkeypatch.chdir(log.parent)
    result = Replay([log.name], make_throttles(["1/10s"])).run()
    text_raw, text_stream = ascii_stream()
    json_raw, json_stream = ascii_stream()

    write_text(result, text_stream)
    write_json(result, json_stream)
    text_stream.flush()
    json_stream.flush()

    lines = text_raw.getvalue().decode("ascii").splitlines()
    top = lines.index("top throttled clients (1 of 1)")
    assert lines[top + 1].split() == [
        "client",
        "rejected",
        "requests",
        "first",
        "throttled",
    ]
    assert set(lines[top + 2]) == {"-"}
    assert lines[top + 3].split() == [
        "caf\\u00e9",
        "1",
        "2",
        "2015-05-17T10:05:01+00:00",
    ]
    assert lines[-1].split(maxsplit=1) == [
        "access.log:3",
        "no [date/time] field   junk \\u00e9",
    ]
    report = json.loads(json_raw.getvalue().decode("ascii"))
    assert report["top_throttled"][0]["client"] == "caf\u00e9"
