"""`tokcom bench --scaling`: many users at once, measured on real clusters.

For each number of users (default 1, 2, 4, 8, 16, 32) and each schedule (sequential,
concurrent) one short `tokcom run` (a few rounds, no checkpoint, one evaluation batch
per user), the devices in device hosts of up to `--per-host` users each; then
concurrent with the edge on 2 ranks against 1, and one run with a process per device.
Per run: the median training round (from summary.json's timeline) and its parts,
samples per second, the edge's share of the round, wire bytes per round (links.json),
and the peak resident memory (VmHWM) of every process the run started, sampled from
/proc while it runs and grouped by role (a device process, a device host, the edge,
the relay).

Each run holds `--lock` (flock(2), the lock `flock(1)` takes) while it runs, so timings
from runs sharing the machine never overlap. Writes OUT/scaling.json and
OUT/scaling.png.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

from launch.procs import Children, child_env

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SAMPLE_EVERY_S = 0.5  # memory sampling interval (VmHWM only grows, so sampling loses little)
ROLES = (("devices", "device host"), ("device", "device process"), ("edge", "edge"), ("relay", "relay"))


# ---------------------------------------------------------------- memory of a process tree

def _descendants(root: int) -> list[int]:
    """Every process below `root`, from the parent pids in /proc/*/stat."""
    parent: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
            parent.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        kids = parent.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _status_kb(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def _role(pid: int) -> str | None:
    """The tokcom role of a `python -m launch.cli ROLE` process, by its command line."""
    with contextlib.suppress(OSError):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"launch.cli" in argv:
            word = argv[argv.index(b"launch.cli") + 1].decode()
            return next((name for key, name in ROLES if word == key), None)
    return None


class PeakMemory:
    """Samples the peak RSS (VmHWM) of every descendant of `root` until stopped."""

    def __init__(self, root: int):
        self.root, self.peak_kb, self.roles = root, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-memory")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            for pid in _descendants(self.root):
                kb = _status_kb(pid, "VmHWM")
                if kb is not None:
                    self.peak_kb[pid] = max(kb, self.peak_kb.get(pid, 0))
                    self.roles.setdefault(pid, _role(pid))

    def stop(self) -> dict[str, dict]:
        """Per role: processes, the largest peak and the sum of peaks (MB)."""
        self._stop.set()
        self._thread.join()
        out: dict[str, dict] = {}
        for pid, kb in self.peak_kb.items():
            role = self.roles.get(pid)
            if role:
                r = out.setdefault(role, {"processes": 0, "peak_mb_max": 0.0, "peak_mb_sum": 0.0})
                r["processes"] += 1
                r["peak_mb_max"] = max(r["peak_mb_max"], kb / 1024)
                r["peak_mb_sum"] += kb / 1024
        return out


# ---------------------------------------------------------------- one run

@contextlib.contextmanager
def held(lock: str):
    """flock(2) on `lock` for the duration (nothing when empty)."""
    if not lock:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def one_run(config: str | None, overrides: list[str], out: Path, lock: str, timeout_s: float) -> dict:
    """A `tokcom run` with `overrides`; its round figures and peak memory per role."""
    argv = [sys.executable, "-m", "launch.cli", "run", "--out", str(out), "--no-progress",
            "--timeout", str(timeout_s), *[a for o in overrides for a in ("--set", o)]]
    if config:
        argv += ["--config", config]
    children = Children()
    with held(lock):
        t0 = time.perf_counter()
        child = children.start("cluster", argv, out.with_suffix(".log"), child_env(REPO))
        memory = PeakMemory(child.pid)
        try:
            left = children.wait([child], timeout_s + 60)
        finally:
            children.stop(10.0)
            mem = memory.stop()
        wall = time.perf_counter() - t0
    if left or child.returncode != 0:
        raise RuntimeError(f"the run with {overrides} failed; see {out.with_suffix('.log')}")
    return {**read_run(out, overrides), "memory": mem, "wall_s": wall}


def read_run(out: Path, overrides: list[str]) -> dict:
    """The round figures of a finished run directory."""
    summary = json.loads((out / "summary.json").read_text())
    links = json.loads((out / "links.json").read_text())
    tl = summary["timeline"]
    parts = ("device_ms", "uplink_ms", "edge_ms", "downlink_ms")
    rounds = [sum(tl[k][i] for k in parts) for i in range(len(tl["step"]))]
    i_med = sorted(range(len(rounds)), key=rounds.__getitem__)[len(rounds) // 2]
    users = next(int(o.split("=")[1]) for o in overrides if o.startswith("users="))
    concurrent = "train.schedule=concurrent" in overrides
    # every (user, round) sends one audio uplink; a round has all users (concurrent) or one
    user_rounds = sum(e["messages"] for e in links if e["direction"] == "uplink"
                      and e["link"].startswith("user") and e["link"].endswith("/audio->relay"))
    wire = sum(e["wire_bytes"] for e in links)
    per_round = summary["samples_per_s"] * summary["wall_s"] / sum(summary["steps"].values())  # training samples
    return {"round_ms": statistics.median(rounds), "parts_ms": {k: tl[k][i_med] for k in parts},
            "edge_share": statistics.median(tl["edge_ms"][i] / r for i, r in enumerate(rounds) if r > 0),
            "samples_per_round": per_round, "samples_per_s": per_round / (statistics.median(rounds) / 1e3),
            "wire_bytes_per_round": wire / user_rounds * (users if concurrent else 1), "users": users,
            "schedule": "concurrent" if concurrent else "sequential", "processes": len(summary["processes"])}


# ---------------------------------------------------------------- the grid

def run_scaling(config: str | None, base: list[str], out: Path, users: list[int], steps: tuple[int, int],
                per_host: int, lock: str, timeout_s: float) -> dict:
    short = [f"train.stage1.steps={steps[0]}", f"train.stage2.steps={steps[1]}", "eval.max_samples=8",
             "eval.batch=8", "train.checkpoint=false"]
    runs: list[dict] = []

    def go(name: str, extra: list[str]) -> dict:
        log.info("scaling run %s", name)
        res = one_run(config, base + short + extra, out / name, lock, timeout_s)
        res["name"] = name
        runs.append(res)
        (out / "scaling.json").write_text(json.dumps({"runs": runs}, indent=2))
        return res

    for u in users:
        for schedule in ("sequential", "concurrent"):
            go(f"u{u}-{schedule}", [f"users={u}", f"train.schedule={schedule}",
                                    f"launch.devices_per_process={min(per_host, u)}"])
    u = min(4, max(users))
    go(f"u{u}-concurrent-ranks2", [f"users={u}", "train.schedule=concurrent", "edge.ranks=2",
                                   f"launch.devices_per_process={min(per_host, u)}"])
    go(f"u{u}-concurrent-per-device", [f"users={u}", "train.schedule=concurrent", "launch.devices_per_process=1"])
    return {"runs": runs, "steps": list(steps), "per_host": per_host}


def table(res: dict) -> str:
    lines = ["run | users | round ms (device/uplink/edge/downlink) | samples/s | edge share | wire MB/round | "
             "peak MB: device process / device host (sum over hosts) / edge",
             "---|---|---|---|---|---|---"]
    for r in res["runs"]:
        p, m = r["parts_ms"], r["memory"]
        mem = " / ".join(f"{m[k]['peak_mb_max']:.0f}" + (f" ({m[k]['peak_mb_sum']:.0f})" if k == "device host" else "")
                         if k in m else "-" for k in ("device process", "device host", "edge"))
        lines.append(f"{r['name']} | {r['users']} | {r['round_ms']:.0f} ({p['device_ms']:.0f}/{p['uplink_ms']:.0f}/"
                     f"{p['edge_ms']:.0f}/{p['downlink_ms']:.0f}) | {r['samples_per_s']:.0f} | "
                     f"{100 * r['edge_share']:.0f} % | {r['wire_bytes_per_round'] / 1e6:.2f} | {mem}")
    return "\n".join(lines)


def figure(res: dict, path: Path) -> Path:
    from launch.figures import scaling_figure

    series: dict[str, dict[str, list[float]]] = {}
    for r in res["runs"]:
        if r["name"] == f"u{r['users']}-{r['schedule']}":
            s = series.setdefault(r["schedule"], {"users": [], "round_ms": [], "samples_per_s": [], "wire": []})
            s["users"].append(r["users"])
            s["round_ms"].append(r["round_ms"])
            s["samples_per_s"].append(r["samples_per_s"])
            s["wire"].append(r["wire_bytes_per_round"])
    return scaling_figure(series, path)
