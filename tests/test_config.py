"""Settings from the environment."""

from __future__ import annotations

import os

import pytest

from sliding_window_throttler.config import ThrottlerSettings
from sliding_window_throttler.errors import ConfigurationError

_NAMES = (
    "FAILURE_STRATEGY",
    "REDIS_URL",
    "SWT_FAILURE_STRATEGY",
    "SWT_REDIS_URL",
    "SWT_COMMAND_TIMEOUT",
    "SWT_CONNECT_TIMEOUT",
    "SWT_DEADLINE",
    "SWT_RETRY_ATTEMPTS",
    "SWT_BREAKER_FAILURE_THRESHOLD",
    "SWT_BREAKER_COOL_DOWN",
    "SWT_APP_SERVERS",
    "SWT_LOCKDOWN_DURATION",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper() in _NAMES:
            monkeypatch.delenv(name)


def test_defaults_are_tight_and_fail_closed() -> None:
    settings = ThrottlerSettings.from_env()

    assert settings.failure_strategy == "fail-closed"
    assert settings.connect_timeout == 0.05
    assert settings.command_timeout == 0.1
    assert settings.deadline == 0.25
    assert settings.redis_timeouts() == {
        "socket_connect_timeout": 0.05,
        "socket_timeout": 0.1,
    }
    assert settings.breaker_failure_threshold == 5
    assert settings.breaker_cool_down == 5.0
    assert settings.app_servers == 1
    assert settings.redis_url is None


@pytest.mark.parametrize("name", ["FAILURE_STRATEGY", "SWT_FAILURE_STRATEGY"])
def test_failure_strategy_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "fail-open")

    assert ThrottlerSettings.from_env().failure_strategy == "fail-open"


def test_durations_take_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWT_COMMAND_TIMEOUT", "30ms")
    monkeypatch.setenv("SWT_BREAKER_COOL_DOWN", "2")
    monkeypatch.setenv("SWT_LOCKDOWN_DURATION", "1h")

    settings = ThrottlerSettings.from_env()

    assert settings.command_timeout == 0.03
    assert settings.breaker_cool_down == 2.0
    assert settings.lockdown_duration == 3600.0


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-open")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")

    settings = ThrottlerSettings.from_env(failure_strategy="local", app_servers=3)

    assert settings.failure_strategy == "local"
    assert settings.app_servers == 3
    assert settings.redis_url == "redis://cache:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("FAILURE_STRATEGY", "fail-sometimes", "failure_strategy"),
        ("SWT_COMMAND_TIMEOUT", "0", "command_timeout"),
        ("SWT_DEADLINE", "soon", "deadline"),
        ("SWT_APP_SERVERS", "0", "app_servers"),
        ("SWT_BREAKER_FAILURE_THRESHOLD", "many", "breaker_failure_threshold"),
    ],
)
def test_bad_settings_are_configuration_errors_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError) as info:
        ThrottlerSettings.from_env()

    assert info.value.field == field
    assert info.value.message.count(repr(value)) == 1  # named once, not twice


def test_an_override_skips_the_bad_variable_it_replaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The facades rely on this: an explicit argument's variable is not checked.
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-sometimes")
    monkeypatch.setenv("SWT_DEADLINE", "soon")

    settings = ThrottlerSettings.from_env(failure_strategy="local", deadline="1s")

    assert (settings.failure_strategy, settings.deadline) == ("local", 1.0)


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = ThrottlerSettings.from_env()
    for name in _NAMES:
        monkeypatch.setenv(name, "")

    assert ThrottlerSettings.from_env() == defaults


def test_an_empty_variable_leaves_its_twin_to_decide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWT_FAILURE_STRATEGY", "")
    monkeypatch.setenv("FAILURE_STRATEGY", "local")
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("SWT_REDIS_URL", "redis://cache:6379/0")

    settings = ThrottlerSettings.from_env()

    assert (settings.failure_strategy, settings.redis_url) == (
        "local",
        "redis://cache:6379/0",
    )


@pytest.mark.parametrize(
    ("plain", "prefixed", "field", "message"),
    [
        (
            ("FAILURE_STRATEGY", "fail-open"),
            ("SWT_FAILURE_STRATEGY", "local"),
            "failure_strategy",
            "setting failure_strategy: SWT_FAILURE_STRATEGY and FAILURE_STRATEGY "
            "are both set, to different values ('local' and 'fail-open'); unset "
            "one, or give both the same value",
        ),
        (
            ("REDIS_URL", "redis://:secret@a:6379"),
            ("swt_redis_url", "redis://:secret@b:6379"),
            "redis_url",
            "setting redis_url: SWT_REDIS_URL and REDIS_URL are both set, to "
            "different values; unset one, or give both the same value",
        ),
    ],
)
def test_twin_variables_that_disagree_are_refused(
    monkeypatch: pytest.MonkeyPatch,
    plain: tuple[str, str],
    prefixed: tuple[str, str],
    field: str,
    message: str,
) -> None:
    monkeypatch.setenv(*plain)
    monkeypatch.setenv(*prefixed)

    with pytest.raises(ConfigurationError) as info:
        ThrottlerSettings.from_env()

    assert (info.value.field, info.value.message) == (field, message)


def test_twin_variables_that_agree_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "local")
    monkeypatch.setenv("SWT_FAILURE_STRATEGY", "local")

    assert ThrottlerSettings.from_env().failure_strategy == "local"


def test_an_override_skips_twin_variables_that_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAILURE_STRATEGY", "fail-open")
    monkeypatch.setenv("SWT_FAILURE_STRATEGY", "local")

    settings = ThrottlerSettings.from_env(failure_strategy="fail-closed")

    assert settings.failure_strategy == "fail-closed"
