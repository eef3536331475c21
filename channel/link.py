"""One link's channel for one round, as both the relay process and the in-process
reference apply it (so the two paths agree number for number).

Every draw comes from a generator seeded by (run seed, link id, phase, step).
The receiver is given CSI only when its link is configured to use it
(`csi != none` and `equalizer != none`).

Shapes: b batch, c complex symbols, n fading blocks per sample.
"""
from __future__ import annotations

import torch

from channel.fading import ChannelOutput, LinkChannel, expand_blocks
from configs.schema import LinkConfig
from foundation.seeding import make_generator


def link_generator(seed: int, link: str, phase: str, step: int) -> torch.Generator:
    return make_generator(seed, "channel", link, phase, step)


def apply_link(cfg: LinkConfig, seed: int, link: str, phase: str, step: int, x: torch.Tensor) -> ChannelOutput:
    """x (b, c) complex64 unit-power symbols -> the channel's output for this round."""
    return LinkChannel(cfg)(x, link_generator(seed, link, phase, step))


def receiver_csi(cfg: LinkConfig, out: ChannelOutput) -> torch.Tensor | None:
    """The CSI passed on to the edge at its real size: (b, n) complex64, one gain per
    fading block per sample, or None when the receiver does not use it."""
    if cfg.equalizer == "none" or cfg.csi == "none":
        return None
    return out.h_hat_blocks


def expand_csi(csi: torch.Tensor | None, c: int, cfg: LinkConfig) -> torch.Tensor | None:
    """The receiver's side of `receiver_csi`: (b, n) block gains -> (b, c) per-symbol gains."""
    if csi is None:
        return None
    return expand_blocks(csi, c, cfg.coherence)  # (b, c)
