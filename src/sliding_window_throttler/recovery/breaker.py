"""
A circuit breaker: a small state machine fed ``now``.

After ``failure_threshold`` consecutive failed calls the breaker opens and
callers stop waiting on the storage: they go straight to the failure strategy.
Each call counts, so a retry that fails counts as one more failure: with two
attempts per decision, a threshold of 5 opens during the third decision. After
``cool_down`` it lets exactly one caller through as a probe (half-open); the
probe's success closes it, its failure opens it for another cool-down.

Only the probe's own report can end an outage. ``allow()`` hands the probe a
ticket (``Permit.probe``) and the caller reports with it; a call that began
before the breaker opened is stale, and its late answer, success or failure,
changes nothing while the breaker is not closed (otherwise one slow command
returning after the breaker opened would close it and skip the cool-down). A
probe that ends with neither answer (its caller got another error, or was
cancelled) is ``release``d, and the next caller probes.

The breaker does no I/O, reads no clock and logs nothing: callers pass the
time in and log the transitions it returns. That keeps it one object for the
sync and the async storage, testable with a ``ManualClock``. The libraries
looked at first (pybreaker, purgatory, aiobreaker) each missed something we
need: pybreaker holds its lock for the whole guarded call (every decision would
queue behind one slow Redis command) and does async only through Tornado;
purgatory lets every concurrent request through while half-open (a herd on a
Redis that is just coming back) and reads the wall clock; aiobreaker is async
only and unmaintained since 2021. None takes an injected clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from ..core.rate import Duration, parse_duration_ms
from ..errors import ConfigurationError, shown

US_PER_MS = 1_000


class BreakerState(StrEnum):
    """Where a circuit breaker is."""

    CLOSED = "closed"
    """Calls go to the storage; failures are counted."""
    OPEN = "open"
    """Calls skip the storage until the cool-down ends."""
    HALF_OPEN = "half-open"
    """One probe call is in flight; the others skip the storage."""


# Module constants: an enum member read through its class costs as much as
# the rest of a breaker check.
_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, for the caller to log."""

    old: BreakerState
    new: BreakerState
    failures: int
    """Consecutive failures when it happened."""


class Permit(NamedTuple):
    """
    What ``CircuitBreaker.allow`` says about one call.

    Attributes:
        allowed: The call may go to the storage.
        probe: Not 0 when the call is the half-open probe: pass it to
            ``record_success``, ``record_failure`` or ``release``.
        transition: Not None when this call moved the breaker to half-open.
    """

    allowed: bool
    probe: int
    transition: Transition | None


_CALL = Permit(True, 0, None)
_REFUSED = Permit(False, 0, None)


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """
    A snapshot of a circuit breaker.

    Attributes:
        state: Where it is.
        consecutive_failures: Failures since the last success.
        opened_total: How many times it opened (from closed).
        retry_after: Seconds until the next probe may run (0 unless open).
    """

    state: BreakerState
    consecutive_failures: int
    opened_total: int
    retry_after: float


class CircuitBreaker:
    """
    Stop calling a failing storage for a while; probe it once to come back.

    Thread-safe: each method holds a lock for a few comparisons, never across
    the guarded call. Times are microseconds of any monotonic clock, the same
    for every call (``Clock.now_us()``).

    Args:
        failure_threshold: Consecutive failed calls (retries included) that
            open the breaker.
        cool_down: How long it stays open before a probe (seconds, a
            ``timedelta`` or a duration string such as ``"5s"``).

    Raises:
        ConfigurationError: for a threshold below 1 or an empty cool-down.
    """

    def __init__(self, failure_threshold: int = 5, cool_down: Duration = 5.0) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(
            failure_threshold, int
        ):
            raise ConfigurationError(
                "failure_threshold",
                f"failure_threshold must be an integer, got {shown(failure_threshold)}",
            )

        if failure_threshold < 1:
            raise ConfigurationError(
                "failure_threshold",
                f"failure_threshold must be at least 1, got {shown(failure_threshold)}",
            )

        cool_down_ms = parse_duration_ms(cool_down, field="cool_down")
        if cool_down_ms < 1:
            raise ConfigurationError(
                "cool_down", f"cool_down must be at least 1 ms, got {shown(cool_down)}"
            )

        self.failure_threshold = failure_threshold
        self.cool_down_us = cool_down_ms * US_PER_MS
        self._lock = threading.Lock()
        self._state = _CLOSED
        self._failures = 0
        self._opened_total = 0
        self._open_until = 0
        self._probes = 0
        self._probe = 0  # the ticket of the probe in flight; 0 when none is
        self._probe_since = 0

    @property
    def state(self) -> BreakerState:
        """Where the breaker is now (a probe may move it at any time)."""
        return self._state

    def allow(self, now_us: int) -> Permit:
        """
        Say whether a call may go to the storage now.

        When the cool-down is over, the first caller becomes the probe (the
        breaker goes half-open) and is allowed with a ticket; everyone else is
        refused until the probe reports. A probe that never reports (its
        caller died) is replaced after another cool-down.
        """
        state = self._state
        if state is _CLOSED:
            return _CALL

        if state is _OPEN and now_us < self._open_until:
            # Read without the lock: at worst a caller that could have been
            # the probe is refused, and the next one probes.
            return _REFUSED

        return self._allow_slowly(now_us)

    def _allow_slowly(self, now_us: int) -> Permit:
        with self._lock:
            state = self._state
            if state is _CLOSED:
                return _CALL

            if state is _OPEN:
                if now_us < self._open_until:
                    return _REFUSED

                self._state = _HALF_OPEN
                transition = Transition(_OPEN, _HALF_OPEN, self._failures)
                return Permit(True, self._new_probe(now_us), transition)

            if self._probe and now_us - self._probe_since < self.cool_down_us:
                return _REFUSED

            return Permit(True, self._new_probe(now_us), None)

    def _new_probe(self, now_us: int) -> int:
        self._probes += 1
        self._probe = self._probes
        self._probe_since = now_us
        return self._probe

    def record_success(self, probe: int = 0) -> Transition | None:
        """
        Report that the storage answered.

        Args:
            probe: The ticket ``allow()`` gave, when the call was the probe.

        Returns:
            The transition to closed, when this was the probe's answer.
        """
        if self._state is _CLOSED and not self._failures:
            return None

        with self._lock:
            if self._state is _CLOSED:
                self._failures = 0
                return None

            if not probe or probe != self._probe:
                return None  # stale: the call began before the breaker opened

            self._state = _CLOSED
            self._failures = 0
            self._probe = 0
            return Transition(_HALF_OPEN, _CLOSED, 0)

    def record_failure(self, now_us: int, probe: int = 0) -> Transition | None:
        """
        Report that the storage could not be reached.

        Args:
            now_us: When the failure was seen.
            probe: The ticket ``allow()`` gave, when the call was the probe.

        Returns:
            The transition to open, when this failure caused one.
        """
        with self._lock:
            old = self._state
            if old is _CLOSED:
                self._failures += 1
                if self._failures < self.failure_threshold:
                    return None

                self._opened_total += 1
            elif not probe or probe != self._probe:
                return None  # stale: the breaker is already open
            else:
                self._failures += 1

            self._state = _OPEN
            self._open_until = now_us + self.cool_down_us
            self._probe = 0
            return Transition(old, _OPEN, self._failures)

    def release(self, probe: int) -> None:
        """
        Give up a probe that got no answer either way (another error, or its
        caller was cancelled): the next caller probes at once.
        """
        with self._lock:
            if probe and probe == self._probe:
                self._probe = 0

    def retry_after(self, now_us: int) -> float:
        """Seconds until a probe may run (0 unless open)."""
        if self._state is not _OPEN:
            return 0.0

        return max(0, self._open_until - now_us) / 1_000_000

    def stats(self, now_us: int) -> BreakerStats:
        """Return a snapshot of the breaker."""
        with self._lock:
            return BreakerStats(
                self._state,
                self._failures,
                self._opened_total,
                self.retry_after(now_us),
            )

    def reset(self) -> None:
        """Close the breaker and forget the failures (an operator's override)."""
        with self._lock:
            self._state = _CLOSED
            self._failures = 0
            self._probe = 0
