"""The pure half of the Redis storages: keys, arguments, replies, loader, errors."""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
import redis
import redis.asyncio
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from sliding_window_throttler import (
    ConfigurationError,
    KeyGenerationError,
    Outcome,
    RedisConnectionError,
    RedisFunctionError,
    StorageOperationError,
    StorageTimeoutError,
    Throttle,
)
from sliding_window_throttler.recovery.backoff import RetryWithBackoff, is_retry_safe
from sliding_window_throttler.storage._redis_common import (
    CREDENTIALS_SUGGESTION,
    LIBRARY,
    PERMISSIONS_SUGGESTION,
    POOL_SUGGESTION,
    Command,
    Plan,
    PoolLimits,
    RedisCore,
    check_client,
    client_timeouts,
    cluster_url,
    decide_args,
    identifier_tag,
    index_key,
    load_library,
    map_redis_errors,
    parse_decision,
    pool_limits,
    ring_key,
)

API = Throttle("api", 3, 1)
BURST = Throttle("burst", 10, 60, block_duration=5)


def drive(
    plan: Plan[Any], answer: Callable[[Command], Any]
) -> tuple[Any, list[Command]]:
    """Run a plan against a fake server; return its result and the commands."""
    commands: list[Command] = []
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            command = plan.send(reply) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value, commands

        commands.append(command)
        try:
            reply, error = answer(command), None
        except Exception as exc:
            reply, error = None, exc


def decide_reply(
    *records: tuple[int, int, int, int, int, int], now_us: int = 7
) -> list[int]:
    return [now_us, *(value for record in records for value in record)]


ADMIT_REPLY = decide_reply((0, 0, 0, 1_000_000, 1, 0))


# Keys


def test_identifier_tag_is_a_fixed_length_lowercase_base32_digest() -> None:
    tags = {identifier_tag(text) for text in ("a", "b" * 10_000, "ü{}:\n ")}

    assert len(tags) == 3
    assert {len(tag) for tag in tags} == {26}
    assert all(tag.isalnum() and tag == tag.lower() for tag in tags)


def test_identifier_tag_is_the_hex_of_the_first_13_bytes_of_sha256() -> None:
    digest = hashlib.sha256("älice".encode()).digest()

    assert identifier_tag("älice") == digest[:13].hex()


def test_identifier_tag_is_the_sha256_prefix_of_the_utf8_text() -> None:
    digest = hashlib.sha256("älice".encode()).digest()[:16]

    assert identifier_tag("älice") == identifier_tag("älice")
    assert len(digest) == 16
    assert identifier_tag("älice") != identifier_tag("Älice")


def test_lone_surrogates_still_make_a_key() -> None:
    assert len(identifier_tag("\udc80")) == 26


@pytest.mark.parametrize(
    ("left", "right"),
    [("Alice", "alice"), ("a:b", "a_b"), ("a b", "a_b"), ("x}", "x{"), ("1", "1 ")],
)
def test_identifiers_differing_in_one_character_get_different_keys(
    left: str, right: str
) -> None:
    assert index_key("throttle", left) != index_key("throttle", right)


def test_keys_put_the_digest_in_the_hash_tag_and_the_name_last() -> None:
    index = index_key("throttle", "{evil}:key")

    assert index == f"throttle:{{{identifier_tag('{evil}:key')}}}"
    assert ring_key(index, "api") == f"{index}:api"
    assert RedisCore(prefix="app:rl").keys_for("u", [API, BURST]) == [
        index_key("app:rl", "u"),
        ring_key(index_key("app:rl", "u"), "api"),
        ring_key(index_key("app:rl", "u"), "burst"),
    ]


# Settings and validation


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "has space", "x" * 129, 7])
def test_a_prefix_that_could_move_the_hash_tag_is_refused(prefix: Any) -> None:
    with pytest.raises(ConfigurationError, match="prefix") as caught:
        RedisCore(prefix=prefix)

    assert caught.value.field == "prefix"


@pytest.mark.parametrize("size", [0, -1, 1_000_001, 2.5, True, "10"])
def test_max_log_size_must_be_a_sensible_integer(size: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_log_size"):
        RedisCore(max_log_size=size)


def test_enable_redis_functions_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="enable_redis_functions"):
        RedisCore(enable_redis_functions="yes")  # type: ignore[arg-type]


def test_a_limit_above_max_log_size_is_refused_with_the_reason() -> None:
    core = RedisCore(max_log_size=100)
    plan = core.decide("u", [Throttle("big", 101, 60)], 1, None, record=True)

    with pytest.raises(ConfigurationError) as caught:
        drive(plan, lambda command: pytest.fail("no command may be sent"))

    message = str(caught.value)
    assert "max_log_size=100" in message
    assert "one exact entry" in message
    assert "606 bytes" in message
    core.check_throttle(Throttle("ok", 100, 60))


@pytest.mark.parametrize(
    ("identifier", "throttles", "cost", "now_us", "error"),
    [
        ("", [API], 1, None, KeyGenerationError),
        (None, [API], 1, None, KeyGenerationError),
        ("z" * 65_537, [API], 1, None, KeyGenerationError),
        ("u", [], 1, None, ConfigurationError),
        ("u", ["api"], 1, None, ConfigurationError),
        ("u", [API, Throttle("api", 5, 1)], 1, None, ConfigurationError),
        ("u", [API], -1, None, ConfigurationError),
        ("u", [API], 1.0, None, ConfigurationError),
        ("u", [API], True, None, ConfigurationError),
        ("u", [API], 2**52 + 1, None, ConfigurationError),
        ("u", [API], 1, 2**52 + 1, ConfigurationError),
        ("u", [API], 1, 1.5, ConfigurationError),
    ],
)
def test_bad_calls_are_refused_before_any_command(
    identifier: Any, throttles: Any, cost: Any, now_us: Any, error: type[Exception]
) -> None:
    plan = RedisCore().decide(identifier, throttles, cost, now_us, record=True)

    with pytest.raises(error):
        drive(plan, lambda command: pytest.fail("no command may be sent"))


@pytest.mark.parametrize("value", [0, -1, True, "1"])
def test_timeouts_must_be_positive_seconds(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        client_timeouts(0.05, value)


def test_timeouts_may_be_none() -> None:
    assert client_timeouts(None, 0.1) == {
        "socket_connect_timeout": None,
        "socket_timeout": 0.1,
    }


@pytest.mark.parametrize(
    ("url", "plain"),
    [
        ("redis+cluster://h:7000/0", "redis://h:7000/0"),
        ("REDISS+CLUSTER://h:7000", "rediss://h:7000"),
        ("redis://h:6379", None),
        ("unix:///tmp/r.sock", None),
    ],
)
def test_cluster_urls_are_recognised_by_their_scheme(
    url: str, plain: str | None
) -> None:
    assert cluster_url(url) == plain


# The Lua library


def test_the_eval_body_is_the_library_without_shebang_and_registration() -> None:
    body = LIBRARY.decide.body

    assert LIBRARY.source.startswith(f"#!lua name={LIBRARY.name}\n")
    assert not body.startswith("#!")
    assert "register_function" not in body.split("-- Registration")[0]
    assert "redis.register_function(" not in body
    assert body.endswith("\nreturn decide(KEYS, ARGV)\n")
    assert LIBRARY.reset.body.endswith("\nreturn reset(KEYS, ARGV)\n")
    assert LIBRARY.decide.sha == hashlib.sha1(body.encode()).hexdigest()
    assert (LIBRARY.decide.function, LIBRARY.reset.function) == (
        f"{LIBRARY.name}_decide",
        f"{LIBRARY.name}_reset",
    )


def lua_file() -> str:
    return (
        resources.files("sliding_window_throttler.storage")
        .joinpath("lua/throttle.lua")
        .read_text()
    )


def test_the_library_is_named_after_a_digest_of_the_lua_file() -> None:
    text = lua_file()
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]

    assert LIBRARY.name == f"swt_{digest}"
    assert LIBRARY.source.splitlines()[1:-3] == text.splitlines()[1:-3]
    assert LIBRARY.source.splitlines()[-3:] == [
        f"redis.register_function('swt_{digest}_decide', decide)",
        f"redis.register_function{{function_name='swt_{digest}_peek', "
        "callback=peek, flags={'no-writes'}}",
        f"redis.register_function('swt_{digest}_reset', reset)",
    ]
    assert (LIBRARY.decide.fcall, LIBRARY.peek.fcall) == ("FCALL", "FCALL_RO")


def test_any_change_to_the_lua_file_makes_a_new_library() -> None:
    text = lua_file()
    changed = text.replace("local HEADER = 29", "local HEADER = 29 ")

    library = load_library(changed)

    assert changed != text
    assert library.name != LIBRARY.name
    assert library.decide.function != LIBRARY.decide.function
    assert library.decide.sha != LIBRARY.decide.sha
    assert load_library(text) == LIBRARY


def test_a_lua_file_registering_other_names_is_refused() -> None:
    with pytest.raises(RuntimeError, match="register"):
        load_library(lua_file().replace("'swt_reset'", "'other_reset'"))


def test_the_lua_file_states_its_units_at_the_top() -> None:
    head = LIBRARY.source[:2500]

    assert "MICROSECONDS" in head
    assert "MILLISECONDS" in head
    assert "14 significant digits" in head


# Arguments and replies


def test_decide_args_carry_mode_time_cost_and_each_throttle() -> None:
    assert decide_args("hit", None, 2, [API, BURST]) == [
        "hit",
        "",
        2,
        "api",
        3,
        1000,
        0,
        "burst",
        10,
        60_000,
        5000,
    ]
    assert (
        decide_args("peek", 1_700_000_000_123_456, 0, [API])[1] == 1_700_000_000_123_456
    )


def test_a_reply_becomes_records_built_by_the_core() -> None:
    reply = decide_reply(
        (0, 1, 0, 400_000, 0, 0), (1, 10, 5_000_000, 2_500_000, 0, 1), now_us=123
    )

    decision, at = parse_decision(reply, [API, BURST], 1)

    assert at == 123
    assert not decision.allowed
    assert decision.retry_after == 5.0
    api, burst = decision.records
    assert (api.outcome, api.total_hits, api.remaining) == (Outcome.ADMITTED, 2, 2)
    assert (burst.outcome, burst.total_hits, burst.remaining) == (
        Outcome.LIMIT_REACHED,
        11,
        0,
    )
    assert (burst.time_to_expire, burst.time_to_block_expire) == (3, 5)


def test_a_never_wait_becomes_infinity() -> None:
    decision, _ = parse_decision(decide_reply((3, 0, -1, 0, 0, 0)), [API], 4)

    assert decision.records[0].outcome is Outcome.COST_EXCEEDS_LIMIT
    assert math.isinf(decision.retry_after)


@pytest.mark.parametrize(
    "reply", [None, b"x", [1, 2, 3], decide_reply((0, 0, 0, 0, 0, 0))[:-1]]
)
def test_a_malformed_reply_is_a_function_error(reply: Any) -> None:
    with pytest.raises(RedisFunctionError) as caught:
        parse_decision(reply, [API], 1)

    assert caught.value.kind == "execution_failed"


# The loader


def test_a_hit_is_one_fcall_naming_every_key() -> None:
    core = RedisCore()

    result, commands = drive(
        core.decide("u", [API], 1, None, record=True), lambda c: ADMIT_REPLY
    )

    assert result[0].allowed
    [command] = commands
    index = index_key("throttle", "u")
    assert command.args[:5] == (
        "FCALL",
        LIBRARY.decide.function,
        2,
        index,
        f"{index}:api",
    )
    assert command.key == index


def test_a_missing_function_is_loaded_on_the_keys_node_and_the_hit_sent_again() -> None:
    replies: list[Any] = [redis_errors.ResponseError("Function not found")]
    replies.append(LIBRARY.name)
    replies.append(ADMIT_REPLY)

    def answer(command: Command) -> Any:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    result, commands = drive(
        RedisCore().decide("u", [API], 1, None, record=True), answer
    )

    assert result[0].allowed
    assert [c.args[0] for c in commands] == ["FCALL", "FUNCTION", "FCALL"]
    assert commands[1].args == ("FUNCTION", "LOAD", "REPLACE", LIBRARY.source)
    assert commands[1].key == commands[0].key
    assert commands[2] == commands[0]


def test_a_function_still_missing_after_loading_runs_that_call_through_eval() -> None:
    # As where a Cluster slot moves (ASK) to a node without the library: the
    # load reached another node. EVAL carries the code; FCALL stays the way.
    def answer(command: Command) -> Any:
        if command.args[0] == "FCALL":
            raise redis_errors.ResponseError("Function not found")
        return LIBRARY.name if command.args[0] == "FUNCTION" else ADMIT_REPLY

    core = RedisCore()
    result, commands = drive(core.decide("u", [API], 1, None, record=True), answer)

    assert result[0].allowed
    assert [c.args[0] for c in commands] == ["FCALL", "FUNCTION", "FCALL", "EVAL"]
    assert commands[3].args == ("EVAL", LIBRARY.decide.body, *commands[0].args[2:])
    assert commands[3].key == commands[0].key
    assert core.functions


def test_a_refused_function_load_falls_back_to_scripts_then_reports_nopermission() -> (
    None
):
    def answer(command: Command) -> Any:
        if command.args[0] == "FCALL":
            raise redis_errors.ResponseError("Function not found")
        raise redis_errors.NoPermissionError("NOPERM this user has no permissions")

    core = RedisCore()
    commands: list[str] = []

    def recording(command: Command) -> Any:
        commands.append(command.args[0])
        return answer(command)

    with pytest.raises(StorageOperationError) as caught:
        drive(core.decide("u", [API], 1, None, record=True), recording)

    assert commands == ["FCALL", "FUNCTION", "EVALSHA"]
    assert core.functions is False
    assert "NOPERM" in caught.value.message
    assert isinstance(caught.value.__cause__, redis_errors.NoPermissionError)


def test_without_fcall_the_core_switches_to_evalsha_once_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = RedisCore()

    def answer(command: Command) -> Any:
        if command.args[0] == "FCALL":
            raise redis_errors.ResponseError("unknown command 'FCALL', with args ...")
        return ADMIT_REPLY

    with caplog.at_level(logging.WARNING):
        drive(core.decide("u", [API], 1, None, record=True), answer)
        _, commands = drive(core.decide("u", [API], 1, None, record=True), answer)

    assert not core.functions
    assert [c.args[:2] for c in commands] == [("EVALSHA", LIBRARY.decide.sha)]
    assert len([r for r in caplog.records if "EVALSHA" in r.message]) == 1


def test_noscript_sends_the_same_call_as_eval() -> None:
    def answer(command: Command) -> Any:
        if command.args[0] == "EVALSHA":
            raise redis_errors.NoScriptError("No matching script. Please use EVAL.")
        return ADMIT_REPLY

    core = RedisCore(enable_redis_functions=False)
    result, commands = drive(core.decide("u", [API], 1, 5, record=True), answer)

    assert result[0].allowed
    evalsha, eval_ = commands
    assert evalsha.args[0] == "EVALSHA"
    assert eval_.args == ("EVAL", LIBRARY.decide.body, *evalsha.args[2:])


def test_other_error_replies_are_not_retried() -> None:
    def answer(command: Command) -> Any:
        raise redis_errors.ResponseError("SWT bad argument: cost script: ...")

    with pytest.raises(RedisFunctionError) as caught:
        drive(RedisCore().decide("u", [API], 1, None, record=True), answer)

    assert caught.value.kind == "execution_failed"


# The fast path: one command, and a plan only when it fails


def test_the_fast_command_is_the_plans_first_command() -> None:
    core = RedisCore()

    command = core.decide_command("u", (API, BURST), 2, 5, record=False)
    _, commands = drive(
        core.decide("u", [API, BURST], 2, 5, record=False),
        lambda c: decide_reply((0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)),
    )

    assert command == commands[0].args
    # A peek writes nothing: a read-only function, called where writes are not.
    assert command[:3] == ("FCALL_RO", LIBRARY.peek.function, 3)
    assert command[3:] == (
        *core.keys_for("u", [API, BURST]),
        *decide_args("peek", 5, 2, [API, BURST]),
    )


def test_the_fast_command_takes_lists_and_tuples_alike() -> None:
    core = RedisCore()

    assert core.decide_command("u", [API], 1, None, record=True) == (
        core.decide_command("u", (API,), 1, None, record=True)
    )


def test_throttles_met_per_request_do_not_pile_up() -> None:
    core = RedisCore()

    for limit in range(1, 3_000):
        core.decide_command("u", (Throttle("t", limit, 1),), 1, None, record=True)

    assert len(core._prepared) <= 1_024


def test_after_the_switch_the_fast_command_is_evalsha() -> None:
    core = RedisCore()
    core.functions = False

    command = core.decide_command("u", (API,), 1, None, record=True)

    assert command[:3] == ("EVALSHA", LIBRARY.decide.sha, 2)


def failing_then(error: Exception, *replies: Any) -> Callable[[Command], Any]:
    queue = list(replies)

    def answer(command: Command) -> Any:
        reply = queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    return answer


def test_a_failed_fast_call_resumes_by_loading_and_sending_it_again() -> None:
    core = RedisCore()
    command = core.decide_command("u", (API,), 1, None, record=True)
    missing = redis_errors.ResponseError("Function not found")

    reply, commands = drive(
        core.resume(command, missing, record=True),
        failing_then(missing, LIBRARY.name, ADMIT_REPLY),
    )

    assert reply == ADMIT_REPLY
    assert [c.args[0] for c in commands] == ["FUNCTION", "FCALL"]
    assert commands[1].args == command


def test_a_fast_evalsha_without_the_script_resumes_with_eval() -> None:
    core = RedisCore(enable_redis_functions=False)
    command = core.decide_command("u", (API,), 1, None, record=True)
    missing = redis_errors.NoScriptError("No matching script")

    reply, commands = drive(
        core.resume(command, missing, record=True), failing_then(missing, 42)
    )

    assert reply == 42
    assert [c.args for c in commands] == [("EVAL", LIBRARY.decide.body, *command[2:])]


def test_a_fast_call_that_timed_out_is_not_sent_again() -> None:
    core = RedisCore()
    command = core.decide_command("u", (API,), 1, None, record=True)
    timeout = redis_errors.TimeoutError("Timeout reading from socket")

    with pytest.raises(StorageTimeoutError) as caught:
        drive(core.resume(command, timeout, record=True), failing_then(timeout))

    assert caught.value.outcome_unknown
    assert caught.value.context["operation"] == "hit"


def test_a_fast_fcall_on_a_server_without_functions_switches_to_evalsha() -> None:
    core = RedisCore()
    command = core.decide_command("u", (API,), 1, None, record=False)
    unknown = redis_errors.ResponseError("unknown command 'FCALL_RO'")

    reply, commands = drive(
        core.resume(command, unknown, record=False), failing_then(unknown, 7)
    )

    assert reply == 7
    assert not core.functions
    assert [c.args[:2] for c in commands] == [("EVALSHA", LIBRARY.peek.sha)]


# Reset plans


def test_reset_of_named_throttles_deletes_their_rings() -> None:
    _, commands = drive(RedisCore().reset("u", [API, BURST]), lambda c: 2)

    index = index_key("throttle", "u")
    assert [c.args for c in commands] == [("DEL", f"{index}:api", f"{index}:burst")]


def test_reset_of_everything_follows_the_index_until_it_is_complete() -> None:
    replies: list[Any] = [b" api ", b" api burst ", 3]

    _, commands = drive(RedisCore().reset("u", ()), lambda c: replies.pop(0))

    index = index_key("throttle", "u")
    assert [c.args[3:] for c in commands] == [
        (index,),
        (index, f"{index}:api"),
        (index, f"{index}:api", f"{index}:burst"),
    ]
    assert {c.args[1] for c in commands} == {LIBRARY.reset.function}


def test_reset_gives_up_if_the_index_never_settles() -> None:
    with pytest.raises(StorageOperationError, match="reset gave up"):
        drive(RedisCore().reset("u", ()), lambda c: b" api ")


# Error translation


@pytest.mark.parametrize(
    ("raised", "expected", "unknown"),
    [
        (
            redis_errors.TimeoutError("Timeout reading from socket"),
            StorageTimeoutError,
            True,
        ),
        (
            redis_errors.TimeoutError("Timeout connecting to server"),
            StorageTimeoutError,
            False,
        ),
        (
            redis_errors.ConnectionError("Error 111 connecting to h:1. Refused."),
            RedisConnectionError,
            False,
        ),
        (
            redis_errors.ConnectionError("Connection closed by server."),
            RedisConnectionError,
            True,
        ),
        (
            redis_errors.ConnectionError("Error while reading from h:1 : reset"),
            RedisConnectionError,
            True,
        ),
        (
            redis_errors.AuthenticationError("invalid password"),
            StorageOperationError,
            False,
        ),
        (redis_errors.MaxConnectionsError("Too many"), StorageOperationError, False),
        (
            redis_errors.ConnectionError("No connection available."),
            StorageOperationError,
            False,
        ),
        (redis_errors.ClusterError("TTL exhausted."), RedisConnectionError, False),
        (redis_errors.TryAgainError("TRYAGAIN"), RedisConnectionError, False),
        (
            redis_errors.NoPermissionError("NOPERM no permissions to access a key"),
            StorageOperationError,
            False,
        ),
        (
            redis_errors.ResponseError(
                "The user executing the script can't run this command or "
                "subcommand script: swt_0_decide, on @user_function:504."
            ),
            StorageOperationError,
            False,
        ),
        (redis_errors.BusyLoadingError("loading"), RedisConnectionError, False),
        (redis_errors.ClusterDownError("CLUSTERDOWN"), RedisConnectionError, False),
        (redis_errors.RedisClusterException("no node"), RedisConnectionError, False),
        (
            redis_errors.OutOfMemoryError("OOM command not allowed"),
            StorageOperationError,
            False,
        ),
        (redis_errors.ReadOnlyError("READONLY replica"), StorageOperationError, False),
        (
            redis_errors.ResponseError("WRONGTYPE Operation"),
            StorageOperationError,
            False,
        ),
        (
            redis_errors.ResponseError("ERR user_script:1: boom"),
            RedisFunctionError,
            False,
        ),
        (redis_errors.DataError("bad"), StorageOperationError, False),
    ],
)
def test_redis_errors_map_to_the_package_tree(
    raised: Exception, expected: type[Exception], unknown: bool
) -> None:
    with pytest.raises(expected) as caught, map_redis_errors("hit"):
        raise raised

    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised
    assert getattr(caught.value, "outcome_unknown", False) is unknown
    assert caught.value.context["operation"] == "hit"  # type: ignore[attr-defined]


def test_other_exceptions_pass_through() -> None:
    with pytest.raises(KeyError), map_redis_errors("hit"):
        raise KeyError("x")


def test_the_package_imports_without_redis_and_names_the_extra() -> None:
    script = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import sliding_window_throttler\n"
        "from sliding_window_throttler.errors import ConfigurationError\n"
        "try:\n"
        "    from sliding_window_throttler.storage import RedisStorage\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )

    assert "pip install 'sliding-window-throttler[redis]'" in result.stdout


@pytest.mark.parametrize(
    ("raised", "suggestion", "code"),
    [
        (
            redis_errors.AuthenticationError("invalid username-password pair"),
            CREDENTIALS_SUGGESTION,
            "AUTH",
        ),
        (
            redis_errors.NoPermissionError("NOPERM no permissions to access a key"),
            PERMISSIONS_SUGGESTION,
            "NOPERM",
        ),
        (
            redis_errors.ResponseError(
                "The user executing the script can't run this command or "
                "subcommand script: 0a1b, on @user_script:503."
            ),
            PERMISSIONS_SUGGESTION,
            "NOPERM",
        ),
        (
            redis_errors.ConnectionError("No connection available."),
            POOL_SUGGESTION,
            "max_connections",
        ),
    ],
)
def test_refusals_a_retry_cannot_cure_are_never_retried(
    raised: Exception, suggestion: str, code: str
) -> None:
    with pytest.raises(StorageOperationError) as caught, map_redis_errors("hit"):
        raise raised

    error = caught.value
    assert error.get_recovery_suggestion() == suggestion
    assert error.context["redis_error"] == code
    assert error.outcome_unknown is False
    assert error.is_recoverable  # the failure strategy still decides
    assert not RetryWithBackoff().can_recover(error)
    assert not is_retry_safe(error, counts=False)
    assert not is_retry_safe(error, counts=True)


def test_refused_credentials_say_so() -> None:
    with pytest.raises(StorageOperationError) as caught, map_redis_errors("hit"):
        raise redis_errors.AuthenticationError("invalid username-password pair")

    assert caught.value.message == (
        "Redis refused the credentials (deciding a hit): invalid username-password pair"
    )


def test_a_migrating_slot_is_a_connection_error_safe_to_retry() -> None:
    with pytest.raises(RedisConnectionError) as caught, map_redis_errors("hit"):
        raise redis_errors.ClusterError("TTL exhausted.")

    assert caught.value.message == (
        "the Redis Cluster kept redirecting (deciding a hit) until redis-py gave "
        "up (a slot is migrating; the command never ran): TTL exhausted."
    )
    assert is_retry_safe(caught.value, counts=True)


def test_an_exhausted_pool_names_max_connections() -> None:
    with pytest.raises(StorageOperationError) as caught, map_redis_errors("hit"):
        raise redis_errors.MaxConnectionsError("Too many connections")

    assert caught.value.message == (
        "no free Redis connection (deciding a hit): all max_connections of the "
        "pool are in use (nothing was sent)"
    )


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "10"])
def test_max_connections_must_be_a_positive_whole_number(value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        pool_limits(value, 0.5)

    assert caught.value.field == "max_connections"


@pytest.mark.parametrize("value", [0, -1, True, "1"])
def test_pool_timeout_must_be_positive_seconds(value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        pool_limits(10, value)

    assert caught.value.field == "pool_timeout"


def test_pool_limits_default_to_redis_pys_pool_size_and_half_a_second() -> None:
    assert pool_limits(100, 0.5) == PoolLimits()
    assert PoolLimits() == PoolLimits(max_connections=100, timeout=0.5)
    assert pool_limits(3, None).timeout is None


# Clients passed in: none may send a command twice

FACES = [
    pytest.param(redis.Redis, Retry, id="sync"),
    pytest.param(redis.asyncio.Redis, AsyncRetry, id="asyncio"),
]


@pytest.mark.parametrize(
    "options",
    [
        lambda retry: {},  # redis-py 8 retries on connection errors and timeouts
        lambda retry: {"retry": retry(NoBackoff(), 1)},
        lambda retry: {"retry": None, "retry_on_error": [redis_errors.ConnectionError]},
    ],
    ids=["default", "one-retry", "retry-on-error"],
)
@pytest.mark.parametrize(("face", "retry"), FACES)
def test_a_client_that_retries_commands_is_refused(
    face: type, retry: type, options: Callable[[type], dict[str, Any]]
) -> None:
    client = face(port=1, **options(retry))  # connects on first use only

    with pytest.raises(ConfigurationError) as caught:
        check_client(client, redis.cluster.RedisCluster)

    assert caught.value.field == "client"
    assert "retry=Retry(NoBackoff(), 0)" in str(caught.value)
    assert "counted twice" in str(caught.value)


@pytest.mark.parametrize(
    "options",
    [lambda retry: {"retry": retry(NoBackoff(), 0)}, lambda retry: {"retry": None}],
    ids=["no-retries", "none"],
)
@pytest.mark.parametrize(("face", "retry"), FACES)
def test_a_client_without_retries_is_accepted(
    face: type, retry: type, options: Callable[[type], dict[str, Any]]
) -> None:
    check_client(face(port=1, **options(retry)), redis.cluster.RedisCluster)


# Health


def test_a_health_check_pings_then_writes_a_short_lived_key_under_the_prefix() -> None:
    health, commands = drive(RedisCore(prefix="app").health(), lambda c: b"OK")

    assert [c.args for c in commands] == [
        ("PING",),
        ("SET", "app:{health}", "ok", "PX", 1_000),
    ]
    assert {c.key for c in commands} == {"app:{health}"}
    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        True,
        True,
        True,
    )
    assert health.backend == "redis"
    assert health.detail.startswith("Redis answered PING and acknowledged a write in ")


def test_a_health_check_reports_a_refused_write_and_never_raises() -> None:
    def answer(command: Command) -> Any:
        if command.args[0] == "SET":
            raise redis_errors.ReadOnlyError(
                "You can't write against a read only replica."
            )
        return b"PONG"

    health, _ = drive(RedisCore().health(), answer)

    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        False,
        True,
        False,
    )
    assert health.detail == (
        "Redis answered PING but did not acknowledge a write (as under CLIENT "
        "PAUSE WRITE, on a read-only replica or with memory full): Redis refused "
        "(a health check, ReadOnlyError): You can't write against a read only "
        "replica."
    )


def test_a_health_check_without_ping_tries_no_write() -> None:
    def answer(command: Command) -> Any:
        raise redis_errors.ConnectionError("Error 111 connecting to h:1. Refused.")

    health, commands = drive(RedisCore().health(), answer)

    assert [c.args[0] for c in commands] == ["PING"]
    assert (health.healthy, health.answers_ping, health.accepts_writes) == (
        False,
        False,
        False,
    )
    assert health.detail == (
        "Redis did not answer PING: Redis is unreachable (a health check): Error 111 "
        "connecting to h:1. Refused."
    )
