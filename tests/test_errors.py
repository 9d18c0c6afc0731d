"""The error tree: codes, severities, recoverability, suggestions, and the docs."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import pytest

from sliding_window_throttler.core.decision import Outcome, make_decision
from sliding_window_throttler.errors import (
    ConfigurationError,
    ErrorSeverity,
    KeyGenerationError,
    RateLimitExceededError,
    RedisConnectionError,
    RedisFunctionError,
    SecurityViolationError,
    StorageError,
    StorageOperationError,
    StorageTimeoutError,
    StorageUnavailableError,
    ThrottlerError,
    ThrottlerErrorCode,
    is_recoverable_error,
    is_throttler_error,
)
from sliding_window_throttler.recovery import (
    ErrorRecoveryManager,
    FailClosed,
    RecoveryContext,
)

Code = ThrottlerErrorCode
ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "errors.md"

# code: (an error of that code, its class, severity, recoverable, a phrase of
# its suggestion that only fits that error)
CASES: dict[Code, tuple[ThrottlerError, type[ThrottlerError], ErrorSeverity, bool, str]]
CASES = {
    Code.CONFIGURATION_INVALID: (
        ConfigurationError("deadline", "deadline must be above 0"),
        ConfigurationError,
        ErrorSeverity.HIGH,
        False,
        "Correct the named setting",
    ),
    Code.KEY_GENERATION_FAILED: (
        KeyGenerationError("identifier must be a string"),
        KeyGenerationError,
        ErrorSeverity.MEDIUM,
        False,
        "non-empty string identifier",
    ),
    Code.STORAGE_ERROR: (
        StorageError("the backend failed"),
        StorageError,
        ErrorSeverity.HIGH,
        True,
        "Check the storage backend",
    ),
    Code.REDIS_CONNECTION_FAILED: (
        RedisConnectionError("Connection refused"),
        RedisConnectionError,
        ErrorSeverity.CRITICAL,
        True,
        "reachable at the configured address",
    ),
    Code.REDIS_TIMEOUT: (
        StorageTimeoutError("no reply in 100 ms"),
        StorageTimeoutError,
        ErrorSeverity.HIGH,
        True,
        "SLOWLOG, CLIENT PAUSE",
    ),
    Code.REDIS_FUNCTION_NOT_SUPPORTED: (
        RedisFunctionError("unknown command 'FCALL'", "not_supported"),
        RedisFunctionError,
        ErrorSeverity.HIGH,
        True,
        "EVALSHA",
    ),
    Code.REDIS_FUNCTION_LOAD_FAILED: (
        RedisFunctionError("Function not found", "load_failed"),
        RedisFunctionError,
        ErrorSeverity.HIGH,
        True,
        "FUNCTION LOAD / SCRIPT LOAD",
    ),
    Code.REDIS_FUNCTION_EXECUTION_FAILED: (
        RedisFunctionError("bad reply"),
        RedisFunctionError,
        ErrorSeverity.HIGH,
        False,
        "report it",
    ),
    Code.STORAGE_OPERATION_FAILED: (
        StorageOperationError("OOM command not allowed"),
        StorageOperationError,
        ErrorSeverity.HIGH,
        True,
        "raise maxmemory",
    ),
    Code.STORAGE_UNAVAILABLE: (
        StorageUnavailableError("circuit open", retry_after=2.5),
        StorageUnavailableError,
        ErrorSeverity.HIGH,
        True,
        "503 with Retry-After",
    ),
    Code.RATE_LIMIT_EXCEEDED: (
        RateLimitExceededError("refused", 10, 11, 2.5),
        RateLimitExceededError,
        ErrorSeverity.LOW,
        False,
        "Wait retry_after seconds",
    ),
    Code.SECURITY_VIOLATION: (
        SecurityViolationError("burst of failed logins", "rate_abuse"),
        SecurityViolationError,
        ErrorSeverity.HIGH,
        True,
        "security log",
    ),
}


def test_every_code_has_a_case() -> None:
    assert set(CASES) == set(ThrottlerErrorCode)


@pytest.mark.parametrize("code", list(ThrottlerErrorCode))
def test_each_code_has_its_class_severity_and_recoverability(code: Code) -> None:
    error, cls, severity, recoverable, _ = CASES[code]

    assert type(error) is cls
    assert error.code == code
    assert error.severity is severity
    assert error.is_recoverable is recoverable
    assert is_throttler_error(error)
    assert is_recoverable_error(error) is recoverable


@pytest.mark.parametrize("code", list(ThrottlerErrorCode))
def test_each_suggestion_is_specific_to_its_error(code: Code) -> None:
    error, _, _, _, phrase = CASES[code]

    suggestion = error.get_recovery_suggestion()

    assert phrase in suggestion
    assert suggestion != ThrottlerError.suggestion
    others = [e.get_recovery_suggestion() for c, (e, *_) in CASES.items() if c != code]
    assert suggestion not in others


def test_the_tree_follows_what_the_caller_can_do() -> None:
    assert issubclass(StorageTimeoutError, RedisConnectionError)
    for cls in (
        RedisConnectionError,
        StorageUnavailableError,
        RedisFunctionError,
        StorageOperationError,
    ):
        assert issubclass(cls, StorageError)

    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(KeyGenerationError, ValueError)
    assert not issubclass(RateLimitExceededError, StorageError)


def test_predicates_refuse_what_is_not_ours() -> None:
    for other in (ValueError("x"), KeyError("x"), None, "REDIS_TIMEOUT", 42):
        assert not is_throttler_error(other)
        assert not is_recoverable_error(other)


def test_recoverability_can_be_overridden_per_error() -> None:
    fatal = ThrottlerError("Non-recoverable error", "TEST_ERROR", False)
    retryable = ThrottlerError("try again", "TEST_ERROR", True)

    assert fatal.code == "TEST_ERROR"
    assert fatal.severity is ErrorSeverity.MEDIUM
    assert (is_recoverable_error(fatal), is_recoverable_error(retryable)) == (
        False,
        True,
    )


def test_rate_limit_exceeded_carries_its_numbers() -> None:
    error = RateLimitExceededError(
        "too many", 100, 101, 12.5, context={"throttle": "api"}
    )

    assert (error.limit, error.current, error.retry_after) == (100, 101, 12.5)
    assert error.message == "too many"
    assert str(error) == "too many"
    assert error.context == {
        "limit": 100,
        "current": 101,
        "retry_after": 12.5,
        "throttle": "api",
    }


def test_fields_are_also_in_the_context() -> None:
    unavailable = StorageUnavailableError("down", retry_after=3.0, strategy="x")
    violation = SecurityViolationError("abuse", "rate_abuse")
    config = ConfigurationError("deadline", "bad")
    timeout = StorageTimeoutError("slow", outcome_unknown=False)
    function = RedisFunctionError("gone", "load_failed")

    assert unavailable.context == {"retry_after": 3.0, "strategy": "x"}
    assert (unavailable.retry_after, unavailable.strategy) == (3.0, "x")
    assert violation.context == {"violation_type": "rate_abuse"}
    assert config.context == {"field": "deadline"}
    assert config.field == "deadline"
    assert (timeout.outcome_unknown, timeout.context) == (
        False,
        {"outcome_unknown": False},
    )
    assert StorageTimeoutError("slow").outcome_unknown is True
    assert (function.kind, function.context) == ("load_failed", {"kind": "load_failed"})


def test_an_unknown_function_error_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown RedisFunctionError kind"):
        RedisFunctionError("x", "exploded")


def test_the_cause_is_kept_through_recovery() -> None:
    original = ConnectionRefusedError(111, "Connection refused")
    try:
        raise RedisConnectionError("unreachable") from original
    except RedisConnectionError as exc:
        error = exc

    with pytest.raises(StorageUnavailableError) as refused:
        FailClosed().recover(error, RecoveryContext())

    fatal = RedisFunctionError("bad reply")
    fatal.__cause__ = original
    with pytest.raises(RedisFunctionError) as unchanged:
        ErrorRecoveryManager([FailClosed()]).recover(fatal)

    assert error.__cause__ is original
    assert refused.value.__cause__ is error
    assert unchanged.value is fatal
    assert unchanged.value.__cause__ is original


# docs/errors.md lists every code.


def documented_codes() -> dict[str, tuple[str, str]]:
    """Code -> (class cell, recoverable cell) from the "Every code" table."""
    text = ERRORS_MD.read_text(encoding="utf-8")
    section = text.split("## Every code", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([A-Z_]+)`", cells[0]) if cells else None
        if match:
            rows[match.group(1)] = (cells[1], cells[3].strip("*"))

    return rows


def test_docs_have_a_row_for_every_code_and_no_other() -> None:
    assert sorted(documented_codes()) == sorted(c.value for c in ThrottlerErrorCode)


@pytest.mark.parametrize("code", list(ThrottlerErrorCode))
def test_each_row_names_the_class_and_its_recoverability(code: Code) -> None:
    error, cls, _, recoverable, _ = CASES[code]
    class_cell, recoverable_cell = documented_codes()[code.value]

    assert re.match(rf"`{cls.__name__}\b", class_cell)
    if isinstance(error, RedisFunctionError):
        assert f'kind="{error.kind}"' in class_cell

    assert recoverable_cell == ("yes" if recoverable else "no")


def test_every_error_copies_and_pickles_with_its_fields() -> None:
    refused = make_decision(
        (("api", 5, Outcome.LIMIT_REACHED, 5, 1, 2_000_000, 2_000_000, False, False),),
        False,
        2.0,
    )
    errors = [
        RateLimitExceededError("refused", 5, 6, 2.0, decision=refused),
        ConfigurationError("limit", "limit must be at least 1, got 0"),
        SecurityViolationError("too many logins", "brute_force"),
        StorageOperationError("OOM", context={"redis_error": "OOM"}, suggestion="x"),
    ]

    for error in errors:
        for copied in (
            copy.copy(error),
            copy.deepcopy(error),
            pickle.loads(pickle.dumps(error)),
        ):
            assert type(copied) is type(error)
            assert vars(copied) == vars(error)
            assert copied.args == error.args

    restored = pickle.loads(pickle.dumps(errors[0]))
    assert restored.decision.limiting.name == "api"
