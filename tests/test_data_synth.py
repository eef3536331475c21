"""The generated dataset: real formats, determinism, splits, balance, and media that match.

Checks are independent of the generator: the annotation files are parsed as raw JSON,
answers are recomputed from the ground-truth scenes by an oracle written here, and
the media are checked by spectral analysis (audio) and colour counting (frames).
"""
from __future__ import annotations

import dataclasses
import json
import re
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs.schema import DataConfig, SyntheticData
from foundation.data import ANSWERS, QTYPES, AVDataset, ensure_synthetic, open_dataset
from foundation.data import synth

SR = 16000
TYPE_STRINGS = {
    '["Audio", "Counting"]', '["Audio", "Comparative"]', '["Visual", "Counting"]',
    '["Visual", "Location"]', '["Audio-Visual", "Existential"]', '["Audio-Visual", "Counting"]',
    '["Audio-Visual", "Location"]', '["Audio-Visual", "Comparative"]', '["Audio-Visual", "Temporal"]',
}
AVQA_KEYS = {"video_id", "question_id", "type", "question_content", "templ_values",
             "question_deleted", "anser"}
NUMBER = ["zero", "one", "two", "three", "four", "five"]


# question set -> (templates, MUSIC-AVQA types it asks, questions per clip at least on average)
SETS = {"scene": (7, {"A-Count", "A-Cmp", "V-Count", "V-Loc", "AV-Ext", "AV-Count"}, 4),
        "musicavqa": (16, set(QTYPES), 7)}


@pytest.fixture(scope="module", params=sorted(SETS))
def question_set(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def root(tmp_path_factory, question_set: str) -> Path:
    """A generated dataset of 480 clips (the other knobs at their defaults), through the cache."""
    return ensure_synthetic(SyntheticData(num_clips=480, question_set=question_set),
                            tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def truth(root: Path) -> dict:
    return json.loads((root / "synthetic.json").read_text())


@pytest.fixture(scope="module")
def dataset(root: Path) -> AVDataset:
    return AVDataset(root / "valor", root / "music-avqa", root / "extraction")


def _raw_questions(root: Path) -> dict[str, list[dict]]:
    return {s: json.loads((root / "music-avqa" / f"avqa-{s}.json").read_text())
            for s in ("train", "val", "test")}


def test_files_are_in_the_real_formats(root: Path):
    for split, records in _raw_questions(root).items():
        for r in records:
            assert set(r) == AVQA_KEYS
            assert isinstance(r["question_id"], int) and r["question_deleted"] == 0
            assert r["type"] in TYPE_STRINGS and r["anser"] in ANSWERS
            values = json.loads(r["templ_values"])
            assert isinstance(values, list)
            assert len(re.findall(r"<[A-Za-z]+>", r["question_content"])) == len(values)
        captions = json.loads((root / "valor" / f"desc_{split}.json").read_text())
        assert all(set(c) == {"video_id", "desc"} for c in captions)
    clip = captions[0]["video_id"]
    with wave.open(str(root / "extraction" / "ast_audio" / f"{clip}.wav")) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, SR, 20480)
    pngs = sorted((root / "extraction" / "vivit_frames" / clip).iterdir())
    assert [p.name for p in pngs] == [f"frame_{i:04d}.png" for i in range(1, 17)]
    with Image.open(pngs[0]) as im:
        assert (im.mode, im.size) == ("RGB", (32, 32))


def test_split_is_by_clip(dataset: AVDataset):
    clips = {s: {c.clip_id for c in dataset.captions(s)} for s in ("train", "val", "test")}
    assert [len(clips[s]) for s in ("train", "val", "test")] == [336, 48, 96]  # split 0.7 / 0.1 / 0.2
    assert not (clips["train"] & clips["val"] or clips["train"] & clips["test"] or clips["val"] & clips["test"])
    assert set.union(*clips.values()) == {f"syn{i:05d}" for i in range(480)}
    ids = []
    for s in ("train", "val", "test"):
        assert {q.clip_id for q in dataset.questions(s)} <= clips[s]
        ids += [q.question_id for q in dataset.questions(s)]
    assert len(ids) == len(set(ids)) and all(isinstance(i, str) for i in ids)


def test_every_type_present(dataset: AVDataset, question_set: str):
    _, qtypes, per_clip = SETS[question_set]
    questions = [q for s in dataset.splits_present() for q in dataset.questions(s)]
    assert len(questions) >= 480 * per_clip
    assert {q.qtype for q in questions} == qtypes
    for qtype in qtypes:
        assert sum(q.qtype == qtype for q in questions) >= 150, qtype


def test_answers_are_uniform_within_each_template(root: Path, question_set: str):
    """A question alone tells nothing beyond its template's answer set: within each template
    every answer is about equally frequent (chi-square against uniform, per split and all)."""
    from scipy.stats import chisquare

    raw = _raw_questions(root)
    for split, rows in [*raw.items(), ("all", [r for rows in raw.values() for r in rows])]:
        by_template: dict[str, Counter] = {}
        for r in rows:
            by_template.setdefault(r["question_content"], Counter())[r["anser"]] += 1
        assert len(by_template) == SETS[question_set][0], split
        for template, counts in by_template.items():
            n = sum(counts.values())
            assert len(counts) >= 2, (split, template, counts)
            if split == "all":  # the generator balances the whole dataset exactly
                assert max(counts.values()) - min(counts.values()) <= 1, (template, counts)
            else:  # a split is a random set of clips: uniform up to sampling noise
                assert chisquare(list(counts.values())).pvalue > 1e-4, (split, template, counts, n)


def test_placeholder_values_do_not_tell_the_answer(root: Path):
    """Within a template, which instrument or slot is asked about is independent of the answer."""
    from scipy.stats import chi2_contingency

    rows = [r for rs in _raw_questions(root).values() for r in rs]
    tables: dict[str, dict[tuple[str, str], int]] = {}
    for r in rows:
        values = json.loads(r["templ_values"])
        if values:
            key = (values[0], r["anser"])
            tab = tables.setdefault(r["question_content"], Counter())
            tab[key] += 1
    for template, tab in tables.items():
        vals = sorted({v for v, _ in tab})
        answers = sorted({a for _, a in tab})
        if len(vals) < 2 or len(answers) < 2:
            continue
        m = np.array([[tab.get((v, a), 0) for a in answers] for v in vals])
        m = m[m.sum(1) >= 5]
        if len(m) >= 2:
            assert chi2_contingency(m).pvalue > 1e-4, (template, m)


def test_deterministic_and_seed_sensitive(tmp_path: Path):
    cfg = SyntheticData(num_clips=12, questions_per_clip=3)

    def files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    synth.generate_synthetic(cfg, tmp_path / "a")
    synth.generate_synthetic(cfg, tmp_path / "b")
    synth.generate_synthetic(dataclasses.replace(cfg, seed=1), tmp_path / "c")
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 2 * 3 + 1 + 12 * (1 + 16)
    assert a == b
    for name in ("music-avqa/avqa-train.json", "valor/desc_train.json", "extraction/ast_audio/syn00000.wav",
                 "extraction/vivit_frames/syn00000/frame_0001.png"):
        assert a[name] != c[name], name


def test_cache_is_reused_and_keyed_by_config(tmp_path: Path, monkeypatch):
    cfg = SyntheticData(num_clips=10, questions_per_clip=2)
    first = ensure_synthetic(cfg, tmp_path)
    assert first.parent == tmp_path / "synthetic"

    def fail(*a, **k):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synth, "generate_synthetic", fail)
    assert ensure_synthetic(cfg, tmp_path) == first
    ds = open_dataset(DataConfig(synthetic=cfg), cache_dir=tmp_path)
    assert ds.load_audio("syn00000").shape == (20480,) and ds.load_frames("syn00000").shape == (16, 32, 32, 3)
    monkeypatch.undo()
    other = ensure_synthetic(dataclasses.replace(cfg, seed=3), tmp_path)
    assert other != first
    leftovers = [p.name for p in (tmp_path / "synthetic").iterdir() if p.is_dir() and p.name.startswith(".")]
    assert leftovers == []


# ---------------------------------------------------------------- answers from the scenes


def _oracle(text: str, sources: list[dict]) -> str:
    """The answer to one generated question, recomputed from a ground-truth scene."""
    by_name = {s["instrument"]: s for s in sources}
    by_slot = {s["slot"]: s for s in sources if s["slot"]}
    sounding = [s for s in sources if s["sounding"]]
    visible = [s for s in sources if s["slot"]]
    level = {"soft": 0, "moderate": 1, "loud": 2}

    def loud(s):
        return level[s["level"]] if s and s["sounding"] else -1

    def plays(s):  # seconds of playing
        return 1.28 - s["onset_s"] if s and s["sounding"] else 0.0

    def yn(flag):
        return "yes" if flag else "no"

    def sounds(name):
        return name in by_name and by_name[name]["sounding"]

    def extreme(which):
        onsets = [s["onset_s"] for s in sounding]
        target = min(onsets) if which == "first" else max(onsets)
        (hit,) = [s for s in sounding if s["onset_s"] == target]
        return hit

    order = sorted(visible, key=lambda s: ["left", "middle", "right"].index(s["slot"]))
    rules = [
        (r"How many musical instruments were heard throughout the video\?", lambda: NUMBER[len(sounding)]),
        (r"Is there a (\w+) sound\?", lambda x: yn(sounds(x))),
        (r"Are there (\w+) and (\w+) sound\?", lambda x, y: yn(sounds(x) and sounds(y))),
        (r"Is the (\w+) louder than the (\w+)\?", lambda x, y: yn(loud(by_name[x]) > loud(by_name[y]))),
        (r"Is the (\w+) playing longer than the (\w+)\?", lambda x, y: yn(plays(by_name[x]) > plays(by_name[y]))),
        (r"Do all the instruments start playing at the same time\?",
         lambda: yn(len(sounding) >= 2 and len({s["onset_s"] for s in sounding}) == 1)),
        (r"How many types of musical instruments appeared in the entire video\?", lambda: NUMBER[len(visible)]),
        (r"Where is the (leftmost|rightmost) instrument\?", lambda w: order[0 if w == "leftmost" else -1]["slot"]),
        (r"Is there a (\w+) in the entire video\?", lambda x: yn(x in by_name and bool(by_name[x]["slot"]))),
        (r"Are there (\w+) and (\w+) instruments in the video\?",
         lambda x, y: yn(all(n in by_name and by_name[n]["slot"] for n in (x, y)))),
        (r"Where is the (\w+)\?", lambda x: by_name[x]["slot"]),
        (r"What kind of instrument is the (leftest|rightest) instrument\?",
         lambda w: order[0 if w == "leftest" else -1]["instrument"]),
        (r"What is the instrument on the (left|right) of (\w+)\?",
         lambda side, x: order[order.index(by_name[x]) + (-1 if side == "left" else 1)]["instrument"]),
        (r"Is the (\w+) in the video making sound\?", lambda x: yn(bool(by_name[x]["slot"]) and sounds(x))),
        (r"Is this sound from the instrument in the video\?", lambda: yn(all(s["slot"] for s in sounding))),
        (r"How many instruments are sounding in the video\?",
         lambda: NUMBER[sum(s["sounding"] for s in visible)]),
        (r"How many instruments in the video did not sound from beginning to end\?",
         lambda: NUMBER[sum(not s["sounding"] for s in visible)]),
        (r"Where is the loudest instrument\?", lambda: max(sounding, key=loud)["slot"]),
        (r"Is the (first|last) sound coming from the (\w+) instrument\?",
         lambda w, slot: yn(extreme(w)["slot"] == slot)),
        (r"Is the instrument on the (\w+) louder than the instrument on the (\w+)\?",
         lambda a, b: yn(loud(by_slot[a]) > loud(by_slot[b]))),
        (r"Is the instrument on the (\w+) playing longer than the instrument on the (\w+)\?",
         lambda a, b: yn(plays(by_slot[a]) > plays(by_slot[b]))),
        (r"Which instrument sounds first, the instrument on the (\w+) or the instrument on the (\w+)\?",
         lambda a, b: "simultaneously" if by_slot[a]["onset_s"] == by_slot[b]["onset_s"]
         else min((by_slot[a], by_slot[b]), key=lambda s: s["onset_s"])["slot"]),
        (r"Where is the (first|last) sounding instrument\?", lambda w: extreme(w)["slot"]),
        (r"Does the instrument on the (\w+) start before the instrument on the (\w+)\?",
         lambda a, b: yn(by_slot[a]["onset_s"] < by_slot[b]["onset_s"])),
    ]
    for pattern, rule in rules:
        m = re.fullmatch(pattern, text)
        if m:
            return rule(*m.groups())
    raise AssertionError(f"unknown question wording: {text!r}")


def test_answers_follow_from_the_scenes(dataset: AVDataset, truth: dict):
    scenes = {s["clip_id"]: s["sources"] for s in truth["scenes"]}
    for split in dataset.splits_present():
        for q in dataset.questions(split):
            assert q.answer == _oracle(q.text, scenes[q.clip_id]), (q, scenes[q.clip_id])


def test_captions_describe_the_scenes(dataset: AVDataset, truth: dict):
    where = {"left": "on the left", "middle": "in the middle", "right": "on the right", None: "off screen"}
    for scene in truth["scenes"]:
        text = dataset.caption(scene["clip_id"]).text.lower()
        for s in scene["sources"]:
            name = s["instrument"].replace("_", " ")
            assert f"{name} {where[s['slot']]}" in text, (text, s)
            assert (f"silent {name}" in text) == (not s["sounding"]), (text, s)


# ---------------------------------------------------------------- media against the scenes


def _band(spectrum: np.ndarray, freqs: np.ndarray, hz: float) -> np.ndarray:
    """Power within 1.5 % (at least one bin) of hz, along the last axis."""
    keep = np.abs(freqs - hz) <= max(0.015 * hz, freqs[1])
    return (spectrum[..., keep] ** 2).sum(axis=-1)


def test_instrument_table_is_distinct(truth: dict):
    f0 = sorted(i["f0"] for i in truth["instruments"])
    assert 400 <= f0[0] and f0[-1] < 800  # one octave: no harmonic lands on another fundamental
    assert min(b / a for a, b in zip(f0, f0[1:])) > 1.05
    colours = np.array([i["colour"] for i in truth["instruments"]], dtype=float)
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    assert gaps[~np.eye(len(colours), dtype=bool)].min() > 80


def test_audio_has_lines_at_the_sounding_fundamentals(dataset: AVDataset, truth: dict):
    f0 = {i["name"]: i["f0"] for i in truth["instruments"]}
    for scene in truth["scenes"]:
        audio = dataset.load_audio(scene["clip_id"])
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
        freqs = np.fft.rfftfreq(len(audio), 1 / SR)
        line = {name: _band(spectrum, freqs, hz) for name, hz in f0.items()}
        heard = {s["instrument"] for s in scene["sources"] if s["sounding"]}
        weakest_on = min(line[n] for n in heard)
        strongest_off = max(line[n] for n in f0 if n not in heard)
        assert weakest_on > 2 * strongest_off, scene


def test_audio_onsets_and_loudness_match(dataset: AVDataset, truth: dict):
    f0 = {i["name"]: i["f0"] for i in truth["instruments"]}
    nfft, hop = 2048, 256  # 8 Hz bins: neighbouring fundamentals (>= 36 Hz apart) do not leak
    for scene in truth["scenes"]:
        audio = dataset.load_audio(scene["clip_id"])
        frames = np.lib.stride_tricks.sliding_window_view(audio, nfft)[::hop] * np.hanning(nfft)
        stft = np.abs(np.fft.rfft(frames, axis=1))  # (frames, bins)
        centres = (np.arange(len(frames)) * hop + nfft / 2) / SR
        freqs = np.fft.rfftfreq(nfft, 1 / SR)
        heard = [s for s in scene["sources"] if s["sounding"]]
        onset = {}
        for s in heard:
            energy = _band(stft, freqs, f0[s["instrument"]])
            onset[s["instrument"]] = centres[np.argmax(energy > 0.3 * energy.max())]
            assert abs(onset[s["instrument"]] - s["onset_s"]) < 0.1, (scene, onset)  # onsets are 0.32 s apart
        late = centres > max(onset.values()) + 0.05  # every heard instrument is playing
        power = {s["instrument"]: sum(_band(stft[late], freqs, k * f0[s["instrument"]]).sum() for k in range(1, 7))
                 for s in heard}
        rank = {"soft": 0, "moderate": 1, "loud": 2}
        for a in heard:
            for b in heard:
                if rank[a["level"]] > rank[b["level"]]:
                    assert power[a["instrument"]] > power[b["instrument"]], (scene, power)


def test_frames_show_the_visible_instruments_in_their_slots(dataset: AVDataset, truth: dict):
    colour = {i["name"]: np.array(i["colour"], dtype=float) for i in truth["instruments"]}
    for scene in truth["scenes"]:
        frames = dataset.load_frames(scene["clip_id"]).astype(float)  # (t, h, w, 3)
        t, _, w, _ = frames.shape
        slot_of = {s["instrument"]: s["slot"] for s in scene["sources"] if s["slot"]}
        for name, rgb in colour.items():
            near = np.linalg.norm(frames - rgb, axis=-1) < 40  # (t, h, w)
            for k, slot in enumerate(("left", "middle", "right")):
                pixels = near[:, :, w * k // 3: w * (k + 1) // 3].sum() / t
                if slot_of.get(name) == slot:
                    assert pixels >= 15, (scene, name, slot, pixels)
                else:
                    assert pixels <= 2, (scene, name, slot, pixels)
