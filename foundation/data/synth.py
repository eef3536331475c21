"""The generated dataset (the embedded default), written in the real on-disk formats.

`ensure_synthetic(cfg, cache_dir)` returns a folder holding

    valor/desc_{train,val,test}.json          VALOR-32K captions, one per clip
    music-avqa/avqa-{train,val,test}.json     MUSIC-AVQA questions
    extraction/ast_audio/<id>.wav             16 kHz mono 16-bit PCM
    extraction/vivit_frames/<id>/frame_0001.png ...
    synthetic.json                            the generator's ground truth (instruments, scenes)

generated on first use under `<cache_dir>/synthetic/<hash of the config fields>/`:
written into a temporary folder and renamed into place, under a file lock so that
processes starting together generate it once. Everything is drawn from
`numpy.random.default_rng(cfg.seed)`; each clip gets its own spawned generator.
The split is by clip, so no clip appears in two splits.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from configs.schema import SyntheticData
from foundation.data import formats
from foundation.data.synth_media import render_audio, render_frames
from foundation.data.synth_scene import LEVELS, Scene, instrument_table, sample_scene
from foundation.data.synth_text import Template, answer_with, clip_caption, templates

logger = logging.getLogger(__name__)

# Bump when the generator's output changes, so old caches are not reused.
GENERATOR_VERSION = 3
POOL_PER_CLIP = 16  # candidate scenes per clip
ORDERS_PER_CLIP = 8  # template orders tried per clip


def synthetic_key(cfg: SyntheticData) -> str:
    """A short hash of the config fields and the generator version."""
    fields = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(cfg)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def split_clips(num_clips: int, fractions: tuple[float, float, float],
                rng: np.random.Generator) -> dict[str, list[int]]:
    """Clip indices per split (each split non-empty, disjoint, in index order)."""
    n_val = max(1, round(fractions[1] * num_clips))
    n_test = max(1, round(fractions[2] * num_clips))
    order = rng.permutation(num_clips)
    cut = num_clips - n_val - n_test
    parts = {"train": order[:cut], "val": order[cut:cut + n_val], "test": order[cut + n_val:]}
    return {k: sorted(int(i) for i in v) for k, v in parts.items()}


def _scene_record(scene: Scene, split: str, table, duration_s: float) -> dict:
    return {
        "clip_id": scene.clip_id,
        "split": split,
        "sources": [{
            "instrument": table[s.instrument].name,
            "slot": s.slot,
            "sounding": s.sounding,
            "onset_s": s.onset_quarters * duration_s / 4 if s.sounding else None,
            "level": LEVELS[s.level][0] if s.sounding else None,
        } for s in scene.sources],
    }


class AnswerBalance:
    """Answers first, kept uniform within each template: a template's next wanted answer
    is its least-used one so far (ties broken at random)."""

    def __init__(self, tmpls: tuple[Template, ...]):
        self.used = {t.text: Counter({a: 0 for a in t.answers}) for t in tmpls}

    def want(self, t: Template, rng: np.random.Generator) -> str:
        counts = self.used[t.text]
        low = min(counts.values())
        least = [a for a in t.answers if counts[a] == low]
        return least[int(rng.integers(len(least)))]

    def asked(self, t: Template) -> int:
        return sum(self.used[t.text].values())

    def take(self, t: Template, answer: str) -> None:
        self.used[t.text][answer] += 1


class ScenePool:
    """Many candidate scenes and, for each, the answers every template can get from it.

    A clip is made answers first: templates and the wanted answer of each are chosen
    (`AnswerBalance`), then an unused pool scene that gives all of them is taken.
    """

    def __init__(self, size: int, num_instruments: int, tmpls: tuple[Template, ...], names: tuple[str, ...],
                 rng: np.random.Generator):
        self.tmpls, self.names = tmpls, names
        self.column = {(t.text, a): j for j, (t, a) in enumerate((t, a) for t in tmpls for a in t.answers)}
        self.scenes = [sample_scene("pool", num_instruments, rng) for _ in
                       tqdm(range(size), desc="scene pool", unit="scene", leave=False)]
        self.gives = np.zeros((size, len(self.column)), dtype=bool)  # (pool, template-answer pairs)
        for i, sc in enumerate(self.scenes):
            for t in tmpls:
                for _, a in t.ask(sc, names):
                    if (t.text, a) in self.column:
                        self.gives[i, self.column[(t.text, a)]] = True
        self.free = np.ones(size, dtype=bool)

    def clip(self, clip_id: str, k: int, balance: AnswerBalance, rng: np.random.Generator
             ) -> tuple[Scene, list[tuple[Template, list[str], str]]]:
        """A scene for the clip and up to k questions (template, templ_values, answer).

        Each template's wanted answer is its least-used one. Templates are taken in turn as
        long as some unused pool scene still gives every answer taken so far: least-asked
        first, then in a few random orders, keeping the order that fits the most (answers
        of different templates constrain each other, e.g. the leftmost and the rightmost
        instrument)."""
        wanted = [balance.want(t, rng) for t in self.tmpls]
        ties = rng.random(len(self.tmpls))
        orders = [sorted(range(len(self.tmpls)), key=lambda j: (balance.asked(self.tmpls[j]), ties[j]))]
        orders += [rng.permutation(len(self.tmpls)).tolist() for _ in range(ORDERS_PER_CLIP - 1)]
        best: tuple[np.ndarray, list[tuple[Template, str]]] | None = None
        for order in orders:
            fits = self.free.copy()
            picked: list[tuple[Template, str]] = []
            for j in order:
                if len(picked) == k:
                    break
                t, a = self.tmpls[j], wanted[j]
                narrower = fits & self.gives[:, self.column[(t.text, a)]]
                if narrower.any():
                    fits = narrower
                    picked.append((t, a))
            if best is None or len(picked) > len(best[1]):
                best = (fits, picked)
        fits, picked = best
        if not fits.any():
            raise RuntimeError(f"{clip_id}: the scene pool ran out; raise POOL_PER_CLIP")
        choice = np.flatnonzero(fits)
        i = int(choice[rng.integers(choice.size)])
        self.free[i] = False
        scene = dataclasses.replace(self.scenes[i], clip_id=clip_id)
        asked = [(t, answer_with(t, scene, self.names, a, rng), a) for t, a in picked]
        for t, _, a in asked:
            balance.take(t, a)
        return scene, asked


def generate_synthetic(cfg: SyntheticData, out_dir: Path) -> None:
    """Write the whole generated dataset into `out_dir` (which must be empty or absent)."""
    out_dir = Path(out_dir)
    table = instrument_table(cfg.num_instruments)
    names = tuple(inst.name for inst in table)
    rng = np.random.default_rng(cfg.seed)
    split_rng, pool_rng, *clip_rngs = rng.spawn(cfg.num_clips + 2)
    split_of = {i: s for s, idx in split_clips(cfg.num_clips, cfg.split, split_rng).items() for i in idx}
    media = out_dir / "extraction"
    captions = {s: [] for s in formats.SPLITS}
    questions = {s: [] for s in formats.SPLITS}
    scenes = []
    next_qid = 0
    tmpls = templates(cfg.num_instruments, names, cfg.question_set)
    k = min(cfg.questions_per_clip, len(tmpls))
    balance = AnswerBalance(tmpls)
    pool = ScenePool(POOL_PER_CLIP * cfg.num_clips, cfg.num_instruments, tmpls, names, pool_rng)
    for i in tqdm(range(cfg.num_clips), desc="synthetic clips", unit="clip"):
        clip_rng, split = clip_rngs[i], split_of[i]
        scene, asked = pool.clip(f"syn{i:05d}", k, balance, clip_rng)
        audio = render_audio(scene, table, cfg.sample_rate, cfg.duration_s, clip_rng)
        formats.write_wav(formats.audio_path(media, scene.clip_id), audio, cfg.sample_rate)
        video = render_frames(scene, table, cfg.frames, cfg.image_size, clip_rng)
        formats.write_frames(formats.frames_dir(media, scene.clip_id), video)
        captions[split].append({"video_id": scene.clip_id, "desc": clip_caption(scene, table)})
        for tmpl, values, answer in asked:
            questions[split].append({
                "video_id": scene.clip_id,
                "question_id": next_qid,  # an int, as in the real files
                "type": formats.qtype_to_json(tmpl.qtype),
                "question_content": tmpl.text,
                "templ_values": json.dumps(values),
                "question_deleted": 0,
                "anser": answer,
            })
            next_qid += 1
        scenes.append(_scene_record(scene, split, table, cfg.duration_s))
    for split in formats.SPLITS:
        formats.write_json(formats.valor_path(out_dir / "valor", split), captions[split])
        formats.write_json(formats.avqa_path(out_dir / "music-avqa", split), questions[split])
    truth = {
        "generator_version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
        "instruments": [dataclasses.asdict(inst) for inst in table],
        "scenes": scenes,
    }
    with open(out_dir / "synthetic.json", "w", encoding="utf-8") as f:
        json.dump(truth, f, indent=1)


def ensure_synthetic(cfg: SyntheticData, cache_dir: Path) -> Path:
    """The generated dataset's root folder, generating it on first use."""
    parent = Path(cache_dir) / "synthetic"
    key = synthetic_key(cfg)
    root = parent / key
    if root.is_dir():
        return root
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if root.is_dir():  # another process finished it while we waited
            return root
        logger.info("generating the synthetic dataset (%d clips) into %s", cfg.num_clips, root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=parent))
        try:
            generate_synthetic(cfg, tmp)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root
