"""The run directory contract (DESIGN.md): config.yaml, metrics.jsonl, links.json,
summary.json and checkpoints/; tb/ mirrors the metrics, summary and links as
TensorBoard event files (edge_server.tracking)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from configs.schema import Config
from configs.loader import dump_config
from edge_server.tracking import Tracker


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False))
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path, cfg: Config):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, self.path / "config.yaml")
        self._metrics = open(self.path / "metrics.jsonl", "w", encoding="utf-8")
        self._predictions = None  # predictions.jsonl, opened at the first evaluated answer
        self.tracker = Tracker(self.path / "tb")
        self.tracker.config((self.path / "config.yaml").read_text(encoding="utf-8"))

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

    def checkpoint_dir(self) -> Path:
        p = self.path / "checkpoints"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def close(self) -> None:
        self._metrics.close()
        self.tracker.close()
        if self._predictions is not None:
            self._predictions.close()
