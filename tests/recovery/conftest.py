"""The recovery tests run with none of the throttler's variables set."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SWT_") or name.upper() in (
            "FAILURE_STRATEGY",
            "REDIS_URL",
        ):
            monkeypatch.delenv(name)
