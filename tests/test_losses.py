"""Stage losses against independent float64 computations."""
import math

import numpy as np
import torch

from edge_server.losses import info_nce, masked_mean_pool, masked_mse


def _nce_reference(a: np.ndarray, t: np.ndarray, tau: float) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    sim = a @ t.T / tau
    total = 0.0
    for logits in (sim, sim.T):
        for i in range(len(logits)):
            m = logits[i].max()
            lse = m + math.log(sum(math.exp(v - m) for v in logits[i]))
            total += (lse - logits[i, i]) / len(logits)
    return total / 2


def test_info_nce_matches_independent_computation():
    g = torch.Generator().manual_seed(1)
    a, t = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    for tau in (0.03, 0.07, 0.13, 1.0):
        ours = float(info_nce(a, t, tau))
        ref = _nce_reference(a.double().numpy(), t.double().numpy(), tau)
        assert abs(ours - ref) < 1e-4 * max(1.0, abs(ref))


def test_info_nce_finite_at_small_tau_with_near_identical_features():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(8, 32, generator=g)
    a = (base + 1e-6 * torch.randn(8, 32, generator=g)).requires_grad_(True)
    t = base.clone() + 1e-6 * torch.randn(8, 32, generator=g)
    loss = info_nce(a, t, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    # naive exp/sum overflows in float32 at tau=0.01 for matched pairs (exp(100) is fine, but
    # the independent float64 value must match ours)
    ref = _nce_reference(a.detach().double().numpy(), t.double().numpy(), 0.01)
    assert abs(float(loss) - ref) < 1e-3


def test_masked_mean_pool_ignores_padding():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    pooled = masked_mean_pool(x, mask)
    x2 = x.clone()
    x2[~mask] = 1e6  # garbage in the padding must not move the pooled features
    assert torch.allclose(masked_mean_pool(x2, mask), pooled)
    for i in range(3):
        n = int(mask[i].sum())
        assert torch.allclose(pooled[i], x[i, :n].mean(0), atol=1e-6)


def test_masked_mse_over_real_tokens_only():
    g = torch.Generator().manual_seed(4)
    p, t = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    diffs = [((p[i, j] - t[i, j]) ** 2).numpy() for i in range(2) for j in range(4) if mask[i, j]]
    ref = float(np.concatenate(diffs).mean())
    assert abs(float(masked_mse(p, t, mask)) - ref) < 1e-6
    p2 = p.clone()
    p2[~mask] += 100.0
    assert abs(float(masked_mse(p2, t, mask)) - ref) < 1e-6
