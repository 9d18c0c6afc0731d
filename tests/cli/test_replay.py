"""Replays of hand-made logs with exact counts, and of the bundled log."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from sliding_window_throttler import ConfigurationError, Throttle
from sliding_window_throttler.cli.accesslog import LogFileError
from sliding_window_throttler.cli.replay import (
    Instant,
    Replay,
    ThrottledClient,
    make_throttles,
    throttle_name,
)
from sliding_window_throttler.cli.report import to_json, write_text

from cli_logs import BUNDLED_LOG, T0, WriteLog, clf, stamped

US = 1_000_000
DEMO_THROTTLES = make_throttles(["20/10s", "60/minute"])
OUT_OF_RANGE = "time out of range (replay takes 1970 to 2100, UTC)"


def test_names_throttles_after_their_normalised_spec() -> None:
    throttles = make_throttles(["20/10s", "60/minute", "5 per 1.5s"], block="90")

    assert [t.name for t in throttles] == ["20-per-10s", "60-per-1m", "5-per-1.5s"]
    assert [(t.limit, t.ttl_ms) for t in throttles] == [
        (20, 10_000),
        (60, 60_000),
        (5, 1_500),
    ]
    assert {t.block_duration_ms for t in throttles} == {90_000}
    assert throttle_name(100, 500) == "100-per-500ms"


@pytest.mark.parametrize(
    ("specs", "block", "message"),
    [
        ([], None, "give at least one --limit"),
        (["60/minute", "60/60s"], None, "'60/60s' is given twice"),
        (["20/xx"], None, "unknown unit 'xx'"),
        (["0/s"], None, "--limit must allow 1 to 1,000,000 hits a window, got '0/s'"),
        (["1/s"], "soon", "--block 'soon' is not a duration"),
    ],
)
def test_refuses_bad_limits_clearly(
    specs: list[str], block: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_throttles(specs, block)


def test_replays_a_small_log_to_exact_counts(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["3/10s"])).run()

    assert (result.requests, result.admitted, result.rejected) == (8, 6, 2)
    assert (result.clients_seen, result.clients_throttled) == (2, 1)
    assert result.top_throttled == (
        ThrottledClient("10.0.0.1", 6, 2, (T0 + 3) * US, 0),
    )
    assert (result.late, result.malformed, result.capacity_refused) == (0, 0, 0)
    assert result.first == Instant(T0 * US, 0)
    assert result.last == Instant((T0 + 11) * US, 0)
    assert result.rejected_percent == 25.0


def test_blocks_an_overflowing_client_for_the_block_duration(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["3/10s"], block="30s")).run()

    # Refused at :03, blocked until :33, so :04 and :11 are refused too.
    assert (result.admitted, result.rejected) == (5, 3)
    assert result.top_throttled[0].rejected == 3


def test_decides_all_throttles_together(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["2/10s", "3/minute"])).run()

    # 2/10s refuses :02 :03 :04, which are then not recorded in 3/minute
    # either, so :11 is admitted (only :00 and :01 count in that minute).
    assert (result.admitted, result.rejected) == (5, 3)
    assert result.top_throttled == (
        ThrottledClient("10.0.0.1", 6, 3, (T0 + 2) * US, 0),
    )


def test_keys_by_ip_and_path_without_query(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["2/10s"]), key="ip+path").run()

    # 10.0.0.1 asks for "/" at :00 :01 :04 :11, /a once and /b once;
    # 2001:db8::1 for /login twice (the query string is not part of the key).
    assert result.clients_seen == 4
    assert result.top_throttled == (
        ThrottledClient("10.0.0.1 /", 4, 1, (T0 + 4) * US, 0),
    )


def test_keys_by_ip_and_method(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["1/minute"]), key="ip+method").run()

    # 2001:db8::1 sends one POST and one GET: neither is refused.
    assert result.clients_seen == 3
    assert result.top_throttled == (
        ThrottledClient("10.0.0.1 GET", 6, 5, (T0 + 1) * US, 0),
    )


def test_counts_late_lines_and_still_replays_them(write_log: WriteLog) -> None:
    log = write_log(
        [clf("a", 0), clf("a", 10), clf("a", 20), clf("a", 12), clf("b", 5)]
    )

    result = Replay([log], make_throttles(["10/s"]), reorder_window_ms=5_000).run()

    assert (result.requests, result.late) == (5, 1)
    assert result.first == Instant(T0 * US, 0)


def test_buckets_the_busiest_windows_by_the_shortest_throttle(small_log: Path) -> None:
    result = Replay([small_log], make_throttles(["1/minute", "3/10s"]), top=2).run()

    windows = [
        (w.start_us // US - T0, w.requests, w.rejected) for w in result.busiest_windows
    ]

    # :00-:09 holds 10.0.0.1 at :00-:04 (four refused by 1/minute) and
    # 2001:db8::1 at :02 and :05 (the second refused); :10-:19 holds :11.
    assert windows == [(0, 7, 5), (10, 1, 1)]


def test_counts_malformed_lines_shows_the_first_five_and_skips_blanks(
    write_log: WriteLog,
) -> None:
    lines = [clf("a", 0), "", "\r", *[f"junk {n}" for n in range(7)], clf("a", 1)]
    log = write_log(lines)

    result = Replay([log], make_throttles(["10/s"])).run()

    assert (result.requests, result.malformed) == (2, 7)
    assert [(m.line, m.text) for m in result.malformed_examples] == [
        (4, "junk 0"),
        (5, "junk 1"),
        (6, "junk 2"),
        (7, "junk 3"),
        (8, "junk 4"),
    ]
    assert result.malformed_examples[0].file == str(log)


def test_replays_several_files_as_one_stream(write_log: WriteLog) -> None:
    lines = [clf("a", s) for s in (0, 2, 1, 4, 3, 5)]
    whole = write_log(lines)
    first = write_log(lines[:3], name="part1.log")
    second = write_log(lines[3:], name="part2.log.gz", compress=True)
    throttles = make_throttles(["2/10s"])

    one = Replay([whole], throttles).run()
    two = Replay([first, second], throttles).run()

    assert (two.admitted, two.rejected, two.late) == (one.admitted, one.rejected, 0)
    assert two.top_throttled == one.top_throttled
    assert two.files == (str(first), str(second))


def test_a_file_without_one_parseable_line_is_an_error(write_log: WriteLog) -> None:
    good = write_log([clf("a", 0)], name="good.log")
    junk = write_log(["junk", "more junk"], name="junk.log")

    with pytest.raises(LogFileError, match=r"'.*junk.log' has no parseable line"):
        Replay([good, junk], make_throttles(["1/s"])).run()


def test_refuses_an_unknown_key(small_log: Path) -> None:
    with pytest.raises(ConfigurationError, match="--key must be one of"):
        Replay([small_log], make_throttles(["1/s"]), key="user")


def test_shortens_keys_too_long_for_the_throttler(write_log: WriteLog) -> None:
    path = "/" + "x" * 70_000
    log = write_log([clf("a", 0, f"GET {path} HTTP/1.1")] * 2)

    result = Replay([log], make_throttles(["1/s"]), key="ip+path").run()

    assert result.rejected == 1
    assert len(result.top_throttled[0].client) < 65_536


def test_the_bundled_log_throttles_someone_under_the_demo_limits() -> None:
    throttles = (Throttle("20-per-10s", "20/10s"), Throttle("60-per-1m", "60/minute"))
    progress: list[int] = []

    result = Replay([BUNDLED_LOG], throttles, on_progress=progress.append).run()

    assert result.requests == 10_000
    assert result.malformed == 0
    assert result.clients_seen == 1_753
    assert result.clients_throttled >= 1
    assert result.rejected >= 1
    assert progress == sorted(progress)
    assert 0 < progress[-1] <= BUNDLED_LOG.stat().st_size


def test_counts_capacity_refusals_apart_from_rejections(
    small_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sliding_window_throttler.cli.replay.PAIRS_PER_THROTTLE", 1)

    result = Replay([small_log], make_throttles(["10/minute"])).run()

    # 10.0.0.1 holds the only pair all along, so 2001:db8::1 never gets one.
    assert (result.admitted, result.rejected, result.capacity_refused) == (6, 0, 2)
    assert result.requests == 8
    assert result.clients_throttled == 0


def bundled_lines() -> list[bytes]:
    return gzip.decompress(BUNDLED_LOG.read_bytes()).splitlines(keepends=True)


def test_replays_every_line_of_a_log_ending_lines_in_cr(tmp_path: Path) -> None:
    log = tmp_path / "cr3.log"
    lines = [
        stamped(f"{n}.{n}.{n}.{n}", "17/May/2015:10:00:00 +0000") for n in (1, 2, 3)
    ]
    log.write_bytes("".join(f"{line}\r" for line in lines).encode())

    result = Replay([log], make_throttles(["1/10s"])).run()

    assert (result.requests, result.admitted, result.malformed) == (3, 3, 0)
    assert result.clients_seen == 3


def test_the_bundled_log_with_cr_endings_gives_the_same_report(tmp_path: Path) -> None:
    log = tmp_path / "cr.log"
    log.write_bytes(b"".join(line.rstrip(b"\n") + b"\r" for line in bundled_lines()))

    result = Replay([log], DEMO_THROTTLES).run()

    assert (result.requests, result.rejected, result.late) == (10_000, 87, 0)
    assert result.malformed == 0


def test_times_out_of_range_are_malformed_and_the_report_renders(
    write_log: WriteLog,
) -> None:
    stamps = [
        "17/May/2015:10:00:00 +2400",
        "31/Dec/9999:23:59:59 -1200",
        "01/Jan/0001:00:00:00 +1400",
        "31/Dec/9999:23:59:60 +0000",
        "01/Jan/2113:00:00:00 +0000",
        "01/Jan/1826:00:00:00 +0000",
    ]
    log = write_log([clf("a", 0), *[stamped("b", s) for s in stamps], clf("a", 1)])

    result = Replay([log], make_throttles(["1/10s"])).run()
    text = io.StringIO()
    write_text(result, text)

    assert (result.requests, result.rejected, result.malformed) == (2, 1, 6)
    assert [(m.line, m.reason) for m in result.malformed_examples] == [
        (2, "bad timestamp"),
        (3, OUT_OF_RANGE),
        (4, OUT_OF_RANGE),
        (5, OUT_OF_RANGE),
        (6, OUT_OF_RANGE),
    ]
    assert to_json(result)["span"] == {
        "first": "2015-05-17T10:05:00+00:00",
        "last": "2015-05-17T10:05:01+00:00",
    }
    assert "malformed lines    6" in text.getvalue().splitlines()


def test_a_line_far_in_the_future_leaves_the_bundled_log_report_unchanged(
    tmp_path: Path,
) -> None:
    lines = bundled_lines()
    far = b'203.0.113.9 - - [31/Dec/2099:10:00:00 +0000] "GET / HTTP/1.1" 200 1\n'
    log = tmp_path / "skewed.log"
    log.write_bytes(b"".join([*lines[:100], far, *lines[100:]]))

    result = Replay([log], DEMO_THROTTLES).run()

    assert (result.requests, result.rejected, result.late) == (10_000, 87, 0)
    assert (result.clients_seen, result.clients_throttled) == (1_753, 2)
    assert (result.malformed, result.outliers) == (1, 1)
    assert [(m.line, m.reason) for m in result.malformed_examples] == [
        (101, "outlier: dated over 1d after the lines around it")
    ]
    assert result.last == Instant(1_432_155_959 * US, 0)


def test_rotated_logs_given_newest_first_are_replayed_oldest_first(
    tmp_path: Path,
) -> None:
    lines = bundled_lines()
    older, newer = tmp_path / "access.log.1", tmp_path / "access.log"
    older.write_bytes(b"".join(lines[:5_000]))
    newer.write_bytes(gzip.compress(b"".join(lines[5_000:])))

    whole = Replay([BUNDLED_LOG], DEMO_THROTTLES).run()
    result = Replay([newer, older], DEMO_THROTTLES).run()

    assert (result.requests, result.rejected, result.late) == (10_000, 87, 0)
    assert result.top_throttled == whole.top_throttled
    assert result.files == (str(older), str(newer))
    assert (result.files_reordered, whole.files_reordered) == (True, False)


def test_logs_that_start_together_keep_the_order_given(write_log: WriteLog) -> None:
    first = write_log([clf("a", 0), clf("a", 1)], name="b.log")
    second = write_log([clf("b", 0), clf("b", 1)], name="a.log")

    result = Replay([first, second], make_throttles(["1/s"])).run()

    assert result.files == (str(first), str(second))
    assert result.files_reordered is False


def test_distinct_invalid_utf_8_bytes_stay_distinct_clients_and_paths(
    write_log: WriteLog,
) -> None:
    line = clf("X", 0, "GET /P HTTP/1.1").encode()
    clients = [line.replace(b"X", raw, 1) for raw in (b"\xff\xfe", b"\xfe\xff")]
    paths = [line.replace(b"/P", b"/" + raw) for raw in (b"\xff", b"\xfe")]
    throttles = make_throttles(["1/10s"])

    by_ip = Replay([write_log(clients * 2)], throttles).run()
    by_path = Replay(
        [write_log(paths * 2, name="p.log")], throttles, key="ip+path"
    ).run()

    assert (by_ip.clients_seen, by_ip.rejected) == (2, 2)
    assert sorted(c.client for c in by_ip.top_throttled) == ["\\xfe\\xff", "\\xff\\xfe"]
    assert (by_path.clients_seen, by_path.rejected) == (2, 2)
    assert sorted(c.client for c in by_path.top_throttled) == ["X /\\xfe", "X /\\xff"]
