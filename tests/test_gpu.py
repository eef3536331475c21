"""The edge on CUDA: the same round loop and hop as on CPU, the same losses within float
tolerance. Skipped where no CUDA device is visible (CI, the 2-core build machines)."""
from __future__ import annotations

import json

import pytest
import torch

from configs.loader import load_config
from launch.reference import run_reference
from tests.conftest import REPO

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r["loss"] for r in rows}


def test_edge_on_cuda_gives_the_cpu_losses(tmp_path, small_overrides, assets):
    for device in ("cpu", "cuda"):
        cfg = load_config(REPO / "configs" / "tiny.yaml", small_overrides + [f"models.device={device}"])
        run_reference(cfg, str(tmp_path / device), progress=False)
    cpu, cuda = _losses(tmp_path / "cpu"), _losses(tmp_path / "cuda")
    assert cpu.keys() == cuda.keys()
    for k in cpu:
        assert cuda[k] == pytest.approx(cpu[k], rel=2e-3), k


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two edge ranks on nccl need two CUDA devices")
def test_two_nccl_ranks_give_the_cpu_losses(tmp_path, small_overrides, assets):
    import subprocess
    import sys

    over = small_overrides + ["users=2", "train.schedule=concurrent"]
    run_reference(load_config(REPO / "configs" / "tiny.yaml", over + ["models.device=cpu"]), str(tmp_path / "cpu"),
                  progress=False)
    sets = [a for o in over + ["models.device=cuda", "edge.ranks=2"] for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "run", "--config", str(REPO / "configs" / "tiny.yaml"),
                           *sets, "--out", str(tmp_path / "nccl"), "--no-progress", "--timeout", "600"],
                          capture_output=True, text=True, timeout=700, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cpu, nccl = _losses(tmp_path / "cpu"), _losses(tmp_path / "nccl")
    assert cpu.keys() == nccl.keys()
    for k in cpu:
        assert nccl[k] == pytest.approx(cpu[k], rel=2e-3), k
