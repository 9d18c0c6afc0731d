"""Helpers for testing applications that use the throttler."""

from __future__ import annotations

from .core.clock import ManualClock

__all__ = ["ManualClock"]
