"""Exact-match accuracy of generated answers, overall, per question type and group,
and per user."""
from __future__ import annotations

from collections import defaultdict

from foundation.data import QTYPE_GROUPS, QTYPES
from foundation.tokenizer import normalize_answer


class Scorer:
    def __init__(self) -> None:
        self.rows: list[tuple[int, str, bool]] = []  # (user, qtype, correct)

    def add(self, user: int, qtypes: list[str], preds: list[str], answers: list[str]) -> None:
        for q, p, a in zip(qtypes, preds, answers, strict=True):
            self.rows.append((user, q, normalize_answer(p) == normalize_answer(a)))

    @staticmethod
    def _acc(rows: list[tuple[int, str, bool]]) -> dict[str, float | int]:
        by_type: dict[str, list[bool]] = defaultdict(list)
        for _, q, ok in rows:
            by_type[q].append(ok)
        out: dict[str, float | int] = {"overall": sum(ok for *_, ok in rows) / len(rows) if rows else 0.0,
                                       "n": len(rows)}
        for q in QTYPES:
            if by_type.get(q):
                out[q] = sum(by_type[q]) / len(by_type[q])
        for group, types in QTYPE_GROUPS.items():
            oks = [ok for q in types for ok in by_type.get(q, [])]
            if oks:
                out[group] = sum(oks) / len(oks)
        return out

    def summary(self) -> dict:
        out = self._acc(self.rows)
        users = sorted({u for u, *_ in self.rows})
        out["per_user"] = {f"user{u}": self._acc([r for r in self.rows if r[0] == u]) for u in users}
        return out
