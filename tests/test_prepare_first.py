"""Devices prepare before they register: `tokcom run` fills the encoder feature caches before it
starts any process, so a device's start-up (and its Hello) never waits for an encoder, and the
edge's registration deadline does not run while the encoders do."""
from __future__ import annotations

import argparse

import pytest

from device_node import features
from device_node.build import build_device, prepare_features
from launch import cluster

pytestmark = pytest.mark.timeout(300)


def test_the_launcher_prepares_features_before_any_process(tmp_path, monkeypatch):
    order = []
    monkeypatch.setattr(cluster, "prepare_assets", lambda cfg: order.append("assets") or ("dataset", None))
    monkeypatch.setattr(cluster, "prepare_features", lambda cfg, dataset, cache: order.append(f"features of {dataset}"))
    monkeypatch.setattr(cluster, "run_cluster", lambda cfg, args, children, deadline: order.append("processes"))
    monkeypatch.setattr(cluster, "report", lambda out: 0)
    args = argparse.Namespace(config=None, overrides=[], out=str(tmp_path / "run"), no_progress=True, timeout=60.0,
                              resume=False)
    assert cluster.run(args) == 0
    assert order == ["assets", "features of dataset", "processes"]


def test_after_preparation_a_device_starts_without_encoding(small_cfg, assets, cache_dir, monkeypatch):
    dataset, foundation = assets
    prepare_features(small_cfg, dataset, cache_dir)

    def no_encoding(*a, **k):
        raise AssertionError("a device encoded clips at start-up; the launcher should have cached them")

    monkeypatch.setattr(features, "_encode_all", no_encoding)
    for m in ("audio", "video"):
        node = build_device(small_cfg, 0, m, dataset, cache_dir, foundation=foundation)
        assert node.features.width > 0
