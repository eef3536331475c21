"""Stage losses, computed at the edge.

Legend: b batch, s tokens, d width.

- Text reconstruction: MSE between the text receiver's output and the clean text
  embeddings, over real (non-padding) tokens only.
- Alignment: InfoNCE of each non-text modality's pooled features against the pooled
  clean text features, written with `cross_entropy` on logits / tau (log-sum-exp
  inside), so it stays finite at tau = 0.01 where exp/sum overflows.
- Pooling is a masked mean: padding never enters a pooled feature.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean_pool(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(b, s, d), (b, s) bool -> (b, d): the mean over real tokens only."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (b, s, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the real tokens' elements of (b, s, d) tensors."""
    if mask is None:
        return F.mse_loss(pred, target)
    w = mask.to(pred.dtype).unsqueeze(-1)  # (b, s, 1)
    err = ((pred - target) ** 2 * w).sum()
    return err / (w.sum() * pred.shape[-1]).clamp_min(1.0)


def info_nce(a: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of a (b, d) and t (b, d).

    Row i of `a` and row i of `t` are the positive pair; the other rows of the batch
    are the negatives. Features are L2-normalised, so logits lie in [-1/tau, 1/tau].
    """
    a = F.normalize(a, dim=-1)
    t = F.normalize(t, dim=-1)
    logits = a @ t.T / tau  # (b, b)
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
