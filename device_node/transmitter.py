"""Token transmitter: trainable projection F_m, power normalisation, complex mapping.

Legend: b batch, s tokens (s_m, already selected), e encoder width, d LM width,
c = s*d/2 complex symbols.

Audio and video: selected encoder tokens (b, s, e) -> F_m linear -> (b, s, d).
Text: rows of the LM's frozen embedding table (b, s, d), no projection.
Then per-sample power normalisation over real tokens and real -> complex.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from channel.symbols import power_normalize, real_to_complex


class TokenTransmitter(nn.Module):
    def __init__(self, e: int, d: int, project: bool, gen: torch.Generator | None = None):
        super().__init__()
        if not project and e != d:
            raise ValueError(f"without a projection the input width {e} must equal the LM width {d}")
        self.d = d
        self.proj = nn.Linear(e, d) if project else None
        if self.proj is not None:
            # nn.Linear's default init, drawn from the passed generator (not the global RNG).
            bound = 1.0 / math.sqrt(e)
            with torch.no_grad():
                self.proj.weight.uniform_(-bound, bound, generator=gen)
                self.proj.bias.uniform_(-bound, bound, generator=gen)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(b, s, e) tokens, (b, s) bool mask -> (b, c) complex64 unit-power symbols."""
        x = self.proj(tokens) if self.proj is not None else tokens  # (b, s, d)
        x = power_normalize(x, mask)  # (b, s, d)
        return real_to_complex(x)  # (b, c)
