"""`tokcom run`: the whole cluster on this machine with one command.

Prepares the cached assets once, then starts the edge (with `edge.ranks` > 1, its ranks
1..R-1 first, on an env:// rendezvous at a port the OS picked), the relay and one device per
(user, modality) as separate OS processes (`python -m launch.cli <role>`), each
logging to `<out>/logs/<name>.log`. Each start waits for the child's port file and
its grpc.health.v1 check; the devices count as ready once the edge reports
"node:<name>" SERVING. While the edge drives the rounds, a progress bar follows
`<out>/metrics.jsonl`. A device that dies is started again (`--device-restarts` times at
most) and rejoins the run; any other child that dies stops the whole cluster.

Exit codes: 0 done; 1 a child died (the message names it and quotes its log);
2 bad config; 124 --timeout passed; 130 Ctrl-C or SIGTERM. Every exit path stops
every child this launcher started, and no other process.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from configs.schema import MODALITIES, Config
from configs.loader import load_config
from device_node.build import prepare_features
from foundation.assets import cache_dir, prepare_assets
from edge_server.rundir import PROBES, clear_outputs
from launch.procs import (Child, ChildExited, Children, DeadlineExceeded, HealthProbe, child_env, describe_exit,
                          free_port, read_port, wait_until)
from configs.args import add_config_arguments
from device_node.host import format_users
from protos.meter import format_links
from protos.pki import write_credentials
from protos.tls import Credential

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
STOP_GRACE_S = 10.0  # SIGTERM -> SIGKILL; the edge and relay measured ~6 s to stop mid-run
EXIT_GRACE_S = 60.0  # a device that got STOP may exit this long before the edge does
SUPERVISE_POLL_S = 0.2
REPO_ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = "credentials"  # under OUT: the run's CA certificate and one key and certificate per node
LAUNCHER = "launcher"  # the launcher's own credential, for its health checks
DEVICE_CHILDREN = ("device-", "devices-")  # child names of device processes and device hosts


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", required=True, help="run directory to write (child logs go to OUT/logs/)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its latest checkpoint (see train.checkpoint_every)")
    p.add_argument("--device-restarts", type=int, default=2,
                   help="times the launcher starts a device that died again before it gives up (default 2)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext links without credentials (debugging only; by default every link is mutual TLS "
                        "with credentials made for this run under OUT/credentials)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds the cluster may run, from the first process started (default 3600)")


# ---------------------------------------------------------------- progress


class MetricsTail:
    """The rows appended to a growing metrics.jsonl since the last read (complete lines only)."""

    def __init__(self, path: Path):
        self.path = path
        self._pos = 0
        self._partial = b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < self._pos:  # rewritten from the start
                    self._pos, self._partial = 0, b""
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return []
        self._pos += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def rounds_done(row: dict, steps: dict[str, int]) -> int | None:
    """Training rounds finished once the edge has logged `row`; None for rows of no stage in `steps`."""
    offset = 0
    for stage, n in steps.items():
        if row.get("stage") == stage:
            return offset + int(row["step"]) + 1
        offset += n
    return None


class RoundsBar:
    """tqdm over the training rounds (stage 1 then stage 2), then "evaluating", fed by metrics.jsonl."""

    def __init__(self, steps: dict[str, int], metrics: Path, enabled: bool):
        self.steps, self.tail = steps, MetricsTail(metrics)
        self.bar = tqdm(total=sum(steps.values()), desc="rounds", unit="round", disable=not enabled)
        self.done, self.evaluating = 0, False  # a disabled tqdm counts nothing, so count here

    def restart_clock(self) -> None:
        """Time the rounds from now (not from the devices' start-up)."""
        self.bar.reset()
        self.bar.update(self.done)

    def poll(self) -> None:
        for row in self.tail.read():
            done = rounds_done(row, self.steps)
            if done is not None and done > self.done:
                self.bar.set_postfix_str(f"{row['stage']} loss {row.get('loss', float('nan')):.4f}", refresh=False)
                self.bar.update(done - self.done)
                self.done = done
        if self.done >= sum(self.steps.values()) and not self.evaluating:
            self.evaluating = True
            self.bar.set_postfix_str("evaluating")

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------- supervision


class NodeWatch:
    """Edge-side registration of the devices: "node:<name>" SERVING on the edge's health service."""

    def __init__(self, health: HealthProbe, names: list[str]):
        self.health, self.pending = health, list(names)

    def poll(self) -> bool:
        """True on the call that finds the last pending device registered."""
        if not self.pending:
            return False
        self.pending = [n for n in self.pending if not self.health.serving(f"node:{n}")]
        if self.pending:
            return False
        log.info("every device registered with the edge; the rounds are running")
        return True


class DeviceRestarts:
    """Start a device that died again, up to `limit` times each; it rejoins the run (EdgeHub.hello)."""

    def __init__(self, children: Children, limit: int):
        self.children, self.limit = children, limit

    def __call__(self, child: Child) -> bool:
        """True if `child` (exited non-zero) was started again."""
        if not child.name.startswith(DEVICE_CHILDREN) or child.starts > self.limit:
            return False
        log.warning("%s (pid %d) %s; starting it again (restart %d of %d)", child.name, child.pid,
                    describe_exit(child.returncode), child.starts, self.limit)
        self.children.restart(child)
        return True


def supervise(children: Children, edge: Child, deadline: float, bar: RoundsBar | None = None,
              nodes: NodeWatch | None = None, exit_grace_s: float = EXIT_GRACE_S,
              restart: DeviceRestarts | None = None) -> None:
    """Return once `edge` exits 0.

    Raises ChildExited when the edge exits non-zero, when another child exits non-zero
    (and `restart` does not start it again), or when another child exited 0 (a device
    that got STOP) and the edge has not finished `exit_grace_s` later; DeadlineExceeded
    past `deadline`.
    """
    early: tuple[Child, float] | None = None
    while True:
        rc = edge.returncode
        if rc == 0:
            if bar is not None:
                bar.poll()  # the rows written since the last poll
            return
        if rc is not None:
            raise ChildExited(edge, rc)
        for c in children.exited():
            if c is edge:
                continue
            if c.returncode != 0:
                if restart is not None and restart(c):
                    continue
                raise ChildExited(c, c.returncode)
            early = early or (c, time.monotonic())
        if early and time.monotonic() - early[1] > exit_grace_s:
            raise ChildExited(early[0], 0, f" but the edge had not finished {exit_grace_s:.0f} s later")
        if nodes is not None and nodes.poll() and bar is not None:
            bar.restart_clock()
        if bar is not None:
            bar.poll()
        if time.monotonic() > deadline:
            raise DeadlineExceeded("the run did not finish before --timeout; the edge was still running")
        time.sleep(SUPERVISE_POLL_S)


# ---------------------------------------------------------------- the cluster


def _role_argv(role: str, args: argparse.Namespace, *extra: str) -> list[str]:
    """`python -m launch.cli <role>` with the launcher's config file, overrides and credentials."""
    argv = [sys.executable, "-m", "launch.cli", role]
    if args.config:
        argv += ["--config", args.config]
    for o in args.overrides:
        argv += ["--set", o]
    argv += ["--insecure"] if args.insecure else ["--credentials", str(Path(args.out) / CREDENTIALS)]
    return argv + list(extra)


def run_credentials(cfg: Config, args: argparse.Namespace) -> Credential | None:
    """Fresh credentials for this run's nodes under OUT/credentials (the launcher's own for its health
    checks); None with --insecure."""
    if args.insecure:
        log.warning("--insecure: plaintext links, and anyone who reaches a port can be any node")
        return None
    where = Path(args.out) / CREDENTIALS
    if where.exists():
        shutil.rmtree(where)
    write_credentials(where, [LAUNCHER, "edge", "relay", *cfg.link_names()])
    return Credential.load(where, LAUNCHER)


def _start_server(children: Children, name: str, argv: list[str], logs: Path, deadline: float,
                  credential: Credential | None, env: dict[str, str] | None = None) -> tuple[Child, str]:
    """Start a child that writes a port file and serves health ""; return it and its address once SERVING."""
    port_file = logs / f"{name}.port"
    port_file.unlink(missing_ok=True)
    child = children.start(name, argv + ["--port-file", str(port_file)], logs / f"{name}.log",
                           env or child_env(REPO_ROOT))
    port = wait_until(f"the {name} port file {port_file}", lambda: read_port(port_file), children, deadline)
    address = f"{HOST}:{port}"
    with HealthProbe(address, credential, name) as health:
        wait_until(f"the {name} health check at {address}", health.serving, children, deadline)
    log.info("%s serving at %s", name, address)
    return child, address


def _start_devices(cfg: Config, args: argparse.Namespace, children: Children, relay_addr: str,
                   out: Path) -> list[Child]:
    """One process per device, or with `launch.devices_per_process` K > 1 one device host per
    modality and K consecutive users."""
    state = ["--relay", relay_addr, "--state-dir", str(out / "checkpoints" / "devices")]
    k, started = cfg.launch.devices_per_process, []
    for m in MODALITIES:
        for first in range(0, cfg.users, k):
            users = list(range(first, min(first + k, cfg.users)))
            if k == 1:
                name, argv = f"device-user{first}-{m}", _role_argv("device", args, *state, "--user", str(first),
                                                                   "--modality", m)
            else:
                name, argv = f"devices-{m}-users{format_users(users)}", _role_argv(
                    "devices", args, *state, "--users", format_users(users), "--modality", m)
            started.append(children.start(name, argv, out / "logs" / f"{name}.log", child_env(REPO_ROOT)))
    return started


def run_cluster(cfg: Config, args: argparse.Namespace, children: Children, deadline: float) -> None:
    """Start every role, supervise the run, and return once the edge has finished and the others are down."""
    out = Path(args.out)
    logs = out / "logs"
    credential = run_credentials(cfg, args)
    edge_argv = _role_argv("edge", args, "--out", str(out), "--listen", f"{HOST}:0", "--no-progress",
                           *(["--resume"] if args.resume else []))
    rendezvous = {"MASTER_ADDR": HOST, "MASTER_PORT": str(free_port(HOST)), "WORLD_SIZE": str(cfg.edge.ranks)}

    def rank_env(r: int) -> dict[str, str] | None:
        return {**child_env(REPO_ROOT), **rendezvous, "RANK": str(r), "LOCAL_RANK": str(r)} \
            if cfg.edge.ranks > 1 else None

    for r in range(1, cfg.edge.ranks):  # they wait in the rendezvous for rank 0, which serves once all joined
        children.start(f"edge-rank{r}", edge_argv, logs / f"edge-rank{r}.log", rank_env(r))
    edge, edge_addr = _start_server(children, "edge", edge_argv, logs, deadline, credential, rank_env(0))
    with HealthProbe(edge_addr, credential, "edge") as edge_health:
        relay, relay_addr = _start_server(children, "relay", _role_argv(
            "relay", args, "--listen", f"{HOST}:0", "--edge", edge_addr), logs, deadline, credential)
        wait_until("the relay's registration with the edge", lambda: edge_health.serving("node:relay"),
                   children, deadline)
        _start_devices(cfg, args, children, relay_addr, out)
        bar = RoundsBar({"stage1": cfg.train.stage1.steps, "stage2": cfg.train.stage2.steps},
                        out / "metrics.jsonl", not args.no_progress)
        try:
            with logging_redirect_tqdm():
                supervise(children, edge, deadline, bar, NodeWatch(edge_health, cfg.link_names()),
                          restart=DeviceRestarts(children, args.device_restarts))
        finally:
            bar.close()
    log.info("the edge finished; waiting for the devices to exit")
    devices = [c for c in children if c.name.startswith(DEVICE_CHILDREN)]
    for c in children.wait(devices, max(0.0, min(EXIT_GRACE_S, deadline - time.monotonic()))):
        log.warning("%s (pid %d) did not exit after the edge finished; stopping it", c.name, c.pid)
    children.stop(STOP_GRACE_S)  # the relay, and any device still up
    for c in devices + [relay]:
        if c.returncode != 0:
            log.warning("%s ended with code %d after the run finished; see %s", c.name, c.returncode, c.log_path)


def summary_line(summary: dict, out: Path) -> str:
    acc = summary["accuracy"]
    losses = "; ".join(f"{stage} loss {v['first']:.3f} -> {v['last']:.3f}"
                       for stage, v in summary.get("loss", {}).items())
    return (f"accuracy {acc['overall']:.3f} over {acc['n']} questions; {losses}; "
            f"{summary['wall_s']:.1f} s; run directory {out}")


def report(out: Path) -> int:
    """Print the per-link table and the accuracy line; 1 if the edge left no results."""
    missing = [n for n in ("links.json", "summary.json") if not (out / n).is_file()]
    if missing:
        log.error("the edge exited 0 but %s is missing from %s; see %s", " and ".join(missing), out,
                  out / "logs" / "edge.log")
        return 1
    sys.stdout.write(format_links(json.loads((out / "links.json").read_text())) + "\n")
    sys.stdout.write(summary_line(json.loads((out / "summary.json").read_text()), out) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log.info("preparing the dataset, the foundation LM and the encoder features once for every process "
             "(cached on disk), so that the devices register as soon as they start")
    dataset = prepare_assets(cfg)[0]  # not the LM: the paper preset's would stay in memory for the whole run
    prepare_features(cfg, dataset, cache_dir(cfg))
    # an earlier run's files would mislead (the progress bar reads metrics.jsonl); the edge
    # keeps what a resume needs and rewrites the metrics before the resume point
    clear_outputs(out, keep=("checkpoints", "metrics.jsonl", *PROBES) if args.resume else ())
    children = Children()
    deadline = time.monotonic() + args.timeout
    try:
        run_cluster(cfg, args, children, deadline)
    except ChildExited as e:
        log.error("%s", e)
        return 1
    except DeadlineExceeded as e:
        log.error("%s", e)
        return 124
    except KeyboardInterrupt:
        log.error("interrupted; stopping every process this launcher started")
        return 130
    finally:
        children.stop(STOP_GRACE_S)
        for stale in (out / "logs").glob("*.port"):  # a child killed by SIGKILL leaves its own behind
            stale.unlink()
    return report(out)
