"""Token selection: shorten an encoder's output sequence to exactly `s` tokens.

Shapes: `b` batch, `n` encoder tokens (AST 1214, ViViT 3137), `s` selected tokens, `d` width.

The sequence is cut into `s` contiguous windows that cover it: window i holds tokens
[floor(i*n/s), floor((i+1)*n/s)), which is never empty for s <= n and has length
floor(n/s) or ceil(n/s). Methods:
- "window_mean": the mean of each window (the paper's sliding-window pooling);
- "window_max": the element-wise max of each window;
- "stride": one token per window, at offset floor(n/(2s)) from its start, so the
  picks are spread evenly and both the first and the last region are represented.
The authors' window selector could return fewer than s tokens; this one returns exactly s.
"""
from __future__ import annotations

import torch

from configs.schema import SELECTIONS


def _window_starts(n: int, s: int, device: torch.device) -> torch.Tensor:
    """Window boundaries floor(i*n/s) for i = 0..s (integer arithmetic, exact)."""
    return torch.arange(s + 1, device=device) * n // s  # (s+1,)


def _pool_windows(x: torch.Tensor, s: int, method: str) -> torch.Tensor:
    n = x.shape[1]
    bounds = _window_starts(n, s, x.device)
    starts, lens = bounds[:-1], bounds[1:] - bounds[:-1]  # (s,), (s,)
    width = -(-n // s)  # longest window, ceil(n/s)
    offs = torch.arange(width, device=x.device)
    mask = offs[None, :] < lens[:, None]  # (s, w)
    idx = (starts[:, None] + offs[None, :]).clamp(max=n - 1)  # (s, w); clamped slots are masked
    win = x[:, idx]  # (b, s, w, d)
    if method == "window_mean":
        win = win * mask[None, :, :, None].to(x.dtype)
        return win.sum(dim=2) / lens[None, :, None].to(x.dtype)  # (b, s, d)
    win = win.masked_fill(~mask[None, :, :, None], float("-inf"))
    return win.amax(dim=2)  # (b, s, d)


def stride_indices(n: int, s: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The `s` token indices that "stride" keeps: floor(i*n/s) + floor(n/(2s))."""
    return _window_starts(n, s, torch.device(device))[:-1] + n // (2 * s)  # (s,)


def select_tokens(x: torch.Tensor, s: int, method: str) -> torch.Tensor:
    """Select exactly `s` tokens from `x` (b, n, d); returns (b, s, d) on x's device.

    Differentiable for "window_mean" and "window_max" ("stride" passes gradients to the
    picked tokens). Raises ValueError for 1 > s or s > n or an unknown method.
    """
    if x.dim() != 3:
        raise ValueError(f"select_tokens expects x of shape (b, n, d), got {tuple(x.shape)}; "
                         "add a batch dimension with x.unsqueeze(0)")
    n = x.shape[1]
    if not 1 <= s <= n:
        raise ValueError(f"cannot select s={s} tokens from a sequence of n={n}; "
                         f"choose the token count in 1..{n}")
    if method not in SELECTIONS:
        raise ValueError(f"unknown selection method '{method}'; use one of {SELECTIONS}")
    if method == "stride":
        return x[:, stride_indices(n, s, x.device)]  # (b, s, d)
    return _pool_windows(x, s, method)
