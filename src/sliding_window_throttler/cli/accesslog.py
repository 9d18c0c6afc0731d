"""
Reading Apache/Nginx access logs in common or combined format, plain or gzip.

Why one compiled regex and no parser library: ``apachelogs`` 0.6.1 (the
maintained one on PyPI) parses the bundled elastic log at about 36,000
lines/s on its own, below the 50,000 lines/s that the whole replay (parsing
plus the throttler) has to reach; it takes one format per parser, so mixed
common and combined lines need two tries, and it rejects the truncated line
8899 of that log. ``apache-log-parser`` and ``lars`` have had no release
since 2015 and 2018. The regex below works on bytes (so no line can fail to
decode), parses several hundred thousand lines/s, and copes with:

- a request line holding spaces, pipes or ``\\"`` escapes, raw or escaped
  bytes (``\\x16\\x03...``), or an unescaped quote (a second, slower pattern);
- IPv6 or hostname clients, ``-`` for status or size, lines ending in LF,
  CRLF or a lone CR (old Mac style, or a log cut by a tool that drops LFs);
  blank lines are skipped and not counted;
- bytes that are not UTF-8, decoded as ``\\xff`` escapes, and a backslash
  as ``\\\\`` (``decode_field``): distinct bytes stay distinct clients and
  paths, so the byte 0xFF and the four characters ``\\xff`` are two clients;
- NUL padding, as a crash leaves in a log file: a run of 16 or more NUL
  bytes (also across reads) ends the line it interrupts and is dropped, so
  the request written after it reads as a line of its own, on the same line
  number, whatever the padding's length;
- a line longer than ``MAX_LINE_BYTES``: it is malformed, only its first
  MiB is kept, and reading goes on after its end.

Lenient tail: only the fields up to the response size are needed to replay a
request, so nothing after them is checked. A truncated combined line (line
8899 of the elastic log lacks the closing quote of its User-Agent) is still a
usable request, and so are common-format lines and logs with extra fields
(Nginx's ``$http_x_forwarded_for``). A line whose client, time, request line,
status or size is missing or broken is malformed: it is counted and shown,
never fatal. So is a line dated outside 1970-2100 (UTC): the Redis storage
takes explicit times only within 2**52 us of the epoch (1827-2112), and one
range for both storages keeps their reports equal.

A log is opened once and read once from start to end, so a named pipe, a
process substitution (``<(zcat a.gz)``) or ``/dev/stdin`` (``-``) holding a
pipe or a file reads like any file. A terminal or a device is refused: it may
never end.

A log is named in messages and reports as given, undecodable bytes escaped,
and messages quote it with ``repr`` so that a newline in it stays ``\\n``.
"""

from __future__ import annotations

import calendar
import gzip
import io
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import NamedTuple

GZIP_MAGIC = b"\x1f\x8b"
MAX_SHOWN_CHARS = 120
READ_CHUNK_BYTES = 64 * 1024
"""Bytes read at a time; the lines of a chunk are split in one C call."""
MAX_LINE_BYTES = 2**20
"""The longest line replayed (line end not counted); Apache's own limit on a
request line is 8 KiB, and long query strings stay far below a MiB."""
TOO_LONG = "line longer than 1 MiB"
STDIN = "-"
"""The name that stands for standard input, read as ``/dev/stdin``."""
FIRST_YEAR, LAST_YEAR = 1970, 2100
EARLIEST_US = calendar.timegm((FIRST_YEAR, 1, 1, 0, 0, 0)) * 1_000_000
END_US = calendar.timegm((LAST_YEAR + 1, 1, 1, 0, 0, 0)) * 1_000_000
"""Replayed times are from ``EARLIEST_US`` (included) to ``END_US`` (excluded)."""
OUT_OF_RANGE = f"time out of range (replay takes {FIRST_YEAR} to {LAST_YEAR}, UTC)"

_FIELDS = rb"(\S+) \S+ \S+ \[(\d\d/[A-Za-z]{3}/\d{4}:\d\d):(\d\d):(\d\d) ([+-]\d{4})\] "
_TAIL = rb" (\d{3}|-) (?:\d+|-)(?:\s|$)"
_LINE = re.compile(_FIELDS + rb'"([^"\\]*(?:\\.[^"\\]*)*)"' + _TAIL)
# A server that does not escape quotes in the request line: the request ends
# at the first quote that a status and a size follow.
_LENIENT_LINE = re.compile(_FIELDS + rb'"(.*?)"' + _TAIL)
# CLF month names are English whatever the locale (calendar.month_abbr is not).
_MONTHS = {
    name: number
    for number, name in enumerate(
        b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1
    )
}
# NUL padding (see _without_padding): where a line starts, and anywhere. A
# crash pads to a disk block or more; a few NULs inside a line are its data.
_PADDING = 16
_PADDING_RUN = re.compile(rb"\x00{%d,}" % _PADDING)
_TIME_FIELD = re.compile(rb"\d\d/[A-Za-z]{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}")


class Request(NamedTuple):
    """
    One parsed log line: what the replay needs of it.

    Attributes:
        client: The client field (IPv4, IPv6 or hostname), as
            ``decode_field`` gives it.
        time_us: When the request was logged, epoch microseconds.
        offset_s: The line's UTC offset in seconds (``+0100`` is 3600).
        request: The request line as ``decode_field`` gives it: Apache's
            escape ``\\xa5`` reads ``\\\\xa5``, a raw byte 0xA5 ``\\xa5``.
        status: The status code, ``None`` for ``-``.
    """

    client: str
    time_us: int
    offset_s: int
    request: str
    status: int | None

    @property
    def method(self) -> str:
        """The method (``GET``), or the whole request line if it has no space."""
        return split_request(self.request)[0]

    @property
    def path(self) -> str:
        """The target without query string and HTTP version ("" if none)."""
        return split_request(self.request)[1]


@dataclass(frozen=True, slots=True)
class Malformed:
    """
    A line that could not be replayed.

    Attributes:
        file: The name of the file it came from (``LogReader.name``).
        line: Its line number, from 1.
        text: The line, shortened, with control bytes escaped.
        reason: Why it is unusable.
    """

    file: str
    line: int
    text: str
    reason: str


class LogFileError(Exception):
    """A log file cannot be read at all (missing, a directory, corrupt gzip)."""


@lru_cache(maxsize=4096)
def hour_base(date_hour: bytes, zone: bytes) -> tuple[int, int]:
    """
    Return ``(epoch seconds of the hour, UTC offset seconds)`` of a CLF time.

    Cached: a log has few distinct hours, and the cache stays bounded.

    Args:
        date_hour: ``17/May/2015:10``.
        zone: ``+0000``.

    Raises:
        ValueError: for an impossible date, hour or zone (offsets reach
            ±23:59), or a year far out of range; its message is the reason.
    """
    day, month_name, year = int(date_hour[:2]), date_hour[3:6], int(date_hour[7:11])
    hour = int(date_hour[12:14])
    month = _MONTHS.get(month_name.capitalize())
    zone_hours, zone_minutes = int(zone[1:3]), int(zone[3:5])
    if month is None or hour > 23 or zone_hours > 23 or zone_minutes > 59:
        raise ValueError("bad timestamp")

    # A year next to the range may still land in it once in UTC; the caller
    # checks the exact time.
    if not FIRST_YEAR - 1 <= year <= LAST_YEAR + 1:
        raise ValueError(OUT_OF_RANGE)

    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        raise ValueError("bad timestamp")

    offset = (zone_hours * 3600 + zone_minutes * 60) * (-1 if zone[:1] == b"-" else 1)
    return calendar.timegm((year, month, day, hour, 0, 0)) - offset, offset


Fields = tuple[str, int, int, bytes, bytes]
"""``(client, time_us, offset_s, request line, status)``: the raw fields of a
line, as few conversions as the replay needs."""


def parse_fields(raw: bytes) -> Fields | str:
    """
    Parse one log line (with or without its line ending) into its raw fields.

    Returns:
        ``(client, time_us, offset_s, request, status)`` with the request line
        and the status still bytes, or the reason the line is malformed (a
        time outside 1970-2100 UTC is one, a line over 1 MiB another).
    """
    if len(raw) > MAX_LINE_BYTES and len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
        return TOO_LONG

    match = _LINE.match(raw) or _LENIENT_LINE.match(raw)
    if match is None:
        return diagnose(raw)

    client, date_hour, minute, second, zone, request, status = match.groups()
    minutes, seconds = int(minute), int(second)
    try:
        base, offset = hour_base(date_hour, zone)
    except ValueError as exc:
        return str(exc)

    if minutes > 59 or seconds > 60:
        return "bad timestamp"

    time_us = (base + minutes * 60 + seconds) * 1_000_000
    if not EARLIEST_US <= time_us < END_US:
        return OUT_OF_RANGE

    return decode_field(client), time_us, offset, request, status


def parse_line(raw: bytes) -> Request | str:
    """
    Parse one log line (with or without its line ending).

    Returns:
        The request, or the reason the line is malformed.
    """
    fields = parse_fields(raw)
    if isinstance(fields, str):
        return fields

    client, time_us, offset_s, request, status = fields
    code = None if status == b"-" else int(status)
    text = decode_field(request)
    return Request(client, time_us, offset_s, text, code)


def decode_field(raw: bytes) -> str:
    """
    Decode a client or request line so that distinct bytes stay distinct text,
    and no text from a log can drive the terminal or the program reading it.

    A byte that is not UTF-8 becomes ``\\xff``, a control character ``\\x1b``
    (any character that is not printable, as ``escape_char`` writes it), and
    a backslash ``\\\\``: so the byte 0xFF and the logged text ``\\xff``
    (``\\\\xff`` once decoded) are two clients, not one.
    """
    # bytes.replace returns the line itself when it holds no backslash: the
    # usual case costs a scan, not a copy.
    text = raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text

    return "".join(c if c.isprintable() else escape_char(c) for c in text)


def split_request(request: str) -> tuple[str, str]:
    """Split ``GET /a?b HTTP/1.1`` into ``("GET", "/a")``; keeps inner spaces."""
    method, space, target = request.partition(" ")
    if not space:
        return method, ""

    head, space, version = target.rpartition(" ")
    if space and version.startswith("HTTP/"):
        target = head

    return method, target.partition("?")[0]


def diagnose(raw: bytes) -> str:
    """Say why a line does not match the common/combined format."""
    line = raw.rstrip(b"\r\n")
    client, _, rest = line.partition(b" ")
    if not client or not rest:
        return "not a log line: no fields after the client"

    opened, closed = rest.find(b"["), rest.find(b"]")
    if opened < 0 or closed < opened:
        return "no [date/time] field"

    if not _TIME_FIELD.fullmatch(rest[opened + 1 : closed]):
        return "bad timestamp"

    after = rest[closed + 1 :]
    if not after.startswith(b' "'):
        return "no quoted request line after the time"

    if after.count(b'"') < 2:
        return "request line not closed (truncated line?)"

    return "no status and size after the request line"


def shorten(raw: bytes, limit: int = MAX_SHOWN_CHARS) -> str:
    """Render a line for a report: decoded, control bytes escaped, cut to size."""
    line = raw.rstrip(b"\r\n")
    text = line[: limit * 4].decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else escape_char(c) for c in text[:limit])
    return text if len(line) <= limit else text[: limit - 1] + "…"


def escape_char(char: str) -> str:
    """
    ``\\x1b``, ``\\u00ad``, ``\\u202e`` or ``\\U0001f600``: a character as
    Python escapes it, but for U+0080 to U+00FF, written ``\\u00ad``: the
    ``\\xad`` form stands for an undecodable byte (``decode_field``).
    """
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"

    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def display_name(path: str | os.PathLike[str]) -> str:
    """A file name as reports show it: as given, undecodable bytes as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def quoted(name: str) -> str:
    """
    Quote a file name for a message: one line whatever it holds, what a
    terminal would act on escaped (a newline reads ``\\n``), and the
    ``\\xff`` of an undecodable byte as ``display_name`` wrote it.
    """
    text = "".join(
        _QUOTED.get(c) or (c if c.isprintable() else escape_char(c)) for c in name
    )
    if "'" not in text:
        return f"'{text}'"

    if '"' not in text:
        return f'"{text}"'

    return "'" + text.replace("'", "\\'") + "'"


_QUOTED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class LogReader:
    """
    One log opened once, read once from start to end: plain or gzip.

    Iterating yields its lines with their ends, and goes on where the last
    iteration stopped, so a pipe can be probed and then replayed.

    Args:
        path: A regular file, or a pipe (a FIFO, ``/dev/stdin``, a process
            substitution); ``-`` is standard input. The gzip magic bytes
            decide whether it is decompressed, not the name: a rotated ``.1``
            file that is compressed, or a ``.gz`` that is not, both read right.
        name: How messages name it, if not as ``path`` is given.

    Attributes:
        path: Where it is read from: the name as given (``/dev/stdin`` for
            ``-``).
        name: As given, for messages and reports (``display_name``).
        is_pipe: True for a pipe, which cannot be read a second time.
        size: Its size on disk, for progress; 0 for a pipe.
        identity: ``(st_dev, st_ino)``: equal for two names of one file.

    Raises:
        LogFileError: when it cannot be opened, or is a terminal or a device.
    """

    def __init__(self, path: str | Path, *, name: str | None = None) -> None:
        self.name = display_name(path) if name is None else name
        given = "/dev/stdin" if os.fspath(path) == STDIN else os.fspath(path)
        # As given, not as a Path: that would make "./-" the "-" of stdin.
        self.path = given
        if given == "/dev/stdin" and not _is_open(0):
            raise LogFileError("cannot read standard input: it is closed")

        with _reading(self.name):
            # Opening a FIFO waits for its writer, as `cat` would. The name as
            # given: Path drops a trailing slash, which the system refuses.
            raw = open(given, "rb")  # noqa: SIM115 (closed by close())
            try:
                status = os.fstat(raw.fileno())
                self.is_pipe, self.size = _kind_of(self.name, raw, status)
                self.identity = (status.st_dev, status.st_ino)
                compressed = raw.peek(2)[:2] == GZIP_MAGIC
            except BaseException:
                raw.close()
                raise

        self._raw = raw
        self._data: io.BufferedIOBase = (
            gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
        )
        self._lines = _split_lines(self._data, self.name)

    def __iter__(self) -> Iterator[bytes]:
        return self._lines

    def numbered(
        self,
        on_progress: Callable[[int], None] | None = None,
        read_ahead: Iterable[bytes] = (),
    ) -> Iterator[tuple[int, bytes]]:
        """
        Yield ``(line number, line)``, the lines ``read_ahead`` first.

        Args:
            on_progress: Called every 4,096 lines with the bytes of the file
                (compressed bytes for gzip) read so far; never for a pipe.
            read_ahead: Lines already taken from this reader, from line 1.
        """
        report = on_progress if self.size else None
        number = 0
        cut = False  # the last line was cut short: this one is on it too
        for line in chain(read_ahead, self._lines):
            if not cut:
                number += 1
                if report is not None and not number & 4095:
                    report(self._raw.tell())

            cut = type(line) is CutLine
            yield number, line

    def close(self) -> None:
        """Close the log (a ``GzipFile`` leaves the file it reads open)."""
        self._data.close()
        self._raw.close()


def _is_open(descriptor: int) -> bool:
    try:
        os.fstat(descriptor)
    except OSError:
        return False

    return True


def _kind_of(
    name: str, raw: io.BufferedReader, status: os.stat_result
) -> tuple[bool, int]:
    """Return ``(is_pipe, size)``, refusing what may never end."""
    if stat.S_ISREG(status.st_mode):
        return False, status.st_size

    if stat.S_ISFIFO(status.st_mode) or stat.S_ISSOCK(status.st_mode):
        return True, 0

    what = "a terminal" if raw.isatty() else "a device"
    raise LogFileError(f"{quoted(name)} is not a regular file or a pipe: it is {what}")


def _split_lines(data: io.BufferedIOBase, name: str) -> Iterator[bytes]:
    """
    Yield the lines of ``data`` ending in LF, CRLF or CR, a chunk at a time;
    a line that NUL padding cut short comes as a ``CutLine``.
    """
    # bytes.splitlines() ends lines at exactly these three (str's also at
    # \v, \f, \x1c-\x1e, \x85...), and runs in C: as fast as readline's LF.
    # A line that no chunk ends is held in `start`, up to a little over
    # MAX_LINE_BYTES: past that, the chunks before its end are dropped, and
    # what is left of it (longer than the limit) is yielded as malformed.
    with _reading(name):
        start: list[bytes] = []
        held = 0
        for chunk in _without_padding(data):
            if chunk is _CUT:
                if start:
                    yield CutLine(b"".join(start))
                    start.clear()
                    held = 0

                continue

            if start and start[-1].endswith(b"\r") and not chunk.startswith(b"\n"):
                # The line held ended in a lone CR (no LF came after it).
                yield b"".join(start)
                start.clear()
                held = 0

            if b"\n" not in chunk and b"\r" not in chunk:
                if held <= MAX_LINE_BYTES:
                    start.append(chunk)
                    held += len(chunk)

                continue

            if start:
                start.append(chunk)
                chunk = b"".join(start)
                start.clear()

            lines = chunk.splitlines(keepends=True)
            held = 0
            if not lines[-1].endswith(b"\n"):
                # Not ended yet, or a CR that the next chunk may start with LF.
                start.append(lines.pop())
                held = len(start[0])

            yield from lines

        if start:
            yield b"".join(start)


class CutLine(bytes):
    """A line that NUL padding cut short: the next one is on the same line."""


_CUT = CutLine(b"\0")
"""Where NUL padding cut a line (``_without_padding``; tested by identity)."""


def _without_padding(data: io.BufferedIOBase) -> Iterator[bytes]:
    """
    The chunks of ``data`` without NUL padding (runs of 16 NULs or more, also
    across chunks), and ``_CUT`` where a run cut a line. A run where a line
    starts is just dropped: line numbers stay as written.
    """
    pending = b""  # NULs that end a chunk, too few yet to be padding
    padding = False  # the last chunk ended inside padding
    line_ended = True  # what came so far ends a line
    while chunk := data.read(READ_CHUNK_BYTES):
        if pending:
            chunk, pending = pending + chunk, b""

        if padding:
            chunk = chunk.lstrip(b"\0")
            padding = not chunk
            if not chunk:
                continue

        if b"\0" not in chunk:
            line_ended = chunk[-1:] in _LINE_ENDS
            yield chunk
            continue

        trailing = len(chunk) - len(chunk.rstrip(b"\0"))
        if trailing < _PADDING:
            chunk, pending = (
                chunk[: len(chunk) - trailing],
                chunk[len(chunk) - trailing :],
            )

        at = 0
        for run in _PADDING_RUN.finditer(chunk):
            if run.start() > at:
                line_ended = chunk[run.start() - 1 : run.start()] in _LINE_ENDS
                yield chunk[at : run.start()]

            if not line_ended:
                line_ended = True
                yield _CUT

            at = run.end()

        if at < len(chunk):
            line_ended = chunk[-1:] in _LINE_ENDS
            yield chunk[at:]

        padding = trailing >= _PADDING

    if pending:
        yield pending


_LINE_ENDS = (b"\n", b"\r")


def check_log(path: str | Path) -> None:
    """
    Fail early on a log that cannot be replayed: unreadable, empty, bad gzip.

    Reads its first bytes: a pipe is consumed (``Replay`` probes logs itself).

    Raises:
        LogFileError: saying which file and why.
    """
    reader = LogReader(path)
    with closing(reader):
        if next(iter(reader), None) is None:
            raise LogFileError(f"{quoted(reader.name)} is empty")


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn the errors of reading or decompressing into ``LogFileError``."""
    try:
        yield
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise LogFileError(f"{quoted(name)} is not valid gzip: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise LogFileError(f"cannot read {quoted(name)}: {reason}") from None


def read_lines(
    path: str | Path, on_progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bytes]]:
    """
    Yield ``(line number, line bytes)`` of a log, streaming.

    Args:
        path: The log, plain or gzip, a file or a pipe; ``-`` is standard input.
        on_progress: Called every 4,096 lines with the bytes of the file
            (compressed bytes for gzip) read so far.

    Raises:
        LogFileError: when the file cannot be read or decompressed.
    """
    reader = LogReader(path)
    with closing(reader):
        yield from reader.numbered(on_progress)
