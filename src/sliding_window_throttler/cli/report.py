"""
Rendering a replay's result: a JSON object, or text for people.

The text is made of rich tables. On a terminal they are coloured; piped, rich
writes the same layout without escape codes, at a fixed width of 100 columns,
so the output reads the same in a file or a pager.

Each row of a table is one line: a client longer than ``MAX_CLIENT_CHARS``
(an ``ip+path`` key) loses the middle of its text to an ellipsis, keeping
the address and the end of the path; ``--json`` keeps every key whole.

Text from the logs is shown with its control characters escaped
(``\\x1b``), so that a log cannot drive the terminal that reads the report:
clients and paths are escaped as they are read (``accesslog.decode_field``),
in the JSON too; file names and malformed lines here. So are the characters
that the stream's encoding lacks (``PYTHONIOENCODING=ascii``), and the tables
are then drawn in ASCII. The JSON is exact JSON; file names appear in it as
given.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..core.rate import format_duration_ms
from .accesslog import escape_char
from .replay import Instant, ReplayResult, StorageInfo

PIPED_WIDTH = 100
MAX_CLIENT_CHARS = 48
"""What fits next to the other columns of the throttled table in 100 columns."""
ASCII_SIMPLE_HEAD = box.Box(
    "    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True
)
"""``box.SIMPLE_HEAD`` (one rule under the header) in ASCII."""
_DRAWING = "─…"
"""The characters of the tables that ASCII lacks."""


def iso_time(time_us: int, offset_s: int) -> str:
    """Render epoch microseconds as ISO 8601 in the given UTC offset."""
    zone = UTC if not offset_s else timezone(timedelta(seconds=offset_s))
    moment = datetime.fromtimestamp(time_us / 1_000_000, zone)
    return moment.isoformat(timespec="seconds" if not time_us % 1_000_000 else "auto")


def _instant(instant: Instant | None) -> str | None:
    return None if instant is None else iso_time(instant.time_us, instant.offset_s)


def to_json(result: ReplayResult) -> dict[str, Any]:
    """Return the report as the JSON object ``swt replay --json`` prints."""
    # The busiest windows are fixed buckets as long as the shortest window.
    bucket_us = min(t.ttl_ms for t in result.throttles) * 1000

    return {
        "files": list(result.files),
        "limits": [
            {
                "name": t.name,
                "limit": t.limit,
                "ttl_ms": t.ttl_ms,
                "block_duration_ms": t.block_duration_ms,
            }
            for t in result.throttles
        ],
        "key": result.key,
        "requests": result.requests,
        "admitted": result.admitted,
        "rejected": result.rejected,
        "rejected_percent": result.rejected_percent,
        "clients_seen": result.clients_seen,
        "clients_throttled": result.clients_throttled,
        "late": result.late,
        "malformed": {
            "count": result.malformed,
            "examples": [
                {"file": m.file, "line": m.line, "text": m.text, "reason": m.reason}
                for m in result.malformed_examples
            ],
        },
        "top_throttled": [
            {
                "client": c.client,
                "requests": c.requests,
                "rejected": c.rejected,
                "first_throttled": iso_time(c.first_throttled_us, c.offset_s),
            }
            for c in result.top_throttled
        ],
        "busiest_windows": [
            {
                "start": iso_time(w.start_us, w.offset_s),
                "end": iso_time(w.start_us + bucket_us, w.offset_s),
                "requests": w.requests,
                "rejected": w.rejected,
            }
            for w in result.busiest_windows
        ],
        "span": {"first": _instant(result.first), "last": _instant(result.last)},
        "capacity_refused": result.capacity_refused,
        "storage": _storage_json(result.storage),
        "files_reordered": result.files_reordered,
        "outliers": result.outliers,
    }


def _storage_json(info: StorageInfo) -> dict[str, str]:
    fields = {"kind": info.kind, "topology": info.topology, "prefix": info.prefix}
    return {name: value for name, value in fields.items() if value is not None}


def write_json(result: ReplayResult, stream: TextIO) -> None:
    """Write the report as one JSON object and a newline (ASCII if need be)."""
    report = to_json(result)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if not _encodes(text, _encoding(stream)):
        text = json.dumps(report, indent=2)

    stream.write(text + "\n")


def write_text(result: ReplayResult, stream: TextIO) -> None:
    """
    Write the report as text: a summary, then the ranked tables.

    On a terminal rich colours it and fits it to the window; otherwise it is
    laid out for 100 columns, without escape codes or trailing spaces.
    Either way it holds only characters that ``stream`` can encode.
    """
    charset = _Charset.of(_encoding(stream))
    console = Console(file=stream, highlight=False)
    if console.is_terminal:
        with console.capture() as captured:
            _print_report(console, result, charset)

        stream.write(charset.encodable(captured.get()))
        return

    buffer = io.StringIO()
    plain = Console(file=buffer, width=PIPED_WIDTH, color_system=None, highlight=False)
    _print_report(plain, result, charset)
    text = charset.encodable(buffer.getvalue())
    stream.writelines(line.rstrip() + "\n" for line in text.splitlines())


@dataclass(frozen=True, slots=True)
class _Charset:
    """What a stream can show: box drawing and ``…``, or ASCII stand-ins."""

    encoding: str
    box: box.Box
    ellipsis: str

    @classmethod
    def of(cls, encoding: str) -> _Charset:
        if _encodes(_DRAWING, encoding):
            return cls(encoding, box.SIMPLE_HEAD, "…")

        return cls(encoding, ASCII_SIMPLE_HEAD, "...")

    def text(self, value: str) -> Text:
        """A cell of text from a log: what a terminal would act on escaped."""
        return Text(self.printable(value))

    def printable(self, value: str) -> str:
        """Escape control characters, and those the encoding lacks."""
        if value.isascii() and value.isprintable():
            return value

        return "".join(self._shown(char) for char in value)

    def encodable(self, text: str) -> str:
        """The rendered report, whatever rich added, in characters the stream has."""
        if self.ellipsis != "…":
            text = text.replace("…", self.ellipsis)

        return text.encode(self.encoding, "backslashreplace").decode(self.encoding)

    def _shown(self, char: str) -> str:
        if char.isprintable() and _encodes(char, self.encoding):
            return char

        return self.ellipsis if char == "…" else escape_char(char)


def _encoding(stream: TextIO) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


def _encodes(text: str, encoding: str) -> bool:
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False

    return True


def _print_report(console: Console, result: ReplayResult, charset: _Charset) -> None:
    console.print(_summary(result, charset))
    tables = []
    if result.top_throttled:
        tables.append(_throttled_table(result, charset))

    if result.busiest_windows:
        tables.append(_windows_table(result, charset))

    if result.malformed_examples:
        tables.append(_malformed_table(result, charset))

    for table in tables:
        console.print()
        console.print(table)


def _summary(result: ReplayResult, charset: _Charset) -> Table:
    table = Table(
        box=None,
        show_header=False,
        title="swt replay",
        title_justify="left",
        pad_edge=False,
    )
    table.add_column(style="bold")
    table.add_column()
    for label, value in _summary_rows(result):
        table.add_row(label, charset.text(value))

    return table


def _summary_rows(result: ReplayResult) -> list[tuple[str, str]]:
    span = "-"
    if result.first is not None:
        span = f"{_instant(result.first)} to {_instant(result.last)}"

    limits = ", ".join(str(t) for t in result.throttles)
    window = format_duration_ms(result.reorder_window_ms)
    late = f"older than a line already replayed, past the {window} reorder window"
    files = ", ".join(result.files)
    if result.files_reordered:
        files += " (reordered: oldest first, by when each starts)"

    malformed = f"{result.malformed:,}"
    if result.outliers:
        skew = format_duration_ms(result.max_skew_ms)
        each = "each dated" if result.outliers > 1 else "dated"
        malformed += (
            f" (outliers: {result.outliers:,}, {each} over {skew} after the "
            "lines around it)"
        )

    if len(result.throttles) > 1:
        limits += " (all decided together)"

    rows = [
        ("files", files),
        ("limits", limits),
        ("key", result.key),
        ("storage", _storage_text(result.storage)),
        ("span", span),
        ("requests replayed", f"{result.requests:,}"),
        ("admitted", f"{result.admitted:,}"),
        ("rejected", f"{result.rejected:,} ({result.rejected_percent:.2f}%)"),
        ("clients seen", f"{result.clients_seen:,}"),
        ("clients throttled", f"{result.clients_throttled:,}"),
        ("late lines", f"{result.late:,} ({late})"),
        ("malformed lines", malformed),
    ]
    if result.capacity_refused:
        rows.append(
            ("capacity refused", f"{result.capacity_refused:,} (storage was full)")
        )

    return rows


def _storage_text(info: StorageInfo) -> str:
    if info.kind == "memory":
        return "memory"

    return f"{info.kind} {info.topology}, key prefix {info.prefix}"


def _throttled_table(result: ReplayResult, charset: _Charset) -> Table:
    shown, throttled = len(result.top_throttled), result.clients_throttled
    table = _table(f"top throttled clients ({shown} of {throttled:,})", charset)
    table.add_column(result.key if result.key != "ip" else "client", no_wrap=True)
    table.add_column("rejected", justify="right")
    table.add_column("requests", justify="right")
    table.add_column("first throttled")
    for c in result.top_throttled:
        table.add_row(
            Text(_shorten(charset.printable(c.client), charset.ellipsis)),
            f"{c.rejected:,}",
            f"{c.requests:,}",
            iso_time(c.first_throttled_us, c.offset_s),
        )

    return table


def _windows_table(result: ReplayResult, charset: _Charset) -> Table:
    size = format_duration_ms(min(t.ttl_ms for t in result.throttles))
    table = _table(f"busiest {size} windows (by requests)", charset)
    table.add_column("start")
    table.add_column("requests", justify="right")
    table.add_column("rejected", justify="right")
    for w in result.busiest_windows:
        table.add_row(
            iso_time(w.start_us, w.offset_s), f"{w.requests:,}", f"{w.rejected:,}"
        )

    return table


def _malformed_table(result: ReplayResult, charset: _Charset) -> Table:
    shown = len(result.malformed_examples)
    table = _table(f"malformed lines (first {shown} of {result.malformed:,})", charset)
    table.add_column("file:line", no_wrap=True)
    table.add_column("reason")
    table.add_column("text", overflow="fold")
    for m in result.malformed_examples:
        table.add_row(
            charset.text(f"{m.file}:{m.line}"),
            charset.text(m.reason),
            charset.text(m.text),
        )

    return table


def _table(title: str, charset: _Charset) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=charset.box,
        show_edge=False,
        pad_edge=False,
    )


def _shorten(text: str, ellipsis: str = "…") -> str:
    """Keep the start and the end of ``text``, at most ``MAX_CLIENT_CHARS``."""
    if len(text) <= MAX_CLIENT_CHARS:
        return text

    kept = MAX_CLIENT_CHARS - len(ellipsis)
    tail = kept // 2
    return f"{text[: kept - tail]}{ellipsis}{text[-tail:]}"
