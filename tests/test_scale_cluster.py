"""`tokcom run` with many users at once, through the real CLI: concurrent rounds, the edge as two
gloo ranks and device hosts, against the in-process reference with one edge rank."""
import json
import subprocess
import sys

import pytest
import torch

from configs.loader import load_config
from launch.reference import run_reference
from tests.cluster_util import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MODALITIES = ("audio", "video", "text")


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r["loss"] for r in rows}


def test_two_gloo_ranks_and_device_hosts_equal_one_rank_in_process(tmp_path, small_overrides, assets):
    # 3 users on 2 ranks: rank 0 trains users 0 and 2, rank 1 user 1 (unequal shares of the samples)
    overrides = small_overrides + ["users=3", "train.schedule=concurrent"]
    ref = run_reference(load_config(REPO / "configs" / "tiny.yaml", overrides), str(tmp_path / "ref"), progress=False)
    out = tmp_path / "run"
    sets = [a for o in overrides + ["edge.ranks=2", "launch.devices_per_process=2"] for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "run", "--config", str(REPO / "configs" / "tiny.yaml"),
                           *sets, "--out", str(out), "--no-progress", "--timeout", "600"],
                          capture_output=True, text=True, timeout=700, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ours, theirs = _losses(out), _losses(tmp_path / "ref")
    assert ours.keys() == theirs.keys() and len(ours) == 12
    for k in ours:
        assert abs(ours[k] - theirs[k]) <= 1e-4 * abs(theirs[k]), (k, ours[k], theirs[k])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"]["overall"] == pytest.approx(ref["accuracy"]["overall"])
    assert set(summary["accuracy"]["per_user"]) == {"user0", "user1", "user2"}

    # every rank is an edge process; the hosts run two users' devices of one modality each
    procs = summary["processes"]
    edges = sorted((p["rank"], p["pid"]) for p in procs if p["role"] == "edge")
    assert [r for r, _ in edges] == [0, 1] and edges[0][1] != edges[1][1]
    pid = {p["node"]: p["pid"] for p in procs if p["role"] == "device"}
    assert len(pid) == 9
    for m in MODALITIES:
        assert pid[f"user0/{m}"] == pid[f"user1/{m}"] != pid[f"user2/{m}"]
    assert len(set(pid.values())) == 6

    # each hosted node is metered on its own, as the reference meters it
    links = {(e["link"], e["direction"]): e for e in json.loads((out / "links.json").read_text())}
    ref_links = {(e["link"], e["direction"]): e for e in json.loads((tmp_path / "ref" / "links.json").read_text())}
    rounds = 6 + 6 + 2  # training rounds + evaluation batches (16 questions, batch 8)
    for u in range(3):
        for m in MODALITIES:
            up, down = links[(f"user{u}/{m}->relay", "uplink")], links[(f"relay->user{u}/{m}", "downlink")]
            assert up["messages"] == rounds
            for key in ("messages", "payload_bytes", "channel_uses"):
                assert up[key] == ref_links[(f"user{u}/{m}->relay", "uplink")][key]
                assert down[key] == ref_links[(f"relay->user{u}/{m}", "downlink")][key]

    # ... and checkpointed on its own: one file per node, its own name and transmitter
    states = {u: torch.load(out / "checkpoints" / "latest" / "devices" / f"user{u}_audio.pt", weights_only=True)
              for u in (0, 1)}
    assert [states[u]["node"] for u in (0, 1)] == ["user0/audio", "user1/audio"]
    w0, w1 = (states[u]["transmitter"]["proj.weight"] for u in (0, 1))
    assert not torch.equal(w0, w1)
    ref_w0 = torch.load(tmp_path / "ref" / "checkpoints" / "latest" / "devices" / "user0_audio.pt", weights_only=True)
    assert torch.allclose(w0, ref_w0["transmitter"]["proj.weight"], rtol=1e-4, atol=1e-6)
