"""The channel hop: what happens to a message between a device and the edge.

Written once, called by the relay process (`channel.relay`) and by the in-process
transport (`launch.inprocess`), so the two paths agree number for number:

- uplink: the device's symbols x (as decoded from the wire) go through the link's
  channel (`channel.link.apply_link`, seeded by (seed, link, phase, step)); the hop
  keeps the true gains h for the gradient, builds the receiver's CSI at its real size
  (one gain per fading block per sample, none when unused) and rounds what goes on to
  the edge to the wire precision;
- downlink: dL/dx = conj(h) dL/dy (`LinkChannel.vjp`) with the h kept for that link,
  rounded to the wire precision;
- cost: the link's modelled airtime, queueing and propagation (`channel.network`).

A node's rounds are sequential (its gradient comes back before its next
transmission), so the hop keeps only the latest h of each link.

No grpc here. Shapes: b batch, c complex symbols, n fading blocks per sample.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from channel.fading import Draws, LinkChannel
from channel.link import link_generator, receiver_csi
from channel.network import DOWNLINK, UPLINK, NetworkModel, Transfer
from configs.schema import Config
from protos.precision import round_to_wire, symbol_bytes


@dataclass
class Uplinked:
    """One device message after the channel, ready for the edge."""

    y: torch.Tensor  # (b, c) complex64, wire-rounded
    csi: torch.Tensor | None  # (b, n) complex64, wire-rounded; None when the receiver uses none
    noise_var: float
    channel_uses: int  # complex channel uses of the message, pilots included
    payload_bytes: int  # of the device's symbols at the wire precision


class HopError(ValueError):
    """A message the hop cannot carry (e.g. a gradient for a round it has no channel state of)."""


class ChannelHop:
    """Every link of one run: its channel, its network, and the gains kept for the gradients."""

    def __init__(self, cfg: Config):
        self.cfg, self.seed, self.precision = cfg, cfg.seed, cfg.wire.precision
        self.network = NetworkModel(cfg.network, cfg.seed, cfg.link_names())
        self._h: dict[str, tuple[str, int, torch.Tensor]] = {}  # node -> (phase, step, (b, c) h)
        self._lock = threading.Lock()

    def draw(self, node: str, phase: str, step: int, b: int, c: int) -> Draws:
        """The link's randomness for a round of b samples of c symbols. The relay draws it when the
        round's TRANSMIT passes down, so the draw overlaps the device's work; it is the same draw
        `uplink` makes when given none (same generator, same order)."""
        return LinkChannel(self.cfg.channel.link(node)).draw(b, c, link_generator(self.seed, node, phase, step))

    def uplink(self, node: str, phase: str, step: int, x: torch.Tensor, draws: Draws | None = None) -> Uplinked:
        """x: (b, c) complex64 symbols as they left the device (wire-rounded); `draws` from
        `draw(node, phase, step, b, c)`, or None to draw now."""
        link = self.cfg.channel.link(node)
        b, c = x.shape
        channel = LinkChannel(link)
        if draws is None or (draws.b, draws.c) != (b, c):
            draws = self.draw(node, phase, step, b, c)
        out = channel.apply(x, draws)
        with self._lock:
            self._h[node] = (phase, step, out.h)
        csi = receiver_csi(link, out)  # (b, n) or None
        return Uplinked(round_to_wire(out.y, self.precision),
                        None if csi is None else round_to_wire(csi, self.precision), out.noise_var,
                        b * channel.channel_uses(c), symbol_bytes(b * c, self.precision))

    def downlink(self, node: str, phase: str, step: int, grad: torch.Tensor) -> torch.Tensor:
        """grad: (b, c) complex64 dL/dy from the edge (wire-rounded) -> dL/dx for the device."""
        with self._lock:
            kept = self._h.get(node)
        if kept is None or kept[:2] != (phase, step):
            have = f"{kept[0]} step {kept[1]}" if kept else "nothing"
            raise HopError(f"no channel state of {node} for {phase} step {step} (the hop holds {have}); "
                           f"a gradient must follow its own round's tokens")
        h = kept[2]
        if grad.shape != h.shape:
            raise HopError(f"gradient for {node} has shape {tuple(grad.shape)}, its symbols {tuple(h.shape)}")
        if self.cfg.channel.link(node).fading == "awgn":
            return round_to_wire(grad, self.precision)  # conj(h) g with h = 1
        return round_to_wire(LinkChannel.vjp(grad, h), self.precision)  # (b, c)

    # ------------------------------------------------------------ network costs
    def uplink_cost(self, node: str, phase: str, step: int, channel_uses: int, label_bytes: int,
                    now: float) -> tuple[Transfer, float]:
        """The device uplink's modelled transfer; returns it and the labels' share of its airtime."""
        net = self.network
        analog, digital = net.analog_airtime(node, channel_uses), net.digital_airtime(node, label_bytes)
        t = net.send(node, UPLINK, (phase, step, "tokens"), analog + digital, now)
        return t, t.attempts * digital

    def downlink_cost(self, node: str, kind: str, phase: str, step: int, nbytes: int, now: float) -> Transfer:
        """The modelled transfer of one task to `node`; its digital payload `nbytes` counts the
        gradient's bytes and the sample ids' characters (not a task's framing or file paths)."""
        return self.network.send(node, DOWNLINK, (phase, step, kind), self.network.digital_airtime(node, nbytes), now)
