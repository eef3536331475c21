"""The in-process transport: devices, channel and edge in one process.

Tensors move by reference; the channel is applied by the same function the relay
calls (`channel.link.apply_link`), and gradients go back through the same
vector-Jacobian. Byte and channel-use counts are reported as the wire would carry
them at the configured precision; there is no serialisation, so no latency.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch

from channel.fading import LinkChannel
from channel.link import apply_link, receiver_csi
from configs.schema import MODALITIES, Config
from device_node.step import DeviceNode
from edge_server.driver import Exchange
from edge_server.step import Received
from protos.meter import LinkMeter

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
TORCH_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def wire_cast(z: torch.Tensor, precision: str) -> torch.Tensor:
    """Complex symbols as the wire carries them: real pairs rounded to `precision`."""
    if precision == "float32":
        return z
    pairs = torch.view_as_real(z).to(TORCH_DTYPE[precision]).float()
    return torch.view_as_complex(pairs.contiguous())


class InProcessTransport:
    def __init__(self, cfg: Config, devices: dict[tuple[int, str], DeviceNode]):
        self.cfg, self.devices = cfg, devices
        self.meter = LinkMeter()
        self._h: dict[str, torch.Tensor] = {}
        self.bytes_per = BYTES[cfg.wire.precision]

    def exchange(self, user: int, phase: str, step: int, ids: list[str]) -> Exchange:
        received, labels, device_ms, chan_ms = {}, {}, 0.0, 0.0
        for m in MODALITIES:
            node = f"user{user}/{m}"
            tx = self.devices[(user, m)].transmit(phase, step, ids)
            device_ms = max(device_ms, tx.compute_ms)
            t0 = time.perf_counter()
            link = self.cfg.channel.link(node)
            x = wire_cast(tx.symbols, self.cfg.wire.precision)
            out = apply_link(link, self.cfg.seed, node, phase, step, x)
            self._h[m] = out.h
            csi = receiver_csi(link, out)
            received[m] = Received(wire_cast(out.y, self.cfg.wire.precision), tx.s,
                                   None if csi is None else wire_cast(csi, self.cfg.wire.precision),
                                   out.noise_var)
            chan_ms += (time.perf_counter() - t0) * 1e3
            n = tx.symbols.numel()
            self.meter.record(f"{node}->relay", "uplink", payload_bytes=2 * n * self.bytes_per,
                              wire_bytes=2 * n * self.bytes_per, channel_uses=n, samples=len(ids))
            if tx.labels:
                labels = tx.labels
                nbytes = sum(v.numel() * v.element_size() for v in tx.labels.values() if torch.is_tensor(v))
                self.meter.record(f"{node}->relay (labels)", "uplink", payload_bytes=nbytes,
                                  wire_bytes=nbytes, samples=len(ids))
        return Exchange(received, labels, device_ms, chan_ms)

    def send_grads(self, user: int, phase: str, step: int, grads: dict[str, torch.Tensor]) -> None:
        for m in MODALITIES:
            node = f"user{user}/{m}"
            g = grads.get(m)
            if g is not None:
                g = wire_cast(LinkChannel.vjp(wire_cast(g, self.cfg.wire.precision), self._h[m]),
                              self.cfg.wire.precision)
            self.devices[(user, m)].update(phase, step, g)
            nbytes = 0 if g is None else 2 * g.numel() * self.bytes_per
            self.meter.record(f"relay->{node}", "downlink", payload_bytes=nbytes, wire_bytes=nbytes)

    def save_devices(self, ckpt_dir: str) -> None:
        for (u, m), dev in self.devices.items():
            dev.save(Path(ckpt_dir) / f"user{u}_{m}.pt")

    def finish(self) -> None:
        """Nothing to stop in-process."""

    def links(self) -> list[dict]:
        return self.meter.report()

    def processes(self) -> list[dict]:
        return [{"role": "reference", "pid": os.getpid(), "host": socket.gethostname()}]
