"""Throttle definitions and the parsing of durations and rate specs."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import pytest

from sliding_window_throttler import (
    ConfigurationError,
    ManualClock,
    Throttle,
    parse_duration_ms,
    parse_rate,
)

DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("100/minute", (100, 60_000)),
        ("10/5s", (10, 5_000)),
        ("5 per 2 minutes", (5, 120_000)),
        ("1/day", (1, DAY_MS)),
        ("3/500ms", (3, 500)),
        ("2/1.5s", (2, 1_500)),
        ("7 / hour", (7, 3_600_000)),
        ("100/MINUTE", (100, 60_000)),
        ("5 PER 2 MINUTES", (5, 120_000)),
        ("1/w", (1, 7 * DAY_MS)),
        ("1/366d", (1, 366 * DAY_MS)),
        ("1000000/s", (1_000_000, 1_000)),
        ("10/.5s", (10, 500)),  # as durations take ".5s"
    ],
)
def test_parse_rate_returns_limit_and_window_in_ms(
    spec: str, expected: tuple[int, int]
) -> None:
    assert parse_rate(spec) == expected


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        (0, 0),
        (1, 1_000),
        (1.5, 1_500),
        (0.001, 1),
        (timedelta(minutes=1), 60_000),
        (timedelta(milliseconds=1), 1),
        ("500ms", 500),
        ("1.5s", 1_500),
        (" 2 minutes ", 120_000),
        ("90", 90_000),
        ("1h", 3_600_000),
        ("1 week", 7 * DAY_MS),
        (".5s", 500),
        (timedelta(days=366), 366 * DAY_MS),
    ],
)
def test_parse_duration_ms_accepts_seconds_timedelta_and_strings(
    value: int | float | timedelta | str, expected_ms: int
) -> None:
    assert parse_duration_ms(value) == expected_ms


def test_the_same_throttle_can_be_written_four_ways() -> None:
    by_seconds = Throttle("api", 100, 60)
    by_timedelta = Throttle("api", 100, timedelta(minutes=1))
    by_spec = Throttle("api", "100/minute")
    by_duration_text = Throttle("api", 100, "1 minute")

    assert by_seconds == by_timedelta == by_spec == by_duration_text
    assert (by_spec.limit, by_spec.ttl_ms, by_spec.block_duration_ms) == (
        100,
        60_000,
        0,
    )


def test_throttle_exposes_seconds_and_renders_compactly() -> None:
    throttle = Throttle("login", 5, "1.5s", block_duration="15m")

    assert throttle.ttl == 1.5
    assert throttle.block_duration == 900.0
    assert throttle.block_duration_ms == 900_000
    assert str(throttle) == "login: 5/1.5s (block 15m)"
    assert str(Throttle("api", "100/minute")) == "api: 100/1m"


@pytest.mark.parametrize("name", ["a", "api.v2-burst_1", "x" * 64, "A9"])
def test_throttle_accepts_names_of_letters_digits_dot_dash_underscore(
    name: str,
) -> None:
    assert Throttle(name, 1, 1).name == name


# (arguments of Throttle, the field named, text the message must contain)
BAD_THROTTLES: list[tuple[tuple[object, ...], str, str]] = [
    (("x", 0, 1), "limit", "got 0"),
    (("x", "10/0.5ms"), "limit", "window that is not a whole number of milli"),
    (("x", 5, "5s\n"), "ttl", "'5s\\n' is not a duration"),
    (("x", -3, 1), "limit", "-3"),
    (("x", "0/second"), "limit", "got 0"),
    (("x", 1_000_001, 1), "limit", "1,000,001"),
    (("x", "1000001/s"), "limit", "1,000,001"),
    (("x", True, 1), "limit", "True"),
    (("x", 1.5, 1), "limit", "1.5"),
    (("x", math.nan, 1), "limit", "nan"),
    (("x", None, 1), "limit", "None"),
    (("x", "-5/minute"), "limit", "'-5/minute'"),
    (("x", "5/fortnight"), "limit", "'fortnight'"),
    (("x", "often"), "limit", "'often'"),
    (("x", "10/1.5ms"), "limit", "'10/1.5ms'"),
    (("x", 1, 0), "ttl", "got 0"),
    (("x", 1, -1), "ttl", "-1"),
    (("x", 1, "-1s"), "ttl", "'-1s'"),
    (("x", 1, "3 parsecs"), "ttl", "'parsecs'"),
    (("x", 1, math.nan), "ttl", "nan"),
    (("x", 1, math.inf), "ttl", "inf"),
    (("x", 1, "nan"), "ttl", "'nan'"),
    (("x", 1, True), "ttl", "True"),
    (("x", 1, [1]), "ttl", "[1]"),
    (("x", 1, None), "ttl", "limit 1"),
    (("x", 1), "ttl", "limit 1"),
    (("x", 1, 0.0005), "ttl", "0.0005"),
    (("x", 1, "1.5ms"), "ttl", "'1.5ms'"),
    (("x", 1, timedelta(microseconds=1500)), "ttl", "microseconds=1500"),
    (("x", 1, timedelta(days=367)), "ttl", "days=367"),
    (("x", 1, "367 days"), "ttl", "'367 days'"),
    (("x", 1, 10**30), "ttl", str(10**30)),
    (("x", "5/s", 1), "ttl", "ttl=1"),
    (("x", 1, 1, -1), "block_duration", "-1"),
    (("x", 1, 1, math.inf), "block_duration", "inf"),
    (("x", 1, 1, -math.inf), "block_duration", "-inf"),
    (("x", 1, 1, False), "block_duration", "False"),
    (("x", 1, 1, "1e3s"), "block_duration", "'1e3s'"),
    (("x", 1, 1, timedelta(days=400)), "block_duration", "days=400"),
    (("", 1, 1), "name", "''"),
    (("a b", 1, 1), "name", "'a b'"),
    (("a/b", 1, 1), "name", "'a/b'"),
    (("x" * 65, 1, 1), "name", "x" * 65),
    ((5, 1, 1), "name", "5"),
    ((None, 1, 1), "name", "None"),
    (("x", "10/\n5s"), "limit", "'10/\\n5s'"),
    (("x", 1, "1\ns"), "ttl", "'1\\ns'"),
    (("x", 1, 1, "5\ns"), "block_duration", "'5\\ns'"),
]


@pytest.mark.parametrize(("arguments", "field", "shown"), BAD_THROTTLES)
def test_bad_throttle_raises_configuration_error_naming_field_and_value(
    arguments: tuple[object, ...], field: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Throttle(*arguments)  # type: ignore[arg-type]

    assert caught.value.field == field
    assert shown in str(caught.value)
    assert caught.value.context["field"] == field


@pytest.mark.parametrize("spec", ["1/367d", "1/99999999999999999999999d", "1/53w"])
def test_rate_spec_window_longer_than_366_days_is_refused(spec: str) -> None:
    # The 366-day cap of parse_duration_ms must hold for spec windows too.
    with pytest.raises(ConfigurationError) as caught:
        Throttle("x", spec)

    assert caught.value.field == "limit"
    assert spec in str(caught.value)


def test_huge_integer_duration_raises_configuration_error_not_overflow() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Throttle("x", 1, 1, 10**400)

    assert caught.value.field == "block_duration"


@pytest.mark.parametrize("value", [None, 5, b"1/s", ["1/s"]])
def test_parse_rate_refuses_non_strings(value: object) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_rate(value)  # type: ignore[arg-type]

    assert caught.value.field == "rate"
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    "value", [None, b"1s", object, -0.5, math.nan, "1 fortnight", "1.5ms", "", " "]
)
def test_parse_duration_ms_refuses_bad_values_under_the_given_field(
    value: object,
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_duration_ms(value, field="timeout")  # type: ignore[arg-type]

    assert caught.value.field == "timeout"
    assert "timeout" in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "field", "shown"),
    [
        (("x", "10", 3), "limit", "'10'"),
        (("x", 1, "-5s"), "ttl", "must not be negative"),
        (("x", 1, 1, "-1m"), "block_duration", "must not be negative"),
    ],
)
def test_misused_arguments_get_errors_that_say_what_to_do(
    arguments: tuple[object, ...], field: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Throttle(*arguments)  # type: ignore[arg-type]

    assert caught.value.field == field
    assert shown in str(caught.value)


@pytest.mark.parametrize(
    "arguments",
    [
        ("x", 10**5000, 1),
        ("x", 1, 10**5000),
        ("x", 1, 1, 10**5000),
        ("x", "9" * 5000 + "/s"),
    ],
)
def test_integers_too_long_to_print_still_get_a_configuration_error(
    arguments: tuple[object, ...],
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Throttle(*arguments)  # type: ignore[arg-type]

    assert len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ManualClock("x"), "start_ms"),  # type: ignore[arg-type]
        (lambda: ManualClock(math.nan), "start_ms"),
        (lambda: ManualClock().advance(math.inf), "seconds"),
        (lambda: ManualClock().set_ms(True), "ms"),
        (lambda: ManualClock().set_us(1.5j), "us"),  # type: ignore[arg-type]
        (lambda: ManualClock(1e308), "start_ms"),  # finite, but not in microseconds
        (lambda: ManualClock().advance(1e308), "seconds"),
        (lambda: ManualClock().set_us(2**62 + 1), "us"),
        (lambda: ManualClock().set_us(-(10**5000)), "us"),
        (lambda: ManualClock(2**62 // 1000).advance_ms(1), "ms"),
    ],
)
def test_a_manual_clock_refuses_what_is_not_a_finite_number(
    make: Callable[[], object], field: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()

    assert caught.value.field == field


@pytest.mark.parametrize(
    ("clock", "shown"),
    [
        (ManualClock(), "ManualClock(now_ms=0.0)"),
        (ManualClock(1500), "ManualClock(now_ms=1500.0)"),
        (ManualClock(-2.5), "ManualClock(now_ms=-2.5)"),
    ],
)
def test_a_manual_clock_shows_its_time_in_milliseconds(
    clock: ManualClock, shown: str
) -> None:
    assert repr(clock) == shown


def test_a_manual_clock_repr_follows_the_clock() -> None:
    clock = ManualClock(1000)
    clock.advance(0.5)
    clock.set_us(clock.now_us() + 1)

    assert repr(clock) == "ManualClock(now_ms=1500.001)"
