"""Finished run directories read back, and a sweep's results.csv.

A run has finished when its directory holds summary.json. Its grid values are read
back from its own config.yaml (so the table is right whatever grid produced it).

Uplink cost per sample: over the device->relay uplink entries of links.json (the
separate "(labels)" line excluded), sum payload_bytes / samples and channel_uses /
samples over a user's links, averaged over users: the cost of sending one clip from
all of a user's devices (audio + video + text).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from configs.loader import config_from_dict
from configs.schema import Config, ConfigError
from foundation.data import QTYPE_GROUPS, QTYPES
from launch.grid import AXIS_KEYS, run_values


def uplink_per_sample(links: list[dict]) -> dict[str, float]:
    """Payload bytes and channel uses to send one clip from all of a user's devices."""
    per_user: dict[str, dict[str, float]] = {}
    for e in links:
        if e["direction"] != "uplink" or not e["link"].endswith("->relay") or "(labels)" in e["link"]:
            continue
        if not e["samples"]:
            continue
        user = e["link"].split("/", 1)[0]
        acc = per_user.setdefault(user, {"payload_bytes_per_sample": 0.0, "channel_uses_per_sample": 0.0})
        acc["payload_bytes_per_sample"] += e["payload_bytes"] / e["samples"]
        acc["channel_uses_per_sample"] += e["channel_uses"] / e["samples"]
    if not per_user:
        return {"payload_bytes_per_sample": float("nan"), "channel_uses_per_sample": float("nan")}
    return {k: sum(u[k] for u in per_user.values()) / len(per_user)
            for k in ("payload_bytes_per_sample", "channel_uses_per_sample")}


@dataclass
class RunRecord:
    """A finished run directory, read back."""

    name: str
    path: Path
    cfg: Config
    summary: dict
    links: list[dict]
    values: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.values = run_values(self.cfg)

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def has_probes(self) -> bool:
        return (self.path / "probe_before.pt").is_file() and (self.path / "probe_after.pt").is_file()

    def is_cluster(self) -> bool:
        """A multi-process run: its links carry measured latencies."""
        return any(e.get("latency_ms", {}).get("p50") is not None for e in self.links)


def read_config(path: Path) -> Config:
    try:
        return config_from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}; this run was written by another version of tokcom, "
                          f"rerun it or remove it") from None


def load_run(path: str | Path) -> RunRecord | None:
    """The run in `path`, or None when it has not finished (no summary.json)."""
    path = Path(path)
    if not (path / "summary.json").is_file():
        return None
    links_path = path / "links.json"
    links = json.loads(links_path.read_text()) if links_path.is_file() else []
    return RunRecord(path.name, path, read_config(path / "config.yaml"),
                     json.loads((path / "summary.json").read_text()), links)


def _order(v: Any) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def find_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """Every finished run under `sweep_dir/runs/`, ordered by grid values (numbers numerically)."""
    root = Path(sweep_dir) / "runs"
    runs = [load_run(p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    return sorted((r for r in runs if r is not None),
                  key=lambda r: (*(_order(r.values[k]) for k in AXIS_KEYS), r.name))


RESULT_COLUMNS = ["run", *AXIS_KEYS, "text_snr_db", "accuracy", "n", *(f"acc_{q}" for q in QTYPES),
                  *(f"acc_{g}" for g in QTYPE_GROUPS), "chance", "majority", "payload_bytes_per_sample",
                  "channel_uses_per_sample", "stage1_steps", "stage2_steps", "stage2_loss_last", "wall_s"]


def result_row(run: RunRecord) -> dict[str, Any]:
    """One results.csv row; a question type absent from the evaluation (or a baseline
    absent from an older summary) is left empty."""
    acc, s = run.summary["accuracy"], run.summary
    row: dict[str, Any] = {"run": run.name, **run.values, "accuracy": acc["overall"], "n": acc["n"]}
    for k in (*QTYPES, *QTYPE_GROUPS):
        row[f"acc_{k}"] = acc.get(k, "")
    for k in ("chance", "majority"):
        row[k] = s.get("baselines", {}).get(k, {}).get("overall", "")
    row.update(uplink_per_sample(run.links))
    row["stage1_steps"] = s["steps"]["stage1"]
    row["stage2_steps"] = s["steps"]["stage2"]
    row["stage2_loss_last"] = s.get("loss", {}).get("stage2", {}).get("last", "")
    row["wall_s"] = s["wall_s"]
    return row


def write_results(sweep_dir: str | Path) -> Path:
    """(Re)write `sweep_dir/results.csv` from every finished run; returns its path."""
    path = Path(sweep_dir) / "results.csv"
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        for run in find_runs(sweep_dir):
            w.writerow(result_row(run))
    os.replace(tmp, path)
    return path
