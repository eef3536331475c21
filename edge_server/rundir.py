"""The run directory contract (DESIGN.md): config.yaml, metrics.jsonl, links.json,
summary.json and checkpoints/; tb/ mirrors the metrics, summary and links as
TensorBoard event files (edge_server.tracking).

A reused directory is cleaned of everything an earlier run wrote there; a resumed run
keeps its checkpoints and the metrics rows before the resume point.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from configs.schema import Config
from configs.loader import dump_config
from edge_server.checkpoint import Checkpoints, Position
from edge_server.tracking import Tracker

# what a run writes here (besides config.yaml, rewritten, and the launcher's logs/)
OUTPUTS = ("metrics.jsonl", "links.json", "summary.json", "predictions.jsonl", "probe_before.pt", "probe_after.pt",
           "tb", "checkpoints")
PROBES = ("probe_before.pt", "probe_after.pt")


def clear_outputs(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove an earlier run's outputs from `path`, except those named in `keep`."""
    for name in OUTPUTS:
        p = path / name
        if name in keep or not (p.exists() or p.is_symlink()):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False))
    os.replace(tmp, path)


def _rows_before(path: Path, pos: Position) -> list[dict]:
    """The metrics rows of rounds trained before `pos` (the rest will be logged again)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if pos.after(r["stage"], int(r["step"]))]


class RunDir:
    def __init__(self, path: str | Path, cfg: Config, resume_from: Position | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        kept = _rows_before(self.path / "metrics.jsonl", resume_from) if resume_from else []
        clear_outputs(self.path, keep=("checkpoints", *PROBES) if resume_from else ())
        dump_config(cfg, self.path / "config.yaml")
        self.checkpoints = Checkpoints(self.path / "checkpoints")
        self._metrics = open(self.path / "metrics.jsonl", "w", encoding="utf-8")
        self._predictions = None  # predictions.jsonl, opened at the first evaluated answer
        self.tracker = Tracker(self.path / "tb")
        self.tracker.config((self.path / "config.yaml").read_text(encoding="utf-8"))
        for row in kept:
            self.log_metrics(row)

    def log_metrics(self, row: dict) -> None:
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        self.tracker.step(row)

    def log_prediction(self, row: dict) -> None:
        if self._predictions is None:
            self._predictions = open(self.path / "predictions.jsonl", "w", encoding="utf-8")
        self._predictions.write(json.dumps(row) + "\n")

    def write_links(self, entries: list[dict]) -> None:
        _atomic_json(self.path / "links.json", entries)
        self.tracker.links(entries)

    def write_summary(self, summary: dict) -> None:
        _atomic_json(self.path / "summary.json", summary)
        self.tracker.summary(summary)

    def close(self) -> None:
        self._metrics.close()
        self.tracker.close()
        if self._predictions is not None:
            self._predictions.close()
