"""TensorBoard event files beside the run directory's JSON files (RUN_DIR/tb/).

The run directory's own files stay the record; these mirror them where researchers
look, so that `tensorboard --logdir runs/` lays a whole sweep side by side:
- per logged step: `<stage>/loss`, `<stage>/lr` and each loss part `<stage>/<part>`;
- at the end: `accuracy/<overall|type|group>`, the answer-prior baselines as
  `baseline/<chance|majority>/<...>`, and per link and direction
  `links/<link>/<figure>` (payload bytes, channel uses, latency p50/p95 when measured),
  logged at step 0;
- the resolved config as text.
"""
from __future__ import annotations

import re
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

# metrics.jsonl keys that are bookkeeping, not curves
_NOT_CURVES = {"stage", "step", "user", "users", "wall_s"}
_LINK_FIGURES = ("payload_bytes", "channel_uses")
_LATENCIES = ("p50", "p95")


def tag(*parts: str) -> str:
    """A TensorBoard-safe tag: 'user0/audio->relay' -> 'user0/audio_to_relay'."""
    text = "/".join(parts).replace("->", "_to_")
    return re.sub(r"[^A-Za-z0-9_./-]+", "_", text).strip("_")


class Tracker:
    def __init__(self, log_dir: str | Path):
        # A run directory starts afresh (metrics.jsonl is rewritten too): events of an
        # earlier, interrupted run there would double its curves.
        for old in Path(log_dir).glob("events.out.tfevents.*"):
            old.unlink()
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def config(self, text: str) -> None:
        self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def step(self, row: dict) -> None:
        """One metrics.jsonl row: every numeric field but the bookkeeping ones."""
        stage, step = row["stage"], int(row["step"])
        for k, v in row.items():
            if k not in _NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(tag(stage, k), float(v), step)

    def summary(self, summary: dict) -> None:
        for k, v in summary.get("accuracy", {}).items():
            if k != "n" and isinstance(v, (int, float)):
                self.writer.add_scalar(tag("accuracy", k), float(v), 0)
        for name, acc in summary.get("baselines", {}).items():
            for k, v in acc.items():
                if k != "n":
                    self.writer.add_scalar(tag("baseline", name, k), float(v), 0)
        self.writer.flush()

    def links(self, entries: list[dict]) -> None:
        for e in entries:
            where = tag("links", e["link"], e["direction"])
            for k in _LINK_FIGURES:
                self.writer.add_scalar(f"{where}/{k}", float(e[k]), 0)
            for q in _LATENCIES:
                v = e.get("latency_ms", {}).get(q)
                if v is not None:
                    self.writer.add_scalar(f"{where}/latency_{q}_ms", float(v), 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
