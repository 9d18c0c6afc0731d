"""
From the lines of a replay's logs to the requests it decides.

Each line is parsed, keyed (``--key``) and numbered; a line that cannot be
replayed is counted as malformed, with the first few kept as examples.

Within a log, a line dated more than ``max_skew`` after every line before it
is an outlier (a corrupt date, a clock gone wrong for one request) unless the
line after it is past that point too, which means the log really jumped (a
quiet weekend on a small site). An outlier is counted as malformed and never
reaches the reorder buffer, so it cannot move the replay's clock and make the
rest of the log late. The check starts from when the log starts (the median
of its first three parseable lines, see ``logfiles.py``), so it holds for the
first line too; a log's last line cannot be confirmed by a next one and is an
outlier if it jumps.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterator, Sequence
from itertools import count

from ..core.keys import MAX_IDENTIFIER_LENGTH
from ..core.rate import format_duration_ms
from .accesslog import (
    Malformed,
    decode_field,
    parse_fields,
    shorten,
    split_request,
)
from .logfiles import LogFile


def _by_ip(client: str, request: bytes) -> str:
    return client


# Decoded as the client is (``decode_field``): distinct bytes are distinct keys.
def _by_ip_and_path(client: str, request: bytes) -> str:
    return f"{client} {split_request(decode_field(request))[1]}"


def _by_ip_and_method(client: str, request: bytes) -> str:
    return f"{client} {split_request(decode_field(request))[0]}"


KEYS: dict[str, Callable[[str, bytes], str]] = {
    "ip": _by_ip,
    "ip+path": _by_ip_and_path,
    "ip+method": _by_ip_and_method,
}
"""How a client and request line become the identifier throttled."""

DEFAULT_MAX_SKEW_MS = 86_400_000
NO_CEILING_US = 2**62
"""The outlier check's skew when it is off: beyond any replayable time."""
MALFORMED_EXAMPLES = 5

Entry = tuple[int, int, str, int]
"""``(time_us, sequence, identifier, offset_s)`` of one request to replay."""


class EntryReader:
    """
    Read logs into entries, counting what cannot be replayed.

    Args:
        key: ``ip``, ``ip+path`` or ``ip+method`` (checked by the caller).
        max_skew_ms: How far a line may be dated after the lines before it
            in its log, unless the next line is too; 0 turns the check off.
        on_progress: Called now and then with the bytes read from all logs.

    Attributes:
        malformed: Lines not replayed, outliers included; blank ones are not
            counted.
        outliers: Of those, the lines dated too far ahead of their log.
        examples: The first ``MALFORMED_EXAMPLES`` malformed lines, in the
            order of the logs replayed and of their lines.
    """

    def __init__(
        self,
        key: str,
        max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.max_skew_ms = max_skew_ms
        self.malformed = self.outliers = 0
        # (log index, line number, example), sorted: an outlier is known
        # only at the next parseable line, after the junk lines between.
        self._examples: list[tuple[int, int, Malformed]] = []
        self._log_index = 0
        self._identify = KEYS[key]
        self._on_progress = on_progress

    @property
    def examples(self) -> list[Malformed]:
        """The first ``MALFORMED_EXAMPLES`` malformed lines, in log order."""
        return [example for *_, example in self._examples]

    def entries(self, logs: Sequence[LogFile]) -> Iterator[Entry]:
        """Yield the requests of ``logs``, one log after the other."""
        sequence = count(1)
        done = 0
        for self._log_index, log in enumerate(logs):
            yield from self._entries_of(log, sequence, self._progress_from(done))
            done += log.size

    def _entries_of(
        self,
        log: LogFile,
        sequence: Iterator[int],
        progress: Callable[[int], None] | None,
    ) -> Iterator[Entry]:
        # The hot loop. A line past `ceiling` (max_skew after the newest line
        # of this log so far) is held until the next parseable line says
        # whether the log jumped (it is past the ceiling too) or the held line
        # is an outlier.
        identify, name = self._identify, log.name
        skew_us = self.max_skew_ms * 1000 or NO_CEILING_US
        newest = log.start_us
        ceiling = newest + skew_us
        held: tuple[int, bytes, Entry] | None = None
        for number, raw in log.numbered(progress):
            fields = parse_fields(raw)
            if isinstance(fields, str):
                self._count_malformed(name, number, raw, fields)
                continue

            client, time_us, offset_s, request, _ = fields
            identifier = identify(client, request)
            if len(identifier) > MAX_IDENTIFIER_LENGTH:
                identifier = _fit(identifier)

            entry = (time_us, next(sequence), identifier, offset_s)
            if time_us > ceiling or held is not None:
                if held is None:
                    held = number, raw, entry
                    continue

                if time_us > ceiling:
                    yield held[2]
                    newest = max(newest, held[2][0])
                    ceiling = newest + skew_us
                else:
                    self._count_outlier(name, held[0], held[1])

                held = None

            if time_us > newest:
                newest, ceiling = time_us, time_us + skew_us

            yield entry

        if held is not None:
            self._count_outlier(name, held[0], held[1])

    def _progress_from(self, done: int) -> Callable[[int], None] | None:
        report = self._on_progress
        if report is None:
            return None

        return lambda position: report(done + position)

    def _count_malformed(self, name: str, number: int, raw: bytes, reason: str) -> None:
        if not raw.strip():
            return  # blank lines are not requests, nor mistakes

        self.malformed += 1
        examples, place = self._examples, (self._log_index, number)
        if len(examples) == MALFORMED_EXAMPLES and place > examples[-1][:2]:
            return

        example = Malformed(name, number, shorten(raw), reason)
        bisect.insort(examples, (*place, example), key=lambda item: item[:2])
        del examples[MALFORMED_EXAMPLES:]

    def _count_outlier(self, name: str, number: int, raw: bytes) -> None:
        self.outliers += 1
        skew = format_duration_ms(self.max_skew_ms)
        reason = f"outlier: dated over {skew} after the lines around it"
        self._count_malformed(name, number, raw, reason)


def _fit(identifier: str) -> str:
    # Limitation: a key longer than the throttler accepts (a path of more than
    # 64 KiB) keeps its first 60,000 characters and a digest of the whole, so
    # distinct long paths stay distinct keys.
    digest = hashlib.sha256(identifier.encode("utf-8", "replace")).hexdigest()
    return f"{identifier[:60_000]}#{digest}"
