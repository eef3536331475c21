"""The in-process transport: devices, channel and edge in one process.

Tensors move by reference through the same channel hop the relay runs
(`channel.hop.ChannelHop`: the link, the kept gains, the CSI at its real size, the
vector-Jacobian, the rounding to the wire precision), so the two paths give the same
numbers. Bytes, channel uses and the modelled airtime, queueing and propagation are
metered as the relay and the devices meter them (on a virtual clock: nothing sleeps);
there is no serialisation, so wire bytes equal payload bytes and there is no measured
latency.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch

from channel.hop import ChannelHop
from channel.link import expand_csi
from configs.schema import MODALITIES, Config
from device_node.step import DeviceNode
from edge_server.driver import Exchange, Uplink
from edge_server.step import Received
from protos.meter import LinkMeter
from protos.precision import round_to_wire, symbol_bytes


def _tensor_bytes(labels: dict) -> int:
    return sum(v.numel() * v.element_size() for v in labels.values() if torch.is_tensor(v))


class InProcessTransport:
    def __init__(self, cfg: Config, devices: dict[tuple[int, str], DeviceNode]):
        self.cfg, self.devices = cfg, devices
        self.precision = cfg.wire.precision
        self.hop = ChannelHop(cfg)
        self.meter = LinkMeter()
        self.clock = 0.0  # virtual seconds: when the network is next free to start a phase

    def _task(self, node: str, kind: str, phase: str = "", step: int = 0, nbytes: int = 0, payload: int = 0) -> float:
        """Meter one task down to `node`; returns its modelled arrival."""
        t = self.hop.downlink_cost(node, kind, phase, step, nbytes, self.clock)
        self.meter.record(f"relay->{node}", "downlink", payload_bytes=payload, wire_bytes=payload,
                          airtime_s=t.airtime_s, queueing_s=t.queueing_s, propagation_s=t.propagation_s)
        return t.arrive

    def exchange(self, phase: str, step: int, ids: dict[int, list[str]]) -> Exchange:
        """Every device of the round's users transmits; with a shared medium the uplinks contend
        for the band in user order, as the relay's scheduler serves messages in arrival order."""
        nodes = [(u, m) for u in ids for m in MODALITIES]
        start = self.clock
        for u, m in nodes:  # the TRANSMIT tasks, all sent at once
            start = max(start, self._task(f"user{u}/{m}", "TRANSMIT", phase, step, sum(len(i) for i in ids[u])))
        users = {u: Uplink({}, {}) for u in ids}
        device_ms, chan_ms, airtime, arrive = 0.0, 0.0, 0.0, start
        for u, m in nodes:
            node, up = f"user{u}/{m}", users[u]
            tx = self.devices[(u, m)].transmit(phase, step, ids[u])
            device_ms = max(device_ms, tx.compute_ms)
            t0 = time.perf_counter()
            out = self.hop.uplink(node, phase, step, round_to_wire(tx.symbols, self.precision))
            c = tx.symbols.shape[1]
            up.received[m] = Received(out.y, tx.s, expand_csi(out.csi, c, self.cfg.channel.link(node)), out.noise_var)
            label_bytes = _tensor_bytes(tx.labels)
            cost, label_air = self.hop.uplink_cost(node, phase, step, out.channel_uses, label_bytes, start)
            self.meter.record(f"{node}->relay", "uplink", payload_bytes=out.payload_bytes,
                              wire_bytes=out.payload_bytes, channel_uses=out.channel_uses, samples=len(ids[u]),
                              airtime_s=cost.airtime_s - label_air, queueing_s=cost.queueing_s,
                              propagation_s=cost.propagation_s)
            if tx.labels:
                up.labels = tx.labels
                self.meter.record(f"{node}->relay (labels)", "uplink", payload_bytes=label_bytes,
                                  wire_bytes=label_bytes, samples=len(ids[u]), airtime_s=label_air)
            airtime, arrive = max(airtime, cost.airtime_s), max(arrive, cost.arrive)
            chan_ms += (time.perf_counter() - t0) * 1e3
        self.clock = arrive
        return Exchange(users, device_ms, chan_ms, airtime * 1e3)

    def post(self, phase: str, step: int, ids: dict[int, list[str]]) -> None:
        """Nothing to start ahead: `exchange` runs the devices when the edge asks."""

    def send_grads(self, phase: str, step: int, grads: dict[int, dict[str, torch.Tensor]]) -> None:
        """UPDATE the devices that train; as on the wire, nothing waits for them (`self.clock` stays)."""
        for u, by_modality in grads.items():
            for m in MODALITIES:
                g = by_modality.get(m)
                if g is None:
                    continue
                node = f"user{u}/{m}"
                g = self.hop.downlink(node, phase, step, round_to_wire(g, self.precision))  # (b, c)
                nbytes = symbol_bytes(g.numel(), self.precision)
                self._task(node, "UPDATE", phase, step, nbytes, nbytes)
                self.devices[(u, m)].update(phase, step, g)

    def save_devices(self, ckpt_dir: str) -> None:
        for (u, m), dev in self.devices.items():
            self._task(f"user{u}/{m}", "SAVE")
            dev.save(Path(ckpt_dir) / f"user{u}_{m}.pt")

    def load_devices(self, ckpt_dir: str) -> None:
        for (u, m), dev in self.devices.items():
            self._task(f"user{u}/{m}", "LOAD")
            dev.load(Path(ckpt_dir) / f"user{u}_{m}.pt")

    def finish(self) -> None:
        """Nothing to stop in-process; the STOP tasks are metered as the devices meter them."""
        for u, m in self.devices:
            self._task(f"user{u}/{m}", "STOP")

    def links(self) -> list[dict]:
        return self.meter.report()

    def processes(self) -> list[dict]:
        return [{"role": "reference", "pid": os.getpid(), "host": socket.gethostname()}]
