"""Paired comparisons of two arms on the same test questions, with clip-level bootstrap
confidence intervals, and the verdict rule of the reproduction.

An arm is a set of runs, one per seed; a run's outcomes map (user, question_id) to a
score in [0, 1] (exact match 0/1; a baseline may score a question by its expected
accuracy, e.g. chance = 1/|answer set|). A comparison:
1. keeps the seeds both arms have and the questions every one of those runs evaluated;
2. per question, averages over those seeds the difference a - b;
3. resamples clips with replacement (each clip brings all its questions, every user's),
   `resamples` times with a seeded numpy Generator, and takes the mean difference over
   the resampled questions; the 95 % interval is the 2.5th and 97.5th percentiles.

Verdict (the claim: arm a beats arm b, optionally by a stated effect):
- "holds" when the interval excludes 0 on the claimed side (low end > 0);
- "does not hold" when it excludes the claimed effect: the high end is below the stated
  effect, or, for a claim of direction only, at or below 0;
- "undecided" otherwise, and always with fewer than `MIN_SEEDS` seeds.
For a stated effect both conditions can be true (a real gain smaller than claimed); the
effect is excluded, so the claim as stated does not hold.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foundation.tokenizer import normalize_answer

Key = tuple[int, str]  # (user, question_id)
Outcomes = dict[Key, float]
Arm = dict[int, Outcomes]  # seed -> outcomes

MIN_SEEDS = 3
RESAMPLES = 4000
LEVEL = 0.95
HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided"


def read_outcomes(run_dir: str | Path) -> Outcomes:
    """Exact-match correctness per (user, question_id) from a run's predictions.jsonl."""
    path = Path(run_dir) / "predictions.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the run predates predictions.jsonl or did not finish; "
                                f"rerun it")
    out: Outcomes = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[(int(r["user"]), str(r["question_id"]))] = \
                    float(normalize_answer(r["prediction"]) == normalize_answer(r["answer"]))
    return out


def constant_arm(outcomes: Outcomes, seeds) -> Arm:
    """A seedless baseline (e.g. the majority answer) as an arm present at every seed."""
    return {s: outcomes for s in seeds}


@dataclass(frozen=True)
class Paired:
    """a - b: observed mean difference, its bootstrap interval, and what it rests on."""

    mean: float
    low: float
    high: float
    seeds: tuple[int, ...]
    questions: int
    clips: int

    def verdict(self, effect: float | None = None) -> str:
        if len(self.seeds) < MIN_SEEDS:
            return UNDECIDED
        return verdict(self.low, self.high, effect)


def verdict(low: float, high: float, effect: float | None = None) -> str:
    """The rule for a claim 'a beats b' (by `effect`, when the claim states one)."""
    excluded = high < effect if effect is not None else high <= 0
    if excluded:
        return FAILS
    return HOLDS if low > 0 else UNDECIDED


def per_question_difference(a: Arm, b: Arm) -> tuple[list[Key], np.ndarray, tuple[int, ...]]:
    """Questions every shared seed's runs evaluated, and per question the mean over those
    seeds of a - b. Returns (keys, differences (q,), seeds)."""
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        raise ValueError(f"the arms share no seed (a: {sorted(a)}, b: {sorted(b)}); run both with the same seeds")
    keys = set.intersection(*(set(a[s]) & set(b[s]) for s in seeds))
    if not keys:
        raise ValueError("the arms share no evaluated question; evaluate both on the same split")
    keys = sorted(keys)
    diff = np.array([[a[s][k] - b[s][k] for k in keys] for s in seeds], dtype=np.float64)  # (seeds, q)
    return keys, diff.mean(axis=0), seeds


def clip_bootstrap(values: np.ndarray, clips: list[str], resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> tuple[float, float, float, np.ndarray]:
    """Mean of `values` (q,) and its percentile interval when clips are resampled with
    replacement. Returns (mean, low, high, the resampled means (resamples,))."""
    values = np.asarray(values, dtype=np.float64)
    ids, clip_index = np.unique(np.asarray(clips), return_inverse=True)
    c = len(ids)
    sums = np.bincount(clip_index, weights=values, minlength=c)  # (c,)
    counts = np.bincount(clip_index, minlength=c).astype(np.float64)  # (c,)
    rng = np.random.default_rng(seed)
    # How often each clip is drawn in each resample: multinomial(c draws, uniform over clips).
    draws = rng.multinomial(c, np.full(c, 1.0 / c), size=resamples).astype(np.float64)  # (r, c)
    means = (draws @ sums) / (draws @ counts)  # (r,)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(sums.sum() / counts.sum()), float(low), float(high), means


def compare(a: Arm, b: Arm, clip_of: Callable[[str], str], resamples: int = RESAMPLES, seed: int = 0) -> Paired:
    """The paired difference a - b with its clip-level bootstrap interval."""
    keys, diff, seeds = per_question_difference(a, b)
    clips = [clip_of(qid) for _, qid in keys]
    mean, low, high, _ = clip_bootstrap(diff, clips, resamples, seed)
    return Paired(mean, low, high, seeds, len(keys), len(set(clips)))


def arm_of(runs: Mapping[int, str | Path]) -> Arm:
    """seed -> run directory  ->  seed -> outcomes."""
    return {s: read_outcomes(p) for s, p in runs.items()}
