"""The readers of the real formats, on small hand-written fixtures and the real sample files."""
from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs.schema import DataConfig, RealData
from foundation.data import (
    ANSWERS,
    QTYPE_GROUPS,
    QTYPES,
    AVDataset,
    Caption,
    Question,
    default_cache_dir,
    open_dataset,
    qtype_from_json,
)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "datasets"

# MUSIC-AVQA's own spelling of the nine types, written out independently of the code.
TYPE_STRINGS = {
    "A-Count": '["Audio", "Counting"]',
    "A-Cmp": '["Audio", "Comparative"]',
    "V-Count": '["Visual", "Counting"]',
    "V-Loc": '["Visual", "Location"]',
    "AV-Ext": '["Audio-Visual", "Existential"]',
    "AV-Count": '["Audio-Visual", "Counting"]',
    "AV-Loc": '["Audio-Visual", "Location"]',
    "AV-Cmp": '["Audio-Visual", "Comparative"]',
    "AV-Temp": '["Audio-Visual", "Temporal"]',
}

AVQA_VAL = [
    {"video_id": "00000093", "question_id": 12, "type": '["Audio", "Counting"]',
     "question_content": "How many musical instruments were heard throughout the video?",
     "templ_values": "[]", "question_deleted": 0, "anser": "one"},
    {"video_id": "00000093", "question_id": 13, "type": '["Audio-Visual", "Comparative"]',
     "question_content": "Is the <Object> on the <LR> louder than the <Object> on the <LR>?",
     "templ_values": '["violin", "left", "cello", "right"]', "question_deleted": 0, "anser": "yes"},
    {"video_id": "00000153", "question_id": 14, "type": '["Audio-Visual", "Temporal"]',
     "question_content": "Where is the <FL> sounding instrument?",
     "templ_values": '["first"]', "question_deleted": 1, "anser": "left"},
    {"video_id": "00000153", "question_id": 15, "type": '["Visual", "Location"]',
     "question_content": "What kind of instrument is the <LRer> instrument? ",
     "templ_values": '["leftest"]', "question_deleted": 0, "anser": "acoustic_guitar"},
]
VALOR_VAL = [
    {"video_id": "00000093", "desc": "A man plays a violin beside a cello."},
    {"video_id": "CEfOX4fYlsY_20.000_30.000", "desc": " A yellow bird leaped over the fence. "},
]


def _write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> None:
    """samples (n, channels) int values already scaled to the sample width."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = {1: np.uint8, 2: "<i2", 4: "<i4"}[width]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples.astype(dtype)).tobytes())


@pytest.fixture()
def fixture_root(tmp_path: Path) -> Path:
    (tmp_path / "valor").mkdir()
    (tmp_path / "music-avqa").mkdir()
    (tmp_path / "valor" / "desc_val.json").write_text(json.dumps(VALOR_VAL))
    (tmp_path / "music-avqa" / "avqa-val.json").write_text(json.dumps(AVQA_VAL))
    media = tmp_path / "extraction"
    pcm = np.array([0, 16384, -16384, 32767, -32768, 1], dtype=np.int64)[:, None]
    _write_wav(media / "ast_audio" / "00000093.wav", pcm, 16000)
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    (media / "vivit_frames" / "00000093").mkdir(parents=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(media / "vivit_frames" / "00000093" / f"frame_{i:04d}.png")
    np.save(tmp_path / "frames.npy", frames)
    return tmp_path


def _open(root: Path, **kw) -> AVDataset:
    return AVDataset(root / "valor", root / "music-avqa", root / "extraction", **kw)


def test_qtype_names_and_groups():
    assert QTYPES == ("A-Count", "A-Cmp", "V-Count", "V-Loc", "AV-Ext", "AV-Count", "AV-Loc",
                      "AV-Cmp", "AV-Temp")
    for short, text in TYPE_STRINGS.items():
        assert qtype_from_json(text) == short
    assert QTYPE_GROUPS == {"Audio": ["A-Count", "A-Cmp"], "Visual": ["V-Count", "V-Loc"],
                            "Audio-Visual": ["AV-Ext", "AV-Count", "AV-Loc", "AV-Cmp", "AV-Temp"]}
    with pytest.raises(ValueError, match="nine types"):
        qtype_from_json('["Audio", "Temporal"]')
    with pytest.raises(ValueError, match="JSON list"):
        qtype_from_json("Audio Counting")


def test_answer_vocabulary_is_music_avqa():
    assert len(ANSWERS) == len(set(ANSWERS)) == 42
    assert {"yes", "no", "zero", "ten", "more than ten", "simultaneously", "indoor",
            "acoustic_guitar", "electric_bass", "xylophone"} <= set(ANSWERS)


def test_annotations_read_fill_and_skip(fixture_root: Path):
    ds = _open(fixture_root)
    assert ds.splits_present() == ["val"]
    assert ds.captions("val") == [Caption("00000093", "A man plays a violin beside a cello."),
                                  Caption("CEfOX4fYlsY_20.000_30.000", "A yellow bird leaped over the fence.")]
    assert ds.questions("val") == [
        Question("12", "00000093", "A-Count", "How many musical instruments were heard throughout the video?", "one",
                 "How many musical instruments were heard throughout the video?"),
        Question("13", "00000093", "AV-Cmp", "Is the violin on the left louder than the cello on the right?", "yes",
                 "Is the <Object> on the <LR> louder than the <Object> on the <LR>?"),
        Question("15", "00000153", "V-Loc", "What kind of instrument is the leftest instrument?", "acoustic_guitar",
                 "What kind of instrument is the <LRer> instrument?"),
    ]
    assert ds.question("13").answer == "yes"
    assert ds.question(13).question_id == "13"  # an int id from a caller is accepted
    assert ds.caption("00000093").text.startswith("A man")
    with pytest.raises(KeyError, match="14"):
        ds.question("14")  # deleted


def test_missing_split_and_corpus(fixture_root: Path):
    ds = _open(fixture_root)
    with pytest.raises(ValueError, match="split 'train'"):
        ds.captions("train")
    with pytest.raises(ValueError, match="avqa-test.json"):
        ds.questions("test")
    assert ds.corpus() == [
        "A man plays a violin beside a cello.", "A yellow bird leaped over the fence.",
        "How many musical instruments were heard throughout the video?", "one",
        "Is the violin on the left louder than the cello on the right?", "yes",
        "What kind of instrument is the leftest instrument?", "acoustic_guitar",
    ]


def test_digest_is_stable_and_content_sensitive(fixture_root: Path):
    first = _open(fixture_root).digest()
    assert first == _open(fixture_root, annotations_only=True).digest()
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    changed = [dict(r) for r in AVQA_VAL]
    changed[0]["anser"] = "two"
    (fixture_root / "music-avqa" / "avqa-val.json").write_text(json.dumps(changed))
    assert _open(fixture_root).digest() != first


def test_malformed_records_name_the_problem(tmp_path: Path):
    (tmp_path / "music-avqa").mkdir()
    bad = [dict(AVQA_VAL[1], templ_values='["violin"]')]
    (tmp_path / "music-avqa" / "avqa-val.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="question '13'.*4 placeholders"):
        AVDataset(None, tmp_path / "music-avqa", None, annotations_only=True)
    bad = [{k: v for k, v in AVQA_VAL[0].items() if k != "anser"}]
    (tmp_path / "music-avqa" / "avqa-val.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="lacks the key 'anser'"):
        AVDataset(None, tmp_path / "music-avqa", None, annotations_only=True)


def test_media_round_trip(fixture_root: Path):
    ds = _open(fixture_root)
    audio = ds.load_audio("00000093")
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, np.array([0, 16384, -16384, 32767, -32768, 1]) / 32768.0)
    frames = ds.load_frames("00000093")
    assert frames.dtype == np.uint8 and frames.shape == (3, 4, 5, 3)
    np.testing.assert_array_equal(frames, np.load(fixture_root / "frames.npy"))
    # media_dir may also name the folder holding extraction/
    np.testing.assert_array_equal(AVDataset(None, None, fixture_root).load_audio("00000093"), audio)


def test_audio_is_resampled_and_mixed_down(tmp_path: Path):
    rate, seconds, hz = 44100, 0.5, 1000.0
    t = np.arange(int(rate * seconds)) / rate
    left = np.round(16000 * np.sin(2 * np.pi * hz * t))
    _write_wav(tmp_path / "ast_audio" / "st.wav", np.stack([left, np.zeros_like(left)], axis=1), rate)
    audio = AVDataset(None, None, tmp_path).load_audio("st")
    assert audio.shape == (8000,)  # 0.5 s at 16 kHz
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(spectrum)] == pytest.approx(hz, abs=2)
    middle = audio[1000:-1000]  # away from the resampler's edge effects
    assert np.sqrt(np.mean(middle ** 2)) == pytest.approx(0.5 * 16000 / 32768 / np.sqrt(2), rel=0.02)
    # 8-bit wav is unsigned: 128 is silence
    _write_wav(tmp_path / "ast_audio" / "u8.wav", np.array([[128], [255], [0]]), 16000, width=1)
    np.testing.assert_allclose(AVDataset(None, None, tmp_path).load_audio("u8"), [0, 127 / 128, -1])


def test_missing_media_gives_clear_errors(fixture_root: Path):
    ds = AVDataset(None, None, fixture_root / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nowhere/ast_audio.*tokcom prepare RAW_VIDEO_DIR OUT_DIR"):
        ds.load_audio("00000093")
    with pytest.raises(FileNotFoundError, match=r"nowhere/vivit_frames.*tokcom prepare"):
        ds.load_frames("00000093")
    ds = _open(fixture_root)
    with pytest.raises(FileNotFoundError, match=r"ast_audio/00000153\.wav.*tokcom prepare"):
        ds.load_audio("00000153")
    with pytest.raises(FileNotFoundError, match=r"vivit_frames/00000153.*tokcom prepare"):
        ds.load_frames("00000153")


def test_annotations_only_never_touches_media(fixture_root: Path):
    ds = AVDataset(fixture_root / "valor", fixture_root / "music-avqa", fixture_root / "nowhere",
                   annotations_only=True)
    assert len(ds.questions("val")) == 3
    with pytest.raises(FileNotFoundError, match="annotations_only=True"):
        ds.load_audio("00000093")


def test_open_dataset_real_names_the_config_key(fixture_root: Path):
    real = RealData(valor_dir=str(fixture_root / "valor"), avqa_dir=str(fixture_root / "missing"),
                    media_dir=str(fixture_root / "extraction"))
    with pytest.raises(FileNotFoundError, match="data.real.avqa_dir"):
        open_dataset(DataConfig(kind="real", real=real))
    real = RealData(valor_dir=str(fixture_root / "valor"), avqa_dir=str(fixture_root / "music-avqa"))
    with pytest.raises(FileNotFoundError, match="data.real.media_dir.*annotations_only"):
        open_dataset(DataConfig(kind="real", real=real))
    with pytest.raises(FileNotFoundError, match="data.real.valor_dir nor data.real.avqa_dir"):
        open_dataset(DataConfig(kind="real", real=RealData(annotations_only=True)))
    real = RealData(valor_dir=str(fixture_root / "valor"), avqa_dir=str(fixture_root / "music-avqa"),
                    media_dir=str(fixture_root / "extraction"))
    ds = open_dataset(DataConfig(kind="real", real=real))
    assert ds.load_frames("00000093").shape == (3, 4, 5, 3)


def test_default_cache_dir(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("TOKCOM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("TOKCOM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "tokcom"


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="the shared real sample files are absent")
def test_real_sample_files_read():
    ds = AVDataset(SAMPLES / "valor", SAMPLES / "music-avqa", None, annotations_only=True)
    assert ds.splits_present() == ["val", "test"]
    for split in ("val", "test"):
        raw = json.loads((SAMPLES / "music-avqa" / f"avqa-{split}.json").read_text())
        kept = [r for r in raw if r["question_deleted"] != 1]
        questions = ds.questions(split)
        assert len(questions) == len(kept)
        for r, q in zip(kept, questions):
            assert q.question_id == str(r["question_id"]) and isinstance(q.clip_id, str)
            assert q.qtype == {v: k for k, v in TYPE_STRINGS.items()}[r["type"]]
            expected = r["question_content"]
            for value in json.loads(r["templ_values"]):  # fill left to right, one at a time
                expected = re.sub(r"<[A-Za-z]+>", value, expected, count=1)
            assert q.text == expected.strip() and "<" not in q.text
            assert q.answer in ANSWERS
        assert {q.qtype for q in questions} == set(QTYPES)
        raw_captions = json.loads((SAMPLES / "valor" / f"desc_{split}.json").read_text())
        assert [c.clip_id for c in ds.captions(split)] == [r["video_id"] for r in raw_captions]
    q = ds.question("12")
    assert (q.clip_id, q.qtype, q.answer) == ("00000093", "A-Count", "one")
    assert len(ds.digest()) == 16 and len(ds.corpus()) > 10000
