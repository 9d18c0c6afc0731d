"""``python -m sliding_window_throttler`` runs the ``swt`` command line."""

from .cli import main

main()
