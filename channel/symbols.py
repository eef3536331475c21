"""Real tokens <-> unit-power complex channel symbols.

Conventions (shared with the relay and the edge, see DESIGN.md "Channel conventions"):

- Real tokens (b, s, d) become complex symbols (b, s*d/2): adjacent reals form one
  symbol, x[..., 2k] -> Re, x[..., 2k+1] -> Im. `d` must be even.
- Power: per sample, mean |z|^2 = 1 over that sample's real (mask True) symbols.
  Padding tokens (mask False) are sent as exact zeros and never count in the power.
- On the wire and in autograd-by-hand code a complex tensor travels as real pairs
  (..., 2) = (re, im) (`as_pairs` / `from_pairs`).

Every function here is differentiable; the device runs them inside autograd.

Shapes: b batch, s tokens, d width (real), c complex symbols (= s*d/2).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_even(d: int) -> None:
    if d % 2:
        raise ValueError(f"token width d={d} is odd; complex symbols pair adjacent reals, "
                         "so use an even width (e.g. pad the projection to d+1)")


def _pairable(p: Tensor) -> Tensor:
    """`p` laid out as view_as_complex needs: contiguous, at an even storage offset."""
    p = p.contiguous()
    return p if p.storage_offset() % 2 == 0 else p.clone()


def power_normalize(x: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Scale each sample so its real symbols have mean |z|^2 = 1; zero the padding.

    x: (b, s, d) float; mask: (b, s) bool, True for real tokens (None: all real).
    Returns (b, s, d): for each sample, mean over real tokens of sum(x^2)/(d/2) == 1
    (up to `eps`, the floor on the measured power), and padding tokens exactly 0.
    A sample with no real token comes back all zeros.
    """
    b, s, d = x.shape
    _check_even(d)
    if mask is None:
        mask = torch.ones(b, s, dtype=torch.bool, device=x.device)
    if mask.shape != (b, s):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but tokens are {(b, s, d)}; "
                         "pass a (b, s) bool mask, True for real tokens")
    mask = mask.to(device=x.device, dtype=torch.bool)
    keep = mask.unsqueeze(-1)  # (b, s, 1)
    x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))  # (b, s, d)
    n_sym = mask.sum(dim=1).clamp_min(1).to(x.dtype) * (d // 2)  # (b,) real symbols per sample
    power = x.pow(2).sum(dim=(1, 2)) / n_sym  # (b,) mean |z|^2
    scale = power.clamp_min(eps).rsqrt()  # (b,)
    return x * scale.view(b, 1, 1)  # (b, s, d)


def real_to_complex(x: Tensor) -> Tensor:
    """(b, s, d) float -> (b, s*d/2) complex; adjacent reals -> (re, im).

    float32 (and half types, upcast) give complex64; float64 gives complex128.
    """
    b, s, d = x.shape
    _check_even(d)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    pairs = _pairable(x.reshape(b, s * d // 2, 2))  # (b, c, 2)
    return torch.view_as_complex(pairs)  # (b, c)


def complex_to_real(z: Tensor, s: int, d: int) -> Tensor:
    """(b, c) complex -> (b, s, d) float; the inverse of `real_to_complex`."""
    b, c = z.shape
    _check_even(d)
    if c != s * d // 2:
        raise ValueError(f"{c} complex symbols cannot hold {s} tokens of width {d} "
                         f"(needs s*d/2 = {s * d // 2}); pass the sender's s and d")
    return torch.view_as_real(z).reshape(b, s, d)  # (b, s, d)


def symbol_mask(mask: Tensor, d: int) -> Tensor:
    """(b, s) token mask -> (b, s*d/2) symbol mask (each token owns d/2 symbols)."""
    _check_even(d)
    return mask.repeat_interleave(d // 2, dim=1)  # (b, c)


def as_pairs(z: Tensor) -> Tensor:
    """(b, c) complex -> (b, c, 2) float (re, im); a view, differentiable."""
    return torch.view_as_real(z)  # (b, c, 2)


def from_pairs(p: Tensor) -> Tensor:
    """(b, c, 2) float (re, im) -> (b, c) complex; differentiable."""
    if p.shape[-1] != 2:
        raise ValueError(f"real pairs need a last dimension of 2, got shape {tuple(p.shape)}")
    if p.dtype not in (torch.float32, torch.float64):
        p = p.float()
    return torch.view_as_complex(_pairable(p))  # (b, c)


def complex_normal(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """CN(0, 1) complex64 samples drawn from `gen` (variance 1/2 per real dimension).

    One `randn(*shape, 2)` call: re and im of each sample are adjacent draws, so the
    stream is fixed by `shape` and the generator's state alone.
    """
    pairs = torch.randn(*shape, 2, generator=gen, device=gen.device)  # (*shape, 2)
    return torch.view_as_complex(pairs.mul_(math.sqrt(0.5)))  # shape; in place: one pass fewer, the same values
