"""The dataset manifest every node shares: which sample ids each phase draws from.

- `stage1` (alignment): clip ids of the train split's captions (VALOR-like).
- `stage2` (task): question ids of the train split (MUSIC-AVQA-like).
- `eval`: question ids of the evaluation split.
- `probe`: clip ids of the evaluation split's captions (pooled features for t-SNE).
"""
from __future__ import annotations

PHASES = ("stage1", "stage2", "eval", "probe")
TRAIN_PHASES = ("stage1", "stage2")
CAPTION_PHASES = ("stage1", "probe")  # sample ids are clip ids, text is the caption


def build_manifest(dataset, eval_split: str) -> dict[str, list[str]]:
    return {
        "stage1": [c.clip_id for c in dataset.captions("train")],
        "stage2": [q.question_id for q in dataset.questions("train")],
        "eval": [q.question_id for q in dataset.questions(eval_split)],
        "probe": [c.clip_id for c in dataset.captions(eval_split)],
    }


def clip_of(dataset, phase: str, sample_id: str) -> str:
    """The clip a sample id refers to (caption phases use clip ids; others question ids)."""
    return sample_id if phase in CAPTION_PHASES else dataset.question(sample_id).clip_id
