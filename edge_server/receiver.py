"""Token receivers G_m, one per modality (text included).

Legend: b batch, s tokens, d width (the LM's), c = s*d/2 complex symbols.

complex symbols (b, c) -> [equaliser with the CSI the relay passed] -> real
tokens (b, s, d) -> MLP d -> hidden -> ReLU -> d.
"""
from __future__ import annotations

import torch
from torch import nn

from channel.equalize import equalize
from channel.symbols import complex_to_real


class TokenReceiver(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.d = d
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def forward(self, y: torch.Tensor, s: int, h_hat: torch.Tensor | None = None,
                noise_var: float = 0.0, equalizer: str = "none") -> torch.Tensor:
        """y (b, c) complex received symbols -> (b, s, d) LM-space tokens."""
        x = equalize(y, h_hat, noise_var, equalizer)  # (b, c)
        r = complex_to_real(x, s, self.d)  # (b, s, d)
        return self.mlp(r)  # (b, s, d)
