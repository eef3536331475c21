"""Exact-match accuracy of generated answers, overall, per question type and group,
and per user."""
from __future__ import annotations

from foundation.baselines import summarise
from foundation.tokenizer import normalize_answer


class Scorer:
    def __init__(self) -> None:
        self.rows: list[tuple[int, str, bool]] = []  # (user, qtype, correct)

    def add(self, user: int, qtypes: list[str], preds: list[str], answers: list[str]) -> None:
        for q, p, a in zip(qtypes, preds, answers, strict=True):
            self.rows.append((user, q, normalize_answer(p) == normalize_answer(a)))

    @staticmethod
    def _acc(rows: list[tuple[int, str, bool]]) -> dict[str, float | int]:
        return summarise((q, float(ok)) for _, q, ok in rows)

    def summary(self) -> dict:
        out = self._acc(self.rows)
        users = sorted({u for u, *_ in self.rows})
        out["per_user"] = {f"user{u}": self._acc([r for r in self.rows if r[0] == u]) for u in users}
        return out
