"""Token selection returns exactly s tokens and matches a naive per-window loop."""
from __future__ import annotations

import pytest
import torch

from device_node.selection import select_tokens, stride_indices

METHODS = ("window_mean", "window_max", "stride")
PAPER_CASES = [(n, s) for n in (1214, 3137) for s in (16, 32, 64, 128)]
SMALL_CASES = [(n, s) for n in range(1, 13) for s in range(1, n + 1)]


def naive_select(x: torch.Tensor, s: int, method: str) -> torch.Tensor:
    """Independent reference: one window at a time, bounds straight from the definition."""
    n = x.shape[1]
    out = []
    for i in range(s):
        lo, hi = (i * n) // s, ((i + 1) * n) // s
        if method == "window_mean":
            out.append(x[:, lo:hi].mean(dim=1))
        elif method == "window_max":
            out.append(x[:, lo:hi].max(dim=1).values)
        else:
            out.append(x[:, lo + n // (2 * s)])
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("n,s", PAPER_CASES + SMALL_CASES)
@pytest.mark.parametrize("method", METHODS)
def test_exactly_s_tokens_matching_naive_loop(n, s, method):
    gen = torch.Generator().manual_seed(n * 1000 + s)
    x = torch.randn(2, n, 8, generator=gen, dtype=torch.float64)
    y = select_tokens(x, s, method)
    assert y.shape == (2, s, 8)
    torch.testing.assert_close(y, naive_select(x, s, method), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,s", PAPER_CASES)
def test_windows_partition_the_sequence(n, s):
    # Token t holds the value t: the max of a window is its last index, the mean its middle.
    x = torch.arange(n, dtype=torch.float64).view(1, n, 1).repeat(1, 1, 3)  # (1, n, 3)
    maxes = select_tokens(x, s, "window_max")[0, :, 0]
    means = select_tokens(x, s, "window_mean")[0, :, 0]
    assert maxes[-1] == n - 1  # the last window reaches the end
    lengths = torch.diff(torch.cat([torch.tensor([-1.0], dtype=torch.float64), maxes]))
    assert lengths.sum() == n and lengths.min() >= n // s and lengths.max() <= -(-n // s)
    starts = maxes - lengths + 1
    assert starts[0] == 0
    torch.testing.assert_close(means, (starts + maxes) / 2)


@pytest.mark.parametrize("n,s", PAPER_CASES + SMALL_CASES)
def test_stride_spreads_over_first_and_last_regions(n, s):
    idx = stride_indices(n, s)
    assert idx.shape == (s,)
    assert bool((torch.diff(idx) > 0).all())  # distinct, in order
    assert 0 <= int(idx[0]) < max(n // s, 1) + n // (2 * s)  # inside the first window
    assert n - n / s - 1 <= int(idx[-1]) <= n - 1  # inside the last window


def test_window_mean_gradient_is_one_over_window_length():
    n, s = 10, 4  # windows [0,2) [2,5) [5,7) [7,10)
    x = torch.randn(1, n, 2, requires_grad=True)
    select_tokens(x, s, "window_mean").sum().backward()
    expected = torch.tensor([1 / 2] * 2 + [1 / 3] * 3 + [1 / 2] * 2 + [1 / 3] * 3)
    torch.testing.assert_close(x.grad[0, :, 0], expected)
    torch.testing.assert_close(x.grad[0, :, 1], expected)


def test_window_max_gradient_reaches_only_the_maxima():
    x = torch.tensor([[[1.0], [5.0], [2.0], [-1.0], [-3.0], [7.0]]], requires_grad=True)
    select_tokens(x, 2, "window_max").sum().backward()  # windows [0,3) and [3,6)
    assert x.grad[0, :, 0].tolist() == [0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize("s", [0, -1, 8])
def test_bad_token_count_raises(s):
    with pytest.raises(ValueError, match="cannot select"):
        select_tokens(torch.zeros(1, 7, 2), s, "window_mean")


def test_bad_method_and_shape_raise():
    with pytest.raises(ValueError, match="unknown selection method"):
        select_tokens(torch.zeros(1, 7, 2), 2, "topk")
    with pytest.raises(ValueError, match="shape"):
        select_tokens(torch.zeros(7, 2), 2, "window_mean")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_matches_cpu(method):
    x = torch.randn(3, 3137, 16, generator=torch.Generator().manual_seed(0))
    y = select_tokens(x.cuda(), 32, method)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), select_tokens(x, 32, method))
