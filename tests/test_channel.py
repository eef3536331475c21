"""The link model against theory: noise, fading statistics, blocks, CSI, replay, VJP, equalisers."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from channel.csi import ls_estimate, pilot_sequence
from channel.equalize import equalize
from channel.fading import LinkChannel, num_blocks, symbols_per_block
from configs.schema import LinkConfig


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _qpsk(b, c, seed=100):
    """Unit-power QPSK symbols, independent of the channel's generator."""
    bits = torch.randint(0, 2, (b, c, 2), generator=_gen(seed)).float()
    return torch.complex(1 - 2 * bits[..., 0], 1 - 2 * bits[..., 1]) / math.sqrt(2)


def _link(**kw):
    return LinkChannel(LinkConfig(**kw))


# ---------------------------------------------------------------- noise and SNR


def test_noise_is_circular_gaussian_with_sigma2_over_2_per_dimension():
    link = _link(fading="awgn", snr_db=7.0)
    sigma2 = 10 ** (-0.7)
    assert link.noise_var == pytest.approx(sigma2) and link.snr_linear == pytest.approx(1 / sigma2)
    out = link(torch.zeros(4, 250_000, dtype=torch.complex64), _gen())
    n = out.y.flatten()
    assert out.noise_var == pytest.approx(sigma2)
    assert n.real.var().item() == pytest.approx(sigma2 / 2, rel=0.01)
    assert n.imag.var().item() == pytest.approx(sigma2 / 2, rel=0.01)
    assert abs(n.mean().item()) < 0.01 * math.sqrt(sigma2)
    assert abs(torch.corrcoef(torch.stack([n.real, n.imag]))[0, 1].item()) < 0.01
    assert stats.kstest(n.real[:20_000].numpy(), "norm", args=(0, math.sqrt(sigma2 / 2))).pvalue > 1e-3


@pytest.mark.parametrize("fading", ["awgn", "rayleigh", "rician"])
def test_measured_snr_matches_nominal(fading):
    link = _link(fading=fading, snr_db=12.0, coherence=1)
    x = _qpsk(2, 200_000)
    out = link(x, _gen(1))
    hx = out.h * x
    snr_db = 10 * math.log10(hx.abs().square().mean().item() / (out.y - hx).abs().square().mean().item())
    assert snr_db == pytest.approx(12.0, abs=0.05)


def test_awgn_gain_is_exactly_one_and_perfect_csi_is_the_truth():
    out = _link(fading="awgn")(_qpsk(2, 10), _gen())
    assert torch.equal(out.h, torch.ones(2, 10, dtype=torch.complex64))
    assert torch.equal(out.h_hat, out.h)


# ---------------------------------------------------------------- fading statistics


def test_rayleigh_power_is_exponential_with_unit_mean():
    out = _link(fading="rayleigh", coherence=1)(torch.zeros(2, 100_000, dtype=torch.complex64), _gen(2))
    power = out.h.abs().square().flatten().double()
    assert power.mean().item() == pytest.approx(1.0, rel=0.01)
    assert power.var().item() == pytest.approx(1.0, rel=0.03)  # Exp(1): variance 1
    assert stats.kstest(power[:20_000].numpy(), "expon").pvalue > 1e-3


@pytest.mark.parametrize("k", [0.0, 3.0, 10.0])
def test_rician_envelope_follows_the_rice_distribution(k):
    out = _link(fading="rician", k_factor=k, coherence=1)(torch.zeros(2, 100_000, dtype=torch.complex64), _gen(3))
    h = out.h.flatten()
    assert h.abs().square().mean().item() == pytest.approx(1.0, rel=0.01)
    # the LOS phase is uniform per block, so the mean gain vanishes
    assert abs(h.mean().item()) < 0.01
    # |h| ~ Rice(nu, s) with nu^2 = K/(K+1) and s^2 = 1/(2(K+1)) per real dimension
    s = math.sqrt(1 / (2 * (k + 1)))
    nu = math.sqrt(k / (k + 1))
    assert stats.kstest(h.abs()[:20_000].numpy(), "rice", args=(nu / s, 0, s)).pvalue > 1e-3
    # fourth moment E|h|^4 = (2 + 4K + K^2) / (K+1)^2
    m4 = h.abs().double().pow(4).mean().item()
    assert m4 == pytest.approx((2 + 4 * k + k * k) / (k + 1) ** 2, rel=0.03)


# ---------------------------------------------------------------- block structure


@pytest.mark.parametrize("c, coherence, blocks, length",
                         [(10, 4, 3, 4), (10, 5, 2, 5), (10, 1, 10, 1), (10, 0, 1, 10), (10, 64, 1, 64)])
def test_block_counts(c, coherence, blocks, length):
    assert num_blocks(c, coherence) == blocks
    assert symbols_per_block(c, coherence) == length


@pytest.mark.parametrize("fading", ["rayleigh", "rician"])
def test_gain_is_constant_within_blocks_and_changes_between_them(fading):
    out = _link(fading=fading, coherence=4)(_qpsk(3, 10), _gen(4))
    for row in out.h:
        blocks = [row[0:4], row[4:8], row[8:10]]  # the last block is short
        for blk in blocks:
            assert torch.all(blk == blk[0])
        firsts = torch.stack([blk[0] for blk in blocks])
        assert len(set(firsts.tolist())) == 3


def test_coherence_zero_is_one_gain_per_sample_and_long_blocks_cover_the_sample():
    for coherence in (0, 1000):
        out = _link(fading="rayleigh", coherence=coherence)(_qpsk(4, 33), _gen(5))
        assert torch.all(out.h == out.h[:, :1])
        assert len(set(out.h[:, 0].tolist())) == 4


def test_channel_uses_count_pilots_per_block():
    assert _link(csi="perfect", coherence=4).channel_uses(10) == 10
    assert _link(csi="estimated", coherence=4, pilots=2).channel_uses(10) == 10 + 3 * 2
    assert _link(csi="estimated", coherence=0, pilots=8).channel_uses(10) == 18


# ---------------------------------------------------------------- CSI


def test_ls_estimate_of_noiseless_pilots_is_exact():
    x_p = pilot_sequence(5)
    assert torch.allclose(x_p.abs(), torch.ones(5))
    h = torch.tensor([[0.3 - 1.2j, 2.0 + 0.5j]], dtype=torch.complex64)
    assert torch.allclose(ls_estimate(h.unsqueeze(-1) * x_p, x_p), h)


@pytest.mark.parametrize("pilots", [1, 8])
def test_estimated_csi_error_variance_is_sigma2_over_pilots(pilots):
    link = _link(fading="rayleigh", snr_db=5.0, coherence=1, csi="estimated", pilots=pilots)
    out = link(torch.zeros(2, 100_000, dtype=torch.complex64), _gen(6))
    err = (out.h_hat - out.h).flatten()
    assert err.abs().square().mean().item() == pytest.approx(10 ** -0.5 / pilots, rel=0.02)
    assert abs(err.mean().item()) < 0.01 * math.sqrt(10 ** -0.5 / pilots)


def test_estimated_csi_is_per_block_and_none_gives_nothing():
    out = _link(fading="rician", coherence=5, csi="estimated")(_qpsk(2, 12), _gen(7))
    for row in out.h_hat:
        for blk in (row[0:5], row[5:10], row[10:12]):
            assert torch.all(blk == blk[0])
    assert _link(csi="none")(_qpsk(2, 12), _gen(7)).h_hat is None


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize("fading, csi", [("awgn", "perfect"), ("rayleigh", "estimated"), ("rician", "none")])
def test_same_seed_same_output_different_seed_different(fading, csi):
    link = _link(fading=fading, csi=csi, coherence=3)
    x = _qpsk(2, 20)
    a, b, c = link(x, _gen(11)), link(x, _gen(11)), link(x, _gen(12))
    assert torch.equal(a.y, b.y) and torch.equal(a.h, b.h)
    assert (a.h_hat is None and b.h_hat is None) or torch.equal(a.h_hat, b.h_hat)
    assert not torch.equal(a.y, c.y)


def test_draw_order_is_theta_then_g_then_pilot_noise_then_data_noise():
    k, sigma2, pilots = 3.0, 10 ** -1.0, 2
    link = _link(fading="rician", k_factor=k, snr_db=10.0, coherence=4, csi="estimated", pilots=pilots)
    x = _qpsk(2, 10)
    out = link(x, _gen(21))
    # replay the documented sequence by hand: 3 blocks per sample
    g = _gen(21)
    theta = torch.rand(2, 3, generator=g) * 2 * math.pi
    fade = torch.view_as_complex(torch.randn(2, 3, 2, generator=g) * math.sqrt(0.5))
    pilot_noise = torch.view_as_complex(torch.randn(2, 3, pilots, 2, generator=g) * math.sqrt(0.5))
    noise = torch.view_as_complex(torch.randn(2, 10, 2, generator=g) * math.sqrt(0.5))
    h_blk = math.sqrt(k / (k + 1)) * torch.exp(1j * theta) + math.sqrt(1 / (k + 1)) * fade
    h = h_blk.repeat_interleave(4, dim=1)[:, :10]
    x_p = torch.exp(1j * (math.pi / 4 + torch.arange(pilots) * math.pi / 2))
    h_hat_blk = (h_blk.unsqueeze(-1) + math.sqrt(sigma2) * pilot_noise / x_p).mean(-1)
    assert torch.allclose(out.h, h, atol=1e-6)
    assert torch.allclose(out.h_hat, h_hat_blk.repeat_interleave(4, dim=1)[:, :10], atol=1e-6)
    assert torch.allclose(out.y, h * x + math.sqrt(sigma2) * noise, atol=1e-6)


def test_real_valued_input_is_rejected():
    with pytest.raises(ValueError, match="real_to_complex"):
        _link()(torch.ones(2, 4), _gen())


# ---------------------------------------------------------------- gradient path


def test_vjp_matches_autograd_on_the_real_pair_formulation():
    b, c = 3, 7
    g = _gen(31)
    h = torch.view_as_complex(torch.randn(b, c, 2, generator=g))
    xp = torch.randn(b, c, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(b, c, 2, generator=g, dtype=torch.float64)  # dL/d(Re y), dL/d(Im y)
    hr, hi = h.real.double(), h.imag.double()
    yr = hr * xp[..., 0] - hi * xp[..., 1]
    yi = hr * xp[..., 1] + hi * xp[..., 0]
    (w[..., 0] * yr + w[..., 1] * yi).sum().backward()
    expected = torch.complex(xp.grad[..., 0], xp.grad[..., 1])  # dL/dRe x + j dL/dIm x
    got = LinkChannel.vjp(torch.complex(w[..., 0], w[..., 1]), h.to(torch.complex128))
    assert torch.allclose(got, expected, atol=1e-12)


def test_vjp_matches_torch_complex_autograd_through_the_channel():
    link = _link(fading="rayleigh", coherence=2)
    x = _qpsk(2, 8).requires_grad_(True)
    out = link(x, _gen(32))
    grad_y = torch.randn(2, 8, dtype=torch.complex64, generator=_gen(33))
    out.y.backward(grad_y)
    assert torch.allclose(x.grad, link.vjp(grad_y, out.h.detach()), atol=1e-6)


# ---------------------------------------------------------------- equalisers


def test_equalizers_on_hand_computed_values():
    y = torch.tensor([[2.0 + 0j]], dtype=torch.complex64)
    h = torch.tensor([[1.0 + 1j]], dtype=torch.complex64)
    assert torch.allclose(equalize(y, h, 0.5, "zf"), torch.tensor([[1 - 1j]], dtype=torch.complex64))
    # conj(h) y / (|h|^2 + sigma^2) = (1 - j) 2 / 2.5
    assert torch.allclose(equalize(y, h, 0.5, "mmse"), torch.tensor([[0.8 - 0.8j]], dtype=torch.complex64))
    assert equalize(y, h, 0.5, "none") is y
    assert equalize(y, None, 0.5, "mmse") is y
    with pytest.raises(ValueError, match="unknown equalizer"):
        equalize(y, h, 0.5, "lmmse")


def test_zf_with_perfect_csi_inverts_a_noiseless_channel():
    link = _link(fading="rayleigh", snr_db=200.0, coherence=3)
    x = _qpsk(2, 9)
    out = link(x, _gen(41))
    assert torch.allclose(equalize(out.y, out.h_hat, out.noise_var, "zf"), x, atol=1e-4)


def test_mmse_beats_zf_in_mean_squared_error_under_rayleigh_fading():
    link = _link(fading="rayleigh", snr_db=0.0, coherence=1)
    x = _qpsk(1, 100_000)
    out = link(x, _gen(42))
    mse = {k: (equalize(out.y, out.h_hat, out.noise_var, k) - x).abs().square().mean().item()
           for k in ("zf", "mmse")}
    # MMSE per symbol: sigma^2 / (|h|^2 + sigma^2); its mean over Exp(1) power at sigma^2 = 1
    # is E[1/(P+1)] = e * E1(1)
    from scipy.special import exp1
    assert mse["mmse"] == pytest.approx(math.e * exp1(1.0), rel=0.02)
    assert mse["mmse"] < mse["zf"]


@pytest.mark.parametrize("kind", ["zf", "mmse"])
def test_equalizers_are_differentiable_in_y(kind):
    h = torch.tensor([[0.5 - 2j, 1 + 1j]], dtype=torch.complex64)
    y = torch.tensor([[1 + 2j, -1 + 0.5j]], dtype=torch.complex64, requires_grad=True)
    equalize(y, h, 0.25, kind).real.sum().backward()  # dL/dx_hat = 1 + 0j
    w = 1 / h if kind == "zf" else h.conj() / (h.abs().square() + 0.25)  # x_hat = w y
    assert torch.allclose(y.grad, w.conj(), atol=1e-6)


def test_rician_mean_envelope_matches_scipy():
    # |E[h e^{-j theta}]|^2 = K/(K+1) needs theta, which a random-phase link does not
    # expose; the mean envelope E|h| pins the LOS/scatter split instead.
    k = 3.0
    out = _link(fading="rician", k_factor=k, coherence=1)(torch.zeros(1, 200_000, dtype=torch.complex64), _gen(51))
    s = math.sqrt(1 / (2 * (k + 1)))
    expected_mean = stats.rice.mean(math.sqrt(k / (k + 1)) / s, scale=s)
    assert float(np.mean(out.h.abs().numpy())) == pytest.approx(expected_mean, rel=0.005)
