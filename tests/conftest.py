"""Shared pytest configuration for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sliding_window_throttler import throttler
from sliding_window_throttler.storage import memory

pytest_plugins = ["redis_fixtures"]


@pytest.fixture(scope="module", params=["c", "python"])
def hot_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """
    Run a module twice: with the C hot path of ``MemoryStorage`` and with its
    Python twin. (Module-scoped, so hypothesis tests can use it.) Without the
    extension, the ``c`` run fails and says why, unless ``SWT_NO_EXTENSIONS``
    asked for the Python path alone.
    """
    if request.param == "c":
        if memory._DISABLED:
            pytest.skip("SWT_NO_EXTENSIONS is set: the Python path alone")

        if memory._hot_path is None:
            pytest.fail(
                "the C hot path (storage/_hot_path.c) is not built: install a C "
                "compiler and the Python headers, then `make test` again (or set "
                "SWT_NO_EXTENSIONS=1 to test the Python path alone)"
            )

        yield "c"
        return

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memory, "_hot_path", None)
        patch.setattr(throttler, "_decide_hit", throttler.hit_in_python)
        yield "python"
