"""`tokcom reference` end to end on the tiny preset, through the real CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.data import QTYPES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reference_run_writes_the_run_directory_and_its_loss_falls(tmp_path, small_overrides, assets):
    out = tmp_path / "ref"
    sets = [a for o in small_overrides + ["train.stage1.steps=10", "train.stage2.steps=40", "eval.probe_samples=8"]
            for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "reference", "--config", str(REPO / "configs/tiny.yaml"),
                           *sets, "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accuracy" in proc.stdout and "user0/audio->relay" in proc.stdout  # summary line + link table

    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"stage", "step", "loss", "lr", "wall_s"} <= rows[0].keys()
    s1 = [r for r in rows if r["stage"] == "stage1"]
    s2 = [r["loss"] for r in rows if r["stage"] == "stage2"]
    assert len(s1) == 10 and len(s2) == 40
    assert {"recon", "align_audio", "align_video"} <= s1[0].keys()
    assert sum(s2[-8:]) / 8 < sum(s2[:8]) / 8  # the task loss falls

    summary = json.loads((out / "summary.json").read_text())
    acc = summary["accuracy"]
    assert 0.0 <= acc["overall"] <= 1.0 and acc["n"] == 16
    assert set(acc) - {"overall", "n", "per_user", "Audio", "Visual", "Audio-Visual"} <= set(QTYPES)
    assert acc["per_user"]["user0"]["overall"] == acc["overall"]
    assert summary["loss"]["stage2"]["first"] == s2[0] and summary["loss"]["stage2"]["last"] == s2[-1]
    assert summary["steps"] == {"stage1": 10, "stage2": 40}
    assert {"device_compute", "uplink", "edge_compute", "downlink"} <= summary["step_time_breakdown_ms"].keys()
    assert (out / "config.yaml").is_file() and (out / "links.json").is_file()
    ckpt = out / "checkpoints" / "latest"
    assert (ckpt / "adapter" / "adapter_config.json").is_file() and (ckpt / "edge.pt").is_file()
    assert (out / "probe_before.pt").is_file() and (out / "probe_after.pt").is_file()
