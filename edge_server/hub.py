"""The edge's rendezvous between the gRPC handler threads and the round driver.

No protobuf here: handlers decode messages with `protos.codec` and call these
methods with tensors; the driver uses the hub as its `Transport`.

Per node, tasks wait in a queue that the node long-polls (`next_task`). A node's
next poll also tells the hub that the task it was given before has been carried
out, which is how `send_grads` knows every device has applied its update before
the next round starts (split learning is sequential).
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

import torch

from configs.schema import MODALITIES, Config
from edge_server.driver import Exchange
from edge_server.step import Received
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
    kind: str  # IDLE | TRANSMIT | UPDATE | SAVE | STOP
    phase: str = ""
    step: int = 0
    sample_ids: list[str] = field(default_factory=list)
    grad: torch.Tensor | None = None  # (b, c) complex64
    path: str = ""


@dataclass
class _Node:
    info: dict
    tasks: "queue.Queue[TaskSpec]" = field(default_factory=queue.Queue)
    given: int = 0  # tasks handed out
    done: int = 0  # tasks known to be finished (the node polled again)
    outstanding: bool = False
    expect: tuple[str, int, int] | None = None  # (phase, step, batch) of the pending TRANSMIT


class EdgeHub:
    def __init__(self, cfg: Config, digests: dict[str, str], widths: dict[str, int], poll_s: float = 5.0,
                 on_register=None):
        self.cfg, self.digests, self.widths, self.poll_s = cfg, digests, widths, poll_s
        self.expected = ["relay"] + cfg.link_names()
        self.run_id = uuid.uuid4().hex[:12]
        self.on_register = on_register or (lambda name: None)
        self.nodes: dict[str, _Node] = {}
        self.cond = threading.Condition()
        self.tokens: dict[tuple[str, str, int], tuple[Received, dict, float]] = {}
        self.reports: dict[str, list[dict]] = {}
        self.meter = LinkMeter()
        self.me = {"role": "edge", "pid": os.getpid(), "host": socket.gethostname()}

    # ------------------------------------------------------------ handlers
    def hello(self, info: dict) -> str:
        name = info["node"]
        if name not in self.expected:
            raise HubError("INVALID_ARGUMENT", f"unknown node '{name}'; this run expects {self.expected}")
        if info["role"] == "device":
            modality = name.split("/")[-1]
            if info["modality"] != modality or info["user"] != int(name.split("/")[0][4:]):
                raise HubError("INVALID_ARGUMENT", f"node '{name}' registered as user {info['user']} "
                                                   f"modality '{info['modality']}'; they must match its name")
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
        with self.cond:
            old = self.nodes.get(name)
            if old is None:
                self.nodes[name] = _Node(info)
            else:  # a restarted node takes over its name's queue and any round waiting for it
                log.warning("node %s registered again (pid %s -> %s)", name, old.info["pid"], info["pid"])
                old.info = info
            self.cond.notify_all()
        log.info("registered %s (pid %s on %s)", name, info["pid"], info["host"])
        self.on_register(name)
        return self.run_id

    def _node(self, name: str) -> _Node:
        node = self.nodes.get(name)
        if node is None:
            raise HubError("INVALID_ARGUMENT", f"unknown node '{name}': it has not registered with Hello")
        return node

    def next_task(self, name: str) -> TaskSpec:
        node = self._node(name)
        with self.cond:
            if node.outstanding:
                node.done += 1
                node.outstanding = False
                self.cond.notify_all()
        try:
            task = node.tasks.get(timeout=self.poll_s)
        except queue.Empty:
            return TaskSpec("IDLE")
        with self.cond:
            node.given += 1
            node.outstanding = True
        return task

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
                      compute_ms: float) -> None:
        node = self._node(name)
        want = self.expect(name)
        if (phase, step) != want[:2]:
            raise HubError("FAILED_PRECONDITION", f"node '{name}' sent {phase} step {step} but the edge is "
                                                  f"waiting for {want[0]} step {want[1]}")
        if name.endswith("/text") and "text_mask" not in labels:
            raise HubError("INVALID_ARGUMENT", f"node '{name}' sent no labels; the text node carries them")
        with self.cond:
            node.expect = None
            self.tokens[(name, phase, step)] = (received, labels, compute_ms)
            self.cond.notify_all()

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

    def _wait(self, pred, nodes_left, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(pred, self.cfg.wire.step_timeout_s):
                raise DeviceTimeout(nodes_left(), what)

    def exchange(self, user: int, phase: str, step: int, ids: list[str]) -> Exchange:
        names = [f"user{user}/{m}" for m in MODALITIES]
        t0 = time.perf_counter()
        with self.cond:
            for n in names:
                self.nodes[n].expect = (phase, step, len(ids))
        for n in names:
            self.nodes[n].tasks.put(TaskSpec("TRANSMIT", phase, step, list(ids)))
        keys = [(n, phase, step) for n in names]
        self._wait(lambda: all(k in self.tokens for k in keys),
                   lambda: [k[0] for k in keys if k not in self.tokens], f"{phase} step {step} tokens")
        with self.cond:
            got = {k[0].split("/")[-1]: self.tokens.pop(k) for k in keys}
        device_ms = max(v[2] for v in got.values())
        return Exchange({m: v[0] for m, v in got.items()}, got["text"][1], device_ms,
                        max(0.0, (time.perf_counter() - t0) * 1e3 - device_ms))

    def _deliver_and_wait(self, tasks: dict[str, TaskSpec], what: str) -> None:
        with self.cond:
            targets = {n: self.nodes[n].given + self.nodes[n].tasks.qsize() + 1 for n in tasks}
        for n, t in tasks.items():
            self.nodes[n].tasks.put(t)
        self._wait(lambda: all(self.nodes[n].done >= k for n, k in targets.items()),
                   lambda: [n for n, k in targets.items() if self.nodes[n].done < k], what)

    def send_grads(self, user: int, phase: str, step: int, grads: dict[str, torch.Tensor]) -> None:
        self._deliver_and_wait({f"user{user}/{m}": TaskSpec("UPDATE", phase, step, grad=grads.get(m))
                                for m in MODALITIES}, f"{phase} step {step} update")

    def save_devices(self, ckpt_dir: str) -> None:
        devices = [n for n in self.expected if n != "relay"]
        self._deliver_and_wait({n: TaskSpec("SAVE", path=ckpt_dir) for n in devices}, "saving state")

    def finish(self) -> None:
        """STOP every device; wait for the devices' and the relay's link reports."""
        devices = [n for n in self.expected if n != "relay"]
        for n in devices:
            if n in self.nodes:
                self.nodes[n].tasks.put(TaskSpec("STOP"))
        with self.cond:
            done = self.cond.wait_for(lambda: all(n in self.reports for n in self.expected),
                                      self.cfg.wire.step_timeout_s)
        if not done:
            log.warning("no link report from %s", [n for n in self.expected if n not in self.reports])

    def stop_quietly(self, ckpt_dir: str | None) -> None:
        """After a failure: ask the live devices to save (if asked) and stop, without waiting long."""
        for name, node in self.nodes.items():
            if name != "relay":
                if ckpt_dir:
                    node.tasks.put(TaskSpec("SAVE", path=ckpt_dir))
                node.tasks.put(TaskSpec("STOP"))

    def close(self) -> None:
        """Release every long-polling handler at once (so the server stops without waiting)."""
        for node in self.nodes.values():
            node.tasks.put(TaskSpec("STOP"))

    def links(self) -> list[dict]:
        merged = LinkMeter()
        for raw in self.reports.values():
            merged.merge(raw)
        return merged.report()

    def processes(self) -> list[dict]:
        procs = [self.me]
        for name in self.expected:
            if name in self.nodes:
                i = self.nodes[name].info
                procs.append({"role": i["role"], "node": name, "pid": i["pid"], "host": i["host"]})
        return procs
