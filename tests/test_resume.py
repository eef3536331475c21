"""Checkpoints and resume in one process: a run stopped mid stage 2 and resumed logs the same
losses and reaches the same accuracy as the run never stopped; checkpoints are written whole
or not at all; a reused run directory keeps nothing of the earlier run."""
from __future__ import annotations

import json

import pytest

from configs.loader import load_config
from edge_server.checkpoint import Checkpoints, Position
from edge_server.driver import ResumeError
from edge_server.rundir import RunDir
from edge_server.step import EdgeNode
from launch.reference import run_reference
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["stage"], r["step"], r["loss"]) for r in rows]


class Crash(RuntimeError):
    pass


def test_reference_resume_gives_the_uninterrupted_losses(tmp_path, small_overrides, assets, monkeypatch):
    cfg = load_config(REPO / "configs" / "tiny.yaml", small_overrides + ["train.stage2.steps=14",
                                                                         "train.checkpoint_every=4"])
    whole = run_reference(cfg, str(tmp_path / "whole"), progress=False)

    real_step = EdgeNode.train_step

    def crash_at_stage2_step_10(self, phase, step, *a, **k):
        if (phase, step) == ("stage2", 10):
            raise Crash("the edge dies here")
        return real_step(self, phase, step, *a, **k)

    monkeypatch.setattr(EdgeNode, "train_step", crash_at_stage2_step_10)
    with pytest.raises(Crash):
        run_reference(cfg, str(tmp_path / "cut"), progress=False)
    monkeypatch.setattr(EdgeNode, "train_step", real_step)
    latest = Checkpoints(tmp_path / "cut" / "checkpoints").latest()
    assert latest is not None and latest[1] == Position("stage2", 8)
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir() if not p.is_symlink()] == ["stage2-000008"]

    resumed = run_reference(cfg, str(tmp_path / "cut"), progress=False, resume=True)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "whole")  # bit for bit, the kept rows included
    assert resumed["accuracy"] == whole["accuracy"]
    assert resumed["loss"] == whole["loss"]
    assert resumed["resumed_from"] == {"stage": "stage2", "step": 8}


def test_resume_needs_a_checkpoint_of_the_same_config(tmp_path, small_overrides, assets):
    cfg = load_config(REPO / "configs" / "tiny.yaml", small_overrides)
    with pytest.raises(ResumeError, match="no checkpoint"):
        run_reference(cfg, str(tmp_path / "r"), progress=False, resume=True)
    run_reference(cfg, str(tmp_path / "r"), progress=False)  # its final checkpoint
    other = load_config(REPO / "configs" / "tiny.yaml", small_overrides + ["train.stage2.lr=0.5"])
    with pytest.raises(ResumeError, match="another config"):
        run_reference(other, str(tmp_path / "r"), progress=False, resume=True)


def test_a_killed_checkpoint_write_keeps_the_last_good_one(tmp_path):
    ckpts = Checkpoints(tmp_path)
    good = ckpts.begin(Position("stage1", 4))
    (good / "edge.pt").write_text("good")
    ckpts.commit(Position("stage1", 4), {"losses": {}})
    half = ckpts.begin(Position("stage2", 4))  # killed before commit
    (half / "edge.pt").write_text("half")
    path, pos, _ = ckpts.latest()
    assert pos == Position("stage1", 4) and (path / "edge.pt").read_text() == "good"


def test_a_reused_run_directory_is_cleaned(tmp_path, small_cfg):
    old = tmp_path / "run"
    (old / "checkpoints" / "devices").mkdir(parents=True)
    (old / "checkpoints" / "devices" / "user0_audio.pt").write_text("old")
    for name in ("predictions.jsonl", "summary.json", "links.json", "probe_after.pt"):
        (old / name).write_text("old")
    (old / "metrics.jsonl").write_text(json.dumps({"stage": "stage1", "step": 0, "loss": 1.0}) + "\n")
    RunDir(old, small_cfg).close()
    assert sorted(p.name for p in old.iterdir()) == ["config.yaml", "metrics.jsonl", "tb"]
    assert (old / "metrics.jsonl").read_text() == ""
