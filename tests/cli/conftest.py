"""Fixtures of the command line tests: hand-made logs and the bundled one."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import pytest

from cli_logs import WriteLog, clf


@pytest.fixture
def write_log(tmp_path: Path) -> WriteLog:
    """Write lines (str or bytes) to a log, gzip-compressed if asked."""

    def write(
        lines: Sequence[str | bytes], name: str = "access.log", compress: bool = False
    ) -> Path:
        data = b"".join(
            (line.encode() if isinstance(line, str) else line) + b"\n" for line in lines
        )
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if compress else data)
        return path

    return write


@pytest.fixture
def small_log(write_log: WriteLog) -> Path:
    """
    Two clients, slightly out of order as servers write them.

    Under 3/10s, 10.0.0.1 is admitted at :00 :01 :02, refused at :03 :04, and
    admitted again at :11 (the :00 hit has left the window); 2001:db8::1 is
    admitted twice.
    """
    return write_log(
        [
            clf("10.0.0.1", 1),
            clf("10.0.0.1", 0),
            clf("2001:db8::1", 2, "POST /login?next=/ HTTP/1.1"),
            clf("10.0.0.1", 3, "GET /b HTTP/1.1"),
            clf("10.0.0.1", 2, "GET /a HTTP/1.1"),
            clf("10.0.0.1", 4),
            clf("2001:db8::1", 5, "GET /login HTTP/1.1"),
            clf("10.0.0.1", 11),
        ]
    )
