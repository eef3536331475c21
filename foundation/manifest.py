"""The dataset manifest every node shares: which sample ids each phase draws from.

- `stage1` (alignment): clip ids of the train split's captions (VALOR-like).
- `stage2` (task): question ids of the train split (MUSIC-AVQA-like).
- `eval`: question ids of the evaluation split.
"""
from __future__ import annotations

PHASES = ("stage1", "stage2", "eval")


def build_manifest(dataset, eval_split: str) -> dict[str, list[str]]:
    return {
        "stage1": [c.clip_id for c in dataset.captions("train")],
        "stage2": [q.question_id for q in dataset.questions("train")],
        "eval": [q.question_id for q in dataset.questions(eval_split)],
    }


def clip_of(dataset, phase: str, sample_id: str) -> str:
    """The clip a sample id refers to (stage1 ids are clip ids; others question ids)."""
    return sample_id if phase == "stage1" else dataset.question(sample_id).clip_id
