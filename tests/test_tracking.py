"""TensorBoard events of a run directory: what RunDir writes is read back with
TensorBoard's own reader and compared with the rows that went in."""
from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from configs.loader import load_config
from edge_server.rundir import RunDir
from edge_server.tracking import tag


def test_tags_are_tensorboard_safe():
    assert tag("links", "user0/audio->relay", "uplink") == "links/user0/audio_to_relay/uplink"
    assert tag("links", "user0/text->relay (labels)", "uplink") == "links/user0/text_to_relay_labels_/uplink"
    assert tag("accuracy", "Audio-Visual") == "accuracy/Audio-Visual"


def test_run_dir_mirrors_metrics_summary_and_links(tmp_path):
    interrupted = RunDir(tmp_path, load_config(None, []))
    interrupted.log_metrics({"stage": "stage1", "step": 0, "loss": 9.0})
    interrupted.close()
    run = RunDir(tmp_path, load_config(None, []))  # the same directory again: a fresh run
    rows = [{"stage": "stage1", "step": s, "user": 0, "loss": 2.0 - s, "lr": 1e-3, "wall_s": 0.1, "align": 0.5 * s}
            for s in range(3)]
    rows += [{"stage": "stage2", "step": 0, "user": 0, "loss": 4.0, "lr": 1e-3, "wall_s": 0.2}]
    for r in rows:
        run.log_metrics(r)
    links = [{"link": "user0/audio->relay", "direction": "uplink", "payload_bytes": 1024, "channel_uses": 128,
              "latency_ms": {"p50": 1.5, "p95": 3.0, "p99": None, "mean": 2.0}},
             {"link": "relay->user0/audio", "direction": "downlink", "payload_bytes": 64, "channel_uses": 0,
              "latency_ms": {"p50": None, "p95": None, "p99": None, "mean": None}}]
    run.write_links(links)
    run.write_summary({"accuracy": {"overall": 0.625, "n": 8, "A-Count": 0.5, "Audio": 0.5, "per_user": {}},
                       "baselines": {"chance": {"overall": 0.25, "n": 8}, "majority": {"overall": 0.375, "n": 8}}})
    run.close()

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()

    def series(name):
        return [(e.step, e.value) for e in acc.Scalars(name)]

    assert series("stage1/loss") == [(0, 2.0), (1, 1.0), (2, 0.0)]
    assert series("stage1/align") == [(0, 0.0), (1, 0.5), (2, 1.0)]
    assert series("stage2/loss") == [(0, 4.0)]
    assert series("stage2/lr") == [(0, pytest.approx(1e-3))]
    assert series("accuracy/overall") == [(0, 0.625)] and series("accuracy/A-Count") == [(0, 0.5)]
    assert series("baseline/chance/overall") == [(0, 0.25)] and series("baseline/majority/overall") == [(0, 0.375)]
    up = "links/user0/audio_to_relay/uplink"
    assert series(f"{up}/payload_bytes") == [(0, 1024.0)] and series(f"{up}/channel_uses") == [(0, 128.0)]
    assert series(f"{up}/latency_p50_ms") == [(0, 1.5)] and series(f"{up}/latency_p95_ms") == [(0, 3.0)]
    scalars = set(acc.Tags()["scalars"])
    assert "links/relay_to_user0/audio/downlink/latency_p50_ms" not in scalars  # in-process: none measured
    assert not any(t.endswith(("/user", "/wall_s", "/step", "/n")) for t in scalars)
    assert "config/text_summary" in acc.Tags()["tensors"]  # the resolved config, as text
