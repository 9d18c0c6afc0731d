"""
Opening the logs of a replay, each once, and when each starts.

Rotated logs come newest first from a shell glob (``access.log
access.log.1``); replayed in that order, every line of the older file would
be late, decided at the newer file's time. So every log is probed for when it
starts, and ``Replay`` replays them oldest first. A log starts at the median
time of its first three parseable lines (the later of two), so that one bogus
date on its first line moves neither its place nor the clock of its outlier
check (``entries.py``).

A regular file is probed, closed, and opened again to be replayed: one is
open at a time however many are given. A pipe (a FIFO, ``/dev/stdin``,
``<(zcat a.gz)``) can be read only once: it stays open, and the lines read to
probe it are kept for the replay, at most ``MAX_READ_AHEAD_BYTES`` of them.

One file given twice (``a.log ./a.log``, a link to it, ``- /dev/stdin``) would
count every line twice: it is refused, by device and inode, as it is opened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

from .accesslog import LogFileError, LogReader, parse_fields, quoted

PROBED_LINES = 3
MAX_READ_AHEAD_BYTES = 16 * 1024 * 1024
"""The most a pipe is read ahead to find its start; past it, it is refused."""


class LogFile:
    """
    A probed log: when it starts, and its lines from the first.

    Attributes:
        path: Where it is read from.
        name: As given, for messages and reports.
        start_us: The median time of its first three parseable lines (the
            later of two, if it has two), epoch microseconds.
        size: Its size on disk; 0 for a pipe.
        is_pipe: True for a pipe, which only one replay can read.
    """

    def __init__(
        self,
        path: str,
        start_us: int,
        size: int,
        pipe: LogReader | None = None,
        read_ahead: list[bytes] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.path = path
        self.name = name if name is not None else str(path)
        self.start_us = start_us
        self.size = size
        self.is_pipe = pipe is not None
        self._pipe = pipe
        self._read_ahead = read_ahead or []

    def numbered(
        self, on_progress: Callable[[int], None] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """
        Yield ``(line number, line)`` from line 1: a file is read again, a pipe
        goes on from where the probe stopped (and can be replayed only once).

        Raises:
            LogFileError: when the file cannot be read, or the pipe was replayed.
        """
        if not self.is_pipe:
            with closing(LogReader(self.path, name=self.name)) as reader:
                yield from reader.numbered(on_progress)
            return

        pipe, read_ahead = self._pipe, self._read_ahead
        if pipe is None:
            raise LogFileError(f"{quoted(self.name)} is a pipe, and was read already")

        self._pipe, self._read_ahead = None, []
        with closing(pipe):
            yield from pipe.numbered(None, read_ahead)

    def close(self) -> None:
        """Close a pipe not replayed; nothing to do for a file."""
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None


def probe_log(path: str | Path) -> LogFile:
    """
    Open a log and find when it starts; ``-`` is standard input.

    Raises:
        LogFileError: when it cannot be read, is empty, has no parseable line,
            or is a pipe whose first 16 MiB hold none.
    """
    return _probe(LogReader(path))


def _probe(reader: LogReader) -> LogFile:
    """Find when the log of ``reader`` starts; close it unless it is a pipe."""
    try:
        times, read_ahead = _first_times(reader)
    except BaseException:
        reader.close()
        raise

    # Of two times, the later: a line is an outlier only when most say so.
    start_us = sorted(times)[len(times) // 2]
    if not reader.is_pipe:
        reader.close()
        return LogFile(reader.path, start_us, reader.size, name=reader.name)

    return LogFile(reader.path, start_us, 0, reader, read_ahead, name=reader.name)


def _first_times(reader: LogReader) -> tuple[list[int], list[bytes]]:
    """The times of the first parseable lines, and the lines read for them."""
    times: list[int] = []
    kept: list[bytes] = []
    kept_bytes, first_problem = 0, ""
    number = 0
    for number, raw in enumerate(reader, 1):
        if reader.is_pipe:
            kept.append(raw)
            kept_bytes += len(raw)

        fields = parse_fields(raw)
        if not isinstance(fields, str):
            times.append(fields[1])
            if len(times) == PROBED_LINES:
                break
        elif not first_problem and raw.strip():
            first_problem = f"line {number}: {fields}"

        if kept_bytes > MAX_READ_AHEAD_BYTES:
            if times:
                break

            raise LogFileError(
                f"{quoted(reader.name)} has no parseable line in its first "
                f"{MAX_READ_AHEAD_BYTES // 2**20} MiB ({first_problem})"
            )

    if not times:
        raise LogFileError(_unusable(quoted(reader.name), number, first_problem))

    return times, kept


def _unusable(shown: str, lines: int, first_problem: str) -> str:
    if not lines:
        return f"{shown} is empty"

    if not first_problem:
        return f"{shown} has no log lines (only blank ones)"

    return (
        f"{shown} has no parseable line in common or combined log format "
        f"({first_problem})"
    )


@contextmanager
def opened_logs(logs: Iterable[str | Path | LogFile]) -> Iterator[list[LogFile]]:
    """
    Probe each path, in the order given; a ``LogFile`` passes as it is.

    The logs probed here are closed on the way out, those passed in are not.

    Raises:
        LogFileError: for the first log that cannot be replayed, or one that
            is a file given before (checked before reading it).
    """
    with ExitStack() as stack:
        opened = []
        seen: dict[tuple[int, int], str] = {}
        for log in logs:
            if not isinstance(log, LogFile):
                reader = LogReader(log)
                _check_once(reader, seen)
                log = stack.enter_context(closing(_probe(reader)))

            opened.append(log)

        yield opened


def _check_once(reader: LogReader, seen: dict[tuple[int, int], str]) -> None:
    """Refuse (and close) a reader of a file that ``seen`` holds already."""
    first = seen.get(reader.identity)
    if first is not None:
        reader.close()
        raise LogFileError(
            f"{quoted(first)} and {quoted(reader.name)} are the same file; "
            "give each log once"
        )

    seen[reader.identity] = reader.name
