"""Shared pytest configuration for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sliding_window_throttler import throttler
from sliding_window_throttler.storage import memory

pytest_plugins = ["redis_fixtures"]


@contextmanager
def deciding_in(path: str) -> Iterator[str]:
    """
    Decide with the C hot path of ``MemoryStorage`` (``"c"``) or with its
    Python twin, whatever ``SWT_NO_EXTENSIONS`` says. Without the extension,
    ``"c"`` fails and says why: a silent skip would hide a broken build.
    """
    extension = memory._extension
    if path == "c" and extension is None:
        pytest.fail(
            "the C hot path (storage/_hot_path.c) is not built: install a C "
            "compiler and the Python headers, then `make test` again"
        )

    with pytest.MonkeyPatch.context() as patch:
        if path == "c":
            assert extension is not None
            patch.setattr(memory, "_hot_path", extension)
            patch.setattr(throttler, "_decide_hit", extension.plain_hit)
        else:
            patch.setattr(memory, "_hot_path", None)
            patch.setattr(throttler, "_decide_hit", throttler.hit_in_python)

        yield path


@pytest.fixture(scope="module", params=["c", "python"])
def hot_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """
    Run a module twice: on the C hot path of ``MemoryStorage`` and on its
    Python twin. (Module-scoped, so hypothesis tests can use it.)
    """
    with deciding_in(request.param) as path:
        yield path


@pytest.fixture(scope="module")
def c_path() -> Iterator[str]:
    """Run a module on the C hot path (the extension's own tests)."""
    with deciding_in("c") as path:
        yield path
