"""`tokcom run`: the one-command local cluster, with several users."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tokcom_run_two_users_with_their_own_links(tmp_path, small_overrides, assets):
    out = tmp_path / "c"
    overrides = small_overrides + ["users=2", "channel.links={user1/audio: {snr_db: 0, fading: rayleigh}}"]
    sets = [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "launch.cli", "run", "--config", str(REPO / "configs/tiny.yaml"),
                           *sets, "--out", str(out), "--no-progress"], capture_output=True, text=True,
                          timeout=880, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "user1/video->relay" in proc.stdout  # the per-link table
    # quiet when not on a terminal: no library bars or warnings, from the launcher or any role
    for text in [proc.stdout, proc.stderr] + [log.read_text() for log in (out / "logs").glob("*.log")]:
        assert "Loading weights" not in text and "Warning:" not in text and "it/s]" not in text, text[-2000:]

    summary = json.loads((out / "summary.json").read_text())
    roles = sorted(p["role"] for p in summary["processes"])
    assert roles == ["device"] * 6 + ["edge", "relay"]
    assert len({p["pid"] for p in summary["processes"]}) == 8
    assert set(summary["accuracy"]["per_user"]) == {"user0", "user1"}
    assert summary["accuracy"]["n"] == 2 * 16  # every user evaluates the whole split

    links = {(e["link"], e["direction"]) for e in json.loads((out / "links.json").read_text())}
    for u in (0, 1):
        for m in ("audio", "video", "text"):
            assert (f"user{u}/{m}->relay", "uplink") in links and (f"relay->user{u}/{m}", "downlink") in links
    # training steps alternate users: 6 + 6 steps -> 3 + 3 per user
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["user"] for r in rows if r["stage"] == "stage2"] == [0, 1] * 3
