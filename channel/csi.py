"""Channel state information from pilots: least-squares (LS) estimation per block.

In every fading block the transmitter sends `pilots` known unit-power symbols x_p
before its data; the receiver sees y_p = h x_p + n_p and estimates

    h_hat = mean_p(y_p / x_p) = h + mean_p(n_p / x_p),

so the estimate is unbiased with error variance E|h_hat - h|^2 = sigma^2 / pilots
(|x_p| = 1 keeps n_p / x_p ~ CN(0, sigma^2)).

Shapes: b batch, n fading blocks per sample, p pilots per block.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from channel.symbols import complex_normal


def pilot_sequence(pilots: int, device: torch.device | str = "cpu") -> Tensor:
    """The known pilots: (p,) complex64 QPSK points exp(j(pi/4 + k pi/2)), |x_p| = 1."""
    k = torch.arange(pilots, dtype=torch.float32, device=device)
    return torch.polar(torch.ones_like(k), math.pi / 4 + k * math.pi / 2)  # (p,)


def ls_estimate(y_p: Tensor, x_p: Tensor) -> Tensor:
    """LS gain estimate from received pilots y_p (..., p) and known pilots x_p (p,)."""
    return (y_p / x_p).mean(dim=-1)  # (...)


def estimate_gains(h_blk: Tensor, noise_var: float, pilots: int, gen: torch.Generator) -> Tensor:
    """Send `pilots` pilots through each block gain and return the LS estimate.

    h_blk: (b, n) complex, one gain per block. Draws one CN(0, 1) tensor of shape
    (b, n, p) from `gen`. Returns h_hat (b, n) on h_blk's device and dtype.
    """
    b, n = h_blk.shape
    x_p = pilot_sequence(pilots, h_blk.device).to(h_blk.dtype)  # (p,)
    noise = complex_normal((b, n, pilots), gen).to(h_blk.device, h_blk.dtype)  # (b, n, p)
    y_p = h_blk.unsqueeze(-1) * x_p + math.sqrt(noise_var) * noise  # (b, n, p)
    return ls_estimate(y_p, x_p)  # (b, n)
