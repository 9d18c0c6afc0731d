"""Storages: where the hits of each (identifier, throttle) pair live."""

from .base import AsyncStorage, Storage
from .memory import AsyncMemoryStorage, MemoryStats, MemoryStorage, OverflowPolicy

__all__ = [
    "AsyncMemoryStorage",
    "AsyncStorage",
    "MemoryStats",
    "MemoryStorage",
    "OverflowPolicy",
    "Storage",
]
