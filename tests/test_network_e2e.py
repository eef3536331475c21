"""Emulated links in the real cluster: the relay holds each message for its airtime and delay,
links.json reports them, and the in-process reference models the same figures."""
from __future__ import annotations

import json

import pytest

from configs.loader import load_config
from launch.reference import run_reference
from tests.cluster_util import REPO, ManualCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
RATE, DELAY_MS, BIT_RATE = 1e6, 2.0, 1e8
NETWORK = [f"network.symbol_rate={RATE:.0f}", f"network.delay_ms={DELAY_MS}", f"network.bit_rate={BIT_RATE:.0f}"]


def _links(run_dir):
    return {(e["link"], e["direction"]): e for e in json.loads((run_dir / "links.json").read_text())}


def test_relay_enforces_airtime_and_delay_and_the_reference_models_the_same(tmp_path, small_overrides, assets):
    overrides = small_overrides + NETWORK
    cluster = ManualCluster(tmp_path / "c", overrides)
    try:
        cluster.start_edge()
        cluster.start_relay()
        for m in ("audio", "video", "text"):
            cluster.start_device(0, m)
        assert cluster.wait_edge_exit() == 0, cluster.log("edge")
    finally:
        cluster.stop()
    run_reference(load_config(REPO / "configs" / "tiny.yaml", overrides), str(tmp_path / "ref"), progress=False)
    ours, ref = _links(cluster.run_dir), _links(tmp_path / "ref")
    for m in ("audio", "video", "text"):
        up = ours[(f"user0/{m}->relay", "uplink")]
        assert up["airtime_s"] == pytest.approx(up["channel_uses"] / RATE, rel=1e-9)
        assert ref[(f"user0/{m}->relay", "uplink")]["airtime_s"] == pytest.approx(up["airtime_s"], rel=1e-12)
        per_message_ms = up["airtime_s"] / up["messages"] * 1e3
        split = up["latency_split_ms"]
        assert split["airtime"] == pytest.approx(per_message_ms) and split["propagation"] == pytest.approx(DELAY_MS)
        # the hold is real: no message arrived sooner than its airtime plus the delay
        assert min_latency(up) >= per_message_ms + DELAY_MS - 1e-6
        assert split["transport"] is not None and split["transport"] >= 0
        down = ours[(f"relay->user0/{m}", "downlink")]
        assert down["airtime_s"] == pytest.approx(ref[(f"relay->user0/{m}", "downlink")]["airtime_s"], rel=1e-12)
        assert down["latency_split_ms"]["propagation"] == pytest.approx(DELAY_MS)
    labels = ours[("user0/text->relay (labels)", "uplink")]
    assert labels["airtime_s"] == pytest.approx(8 * labels["payload_bytes"] / BIT_RATE, rel=1e-9)
    summary = json.loads((cluster.run_dir / "summary.json").read_text())
    # per round: the slowest device message on air. Text's carries 2048 x 8 symbols like audio's
    # 32 x 128 / 2 x 8, plus its labels: ids (int64) and masks (bool) for 32 text and (stage 2) 6 answer tokens
    cfg = load_config(REPO / "configs" / "tiny.yaml", overrides)
    b, L, A = 8, cfg.data.text_len, cfg.data.answer_len
    label_bytes = {"stage1": b * L * 9, "stage2": b * (L + A) * 9}
    analog_ms = b * 32 * 128 / 2 / RATE * 1e3
    tl = summary["timeline"]
    assert tl["uplink_airtime_ms"] == pytest.approx(
        [analog_ms + 8 * label_bytes[st] / BIT_RATE * 1e3 for st in tl["stage"]], abs=1e-3)


def min_latency(entry: dict) -> float:
    """The smallest latency sample, from the percentiles links.json keeps (p50 >= min)."""
    return min(v for v in entry["latency_ms"].values() if v is not None)
