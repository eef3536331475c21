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
