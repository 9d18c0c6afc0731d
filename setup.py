"""
The C hot path of the memory storage; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or on PyPy), the install
goes on and the same steps run in Python (storage/memory.py). With
SWT_REQUIRE_EXTENSIONS=1 (the project's Makefile sets it) a build error stops
the install instead, so that the tests never run on the Python path alone
by accident.
"""

import os

from setuptools import Extension, setup

required = os.environ.get("SWT_REQUIRE_EXTENSIONS", "").strip().lower()
if required not in ("", "0", "false", "no", "off", "1", "true", "yes", "on"):
    raise SystemExit(
        "SWT_REQUIRE_EXTENSIONS must be 1, true, yes, on or 0, false, no, off; "
        f"got {required!r}"
    )

setup(
    ext_modules=[
        Extension(
            "sliding_window_throttler.storage._hot_path",
            ["src/sliding_window_throttler/storage/_hot_path.c"],
            optional=required in ("", "0", "false", "no", "off"),
        )
    ]
)
