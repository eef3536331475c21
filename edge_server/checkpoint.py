"""Checkpoints of a run, written so that a kill at any moment leaves the last good one whole.

Layout under `<run>/checkpoints/`:

- `<stage>-<step>/` one complete checkpoint: `adapter/` (LoRA in peft's format), `edge.pt`
  (receivers, LoRA, optimiser), `devices/<user>_<modality>.pt` (each transmitter and its
  optimiser, written by the device), `progress.json` (where the run resumes: the stage and
  the next step, the losses so far, the config digest);
- `latest` a symlink to the newest complete one, replaced atomically (symlink + os.replace)
  only after every part is on disk; older step directories are removed after that;
- `interrupted/` the edge's state when a run stops on a fault, with the position reached;
  for inspection only, never resumed from, never the last good checkpoint.

Replaying the RNG streams needs nothing more than the position: every draw (sampler,
channel, network, LoRA dropout) comes from a generator seeded by (seed, node, phase, step).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

LATEST = "latest"
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Position:
    """Where training resumes: the next step of `stage` (steps == the stage's count: the stage is done)."""

    stage: str
    step: int

    @property
    def tag(self) -> str:
        return f"{self.stage}-{self.step:06d}"

    def after(self, stage: str, step: int) -> bool:
        """True if the round (`stage`, `step`) was trained before this position."""
        order = ("stage1", "stage2")
        return order.index(stage) < order.index(self.stage) or (stage == self.stage and step < self.step)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save to a temp file beside `path`, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Checkpoints:
    def __init__(self, root: Path):
        self.root = Path(root)

    def begin(self, pos: Position) -> Path:
        """An empty directory for the checkpoint at `pos` (a leftover of a killed write is removed)."""
        path = self.root / pos.tag
        if path.exists() and self._latest_target() != path.name:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, pos: Position, progress: dict) -> None:
        """Write progress.json, point `latest` at `pos`, and remove the older checkpoints."""
        path = self.root / pos.tag
        atomic_write_bytes(path / "progress.json",
                           json.dumps({"stage": pos.stage, "step": pos.step, **progress}, indent=2).encode())
        tmp = self.root / f".{LATEST}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(pos.tag, tmp)
        os.replace(tmp, self.root / LATEST)
        for old in self.root.iterdir():
            if old.is_dir() and not old.is_symlink() and old.name not in (pos.tag, INTERRUPTED):
                shutil.rmtree(old)

    def _latest_target(self) -> str | None:
        link = self.root / LATEST
        return os.readlink(link) if link.is_symlink() else None

    def latest(self) -> tuple[Path, Position, dict] | None:
        """(directory, position, progress) of the newest complete checkpoint, or None."""
        target = self._latest_target()
        if target is None:
            return None
        path = self.root / target
        progress = json.loads((path / "progress.json").read_text())
        return path, Position(progress["stage"], int(progress["step"])), progress

    def interrupted(self) -> Path:
        path = self.root / INTERRUPTED
        path.mkdir(parents=True, exist_ok=True)
        return path
