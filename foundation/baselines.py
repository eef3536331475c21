"""Answer-prior baselines from the dataset alone: chance and per-template majority.

A template is MUSIC-AVQA's `question_content` (placeholders unfilled). Both
baselines know only the train split's answers per template:
- chance: a question scores 1 / |answer set of its template over the train split|
  (the expected accuracy of a uniform guess within that set);
- majority: the most frequent train answer of the template (ties: alphabetically first).
A template the train split never asks falls back to its question type's answers, then
to every train answer. Answers are compared after `normalize_answer`, as the scorer does.

Edge and launch both use these (the driver writes them into summary.json; the
reproduction pairs them with runs question by question), so they live here.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from foundation.data import QTYPE_GROUPS, QTYPES, Question
from foundation.tokenizer import normalize_answer


def template_of(q: Question) -> str:
    """The template a question belongs to (its question type when the file has none)."""
    return q.template or q.qtype


class AnswerPrior:
    """Train answers counted per template, per question type and overall."""

    def __init__(self, train: Iterable[Question]):
        self.by_template: dict[str, Counter] = {}
        self.by_qtype: dict[str, Counter] = {}
        self.overall: Counter = Counter()
        for q in train:
            a = normalize_answer(q.answer)
            self.by_template.setdefault(template_of(q), Counter())[a] += 1
            self.by_qtype.setdefault(q.qtype, Counter())[a] += 1
            self.overall[a] += 1
        if not self.overall:
            raise ValueError("the train split has no questions; baselines need the train answers")

    def _counts(self, q: Question) -> Counter:
        return self.by_template.get(template_of(q)) or self.by_qtype.get(q.qtype) or self.overall

    def chance(self, q: Question) -> float:
        """Expected correctness of a uniform guess over the template's train answers."""
        return 1.0 / len(self._counts(q))

    def majority_answer(self, q: Question) -> str:
        c = self._counts(q)
        return min(c, key=lambda a: (-c[a], a))

    def majority(self, q: Question) -> float:
        return float(self.majority_answer(q) == normalize_answer(q.answer))


def summarise(scores: Iterable[tuple[str, float]]) -> dict[str, float | int]:
    """(question type, score) pairs -> mean overall, per type and per group, as the
    scorer's accuracy dict (types with no questions left out)."""
    by_type: dict[str, list[float]] = {}
    for qtype, s in scores:
        by_type.setdefault(qtype, []).append(s)
    every = [s for v in by_type.values() for s in v]
    out: dict[str, float | int] = {"overall": sum(every) / len(every) if every else 0.0, "n": len(every)}
    for t in QTYPES:
        if by_type.get(t):
            out[t] = sum(by_type[t]) / len(by_type[t])
    for group, types in QTYPE_GROUPS.items():
        vals = [s for t in types for s in by_type.get(t, [])]
        if vals:
            out[group] = sum(vals) / len(vals)
    return out


def answer_prior_baselines(train: Iterable[Question], evaluated: Iterable[Question]) -> dict:
    """{'chance': accuracy dict, 'majority': accuracy dict} over the evaluated questions."""
    prior, evaluated = AnswerPrior(train), list(evaluated)
    return {"chance": summarise((q.qtype, prior.chance(q)) for q in evaluated),
            "majority": summarise((q.qtype, prior.majority(q)) for q in evaluated)}
