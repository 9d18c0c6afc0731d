"""
The C hot path of the memory storage; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or on PyPy), the install
goes on and the same steps run in Python (storage/memory.py). The project's
own Makefile sets SWT_REQUIRE_EXTENSIONS=1, so that a build error stops the
install instead of leaving the tests to run on the Python path alone.
"""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sliding_window_throttler.storage._hot_path",
            ["src/sliding_window_throttler/storage/_hot_path.c"],
            optional=not os.environ.get("SWT_REQUIRE_EXTENSIONS"),
        )
    ]
)
