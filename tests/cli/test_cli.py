"""``swt replay`` end to end: output, JSON, and one-line errors with exit 2."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sliding_window_throttler.cli import accesslog, cli
from sliding_window_throttler.cli.replay import Replay

from cli_logs import BUNDLED_LOG, WriteLog, clf, stamped

DEMO = ["--limit", "20/10s", "--limit", "60/minute", "--top", "5"]


def swt(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("swt: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_replays_the_bundled_log_and_throttles_someone() -> None:
    result = swt("replay", BUNDLED_LOG, *DEMO)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "requests replayed  10,000" in lines
    assert "clients seen       1,753" in lines
    assert "top throttled clients (0 of 0)" not in lines
    assert any(line.startswith("top throttled clients (") for line in lines)


def test_json_has_exactly_the_documented_keys(small_log: Path) -> None:
    result = swt("replay", small_log, "--limit", "3/10s", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report) == [
        "files",
        "limits",
        "key",
        "requests",
        "admitted",
        "rejected",
        "rejected_percent",
        "clients_seen",
        "clients_throttled",
        "late",
        "malformed",
        "top_throttled",
        "busiest_windows",
        "span",
        "capacity_refused",
        "storage",
        "files_reordered",
        "outliers",
    ]
    assert (report["requests"], report["admitted"], report["rejected"]) == (8, 6, 2)
    assert report["top_throttled"][0]["client"] == "10.0.0.1"


def test_gzip_and_plain_give_the_same_report(tmp_path: Path) -> None:
    plain = tmp_path / "apache.log"
    plain.write_bytes(gzip.decompress(BUNDLED_LOG.read_bytes()))

    reports = [
        json.loads(swt("replay", path, *DEMO, "--json").stdout)
        for path in (plain, BUNDLED_LOG)
    ]

    assert reports[0].pop("files") == [str(plain)]
    assert reports[1].pop("files") == [str(BUNDLED_LOG)]
    assert reports[0] == reports[1]
    assert reports[0]["clients_throttled"] >= 1


def test_options_reach_the_replay(write_log: WriteLog) -> None:
    log = write_log(
        [clf("a", 0), clf("a", 10), clf("a", 20), clf("a", 12), clf("b", 5)]
    )
    options = ["--key", "ip+path", "--block", "90", "--reorder-window", "5s"]

    result = swt("replay", log, "--limit", "2/10s", *options, "--top", "1", "--json")

    report = json.loads(result.stdout)
    assert report["key"] == "ip+path"
    assert report["limits"][0]["block_duration_ms"] == 90_000
    assert report["late"] == 1
    assert len(report["busiest_windows"]) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "1/s", "missing.log"], "cannot read 'missing.log': No such file"),
        (["--limit", "1/s", "."], "cannot read '.': Is a directory"),
        (["--limit", "20/xx", "LOG"], "--limit '20/xx' has an unknown unit 'xx'"),
        (["--limit", "abc", "LOG"], "--limit 'abc' is not a rate"),
        (["--limit", "1/s", "--limit", "1/second", "LOG"], "given twice"),
        (["LOG"], "give at least one --limit"),
        (["--limit", "1/s", "--block", "zz", "LOG"], "--block 'zz' is not a duration"),
        (["--limit", "1/s", "--key", "user", "LOG"], "'user' is not one of"),
        (["--limit", "1/s", "--top", "0", "LOG"], "--top"),
        (["--limit", "1/s", "--top", "many", "LOG"], "--top"),
        (["--limit", "1/s", "--reorder-window", "1y", "LOG"], "unknown unit 'y'"),
        (["--limit", "1/s", "--max-skew", "soon", "LOG"], "--max-skew 'soon' is not"),
        (["--limit", "1/s"], "Missing argument 'LOG...'"),
        (["--limit", "1/s", "--frobnicate", "LOG"], "No such option"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    small_log: Path, args: list[str], message: str
) -> None:
    args = [str(small_log) if a == "LOG" else a for a in args]

    assert_one_line_error(swt("replay", *args), message)


def test_unusable_files_are_one_line_and_exit_2(
    write_log: WriteLog, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00junk")
    cases = {
        write_log([], name="empty.log"): "is empty",
        write_log(["junk", "", "junk"], name="junk.log"): "has no parseable line",
        write_log(["", " "], name="blank.log"): "has no log lines",
        corrupt: "is not valid gzip",
    }

    for path, message in cases.items():
        assert_one_line_error(swt("replay", path, "--limit", "1/s"), message)


def test_an_unreadable_file_is_one_line_and_exit_2(
    small_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # Root reads any file whatever its mode, so the denial is simulated.
    monkeypatch.setattr(accesslog, "open", denied, raising=False)

    assert_one_line_error(
        swt("replay", small_log, "--limit", "1/s"), "Permission denied"
    )


def test_ctrl_c_exits_130_with_one_line(
    small_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: Replay) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Replay, "run", interrupted)
    result = swt("replay", small_log, "--limit", "1/s")

    assert result.exit_code == 130
    assert result.stderr.strip() == "swt: error: interrupted"


def run_swt(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sliding_window_throttler", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_runs_as_a_module_and_fails_cleanly_as_a_process(small_log: Path) -> None:
    ok = run_swt("replay", small_log, "--limit", "3/10s", "--json")
    missing = run_swt("replay", "nope.log", "--limit", "3/10s")

    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["rejected"] == 2
    assert ok.stderr == ""
    assert missing.returncode == 2
    assert missing.stderr == (
        "swt: error: cannot read 'nope.log': No such file or directory\n"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_sigint_while_reading_exits_130_without_traceback(tmp_path: Path) -> None:
    fifo = tmp_path / "live.log"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "sliding_window_throttler", "replay", str(fifo)]
    process = subprocess.Popen(
        [*command, "--limit", "1/s"], stderr=subprocess.PIPE, text=True
    )
    # Opening the writing end waits until swt has opened the pipe to read it:
    # the signal then arrives while the command runs, before any byte comes.
    writer = os.open(fifo, os.O_WRONLY)
    try:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        os.close(writer)

    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "swt: error: interrupted"


def test_the_swt_script_is_installed() -> None:
    script = Path(sys.executable).with_name("swt")

    result = subprocess.run(
        [str(script), "replay", str(BUNDLED_LOG), *DEMO],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "75.97.9.59" in result.stdout


def test_replays_26_kb_lines_keyed_by_path(write_log: WriteLog) -> None:
    log = write_log([clf("a", 0, "GET /" + "x" * 26_000 + " HTTP/1.1")] * 3)

    result = swt("replay", log, "--limit", "2/s", "--key", "ip+path")

    assert result.exit_code == 0, result.stderr
    assert "rejected           1 (33.33%)" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("2/0s", "--limit must have a window of 1 ms to 366 days, got '2/0s'"),
        ("2/367d", "--limit must have a window of 1 ms to 366 days, got '2/367d'"),
    ],
)
def test_a_limit_with_an_impossible_window_quotes_what_was_typed(
    small_log: Path, spec: str, message: str
) -> None:
    result = swt("replay", small_log, "--limit", spec)

    assert_one_line_error(result, message)
    assert result.stderr == f"swt: error: {message}\n"


def test_max_skew_reaches_the_replay(write_log: WriteLog) -> None:
    # Two hours ahead of the lines around it.
    log = write_log(
        [clf("a", 0), stamped("b", "17/May/2015:12:05:00 +0000"), clf("c", 1)]
    )

    reports = [
        json.loads(swt("replay", log, "--limit", "1/s", *skew, "--json").stdout)
        for skew in ([], ["--max-skew", "1h"], ["--max-skew", "0"])
    ]

    assert [(r["requests"], r["outliers"]) for r in reports] == [(3, 0), (2, 1), (3, 0)]
    assert reports[1]["malformed"]["examples"][0]["reason"] == (
        "outlier: dated over 1h after the lines around it"
    )


LINE = '1.1.1.1 - - [17/May/2015:10:00:00 +0000] "GET / HTTP/1.1" 200 1\n'


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_replays_a_named_pipe_read_once(tmp_path: Path) -> None:
    fifo = tmp_path / "live.log"
    os.mkfifo(fifo)
    command = [sys.executable, "-m", "sliding_window_throttler", "replay", str(fifo)]
    process = subprocess.Popen(
        [*command, "--limit", "1/10s", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with fifo.open("w") as writer:
        writer.write(LINE * 3)

    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert (report["requests"], report["admitted"], report["rejected"]) == (3, 1, 2)
    assert report["files"] == [str(fifo)]


def test_replays_dev_stdin_from_a_pipe_or_a_file(tmp_path: Path) -> None:
    saved = tmp_path / "saved.log"
    saved.write_text(LINE * 2)
    command = [sys.executable, "-m", "sliding_window_throttler", "replay"]
    args = [*command, "/dev/stdin", "--limit", "1/10s", "--json"]

    piped = subprocess.run(
        args, input=LINE * 3, capture_output=True, text=True, timeout=30
    )
    with saved.open() as stdin:
        redirected = subprocess.run(
            args, stdin=stdin, capture_output=True, text=True, timeout=30
        )

    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["requests"] == 3
    assert redirected.returncode == 0, redirected.stderr
    assert json.loads(redirected.stdout)["requests"] == 2


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_refuses_dev_stdin_on_a_terminal_with_one_line() -> None:
    leader, follower = os.openpty()
    command = [sys.executable, "-m", "sliding_window_throttler", "replay"]
    try:
        result = subprocess.run(
            [*command, "/dev/stdin", "--limit", "1/s"],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        os.close(leader)
        os.close(follower)

    assert result.returncode == 2
    assert result.stderr == (
        "swt: error: '/dev/stdin' is not a regular file or a pipe: it is a terminal\n"
    )


def test_refuses_a_device_with_one_line() -> None:
    assert_one_line_error(
        swt("replay", "/dev/zero", "--limit", "1/s"),
        "'/dev/zero' is not a regular file or a pipe: it is a device",
    )


SWT = [sys.executable, "-m", "sliding_window_throttler"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("output", [[], ["--json"]])
def test_a_full_disk_is_one_line_and_exit_2(small_log: Path, output: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*SWT, "replay", small_log, "--limit", "3/10s", *output],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )

    assert result.returncode == 2
    assert result.stderr == (
        "swt: error: cannot write the report: No space left on device\n"
    )


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_a_closed_stdout_is_one_line_and_exit_2(
    small_log: Path, output: list[str]
) -> None:
    command = [*SWT, "replay", str(small_log), "--limit", "3/10s", *output]

    result = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr == (
        "swt: error: cannot write the report: standard output is closed\n"
    )


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_a_pipe_closed_early_ends_quietly_with_exit_141(output: list[str]) -> None:
    process = subprocess.Popen(
        [*SWT, "replay", BUNDLED_LOG, *DEMO, *output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # Closed before swt writes a byte (it is still starting): like `| head -0`.
    assert process.stdout is not None
    process.stdout.close()

    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 141
    assert stderr == b""


@pytest.mark.parametrize(
    ("output", "first_line"), [([], b"swt replay\n"), (["--json"], b"{\n")]
)
def test_a_pipe_closed_after_the_first_line_ends_quietly_with_exit_141(
    output: list[str], first_line: bytes
) -> None:
    # `swt replay ... | head -1`: the reader goes away mid-report, which at
    # 220 KB (450 KB as JSON) is well over what the pipe holds (64 KiB on
    # Linux).
    process = subprocess.Popen(
        [*SWT, "replay", BUNDLED_LOG, "--limit", "1/s", "--top", "100000", *output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()

    _, stderr = process.communicate(timeout=60)

    assert first == first_line
    assert process.returncode == 141
    assert stderr == b""


@pytest.mark.parametrize("output", [[], ["--json"]])
def test_a_small_report_is_in_the_pipe_at_once_even_unbuffered(
    small_log: Path, output: list[str]
) -> None:
    # `swt replay small.log | head -1` with PYTHONUNBUFFERED=1: the report
    # goes in one write, so the reader leaving after a line cuts nothing.
    process = subprocess.Popen(
        [*SWT, "replay", small_log, "--limit", "3/10s", *output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        bufsize=0,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    process.stdout.close()

    _, stderr = process.communicate(timeout=60)

    assert first in (b"swt replay\n", b"{\n")
    assert process.returncode == 0
    assert stderr == b""


def test_a_pipe_that_takes_the_whole_report_before_it_closes_exits_0(
    small_log: Path,
) -> None:
    # `swt replay small.log | head -1`: the 1.5 KB report is in the pipe
    # before the reader leaves, so nothing is cut, as with `seq 3 | head -1`.
    process = subprocess.Popen(
        [*SWT, "replay", small_log, "--limit", "3/10s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0
    assert stderr == b""


def test_the_same_log_given_twice_is_refused_naming_both(
    small_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hard.log").hardlink_to(small_log)
    (tmp_path / "soft.log").symlink_to(small_log)
    other = tmp_path / "other.log"
    other.write_bytes(small_log.read_bytes())
    pairs = [
        ("access.log", "access.log"),
        ("./access.log", "access.log"),
        ("access.log", "hard.log"),
        ("soft.log", "access.log"),
    ]

    for first, second in pairs:
        result = swt("replay", first, "other.log", second, "--limit", "1/s")

        assert result.exit_code == 2, (first, second, result.output)
        assert result.stdout == ""
        assert result.stderr == (
            f"swt: error: '{first}' and '{second}' are the same file; "
            "give each log once\n"
        )


def test_odd_file_names_are_quoted_once_and_read_as_given(
    tmp_path: Path, small_log: Path
) -> None:
    undecodable = os.fsdecode(bytes(tmp_path) + b"/\xff\xfe.log")
    Path(undecodable).write_bytes(b"junk\n")

    results = [
        swt("replay", undecodable, "--limit", "1/s"),
        swt("replay", f"{small_log}/", "--limit", "1/s"),
        swt("replay", tmp_path / "it's.log", "--limit", "1/s"),
    ]

    assert [r.exit_code for r in results] == [2, 2, 2]
    assert [r.stderr for r in results] == [
        f"swt: error: '{tmp_path}/\\xff\\xfe.log' has no parseable line in common "
        "or combined log format (line 1: not a log line: no fields after the "
        "client)\n",
        f"swt: error: cannot read '{small_log}/': Not a directory\n",
        f'swt: error: cannot read "{tmp_path}/it\'s.log": No such file or directory\n',
    ]


def test_a_closed_standard_input_is_one_line() -> None:
    result = subprocess.run(
        [*SWT, "replay", "-", "--limit", "1/s"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        preexec_fn=lambda: os.close(0),
    )

    assert result.returncode == 2
    assert result.stderr == b"swt: error: cannot read standard input: it is closed\n"


def test_a_file_name_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "new\nline.log"
    empty.write_bytes(b"")

    missing = swt("replay", "no\nsuch.log", "--limit", "1/s")
    emptied = swt("replay", empty, "--limit", "1/s")

    assert missing.exit_code == 2
    assert missing.stderr == (
        "swt: error: cannot read 'no\\nsuch.log': No such file or directory\n"
    )
    assert emptied.exit_code == 2
    assert emptied.stderr == f"swt: error: {str(empty)!r} is empty\n"


def test_a_dash_reads_standard_input_from_a_pipe_or_a_file(tmp_path: Path) -> None:
    saved = tmp_path / "saved.log"
    saved.write_text(LINE * 2)
    args = [*SWT, "replay", "-", "--limit", "1/10s", "--json"]

    piped = subprocess.run(
        args, input=LINE * 3, capture_output=True, text=True, timeout=30
    )
    with saved.open() as stdin:
        redirected = subprocess.run(
            args, stdin=stdin, capture_output=True, text=True, timeout=30
        )

    assert piped.returncode == 0, piped.stderr
    report = json.loads(piped.stdout)
    assert (report["requests"], report["admitted"], report["rejected"]) == (3, 1, 2)
    assert report["files"] == ["-"]
    assert redirected.returncode == 0, redirected.stderr
    assert json.loads(redirected.stdout)["requests"] == 2


def test_a_file_named_dash_is_read_as_dot_slash_dash(tmp_path: Path) -> None:
    (tmp_path / "-").write_text(LINE * 4)
    args = [*SWT, "replay", "./-", "--limit", "1/10s", "--json"]

    # Standard input holds other lines: they must not be the ones replayed.
    result = subprocess.run(
        args, input=LINE, capture_output=True, text=True, cwd=tmp_path, timeout=30
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["files"], report["requests"]) == (["./-"], 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-skew", "-1"], "--max-skew must not be negative, got '-1'"),
        (["--reorder-window", "-1"], "--reorder-window must not be negative, got '-1'"),
        (["--block", "-1"], "--block must not be negative, got '-1'"),
        (["--block", "400d"], "--block must be at most 366 days, got '400d'"),
        (["--top", "0"], "--top must be at least 1, got '0'"),
        (["--top", "-1"], "--top must be at least 1, got '-1'"),
        (["--top", "many"], "--top must be a whole number such as 10, got 'many'"),
        (["--top", "2.5"], "--top must be a whole number such as 10, got '2.5'"),
        (["--top", "1e3"], "--top must be a whole number such as 10, got '1e3'"),
        (
            ["--limit", "1/0.5ms"],
            "--limit must have a window of whole milliseconds, got '1/0.5ms'",
        ),
        (
            ["--limit", "99999999999999999999/s"],
            "--limit must allow 1 to 1,000,000 hits a window, "
            "got '99999999999999999999/s'",
        ),
        (
            ["--limit", "0/s"],
            "--limit must allow 1 to 1,000,000 hits a window, got '0/s'",
        ),
        (
            ["--limit", "2000000/s"],
            "--limit must allow 1 to 1,000,000 hits a window, got '2000000/s'",
        ),
        (
            ["--limit", "2/0s"],
            "--limit must have a window of 1 ms to 366 days, got '2/0s'",
        ),
        (
            ["--limit", "1/s", "--limit", "1/second"],
            "--limit '1/second' is given twice (both mean 1/1s)",
        ),
    ],
)
def test_option_errors_name_the_option_once_and_quote_what_was_typed(
    small_log: Path, args: list[str], message: str
) -> None:
    if "--limit" not in args:
        args = ["--limit", "1/s", *args]

    result = swt("replay", small_log, *args)

    assert result.exit_code == 2
    assert result.stderr == f"swt: error: {message}\n"


def test_a_raw_byte_and_its_escape_as_text_are_two_clients(
    write_log: WriteLog,
) -> None:
    byte = clf("10.0.0.1", 0, "GET /P HTTP/1.1").encode().replace(b"/P", b"/\xff")
    text = clf("10.0.0.1", 0, r"GET /\xff HTTP/1.1").encode()
    log = write_log(
        [
            line.replace(b":00 +", b":%02d +" % s)
            for s in range(10)
            for line in (byte, text)
        ]
    )

    result = swt("replay", log, "--limit", "1/minute", "--key", "ip+path", "--json")

    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["requests"], report["admitted"], report["rejected"]) == (20, 2, 18)
    assert (report["clients_seen"], report["clients_throttled"]) == (2, 2)
    assert [(c["client"], c["requests"]) for c in report["top_throttled"]] == [
        ("10.0.0.1 /\\\\xff", 10),
        ("10.0.0.1 /\\xff", 10),
    ]


def test_an_ascii_only_stdout_gets_an_ascii_report(write_log: WriteLog) -> None:
    log = write_log([clf("caf\u00e9", s) for s in (0, 1)])
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}

    results = [
        subprocess.run(
            [*SWT, "replay", log, "--limit", "1/10s", *output],
            capture_output=True,
            env=env,
            timeout=60,
        )
        for output in ([], ["--json"])
    ]

    assert [(r.returncode, r.stderr) for r in results] == [(0, b""), (0, b"")]
    lines = results[0].stdout.decode("ascii").splitlines()
    top = lines.index("top throttled clients (1 of 1)")
    assert lines[top + 3].split() == [
        "caf\\u00e9",
        "1",
        "2",
        "2015-05-17T10:05:01+00:00",
    ]
    report = json.loads(results[1].stdout.decode("ascii"))
    assert report["top_throttled"][0]["client"] == "caf\u00e9"
