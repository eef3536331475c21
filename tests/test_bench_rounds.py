"""`tokcom bench`'s round-time figure: back-to-back pairs of the real reference and the real
cluster, the median pair reported with every pair's ratio; per-link bytes from the cluster's
own links.json."""
import json

import pytest

from launch import bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_round_time_runs_every_pair_and_reports_the_median_one(tmp_path, small_overrides, assets):
    res = bench.round_time(None, small_overrides, tmp_path, (2, 3), pairs=3)
    pairs = res["pairs"]
    assert len(pairs) == 3
    for k, p in enumerate(pairs):  # each pair's figures are its own runs' summaries
        ref = json.loads((tmp_path / f"pair{k}" / "reference" / "summary.json").read_text())
        run = json.loads((tmp_path / f"pair{k}" / "cluster" / "summary.json").read_text())
        assert (p["reference_wall_s"], p["cluster_wall_s"]) == (ref["wall_s"], run["wall_s"])
        assert p["ratio"] == run["wall_s"] / ref["wall_s"]
    median = sorted(p["ratio"] for p in pairs)[1]
    assert res["cluster_over_reference"] == median
    assert res["cluster"]["wall_s"] / res["reference"]["wall_s"] == median
    assert res["rounds"] == 5 and 0.99 < res["relay_edge_over_uplinks"] < 1.02
    assert "the median of 3 pairs" in bench.table({"rounds": res})
