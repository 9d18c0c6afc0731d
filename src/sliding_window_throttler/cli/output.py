"""
Writing the report to standard output, whatever standard output turns out to be.

- Closed (``>&-``): Python has no ``sys.stdout``; the command says so before
  it replays anything.
- Failing (a full disk, ``> /dev/full``): one line naming the error.
- A pipe whose reader leaves before the whole report is written: the
  command ends quietly with exit code 141, the code a shell reports for a
  tool that SIGPIPE ends (``yes | head -1``), so that ``set -o pipefail``
  sees the cut. Once the whole report is in the pipe (one shorter than the
  pipe holds, 64 KiB on Linux, goes in at once), the command exits 0 however
  little of it the reader takes (``| head -1``), as any Unix tool does.

The report is flushed here, not at exit, so that these errors surface here;
after one, standard output is pointed at ``/dev/null``, so that Python's own
flush at exit has nothing left to fail on (it would print a second error).
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import TextIO

import click

EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE (13), as a shell reports a process that SIGPIPE ended."""


class OutputError(Exception):
    """Standard output cannot take the report: closed, or failing."""


def standard_output() -> TextIO:
    """
    Return ``sys.stdout``.

    Raises:
        OutputError: when the process was started with it closed.
    """
    if sys.stdout is None:
        raise OutputError("cannot write the report: standard output is closed")

    return sys.stdout


def write_report(write: Callable[[TextIO], None], stream: TextIO) -> None:
    """
    Render the report with ``write``, then write it to ``stream`` at once:
    straight to its descriptor, so that a report the pipe can hold goes in
    one write whatever Python's buffering (``PYTHONUNBUFFERED``), and a
    reader that leaves mid-report fails the next write.

    Raises:
        OutputError: when the stream fails (the message says why).
        click.exceptions.Exit: with ``EXIT_BROKEN_PIPE`` when the reader of
            a pipe has gone.
    """
    rendered = _Rendered(stream)
    write(rendered)
    try:
        _write_all(stream, rendered.getvalue())
    except BrokenPipeError:
        _discard(stream)
        raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
    except OSError as exc:
        _discard(stream)
        reason = exc.strerror or exc
        raise OutputError(f"cannot write the report: {reason}") from None


class _Rendered(io.StringIO):
    """A report being rendered for ``stream``: its encoding, its terminal."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()


def _write_all(stream: TextIO, text: str) -> None:
    """
    Write ``text`` to the descriptor of ``stream`` until all of it is in.
    (Python's buffered writer takes a large write that a pipe accepts only in
    part as done, and never says that the reader left.)
    """
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # no descriptor: a stream in memory (tests)
        stream.write(text)
        stream.flush()
        return

    stream.flush()  # what it holds already goes first
    data = memoryview(
        text.encode(_encoding(stream), getattr(stream, "errors", None) or "strict")
    )
    while data:
        data = data[os.write(descriptor, data) :]


def _encoding(stream: TextIO) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


def _discard(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null: what it still buffers goes there."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):  # a stream without a descriptor (in tests)
        pass
