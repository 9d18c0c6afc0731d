"""
The ``swt`` command line.

Every error a user can cause (a bad option, a missing or corrupt file, an
output that cannot take the report) is one line on stderr, ``swt: error:
...``, and exit code 2; Ctrl-C exits with 130. A pipe whose reader leaves
before the whole report is written ends the command quietly with 141; once
the whole report is in the pipe, it exits 0 however little of it is read
(``output.py``). No traceback reaches the user for any.

Option errors read ``--option must ..., got 'as typed'`` or ``--option 'as
typed' is not ...``: click's own wording (``Invalid value for ...``) is not
used for the options checked here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import IO, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from ..core.rate import parse_duration_ms
from ..errors import (
    ConfigurationError,
    RedisConnectionError,
    StorageTimeoutError,
    ThrottlerError,
)
from .accesslog import LogFileError
from .entries import KEYS
from .logfiles import LogFile, opened_logs
from .output import OutputError, standard_output, write_report
from .replay import Replay, make_throttles
from .report import write_json, write_text
from .storage import cluster_redirect, open_storage, redis_target

PROGRESS_MIN_BYTES = 4 * 1024 * 1024
"""Smaller inputs replay in well under a second: no progress bar for them."""
REDIS_PROGRESS_MIN_BYTES = 64 * 1024
"""Through Redis, a round trip a line, 64 KiB of gzip log take about a second."""
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_WHOLE_NUMBER = re.compile(r"\s*([+-]?)([0-9]+)\s*")
_CLIENT_REPR = re.compile(r"<redis\.\S*\(.*\)>")
"""A redis-py object's repr, as some redis-py errors quote it: a page long."""


class CommandError(click.ClickException):
    """An error shown as one line, ``swt: error: <message>``; exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        """Write the one line to stderr."""
        click.echo(f"swt: error: {self.format_message()}", err=True)


class CommandInterrupted(CommandError):
    """Ctrl-C: one line and exit code 130, as shells expect after SIGINT."""

    exit_code = EXIT_INTERRUPTED


class _OneLineErrors(click.Group):
    """A group whose usage errors and interrupts are one line, not a page."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _one_line_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as exc:
        raise CommandError(exc.format_message()) from None
    except KeyboardInterrupt:
        raise CommandInterrupted("interrupted") from None


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="sliding-window-throttler", prog_name="swt")
def cli() -> None:
    """Sliding-window throttler tools."""


def _option(param: click.Parameter) -> str:
    return f"--{param.name}".replace("_", "-")


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    if value is None:
        return 0

    try:
        return parse_duration_ms(value, field=_option(param))
    except ConfigurationError as exc:
        # Not BadParameter, which would say "Invalid value for" the option too.
        raise click.UsageError(exc.message) from None


def _count(ctx: click.Context, param: click.Parameter, value: str) -> int:
    match = _WHOLE_NUMBER.fullmatch(value)
    if match is None:
        raise click.UsageError(
            f"{_option(param)} must be a whole number such as 10, got {value!r}"
        )

    sign, digits = match[1], match[2].lstrip("0")
    if sign == "-" or not digits:
        raise click.UsageError(f"{_option(param)} must be at least 1, got {value!r}")

    # int() refuses over 4,300 digits; no log has 10**18 clients anyway.
    return int(digits) if len(digits) <= 18 else 10**18


@cli.command("replay")
@click.argument("logs", metavar="LOG...", nargs=-1, required=True)
@click.option(
    "--limit",
    "limits",
    metavar="SPEC",
    multiple=True,
    help="A throttle such as 20/10s or 60/minute; repeat for several.",
)
@click.option(
    "--block",
    metavar="DURATION",
    help="Refuse a client that overflows a window for this long (30s, 5m, 90).",
)
@click.option(
    "--key",
    type=click.Choice(list(KEYS)),
    default="ip",
    show_default=True,
    help="What one client is.",
)
@click.option(
    "--reorder-window",
    metavar="DURATION",
    default="60s",
    show_default=True,
    callback=_duration,
    help="How long to wait for lines logged out of order.",
)
@click.option(
    "--max-skew",
    metavar="DURATION",
    default="1d",
    show_default=True,
    callback=_duration,
    help="A line dated this much after the lines before it in its log, and "
    "not followed by one as far ahead, is an outlier: counted as malformed, "
    "not replayed. 0 turns the check off.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--top",
    metavar="N",
    default="10",
    show_default=True,
    callback=_count,
    help="How many clients and windows to rank.",
)
@click.option(
    "--redis-url",
    metavar="URL",
    help="Replay through the Redis at URL (redis://, rediss://, unix://, or "
    "redis+cluster:// for a Cluster) instead of memory, under keys of this run "
    "alone.",
)
@click.option(
    "--redis-cluster",
    is_flag=True,
    help="Treat --redis-url as one node of a Redis Cluster.",
)
@click.option(
    "--redis-sentinel",
    "redis_sentinels",
    metavar="HOST:PORT",
    multiple=True,
    help="Replay through the master that this Sentinel names (port 26379 if "
    "left out); repeat for several. Needs --redis-service.",
)
@click.option(
    "--redis-service",
    metavar="NAME",
    help="The master's name in the Sentinel configuration.",
)
@click.option(
    "--redis-timeout",
    metavar="DURATION",
    default="5s",
    show_default=True,
    callback=_duration,
    help="How long to wait for Redis to connect, and to answer each hit.",
)
def replay_command(
    logs: tuple[str, ...],
    limits: tuple[str, ...],
    block: str | None,
    key: str,
    reorder_window: int,
    max_skew: int,
    as_json: bool,
    top: int,
    redis_url: str | None,
    redis_cluster: bool,
    redis_sentinels: tuple[str, ...],
    redis_service: str | None,
    redis_timeout: int,
) -> None:
    """
    Replay access logs through the throttler on their logged time.

    Reads Apache/Nginx common or combined logs, plain or gzip, files or
    pipes (- is standard input), one after the other (oldest first, whatever
    the order given), and reports what the given limits would have admitted
    and refused, deciding in memory or, with --redis-url or --redis-sentinel,
    in Redis.
    """
    try:
        throttles = make_throttles(limits, block)
        target = redis_target(
            redis_url,
            redis_cluster,
            redis_sentinels,
            redis_service,
            redis_timeout,
            throttles,
        )
        stdout = standard_output()
    except ConfigurationError as exc:
        raise click.UsageError(exc.message) from None
    except OutputError as exc:
        raise CommandError(str(exc)) from None

    min_bytes = PROGRESS_MIN_BYTES if target is None else REDIS_PROGRESS_MIN_BYTES
    try:
        # Logs first: a missing file says so before Redis is even reached.
        with (
            opened_logs(logs) as opened,
            open_storage(target) as storage,
            _progress_bar(opened, min_bytes) as on_progress,
        ):
            replay = Replay(
                opened,
                throttles,
                key=key,
                reorder_window_ms=reorder_window,
                max_skew_ms=max_skew,
                top=top,
                on_progress=on_progress,
                storage=storage.redis,
                storage_info=storage.info,
            )
            try:
                result = replay.run()
            except (RedisConnectionError, StorageTimeoutError):
                raise  # a Redis that does not answer: its keys expire on their own
            except BaseException:
                storage.forget(replay.identifiers(), throttles)  # never raises
                raise

            storage.forget(replay.identifiers(), throttles)
    except LogFileError as exc:
        raise CommandError(str(exc)) from None
    except ThrottlerError as exc:
        raise _storage_failure(exc) from None

    write = write_json if as_json else write_text
    try:
        write_report(partial(write, result), stdout)
    except OutputError as exc:
        raise CommandError(str(exc)) from None


def _storage_failure(exc: ThrottlerError) -> CommandError:
    """One line for a Redis failure: unreachable, refused, no redis extra..."""
    redirect = cluster_redirect(exc)
    if redirect is not None:
        return CommandError(
            f"the Redis at --redis-url is a Cluster node (it answered {redirect}): "
            "give --redis-url redis+cluster://host:port, or add --redis-cluster"
        )

    # Some quote a server reply over several lines, or a client's repr.
    message = _CLIENT_REPR.sub("<redis client>", exc.message)
    return CommandError(" ".join(message.split()))


@contextmanager
def _progress_bar(
    logs: Sequence[LogFile], min_bytes: int
) -> Iterator[Callable[[int], None] | None]:
    """Yield a progress callback for ``min_bytes`` or more on a terminal, else None."""
    total = sum(log.size for log in logs)
    console = Console(stderr=True)
    if total < min_bytes or not console.is_terminal:
        yield None
        return

    columns = (TextColumn("replaying"), BarColumn(), DownloadColumn())
    with Progress(
        *columns, TimeRemainingColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("replay", total=total)
        yield lambda done: bar.update(task, completed=done)


def main() -> None:
    """Entry point of the ``swt`` script."""
    cli()


__all__ = ["cli", "main"]
