"""Guards on what reaches the edge's step: a message that would poison training is refused
before it gets there, and a step that went non-finite stops the run before it is applied.

Shapes: b batch, c complex symbols, L text tokens, A answer tokens.

The codec has already checked dtypes, shapes, byte counts, finiteness of float tensors and
that bool masks hold only 0 and 1; here are the checks that need the run's meaning: token
ids inside the LM's vocabulary, the noise variance and the CSI in the channel's range.
No grpc here: the servicer maps `GuardError` to INVALID_ARGUMENT.
"""
from __future__ import annotations

import math

import torch

# SNR down to -90 dB (the sweeps go to -40 dB): a larger sigma^2 is no channel of this project.
MAX_NOISE_VAR = 1e9
# |h| of the project's fading draws stays far below this (Rayleigh: P(|h| > 10) = e^-100).
MAX_CSI_GAIN = 1e3


class GuardError(ValueError):
    """A well-formed message whose content no step of this run may see."""


class NonFiniteStep(RuntimeError):
    """A training step whose loss or gradient is NaN/Inf; nothing of it was applied."""

    def __init__(self, phase: str, step: int, what: str):
        super().__init__(f"{phase} step {step}: {what} is not finite; the step was not applied and the run "
                         f"stops here (the last good checkpoint is kept); lower train.{phase}.lr or look for "
                         f"a poisoned input")
        self.phase, self.step = phase, step


def check_channel(node: str, noise_var: float, csi: torch.Tensor | None) -> None:
    """The relay's noise variance and CSI (b, n) complex for one link: finite and in range."""
    if not math.isfinite(noise_var) or not 0.0 <= noise_var <= MAX_NOISE_VAR:
        raise GuardError(f"{node}: noise_var {noise_var!r} is outside [0, {MAX_NOISE_VAR:g}]")
    if csi is not None and csi.numel():
        gain = csi.abs()  # (b, n)
        if not bool(torch.isfinite(gain).all()) or float(gain.max()) > MAX_CSI_GAIN:
            raise GuardError(f"{node}: csi gains must be finite with |h| <= {MAX_CSI_GAIN:g}")


def check_labels(node: str, labels: dict, vocab: int) -> None:
    """Token ids (b, L) and (b, A) inside [0, vocab); the masks are bool by the codec."""
    for key in ("text_ids", "answer_ids"):
        ids = labels.get(key)
        if ids is None or ids.numel() == 0:
            continue
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise GuardError(f"{node}: labels.{key} holds token ids in [{lo}, {hi}]; this run's vocabulary "
                             f"is [0, {vocab})")
    for key in ("text_mask", "answer_mask"):
        mask = labels.get(key)
        if mask is not None and mask.dtype != torch.bool:
            raise GuardError(f"{node}: labels.{key} is {mask.dtype}, expected bool")


def check_finite_step(phase: str, step: int, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
    """Raise NonFiniteStep if the loss or any gradient of `params` (the edge's weights and the
    devices' symbols) holds NaN/Inf; called after backward and before the optimiser steps."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteStep(phase, step, f"the loss ({loss.item()})")
    grads = [p.grad for p in params if p.grad is not None]
    # one flag per tensor, read back once (one device sync on CUDA instead of one per tensor)
    if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
        raise NonFiniteStep(phase, step, "a gradient")
