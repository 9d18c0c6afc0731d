"""Writing the report: at once, to whatever standard output turns out to be."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import click
import pytest

from sliding_window_throttler.cli import output
from sliding_window_throttler.cli.output import EXIT_BROKEN_PIPE, write_report

REPORT = "".join(f"line {n}\n" for n in range(200))  # 1.9 KB


@dataclass
class Pipe:
    read_end: int
    stream: TextIO
    """The write end, as an unbuffered text stream (``PYTHONUNBUFFERED``)."""

    def close_reader(self) -> None:
        os.close(self.read_end)
        self.read_end = -1


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    read_end, write_end = os.pipe()
    raw = open(write_end, "wb", buffering=0)  # noqa: SIM115 (closed below)
    made = Pipe(read_end, io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    yield made
    with contextlib.suppress(OSError):  # the command may have discarded it
        made.stream.close()

    if made.read_end >= 0:
        os.close(made.read_end)


def test_a_report_goes_to_the_descriptor_in_one_write(
    pipe: Pipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Written line by line through an unbuffered stream, a reader that takes
    # one line and leaves could cut it.
    real_write = os.write
    writes: list[int] = []

    def counted(descriptor: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(descriptor, data)

    monkeypatch.setattr(output.os, "write", counted)

    write_report(lambda s: s.writelines(REPORT.splitlines(keepends=True)), pipe.stream)

    assert writes == [len(REPORT)]
    assert os.read(pipe.read_end, 65536).decode() == REPORT


def test_a_pipe_without_reader_ends_the_command_with_141(pipe: Pipe) -> None:
    pipe.close_reader()

    with pytest.raises(click.exceptions.Exit) as caught:
        write_report(lambda s: s.write(REPORT), pipe.stream)

    assert caught.value.exit_code == EXIT_BROKEN_PIPE


def test_a_stream_in_memory_gets_the_report_as_text() -> None:
    stream = io.StringIO()

    write_report(lambda s: s.write(REPORT), stream)

    assert stream.getvalue() == REPORT
