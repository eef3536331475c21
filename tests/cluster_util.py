"""Start tokcom roles by hand as real processes (the README's separate-machines recipe,
on loopback): OS-picked ports, readiness by port file + grpc health check, hard
deadlines, and a stop that signals only the processes started here. Over mutual TLS with
credentials made here (as `tokcom credentials` makes them), or plaintext with `tls=False`."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from configs.loader import load_config
from launch.procs import Children, HealthProbe, child_env, read_port, wait_until
from protos.pki import write_credentials
from protos.tls import Credential

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 600.0


class ManualCluster:
    def __init__(self, tmp: Path, overrides: list[str], deadline_s: float = 300.0, tls: bool = True):
        self.tmp, self.overrides = tmp, overrides
        self.credentials = tmp / "credentials" if tls else None
        self.probe_credential = None
        if self.credentials is not None:
            names = load_config(REPO / "configs" / "tiny.yaml", overrides).link_names()
            write_credentials(self.credentials, ["launcher", "edge", "relay", *names])
            self.probe_credential = Credential.load(self.credentials, "launcher")
        self.children = Children()
        self.deadline = time.monotonic() + deadline_s
        self.env = child_env(REPO)
        self.run_dir = tmp / "run"
        self.edge_addr = self.relay_addr = ""

    def _argv(self, role: str, *extra: str) -> list[str]:
        sets = [a for o in self.overrides for a in ("--set", o)]
        tls = ["--credentials", str(self.credentials)] if self.credentials else ["--insecure"]
        return [sys.executable, "-m", "launch.cli", role, "--config", str(REPO / "configs" / "tiny.yaml"),
                *sets, *tls, *extra]

    def _serve(self, name: str, argv: list[str]) -> str:
        port_file = self.tmp / f"{name}.port"
        self.children.start(name, argv + ["--port-file", str(port_file)], self.tmp / "logs" / f"{name}.log",
                            env=self.env)
        port = wait_until(f"{name} port", lambda: read_port(port_file), self.children, self.deadline)
        addr = f"127.0.0.1:{port}"
        with HealthProbe(addr, self.probe_credential, name) as probe:
            wait_until(f"{name} health", probe.serving, self.children, self.deadline)
        return addr

    def start_edge(self, *extra: str) -> str:
        self.edge_addr = self._serve("edge", self._argv("edge", "--out", str(self.run_dir), "--no-progress",
                                                        "--listen", "127.0.0.1:0", *extra))
        return self.edge_addr

    def start_relay(self) -> str:
        self.relay_addr = self._serve("relay", self._argv("relay", "--edge", self.edge_addr,
                                                          "--listen", "127.0.0.1:0"))
        return self.relay_addr

    def start_device(self, user: int, modality: str):
        name = f"user{user}_{modality}"
        return self.children.start(name, self._argv("device", "--relay", self.relay_addr, "--user", str(user),
                                                    "--modality", modality, "--state-dir",
                                                    str(self.tmp / "state")),
                                   self.tmp / "logs" / f"{name}.log", env=self.env)

    def wait_registered(self, node: str) -> None:
        with HealthProbe(self.edge_addr, self.probe_credential, "edge") as probe:
            wait_until(f"{node} registered", lambda: probe.serving(f"node:{node}"), self.children, self.deadline)

    def wait_edge_exit(self) -> int:
        edge = next(c for c in self.children if c.name == "edge")
        left = self.children.wait([edge], max(0.0, self.deadline - time.monotonic()))
        assert not left, f"edge still running at the deadline; log:\n{self.log('edge')}"
        return edge.returncode

    def log(self, name: str) -> str:
        return (self.tmp / "logs" / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.children.stop(grace_s=10.0)


class Launcher:
    """`tokcom run` as a child of the test, its own log in a file."""

    def __init__(self, tmp: Path, out: Path, overrides: list[str], *extra: str):
        self.log_path = tmp / f"launcher-{len(list(tmp.glob('launcher-*')))}.log"
        sets = [a for o in overrides for a in ("--set", o)]
        argv = [sys.executable, "-m", "launch.cli", "run", "--config", str(REPO / "configs" / "tiny.yaml"),
                "--out", str(out), "--no-progress", "--timeout", str(DEADLINE_S), *sets, *extra]
        with open(self.log_path, "wb") as f:
            self.popen = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=child_env(REPO))
        self.deadline = time.monotonic() + DEADLINE_S

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pid_of(self, name: str) -> int:
        """The pid the launcher logged for its child `name` (the latest start)."""
        found = re.findall(rf"started {re.escape(name)} \(pid (\d+)\)", self.log())
        assert found, f"the launcher has not started {name}:\n{self.log()[-3000:]}"
        return int(found[-1])

    def wait_for(self, what: str, probe) -> None:
        delay = 0.05
        while not probe():
            assert self.popen.poll() is None, f"the launcher exited before {what}:\n{self.log()[-3000:]}"
            assert time.monotonic() < self.deadline, f"timed out waiting for {what}"
            time.sleep(delay)
            delay = min(2 * delay, 0.5)

    def wait(self) -> int:
        return self.popen.wait(timeout=max(1.0, self.deadline - time.monotonic()))

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # the launcher stops its own children
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
