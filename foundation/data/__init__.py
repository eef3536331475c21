"""The dataset layer: one loader for the generated data and the real data.

The generator writes the real on-disk formats (VALOR-32K captions, MUSIC-AVQA
questions, extracted wav/png media) and `AVDataset` reads those formats whichever
produced them. `open_dataset(cfg.data)` is the one entry point the roles use.
"""
from foundation.data.dataset import AVDataset, default_cache_dir, open_dataset
from foundation.data.formats import (
    ANSWERS,
    INSTRUMENTS,
    QTYPE_GROUPS,
    QTYPES,
    Caption,
    Question,
    qtype_from_json,
)
from foundation.data.synth import ensure_synthetic

__all__ = [
    "ANSWERS",
    "INSTRUMENTS",
    "QTYPES",
    "QTYPE_GROUPS",
    "AVDataset",
    "Caption",
    "Question",
    "default_cache_dir",
    "ensure_synthetic",
    "open_dataset",
    "qtype_from_json",
]
