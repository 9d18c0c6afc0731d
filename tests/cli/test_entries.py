"""From lines to entries: keys, malformed lines, and outliers of the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sliding_window_throttler.cli.entries import EntryReader
from sliding_window_throttler.cli.logfiles import probe_log

from cli_logs import WriteLog, stamped

START = datetime(2015, 5, 17, 10, tzinfo=UTC)
OUTLIER = "outlier: dated over 1d after the lines around it"


def at(client: str, day: int, second: int = 0) -> str:
    """A line ``day`` days and ``second`` seconds after 17/May/2015 10:00 UTC."""
    moment = START + timedelta(days=day, seconds=second)
    return stamped(client, moment.strftime("%d/%b/%Y:%H:%M:%S +0000"))


def replayed(path: Path, **options: int) -> tuple[list[str], EntryReader]:
    reader = EntryReader("ip", **options)
    clients = [entry[2] for entry in reader.entries([probe_log(path)])]
    return clients, reader


def outliers(reader: EntryReader) -> list[tuple[int, str]]:
    return [(m.line, m.reason) for m in reader.examples if m.reason == OUTLIER]


def test_a_lone_line_far_ahead_is_an_outlier_and_not_replayed(
    write_log: WriteLog,
) -> None:
    far = stamped("far", "31/Dec/2099:10:00:00 +0000")
    log = write_log([at("a", 0, 0), at("b", 0, 1), far, at("c", 0, 2), at("d", 0, 3)])

    clients, reader = replayed(log)

    assert clients == ["a", "b", "c", "d"]
    assert (reader.malformed, reader.outliers) == (1, 1)
    assert outliers(reader) == [(3, OUTLIER)]


def test_a_jump_that_the_next_line_confirms_is_replayed(write_log: WriteLog) -> None:
    # A quiet site: nothing for two days, then traffic again.
    log = write_log([at("a", 0), at("b", 0, 5), at("c", 2), at("d", 2, 1), at("e", 2)])

    clients, reader = replayed(log)

    assert clients == ["a", "b", "c", "d", "e"]
    assert (reader.malformed, reader.outliers) == (0, 0)


def test_the_clock_of_the_check_does_not_follow_an_outlier(write_log: WriteLog) -> None:
    # After the outlier on line 2, line 4 is judged against line 3, not it.
    lines = [at("a", 0), at("x", 5), at("b", 0, 1), at("y", 3), at("c", 0, 2)]
    log = write_log(lines)

    clients, reader = replayed(log)

    assert clients == ["a", "b", "c"]
    assert outliers(reader) == [(2, OUTLIER), (4, OUTLIER)]


def test_an_outlier_on_the_first_line_is_caught(write_log: WriteLog) -> None:
    log = write_log([at("x", 30), at("a", 0), at("b", 0, 1), at("c", 0, 2)])

    clients, reader = replayed(log)

    assert clients == ["a", "b", "c"]
    assert outliers(reader) == [(1, OUTLIER)]


def test_a_jump_on_the_last_line_is_an_outlier(write_log: WriteLog) -> None:
    log = write_log([at("a", 0), at("b", 0, 1), at("c", 0, 2), at("x", 9)])

    clients, reader = replayed(log)

    assert clients == ["a", "b", "c"]
    assert outliers(reader) == [(4, OUTLIER)]


def test_junk_between_an_outlier_and_the_next_line_changes_nothing(
    write_log: WriteLog,
) -> None:
    log = write_log([at("a", 0), at("x", 9), "junk", "", at("b", 0, 1)])

    clients, reader = replayed(log)

    assert clients == ["a", "b"]
    assert (reader.malformed, reader.outliers) == (2, 1)


@pytest.mark.parametrize(("skew_ms", "replayed_clients"), [(0, 3), (3_600_000, 2)])
def test_max_skew_sets_how_far_ahead_a_line_may_be(
    write_log: WriteLog, skew_ms: int, replayed_clients: int
) -> None:
    # Two hours ahead: an outlier under a 1 h skew, fine with the check off.
    log = write_log([at("a", 0), at("b", 0, 7_200), at("c", 0, 1)])

    clients, reader = replayed(log, max_skew_ms=skew_ms)

    assert len(clients) == replayed_clients
    assert reader.outliers == 3 - replayed_clients


def test_examples_are_listed_in_line_order_though_outliers_are_known_later(
    write_log: WriteLog,
) -> None:
    # Line 2 is known to be an outlier only at line 8, after the junk.
    junk = [f"junk {n}" for n in range(3, 8)]
    log = write_log([at("a", 0), at("x", 5), *junk, at("b", 0, 1)])

    _, reader = replayed(log)

    assert (reader.malformed, reader.outliers) == (6, 1)
    assert [m.line for m in reader.examples] == [2, 3, 4, 5, 6]


def test_examples_follow_the_order_of_the_logs_replayed(write_log: WriteLog) -> None:
    first = write_log([at("a", 0), "junk", at("b", 0, 1), at("x", 9)], name="1.log")
    second = write_log(["junk", at("c", 1), at("d", 1, 1)], name="2.log")
    reader = EntryReader("ip")

    list(reader.entries([probe_log(first), probe_log(second)]))

    assert [(m.file, m.line) for m in reader.examples] == [
        (str(first), 2),
        (str(first), 4),
        (str(second), 1),
    ]
