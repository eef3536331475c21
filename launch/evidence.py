"""Arms of finished runs and their paired comparisons, formatted for the reproduction.

An arm is every seed's run of one cell (the runs whose grid values match, the seed
aside), or a baseline scored per question (chance, majority). Comparisons and their
verdicts come from `launch.stats`; this module selects, caches and formats.
"""
from __future__ import annotations

from dataclasses import dataclass

from launch.baselines import EvalSet
from launch.runs import RunRecord
from launch.stats import Arm, Outcomes, Paired, compare, constant_arm, read_outcomes


def points(x: float) -> str:
    """A difference of accuracies in percentage points: 0.0421 -> '+4.2'."""
    return f"{100 * x:+.1f}"


def interval(p: Paired) -> str:
    return f"[{points(p.low)}, {points(p.high)}]"


@dataclass(frozen=True)
class Claim:
    """'a beats b' (by `effect`, when stated), with its paired evidence."""

    label: str
    paired: Paired | None
    effect: float | None = None

    @property
    def verdict(self) -> str:
        return "no runs" if self.paired is None else self.paired.verdict(self.effect)

    def row(self) -> list[str]:
        p = self.paired
        if p is None:
            return [self.label, "-", "-", "-", "-", "no runs"]
        return [self.label, points(p.mean), interval(p), str(len(p.seeds)), f"{p.questions} / {p.clips}",
                f"**{self.verdict}**"]


CLAIM_HEADERS = ["claim (a > b)", "a − b (points)", "95 % CI", "seeds", "questions / clips", "verdict"]


class Evidence:
    """The reproduction's runs, their outcomes (read once) and the baselines per question."""

    def __init__(self, runs: list[RunRecord], evalset: EvalSet, resamples: int, seed: int = 0):
        self.runs, self.evalset, self.resamples, self.seed = runs, evalset, resamples, seed
        self._outcomes: dict[str, Outcomes] = {}

    def select(self, **fixed) -> list[RunRecord]:
        return [r for r in self.runs if all(r.values[k] == v for k, v in fixed.items())]

    def arm(self, **fixed) -> Arm:
        out = {}
        for r in self.select(**fixed):
            if r.name not in self._outcomes:
                self._outcomes[r.name] = read_outcomes(r.path)
            out[r.values["seed"]] = self._outcomes[r.name]
        return out

    def baseline(self, name: str, like: Arm) -> Arm:
        """Chance or majority on the questions of `like`, at each of its seeds."""
        keys = set().union(*(set(o) for o in like.values())) if like else set()
        return constant_arm(self.evalset.outcomes(sorted(keys))[name], like)

    def compare(self, a: Arm, b: Arm) -> Paired | None:
        if not (set(a) & set(b)):
            return None
        return compare(a, b, self.evalset.clip_of, self.resamples, self.seed)

    def claim(self, label: str, a: Arm, b: Arm, effect: float | None = None) -> Claim:
        return Claim(label, self.compare(a, b), effect)
