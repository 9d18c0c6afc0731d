"""
Putting log lines back in time order before they are replayed.

Servers write a line when the response ends, so a slow response is logged
after quicker ones that started later. The buffer holds lines in a heap keyed
by ``(time, sequence)`` and releases a line once the newest time seen is more
than the window ahead of it, so memory is bounded by the lines of one window,
not by the file. A line older than one already released is late: it is still
released (at once), and counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import TypeVar

Entry = TypeVar("Entry", bound=tuple[int, int, object, object])
"""``(time_us, sequence, ...)``; the sequence is unique, so ties never compare
the rest of the tuple."""


class ReorderBuffer:
    """
    Release entries in time order, waiting up to ``window_us`` for stragglers.

    Args:
        window_us: How far (microseconds) a line may trail the newest line seen
            and still be put in its place; 0 releases every line at once.

    Attributes:
        late: Entries that arrived after a newer one had been released.
    """

    __slots__ = ("late", "window_us")

    def __init__(self, window_us: int) -> None:
        self.window_us = window_us
        self.late = 0

    def reorder(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        """Yield ``entries`` in time order, as far as the window allows."""
        heap: list[Entry] = []
        push, pop = heapq.heappush, heapq.heappop
        window = self.window_us
        newest = released = -(2**63)
        for entry in entries:
            time_us = entry[0]
            if time_us < released:
                self.late += 1
            elif time_us > newest:
                newest = time_us

            push(heap, entry)
            horizon = newest - window
            while heap[0][0] < horizon:
                ready = pop(heap)
                if ready[0] > released:
                    released = ready[0]

                yield ready

        while heap:
            yield pop(heap)
