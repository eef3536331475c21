"""`AVDataset`: captions, questions and media of one dataset, generated or real.

It reads the real formats (see `formats.py`) whichever produced them. A split whose
annotation file is absent is simply not present (the real sample folders hold only
val and test). Media are read lazily, one clip at a time:
`load_audio(id)` -> (n,) float32 at 16 kHz mono; `load_frames(id)` -> (t, h, w, 3) uint8.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from configs.schema import DataConfig
from foundation.data import formats
from foundation.data.formats import Caption, Question
from foundation.data.synth import ensure_synthetic

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """`$TOKCOM_CACHE` if set, else `~/.cache/tokcom`."""
    env = os.environ.get("TOKCOM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tokcom"


class AVDataset:
    """Captions (VALOR-32K format), questions (MUSIC-AVQA format) and extracted media.

    `valor_dir` holds `desc_{split}.json`, `avqa_dir` holds `avqa-{split}.json`,
    `media_dir` holds `ast_audio/` and `vivit_frames/` (directly or under
    `extraction/`). Any of them may be None. With `annotations_only=True` the media
    folder is never touched.
    """

    def __init__(self, valor_dir: Path | None, avqa_dir: Path | None, media_dir: Path | None,
                 annotations_only: bool = False) -> None:
        self._captions: dict[str, list[Caption]] = {}
        self._questions: dict[str, list[Question]] = {}
        for split in formats.SPLITS:
            if valor_dir is not None and formats.valor_path(valor_dir, split).is_file():
                self._captions[split] = formats.read_valor(formats.valor_path(valor_dir, split))
            if avqa_dir is not None and formats.avqa_path(avqa_dir, split).is_file():
                self._questions[split] = formats.read_avqa(formats.avqa_path(avqa_dir, split))
        self._caption_by_clip = {}
        for split in self.splits_present():
            for c in self._captions.get(split, []):
                self._caption_by_clip.setdefault(c.clip_id, c)
        self._question_by_id = {q.question_id: q for qs in self._questions.values() for q in qs}
        self.annotations_only = annotations_only
        self._media_dir = None if annotations_only or media_dir is None else Path(media_dir)
        logger.info("dataset: %s captions, %s questions",
                    {s: len(v) for s, v in self._captions.items()},
                    {s: len(v) for s, v in self._questions.items()})

    # ------------------------------------------------------------ annotations

    def splits_present(self) -> list[str]:
        """The splits with a caption or question file, in train/val/test order."""
        return [s for s in formats.SPLITS if s in self._captions or s in self._questions]

    def captions(self, split: str) -> list[Caption]:
        if split not in self._captions:
            raise ValueError(f"no captions for split '{split}' (splits with captions: "
                             f"{sorted(self._captions)}); add desc_{split}.json to the VALOR folder "
                             f"or pick another split")
        return list(self._captions[split])

    def questions(self, split: str) -> list[Question]:
        if split not in self._questions:
            raise ValueError(f"no questions for split '{split}' (splits with questions: "
                             f"{sorted(self._questions)}); add avqa-{split}.json to the MUSIC-AVQA "
                             f"folder or pick another split")
        return list(self._questions[split])

    def caption(self, clip_id: str) -> Caption:
        try:
            return self._caption_by_clip[str(clip_id)]
        except KeyError:
            raise KeyError(f"no caption for clip '{clip_id}'; check the id against captions(split)") from None

    def question(self, question_id: str) -> Question:
        try:
            return self._question_by_id[str(question_id)]
        except KeyError:
            raise KeyError(f"no question with id '{question_id}'; check the id against "
                           f"questions(split)") from None

    def corpus(self) -> list[str]:
        """Every caption, question text and answer of every split present."""
        out = []
        for split in self.splits_present():
            out += [c.text for c in self._captions.get(split, [])]
            for q in self._questions.get(split, []):
                out += [q.text, q.answer]
        return out

    def digest(self) -> str:
        """A short stable hash of the annotation content (nodes compare it)."""
        content = {
            split: {
                "captions": [[c.clip_id, c.text] for c in self._captions.get(split, [])],
                "questions": [[q.question_id, q.clip_id, q.qtype, q.text, q.answer]
                              for q in self._questions.get(split, [])],
            }
            for split in self.splits_present()
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------ media

    def _media_file(self, sub: str, path_of) -> Path:
        if self._media_dir is None:
            why = "annotations_only=True" if self.annotations_only else "no media folder"
            raise FileNotFoundError(f"this dataset was opened with {why}; open it with a media folder "
                                    f"(data.real.media_dir) holding ast_audio/ and vivit_frames/, or "
                                    f"{formats.PREPARE_HINT}")
        root = formats.media_root(self._media_dir)
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"media folder {root / sub} does not exist; {formats.PREPARE_HINT}")
        path = path_of(root)
        if not path.exists():
            raise FileNotFoundError(f"media file {path} does not exist; {formats.PREPARE_HINT}")
        return path

    def load_audio(self, clip_id: str) -> np.ndarray:
        """(n,) float32 at 16 kHz mono (other rates resampled, channels averaged)."""
        path = self._media_file("ast_audio", lambda root: formats.audio_path(root, clip_id))
        return formats.read_wav(path, formats.SAMPLE_RATE)

    def load_frames(self, clip_id: str) -> np.ndarray:
        """(t, h, w, 3) uint8."""
        return formats.read_frames(self._media_file("vivit_frames",
                                                    lambda root: formats.frames_dir(root, clip_id)))


def _real_dir(value: str, key: str, how: str = "") -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"config key '{key}': folder {path} does not exist; set {key} to an "
                                f"existing folder{how}")
    return path


def open_dataset(data_cfg: DataConfig, cache_dir: Path | None = None) -> AVDataset:
    """The dataset `data_cfg` names: generated (and cached) or real."""
    if data_cfg.kind == "synthetic":
        cache = Path(cache_dir or data_cfg.cache_dir or default_cache_dir()).expanduser()
        root = ensure_synthetic(data_cfg.synthetic, cache)
        return AVDataset(root / "valor", root / "music-avqa", root / "extraction")
    real = data_cfg.real
    valor = _real_dir(real.valor_dir, "data.real.valor_dir")
    avqa = _real_dir(real.avqa_dir, "data.real.avqa_dir")
    if valor is None and avqa is None:
        raise FileNotFoundError("data.kind is 'real' but neither data.real.valor_dir nor "
                                "data.real.avqa_dir is set; set at least one of them")
    media = None
    if not real.annotations_only:
        if not real.media_dir:
            raise FileNotFoundError("config key 'data.real.media_dir' is empty; set it to the "
                                    f"extraction folder ({formats.PREPARE_HINT}) or set "
                                    "data.real.annotations_only=true")
        media = _real_dir(real.media_dir, "data.real.media_dir", f" ({formats.PREPARE_HINT})")
    return AVDataset(valor, avqa, media, annotations_only=real.annotations_only)
