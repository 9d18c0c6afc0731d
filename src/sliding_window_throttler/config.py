"""
Settings from the environment (pydantic-settings).

Every setting is read from ``SWT_<NAME>`` (case-insensitive), and a few also
from the plain names the seed design uses: ``FAILURE_STRATEGY`` and
``REDIS_URL``; ``from_env`` refuses the two names of one setting set to
different values. An empty variable counts as unset. Durations take seconds
(``0.05``) or a unit (``50ms``, ``5s``). For example::

    FAILURE_STRATEGY=local SWT_APP_SERVERS=4 SWT_COMMAND_TIMEOUT=30ms

The timeout defaults are those of ``RedisStorage``; pass
``settings.redis_timeouts()`` to it so that the storage and the recovery layer
agree on how long one command may take.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .core.rate import parse_duration_ms
from .errors import ConfigurationError

FailureStrategyName = Literal["fail-open", "fail-closed", "local"]

_PLAIN_NAMES = ("failure_strategy", "redis_url")
"""Settings also read without the ``SWT_`` prefix, as the seed design names them."""
_SECRET = frozenset({"redis_url"})
"""Settings whose values errors never show (a URL may hold a password)."""

_DURATIONS = (
    "connect_timeout",
    "command_timeout",
    "deadline",
    "breaker_cool_down",
    "lockdown_duration",
)


class ThrottlerSettings(BaseSettings):
    """
    How the throttler talks to Redis and what it does when Redis fails.

    Attributes:
        redis_url: Where Redis is (``REDIS_URL``); None for memory storage.
        failure_strategy: ``fail-open``, ``fail-closed`` or ``local``
            (``FAILURE_STRATEGY``).
        connect_timeout: Seconds to open a connection to Redis.
        command_timeout: Seconds to wait for one Redis reply.
        deadline: Seconds a whole decision may take, retries included.
        retry_attempts: Attempts per decision, the first included (1: none).
        breaker_failure_threshold: Consecutive failed calls to Redis
            (connection failures or timeouts, retries included) that open the
            circuit breaker.
        breaker_cool_down: Seconds the breaker stays open before a probe.
        app_servers: For ``local``: how many app servers split each limit.
        lockdown_duration: Seconds a client is blocked after a security
            violation.
    """

    model_config = SettingsConfigDict(
        env_prefix="SWT_",
        case_sensitive=False,
        extra="ignore",
        env_ignore_empty=True,  # FAILURE_STRATEGY= means unset, not ''
        populate_by_name=True,
        frozen=True,
    )

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SWT_REDIS_URL", "REDIS_URL")
    )
    failure_strategy: FailureStrategyName = Field(
        default="fail-closed",
        validation_alias=AliasChoices("SWT_FAILURE_STRATEGY", "FAILURE_STRATEGY"),
    )
    connect_timeout: float = 0.05
    command_timeout: float = 0.1
    deadline: float = 0.25
    retry_attempts: int = Field(default=2, ge=1, le=10)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_cool_down: float = 5.0
    app_servers: int = Field(default=1, ge=1)
    lockdown_duration: float = 3600.0

    @field_validator(*_DURATIONS, mode="before")
    @classmethod
    def _duration(cls, value: Any, info: Any) -> float:
        seconds = parse_duration_ms(value, field=info.field_name) / 1000
        if seconds <= 0:
            raise ValueError(f"{info.field_name} must be above 0, got {value!r}")

        return seconds

    def redis_timeouts(self) -> dict[str, float]:
        """The timeouts as ``RedisStorage.from_url`` keyword arguments."""
        return {
            "socket_connect_timeout": self.connect_timeout,
            "socket_timeout": self.command_timeout,
        }

    @classmethod
    def from_env(cls, **overrides: Any) -> ThrottlerSettings:
        """
        Read the settings from the environment (``overrides`` win).

        Raises:
            ConfigurationError: naming the first bad setting and its value, or
                both variables of a setting set to different values
                (``FAILURE_STRATEGY`` and ``SWT_FAILURE_STRATEGY``).
        """
        for field in _PLAIN_NAMES:
            if field not in overrides:
                _check_both_names(field)

        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise _configuration_error(exc) from None


def _check_both_names(field: str) -> None:
    """Refuse a setting whose plain and ``SWT_`` variables disagree."""
    # Names are case-insensitive, as pydantic-settings reads them.
    environ = {name.lower(): value for name, value in os.environ.items() if value}
    plain, prefixed = environ.get(field), environ.get(f"swt_{field}")
    if plain is None or prefixed is None or plain == prefixed:
        return

    values = "" if field in _SECRET else f" ({prefixed!r} and {plain!r})"
    raise ConfigurationError(
        field,
        f"setting {field}: SWT_{field.upper()} and {field.upper()} are both set, "
        f"to different values{values}; unset one, or give both the same value",
    )


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    first = exc.errors()[0]
    loc = str(first["loc"][0]) if first["loc"] else "settings"
    field = loc.lower().removeprefix("swt_")
    names = f"SWT_{field.upper()}"
    if field in _PLAIN_NAMES:
        names += f" or {field.upper()}"

    message = first["msg"]
    if "ctx" in first and "error" in first["ctx"]:
        message = str(first["ctx"]["error"])

    given = repr(first.get("input"))
    if given not in message:  # our own checks name the value already
        message += f"; got {given}"

    return ConfigurationError(
        field,
        f"setting {field} (env {names}): {message}",
        context={"errors": exc.error_count()},
    )
