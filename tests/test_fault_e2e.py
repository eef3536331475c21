"""Faults in a real `tokcom run` cluster: the edge SIGKILLed mid stage 2 and the run resumed
with `--resume` gives the uninterrupted run's losses and accuracy; a device killed mid-run is
restarted by the launcher, rejoins and the run finishes.

Processes are started here (the launcher, by Popen) or by that launcher; a role is found by the
pid the launcher logs when it starts it, and only those pids are ever signalled."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from configs.loader import load_config
from launch.reference import run_reference
from tests.cluster_util import Launcher
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _losses(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r["loss"] for r in rows}


def _logged(run_dir: Path, stage: str, step: int):
    path = run_dir / "metrics.jsonl"
    return lambda: path.is_file() and (stage, step) in _losses(run_dir)


def test_edge_killed_in_stage2_resumes_to_the_same_losses(tmp_path, small_overrides, assets):
    overrides = small_overrides + ["train.stage2.steps=60", "train.checkpoint_every=20", "eval.max_samples=16"]
    # the run never interrupted, in process: the cluster gives the reference's losses (test_cluster_e2e)
    whole = run_reference(load_config(REPO / "configs" / "tiny.yaml", overrides), str(tmp_path / "whole"),
                          progress=False)

    cut_dir = tmp_path / "cut"
    cut = Launcher(tmp_path, cut_dir, overrides)
    try:
        cut.wait_for("stage 2 step 30", _logged(cut_dir, "stage2", 30))
        os.kill(cut.pid_of("edge"), signal.SIGKILL)
        assert cut.wait() != 0
    finally:
        cut.kill()
    assert os.readlink(cut_dir / "checkpoints" / "latest").startswith("stage2-0000")
    assert not list((cut_dir / "logs").glob("*.port")), "port files left behind"

    resumed = Launcher(tmp_path, cut_dir, overrides, "--resume")
    try:
        assert resumed.wait() == 0, resumed.log()[-3000:]
    finally:
        resumed.kill()
    ours, theirs = _losses(cut_dir), _losses(tmp_path / "whole")
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert abs(ours[k] - theirs[k]) <= 1e-5 * abs(theirs[k]), (k, ours[k], theirs[k])
    summary = json.loads((cut_dir / "summary.json").read_text())
    assert summary["accuracy"]["overall"] == pytest.approx(whole["accuracy"]["overall"])
    assert summary["resumed_from"]["stage"] == "stage2"
    assert not list((cut_dir / "logs").glob("*.port"))


def test_a_killed_device_is_restarted_and_rejoins(tmp_path, small_overrides, assets):
    overrides = small_overrides + ["train.stage2.steps=80", "train.checkpoint_every=10", "eval.max_samples=16"]
    out = tmp_path / "run"
    run = Launcher(tmp_path, out, overrides)
    try:
        run.wait_for("stage 2 step 15", _logged(out, "stage2", 15))
        first = run.pid_of("device-user0-audio")
        os.kill(first, signal.SIGKILL)
        assert run.wait() == 0, run.log()[-3000:]
    finally:
        run.kill()
    assert run.pid_of("device-user0-audio") != first
    assert "starting it again (restart 1 of 2)" in run.log()
    edge_log = (out / "logs" / "edge.log").read_text()
    assert "user0/audio rejoined; it restores its state from" in edge_log
    summary = json.loads((out / "summary.json").read_text())
    audio = [p for p in summary["processes"] if p.get("node") == "user0/audio"]
    assert audio and audio[0]["pid"] != first  # the report names the device that finished the run
    assert ("stage2", 79) in _losses(out)
