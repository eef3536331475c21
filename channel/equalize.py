"""Receiver-side equalisation with the CSI the receiver has.

    zf:   x_hat = y / h_hat
    mmse: x_hat = conj(h_hat) y / (|h_hat|^2 + sigma^2)
    none: x_hat = y (also whenever h_hat is None, i.e. csi = "none")

Differentiable with respect to y (the edge runs it inside autograd); h_hat is the
receiver's knowledge and gets no gradient of its own meaning.

Shapes: b batch, c complex symbols.
"""
from __future__ import annotations

from torch import Tensor

from configs.schema import EQUALIZERS


def equalize(y: Tensor, h_hat: Tensor | None, noise_var: float, kind: str) -> Tensor:
    """Equalise received symbols y (b, c) complex with gains h_hat (b, c); returns (b, c)."""
    if kind not in EQUALIZERS:
        raise ValueError(f"unknown equalizer '{kind}'; use one of {EQUALIZERS}")
    if kind == "none" or h_hat is None:
        return y
    if kind == "zf":
        return y / h_hat  # (b, c)
    return h_hat.conj() * y / (h_hat.abs().square() + noise_var)  # (b, c)
