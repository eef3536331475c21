"""Child processes of a launcher: start, watch, wait for readiness, stop.

Only processes started through a `Children` group are ever signalled, always through
their `Popen` object (which never signals a pid it has already reaped), so a launcher
cannot touch a process it did not start. Readiness is polled with a short backoff: a
port file that the child writes atomically once it listens, then a grpc.health.v1
check; a fixed sleep is never used as a readiness wait.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.rpc import MALLOC_ENV, open_channel
from protos.tls import Credential

log = logging.getLogger(__name__)

T = TypeVar("T")
POLL_MIN_S = 0.01  # first poll interval of a readiness wait; doubles up to POLL_MAX_S
POLL_MAX_S = 0.25
HEALTH_RPC_TIMEOUT_S = 2.0
TAIL_LINES = 20


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The last `n` lines of a text file (empty if it does not exist)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=n)]
    except FileNotFoundError:
        return []


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    starts: int = 1  # 1 + the times it was restarted

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running; reaps the process once it has exited."""
        return self.popen.poll()


class ChildExited(RuntimeError):
    """A child stopped when it should not have; the message names it and quotes its log."""

    def __init__(self, child: Child, returncode: int, why: str = ""):
        self.child, self.returncode = child, returncode
        lines = tail(child.log_path)
        quoted = "\n".join(f"    {line}" for line in lines) if lines else "    (the log is empty)"
        super().__init__(f"{child.name} (pid {child.pid}) {describe_exit(returncode)}{why}; "
                         f"last {len(lines)} lines of {child.log_path}:\n{quoted}")


class DeadlineExceeded(TimeoutError):
    """A wait ran past the launcher's deadline."""


class Children:
    """The processes one launcher started, in start order."""

    def __init__(self) -> None:
        self._children: dict[str, Child] = {}

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children.values()))

    def __len__(self) -> int:
        return len(self._children)

    def start(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Child:
        """Start `argv` with stdout and stderr written to `log_path` (replacing an older log)."""
        if name in self._children:
            raise ValueError(f"a child named {name!r} was already started; give each child its own name")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        return self._launch(Child(name, None, log_path, list(argv), env), "wb")

    def restart(self, child: Child) -> Child:
        """Start an exited child again with its argv and environment, appending to its log."""
        if child.returncode is None or self._children.get(child.name) is not child:
            raise ValueError(f"{child.name} (pid {child.pid}) is running or not this group's latest; stop it first")
        return self._launch(Child(child.name, None, child.log_path, child.argv, child.env, child.starts + 1), "ab")

    def _launch(self, child: Child, mode: str) -> Child:
        with open(child.log_path, mode) as out:  # the child keeps its own copy of the descriptor
            child.popen = subprocess.Popen(child.argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT, env=child.env)
        self._children[child.name] = child
        log.info("started %s (pid %d), log %s", child.name, child.pid, child.log_path)
        return child

    def exited(self) -> list[Child]:
        return [c for c in self if c.returncode is not None]

    def check(self) -> None:
        """Raise ChildExited for the first child (in start order) that has exited."""
        for c in self.exited():
            raise ChildExited(c, c.returncode)

    def wait(self, children: list[Child], timeout_s: float) -> list[Child]:
        """Wait up to `timeout_s` for `children` to exit; returns those still running."""
        end = time.monotonic() + timeout_s
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.popen.wait(timeout=max(0.0, end - time.monotonic()))
        return [c for c in children if c.returncode is None]

    def stop(self, grace_s: float, only: list[Child] | None = None) -> None:
        """SIGTERM every running child (or those in `only`), wait up to `grace_s`, SIGKILL the rest.

        A KeyboardInterrupt during the grace period skips straight to SIGKILL (and is
        re-raised once every child is gone), so a second Ctrl-C never orphans a child.
        """
        running = [c for c in (self if only is None else only) if c.returncode is None]
        if not running:
            return
        log.info("stopping %s", ", ".join(f"{c.name} (pid {c.pid})" for c in running))
        for c in running:
            c.popen.terminate()
        interrupted = False
        try:
            left = self.wait(running, grace_s)
        except KeyboardInterrupt:
            interrupted, left = True, [c for c in running if c.returncode is None]
        for c in left:
            log.warning("%s (pid %d) still running %.1f s after SIGTERM; sending SIGKILL", c.name, c.pid, grace_s)
            c.popen.kill()
        for c in left:
            c.popen.wait()
        if interrupted:
            raise KeyboardInterrupt


def wait_until(what: str, probe: Callable[[], T], children: Children, deadline: float) -> T:
    """Poll `probe` until it returns a truthy value and return that value.

    Raises ChildExited as soon as any child has exited, and DeadlineExceeded once
    `time.monotonic()` passes `deadline`.
    """
    delay = POLL_MIN_S
    while True:
        children.check()
        value = probe()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"gave up waiting for {what}: the deadline passed; "
                                   f"raise --timeout if the machine is just slow")
        time.sleep(min(delay, left))
        delay = min(2 * delay, POLL_MAX_S)


def free_port(host: str) -> int:
    """A port the OS reports free on `host` now, for a child that must be told its port before it
    starts (the edge ranks' env:// rendezvous); the OS picks it, so no run ever uses a fixed port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_port(path: Path) -> int | None:
    """The port number in a port file, or None while the file is not there yet."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


class HealthProbe:
    """grpc.health.v1 checks against one address; unreachable or unknown reads as not serving.
    With a credential it speaks mutual TLS to the server named `server_name`."""

    def __init__(self, address: str, credential: Credential | None = None, server_name: str = ""):
        self.address = address
        self._channel = open_channel(address, credential, server_name, [("grpc.initial_reconnect_backoff_ms", 50),
                                                                         ("grpc.max_reconnect_backoff_ms", 500)])
        self._stub = health_pb2_grpc.HealthStub(self._channel)

    def serving(self, service: str = "") -> bool:
        try:
            resp = self._stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND,
                            grpc.StatusCode.DEADLINE_EXCEEDED):
                return False
            raise
        return resp.status == health_pb2.HealthCheckResponse.SERVING

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> HealthProbe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def child_env(extra_path: Path) -> dict[str, str]:
    """The launcher's environment with `extra_path` first on PYTHONPATH, unbuffered output, and
    the transport's malloc settings (`protos.rpc.MALLOC_ENV`) unless the caller set its own."""
    env = {**MALLOC_ENV, **os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env
