"""Parsing and reading access logs: every quirk, and every unreadable file."""

from __future__ import annotations

import gzip
import os
import tracemalloc
from pathlib import Path

import pytest

from sliding_window_throttler.cli import accesslog
from sliding_window_throttler.cli.accesslog import (
    MAX_LINE_BYTES,
    READ_CHUNK_BYTES,
    LogFileError,
    Request,
    check_log,
    parse_line,
    read_lines,
    shorten,
)

from cli_logs import BUNDLED_LOG, T0, WriteLog, clf

US = 1_000_000
PREFIX = b"192.0.2.7 - - [17/May/2015:10:05:03 +0000] "
STAMP = "17/May/2015:10:00:00 +0000"
OUT_OF_RANGE = "time out of range (replay takes 1970 to 2100, UTC)"


def parsed(raw: bytes) -> Request:
    request = parse_line(raw)
    assert isinstance(request, Request), request
    return request


def fields(raw: bytes) -> tuple[str, int, str, str, int | None]:
    r = parsed(raw)
    return r.client, r.time_us, r.method, r.path, r.status


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            PREFIX + b'"GET /a b|c?q=1 HTTP/1.1" 200 5 "-" "UA"',
            ("192.0.2.7", (T0 + 3) * US, "GET", "/a b|c", 200),
            id="spaces-and-pipes-in-request",
        ),
        pytest.param(
            PREFIX + rb'"\x16\x03\x01\x00\xa5\x01" 400 226 "-" "-"',
            ("192.0.2.7", (T0 + 3) * US, r"\\x16\\x03\\x01\\x00\\xa5\\x01", "", 400),
            id="escaped-tls-handshake",
        ),
        pytest.param(
            PREFIX + b'"\x16\x03\x01\x00\xa5" 400 -',
            ("192.0.2.7", (T0 + 3) * US, r"\x16\x03\x01\x00\xa5", "", 400),
            id="raw-bytes-in-request",
        ),
        pytest.param(
            PREFIX + b'"GET /caf\xe9\xff HTTP/1.0" 200 5 "-" "\xfe"',
            ("192.0.2.7", (T0 + 3) * US, "GET", "/caf\\xe9\\xff", 200),
            id="non-utf8-bytes",
        ),
        pytest.param(
            PREFIX + rb'"GET /say\"hi\" HTTP/1.1" 200 5 "-" "UA"',
            ("192.0.2.7", (T0 + 3) * US, "GET", r'/say\\"hi\\"', 200),
            id="escaped-quote-in-request",
        ),
        pytest.param(
            PREFIX + b'"GET /say"hi" HTTP/1.1" 200 5 "-" "UA"',
            ("192.0.2.7", (T0 + 3) * US, "GET", '/say"hi"', 200),
            id="unescaped-quote-in-request",
        ),
        pytest.param(
            b'2001:db8::1 - - [29/Oct/2015:06:47:36 +0100] "GET / HTTP/1.1" 200 1',
            ("2001:db8::1", 1_446_097_656 * US, "GET", "/", 200),
            id="ipv6-client-and-offset",
        ),
        pytest.param(
            b'crawler.example.com - bob [17/May/2015:10:05:03 -0130] "HEAD /x" - -',
            ("crawler.example.com", (T0 + 3 + 5400) * US, "HEAD", "/x", None),
            id="hostname-client-dash-status-and-size",
        ),
        pytest.param(
            PREFIX + b'"GET /index.html HTTP/1.1" 304 -\r\n',
            ("192.0.2.7", (T0 + 3) * US, "GET", "/index.html", 304),
            id="common-format-crlf",
        ),
        pytest.param(
            PREFIX + b'"-" 408 0 "-" "-"',
            ("192.0.2.7", (T0 + 3) * US, "-", "", 408),
            id="empty-request",
        ),
        pytest.param(
            b'46.118.127.106 - - [20/May/2015:12:05:17 +0000] "GET /scripts/grok-py-'
            b'test/configlib.py HTTP/1.1" 200 235 "-" "Mozilla/5.0 (compatible; '
            b"Googlebot/2.1; +http://www.google.com/bot.html\n",
            (
                "46.118.127.106",
                1_432_123_517 * US,
                "GET",
                "/scripts/grok-py-test/configlib.py",
                200,
            ),
            id="truncated-user-agent-elastic-line-8899",
        ),
    ],
)
def test_parses_quirky_lines_into_exact_fields(
    raw: bytes, expected: tuple[str, int, str, str, int | None]
) -> None:
    assert fields(raw) == expected


def test_parses_a_26_kb_line() -> None:
    path = "/search/" + "a" * 26_000
    request = parsed(PREFIX + f'"GET {path}?x=1 HTTP/1.1" 414 0 "-" "UA"'.encode())

    assert (request.method, request.path, request.status) == ("GET", path, 414)


def test_keeps_the_utc_offset_of_the_line() -> None:
    request = parsed(b'h - - [25/Oct/2015:04:11:25 +0100] "GET / HTTP/1.1" 200 1')

    assert (request.time_us, request.offset_s) == (1_445_742_685 * US, 3600)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"garbage", "not a log line: no fields after the client"),
        (b'1.2.3.4 - - "GET / HTTP/1.1" 200 5', "no [date/time] field"),
        (PREFIX.replace(b"May", b"Mai") + b'"GET /" 200 5', "bad timestamp"),
        (PREFIX.replace(b"17/", b"31/").replace(b"May", b"Feb") + b'"G" 1 1', None),
        (PREFIX.replace(b"10:05", b"25:05") + b'"GET /" 200 5', "bad timestamp"),
        (PREFIX + b"GET / HTTP/1.1 200 5", "no quoted request line after the time"),
        (PREFIX + b'"GET / HTTP/1.1', "request line not closed (truncated line?)"),
        (PREFIX + b'"GET / HTTP/1.1" OK', "no status and size after the request line"),
    ],
)
def test_names_why_a_line_is_malformed(raw: bytes, reason: str | None) -> None:
    result = parse_line(raw)

    assert isinstance(result, str)
    assert result == (reason or result)


def test_feb_31_is_a_bad_timestamp() -> None:
    raw = b'1.2.3.4 - - [31/Feb/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5'

    assert parse_line(raw) == "bad timestamp"


def test_shortens_and_escapes_lines_for_reports() -> None:
    assert shorten(b"a\x00b\tc\r\n") == "a\\x00b\\x09c"
    assert shorten(b"x" * 500, limit=10) == "xxxxxxxxx…"


def test_detects_gzip_by_magic_bytes_not_name(write_log: WriteLog) -> None:
    zipped = write_log(["line one", "line two"], name="rotated.1", compress=True)
    plain = write_log(["line one", "line two"], name="not-really.gz")

    assert list(read_lines(zipped)) == list(read_lines(plain))
    assert list(read_lines(plain)) == [(1, b"line one\n"), (2, b"line two\n")]


def test_reads_line_8899_of_the_bundled_log_as_a_request() -> None:
    lines = dict(read_lines(BUNDLED_LOG))

    assert len(lines) == 10_000
    assert parsed(lines[8899]).client == "46.118.127.106"


def test_reports_progress_in_bytes_every_4096_lines(write_log: WriteLog) -> None:
    path = write_log([f"line {i}" for i in range(10_000)])
    seen: list[int] = []

    for _ in read_lines(path, seen.append):
        pass

    assert len(seen) == 2
    assert 0 < seen[0] < seen[1] <= path.stat().st_size


def test_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LogFileError, match=r"cannot read '.*nope.log': No such file"):
        check_log(tmp_path / "nope.log")


def test_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(LogFileError, match="Is a directory"):
        check_log(tmp_path)


def test_refuses_an_unreadable_file(
    write_log: WriteLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_log(["x"])

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # Root reads any file whatever its mode, so the denial is simulated.
    monkeypatch.setattr(accesslog, "open", denied, raising=False)
    with pytest.raises(LogFileError, match=r"cannot read .*: Permission denied"):
        check_log(path)


def test_refuses_an_empty_file_plain_or_gzip(write_log: WriteLog) -> None:
    for path in (write_log([]), write_log([], name="e.gz", compress=True)):
        with pytest.raises(LogFileError, match="is empty"):
            check_log(path)


def test_refuses_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(b"\x1f\x8b" + b"not deflate at all")

    with pytest.raises(LogFileError, match="is not valid gzip"):
        check_log(path)


def test_refuses_truncated_gzip_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(BUNDLED_LOG.read_bytes()[:50_000])
    check_log(path)

    with pytest.raises(LogFileError, match="is not valid gzip"):
        for _ in read_lines(path):
            pass


def test_gzip_of_the_bundled_log_is_what_the_readme_says() -> None:
    assert gzip.decompress(BUNDLED_LOG.read_bytes()).count(b"\n") == 10_000


@pytest.mark.parametrize("chunk_bytes", [3, 7, 64 * 1024])
def test_ends_lines_at_lf_crlf_or_a_lone_cr_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    monkeypatch.setattr(accesslog, "READ_CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "mixed.log"
    path.write_bytes(b"one\rtwo\r\nthree\nfour\r\r\nsix\rlast")

    assert list(read_lines(path)) == [
        (1, b"one\r"),
        (2, b"two\r\n"),
        (3, b"three\n"),
        (4, b"four\r"),
        (5, b"\r\n"),
        (6, b"six\r"),
        (7, b"last"),
    ]


def test_reads_every_line_of_a_cr_only_log(tmp_path: Path) -> None:
    lines = [f'{n}.1.1.1 - - [{STAMP}] "GET / HTTP/1.1" 200 1' for n in (1, 2, 3)]
    path = tmp_path / "cr3.log"
    path.write_bytes("\r".join(lines).encode() + b"\r")

    clients = [parsed(raw).client for _, raw in read_lines(path)]

    assert clients == ["1.1.1.1", "2.1.1.1", "3.1.1.1"]


def test_a_line_longer_than_many_chunks_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accesslog, "READ_CHUNK_BYTES", 1024)
    path = tmp_path / "long.log"
    path.write_bytes(b"x" * 100_000 + b"\r" + b"y" * 5_000)

    assert [(n, len(line)) for n, line in read_lines(path)] == [
        (1, 100_001),
        (2, 5_000),
    ]


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("17/May/2015:10:00:00 +2400", "bad timestamp"),
        ("17/May/2015:10:00:00 -9959", "bad timestamp"),
        ("31/Dec/9999:23:59:59 -1200", OUT_OF_RANGE),
        ("01/Jan/0001:00:00:00 +1400", OUT_OF_RANGE),
        ("00/Jan/0000:00:00:00 +0000", OUT_OF_RANGE),
        ("31/Dec/9999:23:59:60 +0000", OUT_OF_RANGE),
        ("01/Jan/2150:00:00:00 +0000", OUT_OF_RANGE),
        ("01/Jan/1800:00:00:00 +0000", OUT_OF_RANGE),
        ("31/Dec/2100:23:59:59 -0001", OUT_OF_RANGE),
        ("01/Jan/1970:00:59:59 +0100", OUT_OF_RANGE),
        ("31/Dec/2100:23:59:60 +0000", OUT_OF_RANGE),
    ],
)
def test_times_out_of_the_replayable_range_are_malformed(
    stamp: str, reason: str
) -> None:
    raw = f'1.2.3.4 - - [{stamp}] "GET / HTTP/1.1" 200 1'.encode()

    assert parse_line(raw) == reason


@pytest.mark.parametrize(
    ("stamp", "time_s"),
    [
        ("01/Jan/1970:00:00:00 +0000", 0),
        ("31/Dec/1969:23:00:00 -0100", 0),
        ("31/Dec/2100:23:59:59 +0000", 4_133_980_799),
        ("01/Jan/2101:00:59:59 +0100", 4_133_980_799),
        ("17/May/2015:10:00:00 +2359", 1_431_770_460),
    ],
)
def test_times_at_the_edges_of_the_range_are_replayed(stamp: str, time_s: int) -> None:
    raw = f'1.2.3.4 - - [{stamp}] "GET / HTTP/1.1" 200 1'.encode()

    assert parsed(raw).time_us == time_s * US


def test_refuses_a_device_that_would_never_end() -> None:
    with pytest.raises(
        LogFileError,
        match=r"^'/dev/zero' is not a regular file or a pipe: it is a device$",
    ):
        check_log(Path("/dev/zero"))


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_refuses_a_terminal() -> None:
    leader, follower = os.openpty()
    try:
        terminal = Path(os.ttyname(follower))
        with pytest.raises(
            LogFileError, match=r"is not a regular file or a pipe: it is a terminal$"
        ):
            check_log(terminal)
    finally:
        os.close(leader)
        os.close(follower)


def test_a_line_of_exactly_1_mib_parses_and_one_byte_more_is_malformed() -> None:
    assert MAX_LINE_BYTES == 2**20
    line = clf("a", 0, "GET /x HTTP/1.1").encode()
    padded = line.replace(b"/x", b"/" + b"x" * (MAX_LINE_BYTES - len(line) + 1))
    assert len(padded) == MAX_LINE_BYTES

    assert parsed(padded + b"\r\n").path == "/" + "x" * (len(padded) - len(line) + 1)
    assert parse_line(padded.replace(b"GET /", b"GET //")) == "line longer than 1 MiB"


def test_a_line_over_1_mib_is_cut_and_reading_resumes_after_its_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbled.log"
    # 5 MiB without a line end, then the log goes on.
    path.write_bytes(b"one\n" + b"x" * (5 * 2**20) + b"\r\ntwo\nthree")

    tracemalloc.start()
    try:
        lines = [(n, len(line), line[:3]) for n, line in read_lines(path)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert [(n, start) for n, _, start in lines] == [
        (1, b"one"),
        (2, b"xxx"),
        (3, b"two"),
        (4, b"thr"),
    ]
    assert MAX_LINE_BYTES < lines[1][1] < MAX_LINE_BYTES + 3 * 64 * 1024
    assert peak < 4 * MAX_LINE_BYTES


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # A crash padded the file at a line end: the padding is dropped, the
        # lines keep their numbers.
        (
            b"one\n" + b"\0" * (5 * 2**20) + b"\r\ntwo\n",
            [(1, b"one\n"), (2, b"\r\n"), (3, b"two\n")],
        ),
        # ... or mid-line: the cut line ends there, and the request written
        # after the NULs is read on the same line number.
        (
            b"one\ntw" + b"\0" * 4096 + b"two\nbad\n",
            [(1, b"one\n"), (2, b"tw"), (2, b"two\n"), (3, b"bad\n")],
        ),
        (b"\0" * 70_000 + b"one\n", [(1, b"one\n")]),
        # A run split by a read: 10 NULs end the first 64 KiB, 10 begin the next.
        (
            b"x" * (READ_CHUNK_BYTES - 13) + b"\ncu" + b"\0" * 20 + b"two\n",
            [(1, b"x" * (READ_CHUNK_BYTES - 13) + b"\n"), (2, b"cu"), (2, b"two\n")],
        ),
        # A few NULs are a line's own bytes.
        (b"a\0\0b\n", [(1, b"a\0\0b\n")]),
        # Lines ended by a lone CR, padding between them.
        (
            b"one\r" + b"\0" * 16 + b"two" + b"\0" * 16 + b"three\r",
            [(1, b"one\r"), (2, b"two"), (2, b"three\r")],
        ),
        # A lone CR that ends the first 64 KiB, then a last line without end.
        (
            b"x" * (READ_CHUNK_BYTES - 1) + b"\rlast",
            [(1, b"x" * (READ_CHUNK_BYTES - 1) + b"\r"), (2, b"last")],
        ),
    ],
)
def test_nul_padding_ends_the_line_it_interrupts_and_is_dropped(
    tmp_path: Path, data: bytes, expected: list[tuple[int, bytes]]
) -> None:
    path = tmp_path / "crashed.log"
    path.write_bytes(data)

    assert list(read_lines(path)) == expected


def test_decodes_invalid_utf_8_losslessly() -> None:
    first = parsed(b"\xff\xfe" + PREFIX[9:] + b'"GET /\xff HTTP/1.1" 200 1')
    second = parsed(b"\xfe\xff" + PREFIX[9:] + b'"GET /\xfe HTTP/1.1" 200 1')

    assert (first.client, first.path) == ("\\xff\\xfe", "/\\xff")
    assert (second.client, second.path) == ("\\xfe\\xff", "/\\xfe")


def test_a_logged_escape_and_the_byte_it_names_decode_apart() -> None:
    raw = parsed(PREFIX + b'"GET /\xff HTTP/1.1" 200 1')
    text = parsed(PREFIX + rb'"GET /\xff HTTP/1.1" 200 1')
    client = parsed(rb"a\xff" + PREFIX[9:] + b'"GET / HTTP/1.1" 200 1')

    assert (raw.path, text.path) == ("/\\xff", "/\\\\xff")
    assert client.client == "a\\\\xff"


def test_control_characters_decode_as_escapes_apart_from_the_logged_text() -> None:
    raw = parsed(PREFIX + b'"GET /\x1b[31mred\xe2\x80\xae\t HTTP/1.1" 200 1')
    text = parsed(PREFIX + rb'"GET /\x1b[31mred HTTP/1.1" 200 1')
    client = parsed(b"a\x07" + PREFIX[9:] + b'"GET / HTTP/1.1" 200 1')

    assert raw.path == "/\\x1b[31mred\\u202e\\x09"
    assert text.path == "/\\\\x1b[31mred"
    assert client.client == "a\\x07"


def test_an_undecodable_byte_and_the_character_of_that_code_decode_apart() -> None:
    # Byte 0xAD is not UTF-8; U+00AD (bytes C2 AD) is, but not printable.
    byte = parsed(PREFIX + b'"GET /\xad HTTP/1.1" 200 1')
    char = parsed(PREFIX + b'"GET /\xc2\xad HTTP/1.1" 200 1')

    assert (byte.path, char.path) == ("/\\xad", "/\\u00ad")
