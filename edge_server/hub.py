"""The edge's rendezvous between the relay's stream and the round driver.

No protobuf here: the servicer decodes messages with `protos.codec` and calls these
methods with tensors; the hub sends tasks through the `send` function the servicer
attaches when the relay's stream opens. The driver uses the hub as its `Transport`.

Tasks go down the relay's stream in order, and each device carries them out in the
order they arrive, so nothing waits for an UPDATE to be acknowledged: the device's
next tokens come after its update by construction. Only the nodes that train get an
UPDATE. SAVE and LOAD are acknowledged (`done`), since the edge must know the state is
on disk; TRANSMIT is answered by the tokens. Tasks are queued and sent as one batch when
the driver starts a round (a round's UPDATEs leave with the next round's TRANSMITs, as
soon as the edge has the gradients: `post`, while it steps its own weights).

A device that registers again (restarted) rejoins: after its Welcome it gets LOAD of the
devices' last checkpoint, any SAVE or LOAD the driver is waiting on, and the TRANSMIT it owes.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from configs.schema import MODALITIES, Config
from edge_server.driver import Exchange, Uplink
from edge_server.step import TRAINED_DEVICES, Received
from protos.meter import LinkMeter

log = logging.getLogger(__name__)


class HubError(Exception):
    """A request the hub refuses; `code` names a grpc.StatusCode member."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class DeviceTimeout(RuntimeError):
    """Devices that did not answer within the deadline."""

    def __init__(self, nodes: list[str], what: str):
        super().__init__(f"no answer from {', '.join(nodes)} within the deadline ({what})")
        self.nodes = nodes


@dataclass
class TaskSpec:
    kind: str  # TRANSMIT | UPDATE | SAVE | LOAD | STOP
    phase: str = ""
    step: int = 0
    sample_ids: list[str] = field(default_factory=list)
    grad: torch.Tensor | None = None  # (b, c) complex64
    path: str = ""
    seq: int = 0  # set by the hub: the node's task number


@dataclass
class _Node:
    info: dict
    seq: int = 0  # tasks sent
    done: int = 0  # highest acknowledged SAVE/LOAD
    gone: str = ""  # why its stream closed, if it did
    expect: tuple[str, int, int] | None = None  # (phase, step, batch) of the pending TRANSMIT
    transmit: TaskSpec | None = None  # that TRANSMIT, sent again if the node rejoins before answering
    awaiting: TaskSpec | None = None  # a SAVE or LOAD not yet acknowledged, sent again if the node rejoins


@dataclass
class _Tokens:
    received: Received
    labels: dict
    compute_ms: float
    airtime_s: float


class EdgeHub:
    def __init__(self, cfg: Config, digests: dict[str, str], widths: dict[str, int], on_register=None,
                 edges: list[dict] | None = None):
        self.cfg, self.digests, self.widths = cfg, digests, widths
        self.expected = ["relay"] + cfg.link_names()
        self.run_id = uuid.uuid4().hex[:12]
        self.on_register = on_register or (lambda name: None)
        self.nodes: dict[str, _Node] = {}
        self.cond = threading.Condition()
        self.tokens: dict[tuple[str, str, int], _Tokens] = {}
        self.reports: dict[str, list[dict]] = {}
        self.meter = LinkMeter()  # the links whose receiver is the edge (relay->edge)
        # the edge's processes: this one, or every rank of a multi-rank edge (edge_server.ranks)
        self.edges = edges or [{"role": "edge", "pid": os.getpid(), "host": socket.gethostname()}]
        self._send: Callable[[list[tuple[str, TaskSpec]]], None] | None = None
        self._pending: list[tuple[str, TaskSpec]] = []  # queued for the next batch
        self._posted: tuple[str, int] | None = None  # the round `post` started, which `exchange` then waits for
        # Held while anything goes down the relay's stream, so that a node's Welcome precedes every
        # task for it: the relay then knows that tasks before a Welcome were for a dead stream.
        self._sending = threading.RLock()
        self.restore_dir: str | None = None  # the devices' last checkpoint: a rejoining device loads it

    # ------------------------------------------------------------ the relay's stream
    def attach(self, send: Callable[[list[tuple[str, TaskSpec]]], None]) -> None:
        """The relay's stream is open: batches of tasks go through `send([(node, task), ...])`."""
        with self.cond:
            self._send = send

    def detach(self, send) -> None:
        with self.cond:
            if self._send is send:
                self._send = None

    # ------------------------------------------------------------ handlers
    def hello(self, info: dict, welcome: Callable[[str], None]) -> None:
        """Register `info`'s node; `welcome(run_id)` answers it before any task for it is sent."""
        name = info["node"]
        if name not in self.expected:
            raise HubError("INVALID_ARGUMENT", f"unknown node '{name}'; this run expects {self.expected}")
        if info["role"] == "device":
            modality = name.split("/")[-1]
            if info["modality"] != modality or info["user"] != int(name.split("/")[0][4:]):
                raise HubError("INVALID_ARGUMENT", f"node '{name}' registered as user {info['user']} "
                                                   f"modality '{info['modality']}'; they must match its name")
        elif name != "relay" or info["role"] != "relay":
            raise HubError("INVALID_ARGUMENT", f"node '{name}' with role '{info['role']}': only the relay "
                                               f"speaks for itself on this link")
        for key, want in self.digests.items():
            got = info.get(key, "")
            if key == "model_digest" and info["modality"] != "text":
                continue  # only the text node holds a copy of the edge's model (its embedding table)
            if key == "data_digest" and info["role"] == "relay":
                continue  # the relay holds no data
            if got != want:
                raise HubError("FAILED_PRECONDITION",
                               f"node '{name}' has {key} {got} but the edge has {want}: run every role with the "
                               f"same config file and overrides, and the same dataset")
        with self._sending:
            welcome(self.run_id)
            with self.cond:
                old = self.nodes.get(name)
                if old is None:
                    self.nodes[name] = _Node(info)
                else:  # a restarted node takes over its name and any round waiting for it
                    log.warning("node %s registered again (pid %s -> %s)", name, old.info["pid"], info["pid"])
                    old.info, old.gone = info, ""
                self.cond.notify_all()
            if old is not None and info["role"] == "device":
                self._rejoin(name, old)
        log.info("registered %s (pid %s on %s)", name, info["pid"], info["host"])
        self.on_register(name)

    def _rejoin(self, name: str, node: _Node) -> None:
        """A device that registered again: restore its last checkpoint, then the round it owes."""
        if self.restore_dir:
            log.warning("%s rejoined; it restores its state from %s", name, self.restore_dir)
            self._queue(name, TaskSpec("LOAD", path=self.restore_dir))
        else:
            log.warning("%s rejoined before any checkpoint; it goes on from its initial weights", name)
        if node.awaiting is not None:  # its acknowledgement satisfies the wait (a later seq)
            self._queue(name, TaskSpec(node.awaiting.kind, path=node.awaiting.path))
        if node.transmit is not None:
            self._queue(name, TaskSpec("TRANSMIT", node.transmit.phase, node.transmit.step,
                                       list(node.transmit.sample_ids)))
        try:
            self._flush()
        except DeviceTimeout:
            pass  # no relay stream yet: the driver's wait names the nodes

    def _node(self, name: str) -> _Node:
        node = self.nodes.get(name)
        if node is None:
            raise HubError("FAILED_PRECONDITION", f"unknown node '{name}': it has not registered with Hello")
        return node

    def expect(self, name: str) -> tuple[str, int, int, int]:
        """(phase, step, b, c) of the round `name` must answer, or HubError."""
        node = self._node(name)
        if node.info["role"] != "device":
            raise HubError("INVALID_ARGUMENT", f"node '{name}' is not a device")
        if node.expect is None:
            raise HubError("FAILED_PRECONDITION", f"node '{name}' sent tokens but no round is waiting for it")
        phase, step, b = node.expect
        modality = name.split("/")[-1]
        s = self.cfg.data.text_len if modality == "text" else getattr(self.cfg.transmitter, modality).tokens
        return phase, step, b, s * self.widths[modality] // 2

    def submit_tokens(self, name: str, phase: str, step: int, received: Received, labels: dict,
                      compute_ms: float, airtime_s: float = 0.0) -> None:
        node = self._node(name)
        want = self.expect(name)
        if (phase, step) != want[:2]:
            raise HubError("FAILED_PRECONDITION", f"node '{name}' sent {phase} step {step} but the edge is "
                                                  f"waiting for {want[0]} step {want[1]}")
        if name.endswith("/text") and "text_mask" not in labels:
            raise HubError("INVALID_ARGUMENT", f"node '{name}' sent no labels; the text node carries them")
        with self.cond:
            node.expect = node.transmit = None
            self.tokens[(name, phase, step)] = _Tokens(received, labels, compute_ms, airtime_s)
            self.cond.notify_all()

    def done(self, name: str, seq: int) -> None:
        node = self._node(name)
        with self.cond:
            node.done = max(node.done, seq)
            self.cond.notify_all()

    def gone(self, name: str, why: str) -> None:
        """The relay lost `name`'s stream (a restarted device may still take over)."""
        node = self._node(name)
        with self.cond:
            node.gone = why or "its stream closed"
            self.cond.notify_all()
        log.warning("the relay lost %s: %s", name, node.gone)

    def submit_report(self, name: str, raw: list[dict]) -> None:
        self._node(name)
        with self.cond:
            self.reports[name] = raw
            self.cond.notify_all()

    # ------------------------------------------------------------ driver side
    def wait_registered(self, timeout: float) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: all(n in self.nodes for n in self.expected), timeout)
        if not ok:
            missing = [n for n in self.expected if n not in self.nodes]
            raise DeviceTimeout(missing, f"registration, {timeout:.0f} s")

    def _describe(self, names: list[str]) -> list[str]:
        return [f"{n} ({self.nodes[n].gone})" if n in self.nodes and self.nodes[n].gone else n for n in names]

    def _wait(self, pred, nodes_left, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(pred, self.cfg.wire.step_timeout_s):
                raise DeviceTimeout(self._describe(nodes_left()), what)

    def _queue(self, name: str, task: TaskSpec) -> int:
        with self.cond:
            node = self._node(name)
            node.seq += 1
            task.seq = node.seq
            self._pending.append((name, task))
        return task.seq

    def _flush(self) -> None:
        with self._sending:
            with self.cond:
                batch, self._pending, send = self._pending, [], self._send
            if not batch:
                return
            if send is None:
                raise DeviceTimeout(sorted({n for n, _ in batch}), "the relay's stream is closed")
            send(batch)

    def post(self, phase: str, step: int, ids: dict[int, list[str]]) -> None:
        """TRANSMIT to every device of the round's users, in one batch with what is queued (the
        last round's UPDATEs); `exchange` of this round then only waits for the tokens."""
        with self.cond:
            for u in ids:
                for m in MODALITIES:
                    node = self.nodes[f"user{u}/{m}"]
                    node.expect = (phase, step, len(ids[u]))
                    node.transmit = TaskSpec("TRANSMIT", phase, step, list(ids[u]))
                    self._queue(f"user{u}/{m}", node.transmit)
            self._posted = (phase, step)
        self._flush()

    def exchange(self, phase: str, step: int, ids: dict[int, list[str]]) -> Exchange:
        """The round's tokens from every device of its users (TRANSMIT first, unless `post` sent it)."""
        names = {u: [f"user{u}/{m}" for m in MODALITIES] for u in ids}
        t0 = time.perf_counter()
        if self._posted != (phase, step):
            self.post(phase, step, ids)
        self._posted = None
        keys = [(n, phase, step) for ns in names.values() for n in ns]
        self._wait(lambda: all(k in self.tokens for k in keys),
                   lambda: [k[0] for k in keys if k not in self.tokens], f"{phase} step {step} tokens")
        with self.cond:
            got = {k[0]: self.tokens.pop(k) for k in keys}
        wait_ms = (time.perf_counter() - t0) * 1e3
        # the slowest device's compute as far as the driver waited for it: a round posted early
        # computed partly beside the edge's step, and the timeline's columns add up to the round
        device_ms = min(max(v.compute_ms for v in got.values()), wait_ms)
        users = {u: Uplink({n.split("/")[-1]: got[n].received for n in ns}, got[f"user{u}/text"].labels)
                 for u, ns in names.items()}
        return Exchange(users, device_ms, wait_ms - device_ms, max(v.airtime_s for v in got.values()) * 1e3)

    def send_grads(self, phase: str, step: int, grads: dict[int, dict[str, torch.Tensor]]) -> None:
        """UPDATE to each device that trains, queued for the next batch; never waited for."""
        for u, by_modality in grads.items():
            for m in TRAINED_DEVICES:
                if by_modality.get(m) is not None:
                    self._queue(f"user{u}/{m}", TaskSpec("UPDATE", phase, step, grad=by_modality[m]))

    def _deliver_and_wait(self, kind: str, path: str, what: str) -> None:
        devices = [n for n in self.expected if n != "relay"]
        targets = {}
        for n in devices:
            self.nodes[n].awaiting = TaskSpec(kind, path=path)
            targets[n] = self._queue(n, self.nodes[n].awaiting)
        self._flush()
        try:
            self._wait(lambda: all(self.nodes[n].done >= k for n, k in targets.items()),
                       lambda: [n for n, k in targets.items() if self.nodes[n].done < k], what)
        finally:
            for n in devices:
                self.nodes[n].awaiting = None

    def save_devices(self, ckpt_dir: str) -> None:
        self._deliver_and_wait("SAVE", ckpt_dir, "saving state")
        self.restore_dir = ckpt_dir

    def load_devices(self, ckpt_dir: str) -> None:
        self._deliver_and_wait("LOAD", ckpt_dir, "loading state")
        self.restore_dir = ckpt_dir

    def finish(self) -> None:
        """STOP every device; wait for the devices' and the relay's link reports."""
        for n in self.expected:
            if n != "relay" and n in self.nodes:
                self._queue(n, TaskSpec("STOP"))
        self._flush()
        with self.cond:
            done = self.cond.wait_for(lambda: all(n in self.reports for n in self.expected),
                                      self.cfg.wire.step_timeout_s)
        if not done:
            log.warning("no link report from %s", [n for n in self.expected if n not in self.reports])

    def stop_quietly(self, ckpt_dir: str | None) -> None:
        """After a failure: ask the live devices to save (if asked) and stop, without waiting."""
        for name in list(self.nodes):
            if name != "relay":
                if ckpt_dir:
                    self._queue(name, TaskSpec("SAVE", path=ckpt_dir))
                self._queue(name, TaskSpec("STOP"))
        try:
            self._flush()
        except DeviceTimeout:
            pass  # no relay stream: nobody to tell

    def links(self) -> list[dict]:
        merged = LinkMeter()
        merged.merge(self.meter.export())
        for raw in self.reports.values():
            merged.merge(raw)
        return merged.report()

    def processes(self) -> list[dict]:
        procs = list(self.edges)
        for name in self.expected:
            if name in self.nodes:
                i = self.nodes[name].info
                procs.append({"role": i["role"], "node": name, "pid": i["pid"], "host": i["host"]})
        return procs
