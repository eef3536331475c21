"""Fixed per-dimension standardisation of cached encoder tokens."""
import torch

from device_node.build import FeatureBank


def test_standardisation_uses_training_statistics_only():
    g = torch.Generator().manual_seed(0)
    table = {f"c{i}": 5.0 + 0.1 * torch.randn(4, 3, generator=g) for i in range(10)}
    table["test"] = torch.full((4, 3), 7.0)  # an outlier clip outside the statistics
    bank = FeatureBank(table, 3, stats_clips=[f"c{i}" for i in range(10)])
    train = bank([f"c{i}" for i in range(10)]).reshape(-1, 3)
    assert torch.allclose(train.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train.std(0), torch.ones(3), atol=1e-4)
    raw = torch.stack([table[f"c{i}"] for i in range(10)]).reshape(-1, 3)
    expect = (7.0 - raw.mean(0)) / raw.std(0)  # independent: the statistics recomputed here
    assert torch.allclose(bank(["test"])[0, 0], expect, rtol=1e-4)


def test_without_statistics_the_tokens_pass_unchanged():
    table = {"a": torch.arange(6.0).reshape(2, 3)}
    assert torch.equal(FeatureBank(table, 3)(["a"])[0], table["a"])
