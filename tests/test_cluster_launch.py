"""Supervision of `tokcom run` with real child processes that are not the tokcom roles:
tiny scripts that serve grpc.health.v1 on port 0, exit with a code, or ignore SIGTERM."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from launch import cluster
from launch.cli import main
from launch.cluster import MetricsTail, NodeWatch, RoundsBar, rounds_done, supervise
from launch.procs import ChildExited, Children, DeadlineExceeded, HealthProbe, describe_exit, read_port, wait_until

pytestmark = pytest.mark.timeout(60)

SCRIPTS = {
    # Serve health "" (and any services named after the port file) SERVING; stop on SIGTERM.
    "server.py": """
        import os, signal, sys, threading
        from concurrent import futures
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        port_file, services = sys.argv[1], sys.argv[2:]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        hs = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(hs, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        for s in ["", *services]:
            hs.set(s, health_pb2.HealthCheckResponse.SERVING)
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(port_file + ".tmp", port_file)
        print("server: listening on", port, flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        while not stop.wait(0.05):
            pass
        server.stop(0)
    """,
    "sleeper.py": """
        import time
        while True:
            time.sleep(1)
    """,
    # Writes its last words to stderr, then fails after a moment.
    "crasher.py": """
        import sys, time
        for i in range(30):
            print(f"crasher: line {i}", file=sys.stderr)
        time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.3)
        print("crasher: giving up", file=sys.stderr)
        sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    """,
    # Ignores SIGTERM; writes a file once the handler is in place.
    "stubborn.py": """
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open(sys.argv[1], "w").close()
        while True:
            time.sleep(1)
    """,
    # Edge-like: appends metrics rows, then exits with the given code after a pause.
    "edge.py": """
        import json, sys, time
        path, code, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        with open(path, "w") as f:
            for stage, n in (("stage1", 2), ("stage2", 3)):
                for step in range(n):
                    f.write(json.dumps({"stage": stage, "step": step, "loss": 1.0}) + "\\n")
                    f.flush()
        time.sleep(pause)
        sys.exit(code)
    """,
}


@pytest.fixture
def py(tmp_path: Path):
    for name, body in SCRIPTS.items():
        (tmp_path / name).write_text(textwrap.dedent(body))
    return lambda name, *args: [sys.executable, str(tmp_path / name), *map(str, args)]


@pytest.fixture
def children():
    group = Children()
    yield group
    group.stop(grace_s=2.0)  # a failed test still leaves nothing behind


def gone(pid: int) -> bool:
    """True once no process (not even an unreaped zombie) has this pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def soon() -> float:
    return time.monotonic() + 30.0


# ---------------------------------------------------------------- readiness


def test_port_file_then_health(py, children, tmp_path):
    pf = tmp_path / "srv.port"
    children.start("srv", py("server.py", pf, "node:user0/audio"), tmp_path / "srv.log")
    port = wait_until("the port file", lambda: read_port(pf), children, soon())
    assert 0 < port < 65536
    with HealthProbe(f"127.0.0.1:{port}") as h:
        assert wait_until("health", h.serving, children, soon())
        assert h.serving("node:user0/audio")
        assert not h.serving("node:user0/video")  # unknown service reads as not yet serving


def test_read_port_ignores_missing_and_partial(tmp_path):
    pf = tmp_path / "p"
    assert read_port(pf) is None
    pf.write_text("")
    assert read_port(pf) is None
    pf.write_text("40123\n")
    assert read_port(pf) == 40123


def test_wait_until_deadline(children):
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="the thing.*--timeout"):
        wait_until("the thing", lambda: None, children, time.monotonic() + 0.3)
    assert 0.3 <= time.monotonic() - t0 < 2.0


# ---------------------------------------------------------------- death and stopping


def test_death_is_named_and_the_others_are_stopped(py, children, tmp_path):
    pf = tmp_path / "srv.port"
    srv = children.start("srv", py("server.py", pf), tmp_path / "srv.log")
    sleeper = children.start("sleeper", py("sleeper.py"), tmp_path / "sleeper.log")
    port = wait_until("the port file", lambda: read_port(pf), children, soon())
    crasher = children.start("crasher", py("crasher.py"), tmp_path / "crasher.log")
    with HealthProbe(f"127.0.0.1:{port}") as h, pytest.raises(ChildExited) as err:
        wait_until("a node that never registers", lambda: h.serving("node:never"), children, soon())
    assert err.value.child is crasher and err.value.returncode == 7
    msg = str(err.value)
    assert f"crasher (pid {crasher.pid}) exited with code 7" in msg
    assert "crasher: giving up" in msg and "crasher: line 11" in msg  # the last 20 of 31 lines
    assert "crasher: line 10" not in msg
    children.stop(grace_s=5.0)
    for c in (srv, sleeper, crasher):
        assert c.returncode is not None and gone(c.pid)
    assert srv.returncode == 0  # it stopped cleanly on SIGTERM
    assert sleeper.returncode == -signal.SIGTERM


def test_sigterm_ignored_gets_sigkill(py, children, tmp_path):
    ready = tmp_path / "ready"
    stubborn = children.start("stubborn", py("stubborn.py", ready), tmp_path / "stubborn.log")
    wait_until("the SIGTERM handler", ready.exists, children, soon())
    t0 = time.monotonic()
    children.stop(grace_s=0.5)
    assert 0.5 <= time.monotonic() - t0 < 5.0
    assert stubborn.returncode == -signal.SIGKILL and gone(stubborn.pid)
    assert describe_exit(stubborn.returncode) == "was killed by signal SIGKILL"


def test_second_interrupt_kills_at_once(py, children, tmp_path, monkeypatch):
    ready = tmp_path / "ready"
    stubborn = children.start("stubborn", py("stubborn.py", ready), tmp_path / "stubborn.log")
    wait_until("the SIGTERM handler", ready.exists, children, soon())

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(children, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        children.stop(grace_s=60.0)
    assert stubborn.returncode == -signal.SIGKILL and gone(stubborn.pid)


def test_stop_touches_only_its_own_children(py, children, tmp_path):
    foreign = subprocess.Popen(py("sleeper.py"))  # not started through the group
    try:
        mine = children.start("mine", py("sleeper.py"), tmp_path / "mine.log")
        done = children.start("done", [sys.executable, "-c", "pass"], tmp_path / "done.log")
        done.popen.wait(timeout=30)
        children.stop(grace_s=5.0)
        assert mine.returncode == -signal.SIGTERM and gone(mine.pid)
        assert done.returncode == 0
        assert foreign.poll() is None
    finally:
        foreign.kill()
        foreign.wait()


def test_child_names_are_unique(py, children, tmp_path):
    children.start("a", py("sleeper.py"), tmp_path / "a.log")
    with pytest.raises(ValueError, match="'a'"):
        children.start("a", py("sleeper.py"), tmp_path / "a2.log")


# ---------------------------------------------------------------- supervise


def bar_for(tmp_path: Path) -> RoundsBar:
    return RoundsBar({"stage1": 2, "stage2": 3}, tmp_path / "metrics.jsonl", enabled=False)


def test_supervise_returns_when_the_edge_finishes(py, children, tmp_path):
    bar = bar_for(tmp_path)
    dev = children.start("device", py("sleeper.py"), tmp_path / "device.log")
    edge = children.start("edge", py("edge.py", tmp_path / "metrics.jsonl", 0, 0.2), tmp_path / "edge.log")
    supervise(children, edge, soon(), bar)
    assert bar.done == 5 and bar.evaluating
    assert dev.returncode is None  # stopping the rest is the caller's job


@pytest.mark.parametrize("code", [3, 1])
def test_supervise_edge_failure(py, children, tmp_path, code):
    dev = children.start("device", py("sleeper.py"), tmp_path / "device.log")
    edge = children.start("edge", py("edge.py", tmp_path / "metrics.jsonl", code, 0.2), tmp_path / "edge.log")
    with pytest.raises(ChildExited, match=f"edge \\(pid {edge.pid}\\) exited with code {code}"):
        supervise(children, edge, soon(), bar_for(tmp_path))
    children.stop(grace_s=5.0)
    assert gone(dev.pid)


def test_supervise_device_death(py, children, tmp_path):
    edge = children.start("edge", py("sleeper.py"), tmp_path / "edge.log")
    relay = children.start("relay", py("sleeper.py"), tmp_path / "relay.log")
    dev = children.start("device-user0-audio", py("crasher.py", 0.2, 5), tmp_path / "dev.log")
    with pytest.raises(ChildExited) as err:
        supervise(children, edge, soon(), bar_for(tmp_path))
    assert err.value.child is dev and err.value.returncode == 5
    assert "device-user0-audio" in str(err.value)
    children.stop(grace_s=5.0)
    assert all(gone(c.pid) for c in (edge, relay, dev))


def test_supervise_early_clean_exit(py, children, tmp_path):
    """A device that got STOP may exit 0 just before the edge; not long before."""
    dev = children.start("device", py("crasher.py", 0, 0), tmp_path / "device.log")
    edge = children.start("edge", py("edge.py", tmp_path / "metrics.jsonl", 0, 1.0), tmp_path / "edge.log")
    supervise(children, edge, soon(), exit_grace_s=30.0)
    assert dev.returncode == 0 and edge.returncode == 0

    late = Children()
    try:
        dev = late.start("device", py("crasher.py", 0, 0), tmp_path / "device2.log")
        edge = late.start("edge", py("sleeper.py"), tmp_path / "edge2.log")
        with pytest.raises(ChildExited, match="device .* exited with code 0 but the edge had not finished"):
            supervise(late, edge, soon(), exit_grace_s=0.5)
    finally:
        late.stop(grace_s=5.0)


def test_supervise_deadline(py, children, tmp_path):
    edge = children.start("edge", py("sleeper.py"), tmp_path / "edge.log")
    with pytest.raises(DeadlineExceeded, match="--timeout"):
        supervise(children, edge, time.monotonic() + 0.5)


def test_node_watch(py, children, tmp_path):
    pf = tmp_path / "srv.port"
    children.start("srv", py("server.py", pf, "node:user0/audio", "node:user0/text"), tmp_path / "srv.log")
    port = wait_until("the port file", lambda: read_port(pf), children, soon())
    with HealthProbe(f"127.0.0.1:{port}") as h:
        wait_until("health", h.serving, children, soon())
        watch = NodeWatch(h, ["user0/audio", "user0/video", "user0/text"])
        assert watch.poll() is False and watch.pending == ["user0/video"]
        watch.pending = ["user0/text"]
        assert watch.poll() is True and watch.poll() is False


# ---------------------------------------------------------------- progress (no processes)


def test_rounds_done_offsets_by_stage():
    steps = {"stage1": 3, "stage2": 4}
    assert rounds_done({"stage": "stage1", "step": 0}, steps) == 1
    assert rounds_done({"stage": "stage1", "step": 2}, steps) == 3
    assert rounds_done({"stage": "stage2", "step": 0}, steps) == 4
    assert rounds_done({"stage": "stage2", "step": 3}, steps) == 7
    assert rounds_done({"stage": "eval", "step": 0}, steps) is None


def test_metrics_tail_reads_complete_lines_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []
    with open(path, "w") as f:
        f.write(json.dumps({"step": 0}) + "\n" + '{"step": ')
    assert tail.read() == [{"step": 0}]
    with open(path, "a") as f:
        f.write("1}\n")
    assert tail.read() == [{"step": 1}]
    assert tail.read() == []
    path.write_text(json.dumps({"step": 9}) + "\n")  # rewritten from the start
    assert tail.read() == [{"step": 9}]


def test_rounds_bar_follows_sparse_logging(tmp_path):
    bar = bar_for(tmp_path)
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"stage": "stage1", "step": 1, "loss": 2.0}) + "\n")  # log_every > 1
    bar.poll()
    assert bar.done == 2 and not bar.evaluating
    with open(path, "a") as f:
        f.write(json.dumps({"stage": "stage2", "step": 2, "loss": 1.0}) + "\n")
    bar.poll()
    assert bar.done == 5 and bar.evaluating


# ---------------------------------------------------------------- the command


def test_role_argv_passes_config_overrides_and_credentials():
    args = argparse.Namespace(config="c.yaml", overrides=["users=2", "channel.snr_db=6"], out="runs/x", insecure=False)
    argv = cluster._role_argv("relay", args, "--edge", "127.0.0.1:5")
    assert argv == [sys.executable, "-m", "launch.cli", "relay", "--config", "c.yaml", "--set", "users=2",
                    "--set", "channel.snr_db=6", "--credentials", str(Path("runs/x") / "credentials"),
                    "--edge", "127.0.0.1:5"]
    plain = cluster._role_argv("edge", argparse.Namespace(config=None, overrides=[], out="o", insecure=True))
    assert plain[-2:] == ["edge", "--insecure"]


@pytest.mark.usefixtures("keep_sigterm")
def test_bad_config_exits_2_before_starting_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "prepare_assets", lambda cfg: pytest.fail("assets prepared for a bad config"))
    assert main(["run", "--out", str(tmp_path / "run"), "--set", "users=0"]) == 2


@pytest.fixture
def keep_sigterm():
    """`main` routes SIGTERM to KeyboardInterrupt; give pytest its own handler back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("exc, code", [(KeyboardInterrupt(), 130), (DeadlineExceeded("late"), 124), ("child", 1)])
def test_run_stops_its_children_on_every_failure(py, tmp_path, monkeypatch, exc, code):
    started = []

    def fake_cluster(cfg, args, children, deadline):
        started.append(children.start("relay", py("sleeper.py"), tmp_path / "relay.log"))
        edge = children.start("edge", py("crasher.py", 0, 3), tmp_path / "edge.log")
        edge.popen.wait(timeout=30)
        raise ChildExited(edge, edge.returncode) if exc == "child" else exc

    monkeypatch.setattr(cluster, "prepare_assets", lambda cfg: (None, None))
    monkeypatch.setattr(cluster, "prepare_features", lambda cfg, dataset, cache: None)
    monkeypatch.setattr(cluster, "run_cluster", fake_cluster)
    args = argparse.Namespace(config=None, overrides=[], out=str(tmp_path / "run"), no_progress=True, timeout=60.0,
                              resume=False)
    assert cluster.run(args) == code
    assert started[0].returncode == -signal.SIGTERM and gone(started[0].pid)


def test_report_prints_links_and_accuracy(tmp_path, capsys):
    links = [{"link": "user0/audio->relay", "direction": "uplink", "messages": 3, "payload_bytes": 3_000_000,
              "wire_bytes": 3_000_100, "channel_uses": 1536, "samples": 24,
              "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "mean": 1.5}}]
    summary = {"accuracy": {"overall": 0.5, "n": 48}, "wall_s": 12.0,
               "loss": {"stage1": {"first": 4.0, "last": 2.0}, "stage2": {"first": 6.0, "last": 3.0}}}
    (tmp_path / "links.json").write_text(json.dumps(links))
    assert cluster.report(tmp_path) == 1  # no summary.json yet
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert cluster.report(tmp_path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:3] == ["user0/audio->relay", "uplink", "3"] and "3.000" in lines[2]
    assert lines[3].startswith("accuracy 0.500 over 48 questions; stage1 loss 4.000 -> 2.000; "
                               "stage2 loss 6.000 -> 3.000;")
