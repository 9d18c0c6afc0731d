"""Probing logs: when each starts, pipes read once, logs that cannot be replayed."""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from pathlib import Path

import pytest

from sliding_window_throttler.cli import logfiles
from sliding_window_throttler.cli.accesslog import LogFileError
from sliding_window_throttler.cli.logfiles import opened_logs, probe_log

from cli_logs import T0, WriteLog, clf

US = 1_000_000


def test_a_log_starts_at_the_median_of_its_first_three_parseable_lines(
    write_log: WriteLog,
) -> None:
    bogus = clf("a", 0).replace("2015", "2099")
    log = write_log(["junk", bogus, "", clf("a", 7), clf("a", 3), clf("a", 1)])

    probed = probe_log(log)

    assert (probed.start_us, probed.size, probed.is_pipe) == (
        (T0 + 7) * US,
        log.stat().st_size,
        False,
    )


@pytest.mark.parametrize(
    ("seconds", "start"), [((5,), 5), ((9, 2), 9), ((4, 8), 8), ((6, 1, 3), 3)]
)
def test_a_short_log_starts_at_its_later_line_of_two(
    write_log: WriteLog, seconds: tuple[int, ...], start: int
) -> None:
    log = write_log([clf("a", s) for s in seconds])

    assert probe_log(log).start_us == (T0 + start) * US


def test_a_file_is_read_again_from_line_1(write_log: WriteLog) -> None:
    log = write_log([clf("a", 0), "junk", clf("a", 1)])
    probed = probe_log(log)

    first, second = list(probed.numbered()), list(probed.numbered())

    assert [n for n, _ in first] == [1, 2, 3]
    assert first == second


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], r"^'.*empty.log' is empty$"),
        (["", " ", "\t"], r"^'.*empty.log' has no log lines \(only blank ones\)$"),
        (
            ["", "junk", clf("a", 0).replace("May", "Mai")],
            r"^'.*empty.log' has no parseable line in common or combined log format "
            r"\(line 2: not a log line: no fields after the client\)$",
        ),
    ],
)
def test_refuses_a_log_without_one_parseable_line(
    write_log: WriteLog, lines: list[str], message: str
) -> None:
    log = write_log(lines, name="empty.log")

    with pytest.raises(LogFileError, match=message):
        probe_log(log)


def feed(fifo: Path, data: bytes) -> threading.Thread:
    """Write ``data`` to a named pipe from a thread (opening it blocks)."""

    def write() -> None:
        # A reader that gives up early (a refused log) closes the pipe.
        with suppress(BrokenPipeError), fifo.open("wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")


@needs_fifo
def test_a_pipe_is_read_once_its_probed_lines_kept(tmp_path: Path) -> None:
    fifo = tmp_path / "live.log"
    os.mkfifo(fifo)
    lines = ["junk", clf("a", 5), clf("b", 1), clf("c", 2), clf("d", 3)]
    writer = feed(fifo, "\n".join(lines).encode())

    with opened_logs([fifo]) as (probed,):
        writer.join(timeout=10)
        read = [(n, raw.decode().split()[0]) for n, raw in probed.numbered()]
        with pytest.raises(LogFileError, match="is a pipe, and was read already"):
            list(probed.numbered())

    assert (probed.is_pipe, probed.size, probed.start_us) == (True, 0, (T0 + 2) * US)
    assert read == [(1, "junk"), (2, "a"), (3, "b"), (4, "c"), (5, "d")]


@needs_fifo
def test_a_pipe_without_a_parseable_line_in_its_read_ahead_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfiles, "MAX_READ_AHEAD_BYTES", 2**20)
    fifo = tmp_path / "junk.log"
    os.mkfifo(fifo)
    writer = feed(fifo, b"junk\n" * 400_000)

    with pytest.raises(
        LogFileError,
        match=r"^'.*junk.log' has no parseable line in its first 1 MiB "
        r"\(line 1: not a log line: no fields after the client\)$",
    ):
        probe_log(fifo)

    writer.join(timeout=10)
