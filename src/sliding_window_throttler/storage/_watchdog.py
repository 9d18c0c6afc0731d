"""
Deadlines for asyncio calls, many at a time, on one timer.

``asyncio.timeout`` schedules a timer per call; with dozens of decisions in
flight that costs more than a decision's own Python. A ``Watchdog`` keeps the
deadlines of the tasks it watches and checks them all every few milliseconds
with one timer, cancelling a task whose deadline passed; the task's code turns
that cancellation into a timeout (``release`` says whether it was ours).
Several watchdogs may watch one task (a storage's command, the decision
around it): each takes back only its own cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Watchdog:
    """
    Deadlines for the commands in flight on one event loop, all checked by
    one timer every ``tick`` seconds: ``asyncio.timeout`` schedules a timer
    per command, which with 50 tasks costs more than the command's own
    Python. A deadline fires up to one tick late.
    """

    __slots__ = ("_deadlines", "_expired", "_loop", "_tick", "_timer")

    def __init__(self, *timeouts: float | None) -> None:
        shortest = min((t for t in timeouts if t is not None), default=1.0)
        self._tick = min(0.01, shortest / 5)
        self._deadlines: dict[asyncio.Task[Any], tuple[float, int]] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(
        self,
        loop: asyncio.AbstractEventLoop,
        seconds: float | None,
        task: asyncio.Task[Any] | None = None,
    ) -> asyncio.Task[Any]:
        """
        Cancel the current task ``seconds`` from now (None: never). ``loop``
        is the running loop, always the same one (the storage makes a new
        watchdog for a new loop); ``task``, the current task when the caller
        has it already (from an earlier ``watch``), spares looking it up.
        """
        if task is None:
            task = asyncio.current_task(loop)
            assert task is not None  # an async function always runs in a task

        self._loop = loop
        if seconds is None:
            self._deadlines.pop(task, None)
            return task

        self._deadlines[task] = (loop.time() + seconds, task.cancelling())
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._sweep)

        return task

    def release(self, task: asyncio.Task[Any]) -> bool:
        """
        Stop watching ``task``. True when its deadline passed: the
        cancellation this caused is then taken back, and the caller raises a
        timeout instead. False when it did not, or others cancelled it too.
        """
        watched = self._deadlines.pop(task, None)
        if watched is None or task not in self._expired:
            return False

        self._expired.discard(task)
        return task.uncancel() <= watched[1]

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, (deadline, _) in self._deadlines.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()  # lands at the await the task waits in

        self._timer = None
        if self._deadlines:
            self._timer = self._loop.call_later(self._tick, self._sweep)
