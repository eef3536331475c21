"""Real tokens <-> unit-power complex symbols: power, masks, layout and gradients."""
import pytest
import torch

from channel.symbols import (as_pairs, complex_normal, complex_to_real, from_pairs,
                             power_normalize, real_to_complex, symbol_mask)


def _tokens(b=3, s=5, d=6, seed=0):
    return torch.randn(b, s, d, generator=torch.Generator().manual_seed(seed)) * 3 + 1


def _mask(lengths, s):
    return torch.arange(s).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (b, s)


def test_power_normalize_unit_power_over_real_tokens_only():
    x = _tokens()
    mask = _mask([5, 2, 1], 5)
    out = power_normalize(x, mask)
    for i, n in enumerate([5, 2, 1]):
        real = out[i, :n].double()
        # mean |z|^2 over real complex symbols = sum of squares / number of symbols
        assert real.pow(2).sum() / (n * 3) == pytest.approx(1.0, rel=1e-5)
        assert torch.all(out[i, n:] == 0)


def test_power_normalize_padding_values_do_not_change_real_tokens():
    x = _tokens()
    mask = _mask([5, 2, 3], 5)
    y = x.clone()
    y[~mask] = 1e4  # garbage in the padding must not leak into the power
    y[2, 4, 0] = float("nan")
    assert torch.allclose(power_normalize(x, mask), power_normalize(y, mask))


def test_power_normalize_is_a_pure_per_sample_rescale():
    x = _tokens()
    out = power_normalize(x, None)
    assert torch.allclose(power_normalize(7.5 * x, None), out, atol=1e-6)
    ratio = out / x  # one positive scale per sample
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), rtol=1e-5)
    assert torch.all(ratio > 0)
    assert torch.equal(out, power_normalize(x, torch.ones(3, 5, dtype=torch.bool)))


def test_power_normalize_gradient_flows_to_real_tokens_only():
    x = _tokens().requires_grad_(True)
    mask = _mask([5, 2, 3], 5)
    w = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1))
    (power_normalize(x, mask) * w).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[~mask] == 0)
    assert torch.all(x.grad[mask].abs().sum(-1) > 0)


def test_power_normalize_all_padding_sample_is_zero_and_finite():
    x = _tokens(b=2).requires_grad_(True)
    out = power_normalize(x, _mask([0, 3], 5))
    out.sum().backward()
    assert torch.all(out[0] == 0) and torch.isfinite(x.grad).all()


def test_odd_width_and_bad_mask_are_rejected():
    with pytest.raises(ValueError, match="even width"):
        power_normalize(torch.ones(1, 2, 3), None)
    with pytest.raises(ValueError, match="mask"):
        power_normalize(torch.ones(1, 2, 4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="even width"):
        real_to_complex(torch.ones(1, 2, 3))


def test_real_to_complex_pairs_adjacent_reals():
    x = _tokens(b=2, s=3, d=4)
    z = real_to_complex(x)
    assert z.shape == (2, 6) and z.dtype == torch.complex64
    for i in range(2):
        for t in range(3):
            for k in range(2):
                assert z[i, t * 2 + k] == complex(x[i, t, 2 * k], x[i, t, 2 * k + 1])


def test_real_complex_round_trip_and_dtypes():
    x = _tokens()
    assert torch.equal(complex_to_real(real_to_complex(x), 5, 6), x)
    assert real_to_complex(x.double()).dtype == torch.complex128
    assert real_to_complex(x.half()).dtype == torch.complex64
    odd = torch.arange(13.0)[1:].view(1, 3, 4)  # contiguous at an odd storage offset
    assert torch.equal(complex_to_real(real_to_complex(odd), 3, 4), odd)
    assert torch.equal(as_pairs(from_pairs(odd.view(1, 6, 2))), odd.view(1, 6, 2))
    with pytest.raises(ValueError, match="s\\*d/2"):
        complex_to_real(real_to_complex(x), 4, 6)


def test_real_complex_conversions_are_differentiable():
    x = _tokens().requires_grad_(True)
    real_to_complex(x).abs().square().sum().backward()  # sum |z|^2 = sum x^2
    assert torch.allclose(x.grad, 2 * x.detach())
    z = torch.randn(2, 6, dtype=torch.complex64).requires_grad_(True)
    complex_to_real(z, 3, 4).sum().backward()  # d/dRe = 1, d/dIm = 1
    assert torch.allclose(z.grad, torch.full_like(z, 1 + 1j))


def test_symbol_mask_expands_each_token_to_its_symbols():
    mask = _mask([3, 1], 4)
    sm = symbol_mask(mask, 6)
    expected = torch.tensor([[t < n for t in range(4) for _ in range(3)] for n in (3, 1)])
    assert torch.equal(sm, expected)
    x = _tokens(b=2, s=4, d=6)
    z = real_to_complex(power_normalize(x, mask))
    for i in range(2):
        assert z[i, sm[i]].abs().square().mean().item() == pytest.approx(1.0, rel=1e-5)
        assert torch.all(z[i, ~sm[i]] == 0)


def test_pairs_round_trip():
    z = torch.randn(2, 5, dtype=torch.complex64)
    p = as_pairs(z)
    assert p.shape == (2, 5, 2)
    assert torch.equal(p[..., 0], z.real) and torch.equal(p[..., 1], z.imag)
    assert torch.equal(from_pairs(p), z)
    assert torch.equal(from_pairs(p.permute(1, 0, 2).contiguous().permute(1, 0, 2)), z)
    with pytest.raises(ValueError, match="last dimension of 2"):
        from_pairs(torch.ones(2, 3))


def test_complex_normal_is_unit_variance_and_seeded():
    n = complex_normal((400_000,), torch.Generator().manual_seed(3))
    assert n.dtype == torch.complex64
    assert n.real.var().item() == pytest.approx(0.5, rel=0.01)
    assert n.imag.var().item() == pytest.approx(0.5, rel=0.01)
    assert abs(n.mean().item()) < 0.005
    assert abs((n.real * n.imag).mean().item()) < 0.005
    again = complex_normal((400_000,), torch.Generator().manual_seed(3))
    assert torch.equal(n, again)
