"""The ``swt`` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="sliding-window-throttler", prog_name="swt")
def cli() -> None:
    """Sliding-window throttler tools."""


def main() -> None:
    """Entry point of the ``swt`` script."""
    cli()
