"""The reorder buffer: time order within the window, late lines counted."""

from __future__ import annotations

from collections.abc import Iterator

from sliding_window_throttler.cli.reorder import ReorderBuffer

S = 1_000_000


def entries(*seconds: int) -> list[tuple[int, int, str, int]]:
    return [(s * S, n, f"line {n}", 0) for n, s in enumerate(seconds, 1)]


def released_seconds(buffer: ReorderBuffer, *seconds: int) -> list[int]:
    return [e[0] // S for e in buffer.reorder(entries(*seconds))]


def test_puts_lines_back_in_time_order_within_the_window() -> None:
    buffer = ReorderBuffer(60 * S)

    assert released_seconds(buffer, 3, 1, 2, 0, 59, 5) == [0, 1, 2, 3, 5, 59]
    assert buffer.late == 0


def test_equal_times_keep_their_line_order() -> None:
    buffer = ReorderBuffer(60 * S)

    released = list(buffer.reorder(entries(5, 5, 1, 5)))

    assert [e[1] for e in released] == [3, 1, 2, 4]


def test_counts_and_still_releases_lines_older_than_a_released_one() -> None:
    buffer = ReorderBuffer(5 * S)

    # 0 goes when 10 arrives, 10 when 20 arrives, 12 at once (20 - 12 > 5);
    # then 5 is older than the released 12: late, released at once. 19 and 20
    # wait for the end. 12 itself trailed by 8 s but nothing newer had left.
    assert released_seconds(buffer, 0, 10, 20, 12, 5, 19) == [0, 10, 12, 5, 19, 20]
    assert buffer.late == 1


def test_a_zero_window_releases_as_soon_as_time_moves_on() -> None:
    buffer = ReorderBuffer(0)

    assert released_seconds(buffer, 1, 1, 2, 0, 3) == [1, 1, 0, 2, 3]
    assert buffer.late == 1


def test_holds_no_more_than_one_window_of_lines() -> None:
    buffer = ReorderBuffer(10 * S)
    consumed = 0

    def source() -> Iterator[tuple[int, int, str, int]]:
        nonlocal consumed
        for entry in entries(*range(100_000)):
            consumed += 1
            yield entry

    most_held = 0
    for released, _ in enumerate(buffer.reorder(source()), 1):
        most_held = max(most_held, consumed - released)

    assert consumed == 100_000
    assert most_held <= 12
