"""What the reports are made of: a markdown `Section`, tables and numbers, and the
selection and grouping of finished runs by their grid values."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from launch.grid import AXES
from launch.runs import RunRecord

LABEL = {a.key: a.label for a in AXES}


@dataclass
class Section:
    """One part of report.md: a figure (or why it is skipped), a table, and its numbers."""

    title: str
    figure: str | None = None
    skipped: str | None = None
    text: str = ""
    data: dict = field(default_factory=dict)

    def markdown(self, level: int = 2) -> str:
        out = [f"{'#' * level} {self.title}", ""]
        if self.figure:
            out += [f"![{self.title}]({self.figure})", ""]
        if self.skipped:
            out += [f"*Figure skipped: {self.skipped}.*", ""]
        if self.text:
            out += [self.text, ""]
        return "\n".join(out)


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for a single value) and count."""
    v = np.asarray([x for x in values if x == x], dtype=np.float64)  # NaNs dropped
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def fmt(m: float, s: float | None = None, digits: int = 3) -> str:
    if m != m:
        return "-"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def reference(runs: list[RunRecord], keys: Iterable[str]) -> dict:
    """Each key's most common value among `runs` (ties: the first in sorted order)."""
    ref = {}
    for k in keys:
        counts = Counter(r.values[k] for r in runs)
        ref[k] = sorted(counts, key=lambda v: (-counts[v], str(v)))[0]
    return ref


def select(runs: list[RunRecord], fixed: dict) -> list[RunRecord]:
    return [r for r in runs if all(r.values[k] == v for k, v in fixed.items())]


def group(runs: list[RunRecord], keys: tuple[str, ...]) -> dict[tuple, list[RunRecord]]:
    out: dict[tuple, list[RunRecord]] = {}
    for r in runs:
        out.setdefault(tuple(r.values[k] for k in keys), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: tuple(str(x) if isinstance(x, str) else x for x in kv[0])))


def describe(fixed: dict) -> str:
    return ", ".join(LABEL[k](v) if k in LABEL else f"{k} {v}" for k, v in fixed.items())


def tokens_label(a: int, v: int) -> str:
    return f"s_A={a}, s_V={v}"


def stage_curve(run: RunRecord, stage: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [m for m in run.metrics() if m.get("stage") == stage]
    return np.array([m["step"] for m in rows]), np.array([m["loss"] for m in rows], dtype=np.float64)


def mean_curve(runs: list[RunRecord], stage: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss over runs at the steps every run logged."""
    curves = [dict(zip(*(a.tolist() for a in stage_curve(r, stage)))) for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return np.array(steps), np.array([np.mean([c[s] for c in curves]) for s in steps], dtype=np.float64)


def accuracy(run: RunRecord, key: str = "overall") -> float:
    return float(run.summary["accuracy"].get(key, float("nan")))
