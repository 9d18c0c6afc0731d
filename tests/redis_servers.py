"""Private ``redis-server`` processes for the test suite.

Every server listens on a free loopback port chosen at start, keeps its files in
its own temporary directory, persists nothing and is gone after ``stop()``. Three
shapes are offered:

- ``RedisServer``: one standalone server (also the building block of the others).
- ``RedisCluster``: three masters without replicas, joined by
  ``redis-cli --cluster create``.
- ``SentinelSet``: a master, its replica and one sentinel that monitors them.

Leftovers are prevented three ways: ``stop()`` (also from ``with`` blocks and the
fixtures' finalizers), an ``atexit`` hook that stops what is still registered, and
on Linux ``PR_SET_PDEATHSIG``, so the kernel kills a server whose parent dies
without running either (SIGKILL, a crash). The signal is tied to the thread that
started the server: start servers from a thread that lives as long as they do.

Run ``python tests/redis_servers.py`` to print how long each shape takes to start.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"
WAIT_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.025
CLUSTER_SLOTS = 16384
INSTALL_HINT = (
    "install Redis with `apt-get install redis-server redis-tools` (Debian/Ubuntu), "
    "or run `make test` / `.ci/run`, which install them when missing"
)

_PORT_ATTEMPTS = 5
_STOP_TIMEOUT_S = 5.0
_LOG_TAIL_LINES = 25
_PR_SET_PDEATHSIG = 1
_JOINING_NODE_TIMEOUT_MS = 1000


class RedisServerError(Exception):
    """A private Redis server did not start, answer or stop as expected."""


class RedisBinaryNotFoundError(RedisServerError):
    """``redis-server`` or ``redis-cli`` is not on ``PATH``."""

    def __init__(self, binary: str) -> None:
        super().__init__(f"`{binary}` was not found on PATH; {INSTALL_HINT}")
        self.binary = binary


def find_binary(name: str) -> str:
    """
    Return the path of a Redis binary.

    Raises:
        RedisBinaryNotFoundError: it is not on ``PATH``; the message says how to
            install it.
    """
    path = shutil.which(name)
    if path is None:
        raise RedisBinaryNotFoundError(name)

    return path


def find_free_port() -> int:
    """Return a loopback port that was free a moment ago (callers retry on races)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]

    return port


def wait_for(
    condition: Callable[[], bool], what: str, timeout_s: float = WAIT_TIMEOUT_S
) -> None:
    """
    Poll ``condition`` until it returns true.

    Redis and socket errors raised by ``condition`` count as "not yet"; the last
    one is quoted if time runs out.

    Raises:
        RedisServerError: ``condition`` stayed false for ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc

        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise RedisServerError(
                f"timed out after {timeout_s:g} s waiting for {what}{detail}"
            )

        time.sleep(POLL_INTERVAL_S)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None

    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    return prctl


_prctl = _load_prctl()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: keep it to one system call.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_live_servers: set[RedisServer] = set()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop()


class RedisServer:
    """
    One ``redis-server`` process on a free loopback port.

    Defaults: bind 127.0.0.1, no RDB or AOF, ``--enable-debug-command local``,
    log to ``redis.log`` in the server's temporary directory. ``start()`` returns
    once the process itself answers ``INFO`` (its pid is checked, so a stranger
    that grabbed the port is never mistaken for it).

    Args:
        *args: Extra command-line arguments, e.g. ``"--maxmemory", "2mb"``.
        password: Adds ``--requirepass``; ``client()`` and ``url`` use it.
        port: A fixed port; by default a free one is chosen at start.
        cluster: Start in cluster mode (``nodes.conf``, own ``--cluster-port``).
        config: Text of a config file passed before the arguments (sentinels
            need one; it is rewritten in place by the server).
    """

    def __init__(
        self,
        *args: str,
        password: str | None = None,
        port: int | None = None,
        cluster: bool = False,
        config: str = "",
    ) -> None:
        self.args = args
        self.password = password
        self.cluster = cluster
        self.config = config
        self.start_duration_s: float | None = None
        self._port = port
        self._cluster_port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<RedisServer {HOST}:{self._port} {state}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port; fixed by the first successful start, kept by ``restart()``."""
        if self._port is None:
            raise RedisServerError("the server has not been started")

        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, with the password when one is set."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def cluster_port(self) -> int | None:
        """The cluster bus port, for servers started with ``cluster=True``."""
        return self._cluster_port

    @property
    def directory(self) -> Path:
        """The server's temporary directory (``--dir``)."""
        if self._dir is None:
            raise RedisServerError("the server has not been started")

        return self._dir

    @property
    def pid(self) -> int | None:
        """The process id while the process exists (also when paused)."""
        return self._process.pid if self.is_running and self._process else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """
        Return a new ``redis.Redis`` for this server; close it when done.

        Keyword arguments go to ``redis.Redis``. Socket timeouts default to 10 s
        so a test against a paused server fails instead of hanging.
        """
        kwargs.setdefault("password", self.password)
        kwargs.setdefault("socket_timeout", 10.0)
        kwargs.setdefault("socket_connect_timeout", 10.0)
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def probe(self, timeout_s: float = 2.0) -> redis.Redis:
        """
        Return a client for status checks: text replies, short timeouts, no retry.

        redis-py retries failed commands with backoff by default, which turns
        every "not yet" of a polling loop into seconds.
        """
        return self.client(
            decode_responses=True,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def start(self) -> Self:
        """
        Start the server and wait until it answers; no-op when it runs.

        Raises:
            RedisBinaryNotFoundError: ``redis-server`` is not installed.
            RedisServerError: it exited or did not answer within 20 s (the
                message quotes its log), or its fixed port is taken.
        """
        if self.is_running:
            return self

        binary = find_binary("redis-server")
        began = time.monotonic()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="swt-redis-"))
        _live_servers.add(self)
        try:
            self._start_on_some_port(binary)
        except BaseException:
            self.stop()
            raise

        self.start_duration_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and delete its directory."""
        self._terminate()
        _live_servers.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """SIGKILL the process and reap it; ``restart()`` brings it back."""
        self._signal(signal.SIGKILL)
        if self._process is not None:
            self._process.wait()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections hang instead of failing."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused process (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def restart(self) -> Self:
        """
        Stop the process if it runs and start it again on the same port.

        Without persistence the keys and loaded functions are gone; a cluster
        node keeps its ``nodes.conf`` and a sentinel its rewritten config.
        """
        self._terminate()
        return self.start()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server's log."""
        try:
            text = (self.directory / "redis.log").read_text(errors="replace")
        except (OSError, RedisServerError):
            return "(no log)"

        return "\n".join(text.splitlines()[-lines:])

    def _start_on_some_port(self, binary: str) -> None:
        fixed = self._port is not None
        for _ in range(_PORT_ATTEMPTS):
            if not fixed:
                self._port = find_free_port()
            if self.cluster and (not fixed or self._cluster_port is None):
                self._cluster_port = find_free_port()
            if self._launch(binary):
                return

            if fixed:
                raise RedisServerError(
                    f"port {self._port} is taken; log tail:\n{self.log_tail()}"
                )

        raise RedisServerError(f"no free port after {_PORT_ATTEMPTS} attempts")

    def _launch(self, binary: str) -> bool:
        """Start one process; False when its port turned out to be taken."""
        log_path = self.directory / "redis.log"
        with log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                preexec_fn=_die_with_parent if _prctl is not None else None,
            )

        return self._wait_until_answering()

    def _command(self, binary: str) -> list[str]:
        command = [binary]
        if self.config:
            config_path = self.directory / "redis.conf"
            if not config_path.exists():
                config_path.write_text(self.config)
            command.append(str(config_path))
        command += ["--port", str(self.port), "--bind", HOST]
        command += ["--dir", str(self.directory), "--daemonize", "no"]
        command += ["--save", "", "--appendonly", "no", "--logfile", ""]
        command += ["--enable-debug-command", "local"]
        if self.password:
            command += ["--requirepass", self.password]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file"]
            command += ["nodes.conf", "--cluster-port", str(self._cluster_port)]

        return [*command, *self.args]

    def _wait_until_answering(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                if "Address already in use" in self._log_since_launch():
                    return False

                raise RedisServerError(
                    f"redis-server exited with code {returncode} while starting "
                    f"on port {self._port}; log tail:\n{self.log_tail()}"
                )

            if self._answers_as_itself():
                return True

            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"redis-server on port {self._port} did not answer within "
                    f"{WAIT_TIMEOUT_S:g} s; log tail:\n{self.log_tail()}"
                )

            time.sleep(POLL_INTERVAL_S)

    def _answers_as_itself(self) -> bool:
        assert self._process is not None
        try:
            # Short: whoever else answers on a port we lost never replies.
            with self.probe(timeout_s=0.5) as client:
                info = client.info("server")
        except (redis.RedisError, OSError):
            return False

        return int(info["process_id"]) == self._process.pid

    def _log_since_launch(self) -> str:
        with (self.directory / "redis.log").open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def _signal(self, signum: signal.Signals) -> None:
        # Only signal an unreaped child: its pid (and group) cannot be reused yet.
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def _terminate(self) -> None:
        if self._process is None:
            return

        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self._process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()


class RedisCluster:
    """
    A Redis Cluster of ``masters`` masters without replicas, on free ports.

    ``start()`` returns when every node reports ``cluster_state:ok``, knows all
    nodes and sees all 16384 slots served.

    Args:
        *args: Extra command-line arguments for every node.
        masters: How many masters (``redis-cli`` needs at least 3).
        node_timeout_ms: ``cluster-node-timeout`` once joined: a node silent
            for that long is flagged as failing (Redis' default is 15000).
    """

    def __init__(
        self, *args: str, masters: int = 3, node_timeout_ms: int = 5000
    ) -> None:
        node_args = ("--cluster-node-timeout", str(node_timeout_ms), *args)
        self.args = args
        self.node_timeout_ms = node_timeout_ms
        self.nodes = [RedisServer(*node_args, cluster=True) for _ in range(masters)]
        self.start_duration_s: float | None = None

    def __repr__(self) -> str:
        return f"<RedisCluster {self.nodes!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    @property
    def url(self) -> str:
        """The URL of the first node (redis-py discovers the others)."""
        return self.nodes[0].url

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """Return a new ``redis.cluster.RedisCluster``; close it when done."""
        kwargs.setdefault("socket_timeout", 10.0)
        kwargs.setdefault("socket_connect_timeout", 10.0)
        # redis-py leaves ClusterNode and Sentinel unannotated.
        nodes = [
            redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in self.startup_nodes
        ]
        return redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)

    def start(self) -> Self:
        """
        Start the nodes, join them and wait until the cluster serves all slots.

        Raises:
            RedisBinaryNotFoundError: ``redis-server`` or ``redis-cli`` is missing.
            RedisServerError: a node or ``redis-cli --cluster create`` failed, or
                the cluster was not ok within 20 s.
        """
        began = time.monotonic()
        redis_cli = find_binary("redis-cli")
        try:
            for node in self.nodes:
                node.start()
            # Joining runs with a 1 s node timeout: a node learns a peer's slots
            # only from that peer's own ping, and peers ping at least every half
            # timeout. With the final one the join takes up to 10 s, not 2 s.
            self._set_node_timeout(_JOINING_NODE_TIMEOUT_MS)
            self._create(redis_cli)
            wait_for(self._is_ready, "every cluster node to report cluster_state:ok")
            self._set_node_timeout(self.node_timeout_ms)
        except BaseException:
            self.stop()
            raise

        self.start_duration_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _set_node_timeout(self, timeout_ms: int) -> None:
        for node in self.nodes:
            with node.probe() as client:
                client.config_set("cluster-node-timeout", timeout_ms)

    def _create(self, redis_cli: str) -> None:
        command = [redis_cli, "--cluster", "create"]
        command += [f"{host}:{port}" for host, port in self.startup_nodes]
        command += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=WAIT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise RedisServerError(
                f"`redis-cli --cluster create` took over {WAIT_TIMEOUT_S:g} s"
            ) from exc

        if result.returncode != 0:
            raise RedisServerError(
                f"`redis-cli --cluster create` failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def _is_ready(self) -> bool:
        return all(self._node_is_ready(node) for node in self.nodes)

    def _node_is_ready(self, node: RedisServer) -> bool:
        with node.probe() as client:
            info = client.execute_command("CLUSTER INFO")

        return (
            info["cluster_state"] == "ok"
            and int(info["cluster_slots_ok"]) == CLUSTER_SLOTS
            and int(info["cluster_known_nodes"]) == len(self.nodes)
        )


class SentinelSet:
    """
    A master, one replica and one sentinel monitoring them as ``service_name``.

    ``start()`` returns when the replica is in sync and the sentinel sees the
    master up and the replica linked. The sentinel declares a node down after
    ``down_after_ms``; nothing here triggers an automatic failover by itself.

    Args:
        *args: Extra command-line arguments for the master and the replica.
        service_name: The name the sentinel monitors the master under.
        down_after_ms: The sentinel's ``down-after-milliseconds``.
        failover_timeout_ms: The sentinel's ``failover-timeout``.
    """

    def __init__(
        self,
        *args: str,
        service_name: str = "swt-primary",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        # With the default delay of 5 s a diskless full sync waits for more
        # replicas; both nodes need it since either may become the master.
        self._node_args = ("--repl-diskless-sync-delay", "0", *args)
        self.service_name = service_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes = (RedisServer(*self._node_args), RedisServer(*self._node_args))
        self.sentinel_server = RedisServer("--sentinel")
        self.start_duration_s: float | None = None

    def __repr__(self) -> str:
        return f"<SentinelSet {self.service_name} {self.nodes!r}>"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """Sentinel addresses, as ``redis.sentinel.Sentinel`` takes them."""
        return [self.sentinel_server.address]

    def sentinel_client(self, **kwargs: Any) -> redis.Sentinel:
        """
        Return a new ``redis.sentinel.Sentinel`` for this set.

        Keyword arguments are connection options for the master and replicas.
        """
        kwargs.setdefault("socket_timeout", 10.0)
        kwargs.setdefault("socket_connect_timeout", 10.0)
        options = {"socket_timeout": 10.0, "socket_connect_timeout": 10.0}
        return redis.Sentinel(  # type: ignore[no-untyped-call]
            self.sentinels, sentinel_kwargs=options, **kwargs
        )

    def master_address(self) -> tuple[str, int]:
        """The master's address as the sentinel reports it."""
        with self.sentinel_server.probe() as client:
            reply = client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
            )
        if not reply:
            raise RedisServerError(f"the sentinel does not know {self.service_name}")

        return (str(reply[0]), int(reply[1]))

    def master(self) -> RedisServer:
        """The node the sentinel reports as master."""
        return self._node_at(self.master_address())

    def replica(self) -> RedisServer:
        """The node the sentinel does not report as master."""
        master = self.master()
        return next(node for node in self.nodes if node is not master)

    def start(self) -> Self:
        """
        Start master, replica and sentinel; wait until all agree.

        Raises:
            RedisBinaryNotFoundError: ``redis-server`` is missing.
            RedisServerError: a process did not start, or the replica or the
                sentinel was not ready within 20 s.
        """
        began = time.monotonic()
        master, replica = self.nodes
        try:
            master.start()
            replica.args = (*self._node_args, "--replicaof", HOST, str(master.port))
            replica.start()
            wait_for(lambda: _is_synced_replica(replica), "the replica to sync")
            # Started only now: the sentinel lists replicas from the master's
            # INFO, which it asks for at once, then only every 10 s.
            self.sentinel_server.config = self._sentinel_config(master.port)
            self.sentinel_server.start()
            wait_for(self._sentinel_is_ready, "the sentinel to see both nodes")
        except BaseException:
            self.stop()
            raise

        self.start_duration_s = time.monotonic() - began
        return self

    def stop(self) -> None:
        self.sentinel_server.stop()
        for node in self.nodes:
            node.stop()

    def failover(
        self, *, wait_for_replica: bool = False, timeout_s: float = WAIT_TIMEOUT_S
    ) -> tuple[str, int]:
        """
        Make the sentinel promote the replica; return the new master's address.

        Returns once the sentinel reports the other node as master and that node
        answers ``ROLE`` as master, typically after 1 s. The sentinel turns the
        old master into a replica about 10 s later, at its own pace;
        ``wait_for_replica=True`` also waits until it is a synced replica. Failing
        over again needs no wait: the sentinel then promotes the old master back.

        Raises:
            RedisServerError: a step did not complete within ``timeout_s``.
        """
        old_master = self.master()
        wait_for(
            lambda: self._request_failover(old_master),
            "SENTINEL FAILOVER to be accepted",
            timeout_s,
        )
        wait_for(
            lambda: self._has_moved_from(old_master),
            f"the master to move away from port {old_master.port}",
            timeout_s,
        )
        if wait_for_replica:
            wait_for(
                lambda: _is_synced_replica(old_master),
                f"port {old_master.port} to become a synced replica",
                timeout_s,
            )

        return self.master_address()

    def _sentinel_config(self, master_port: int) -> str:
        name = self.service_name
        return (
            f"sentinel monitor {name} {HOST} {master_port} 1\n"
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )

    def _master_state(self) -> dict[str, Any]:
        with self.sentinel_server.probe() as client:
            reply = client.execute_command("SENTINEL", "MASTER", self.service_name)

        return _pairs(reply)

    def _sentinel_is_ready(self) -> bool:
        master = self._master_state()
        with self.sentinel_server.probe() as client:
            replicas = [
                _pairs(reply)
                for reply in client.execute_command(
                    "SENTINEL", "REPLICAS", self.service_name
                )
            ]

        return master["flags"] == "master" and any(
            state["flags"] == "slave" and state["master-link-status"] == "ok"
            for state in replicas
        )

    def _request_failover(self, old_master: RedisServer) -> bool:
        # Refused (and retried by wait_for) with NOGOODSLAVE until the sentinel
        # sees a healthy replica, and with INPROG while a failover is under way:
        # ours, if a reply got lost, which the moved master then shows.
        if self.master() is not old_master:
            return True

        with self.sentinel_server.probe() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.service_name)

        return True

    def _has_moved_from(self, old_master: RedisServer) -> bool:
        # The sentinel reports the promoted node while it still reconfigures
        # the others; only "master" alone in its flags means it is done.
        new_master = self.master()
        if new_master is old_master or self._master_state()["flags"] != "master":
            return False

        with new_master.probe() as client:
            role = client.execute_command("ROLE")

        return bool(role[0] == "master")

    def _node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self.nodes:
            if node.address == address:
                return node

        raise RedisServerError(f"no node of this set listens on {address}")


def _is_synced_replica(server: RedisServer) -> bool:
    with server.probe() as client:
        info = client.info("replication")

    return bool(info["role"] == "slave" and info["master_link_status"] == "up")


def _pairs(reply: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """A RESP3 map, or the flat key-value array that RESP2 sends instead."""
    if isinstance(reply, dict):
        return reply

    return dict(zip(reply[::2], reply[1::2], strict=True))


def _report_start_times() -> None:
    for make in (RedisServer, RedisCluster, SentinelSet):
        with make() as started:
            print(f"{type(started).__name__}: {started.start_duration_s:.3f} s")


if __name__ == "__main__":
    _report_start_times()
