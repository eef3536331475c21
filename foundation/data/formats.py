"""The real on-disk formats: VALOR-32K captions, MUSIC-AVQA questions, extracted media.

Both the generated dataset and the real one are stored in these formats, and the
same readers load them:

- VALOR-32K `desc_{split}.json`: `[{"video_id": "<id>", "desc": "..."}]`.
- MUSIC-AVQA `avqa-{split}.json`: `video_id`, `question_id` (an int in the real
  files; kept as a string here), `type` (a JSON string such as
  '["Audio", "Counting"]'), `question_content` with placeholders (`<Object>`,
  `<LR>`, `<FL>`, ...) filled left to right from `templ_values` (a JSON-string
  list), `question_deleted` (1: skipped), and the answer under the key `anser` (sic).
- Media under one extraction folder: `ast_audio/<id>.wav` (16 kHz mono PCM) and
  `vivit_frames/<id>/frame_0001.png ...` (RGB).

Array shapes: audio (n,) float32 in [-1, 1]; frames (t, h, w, 3) uint8.
"""
from __future__ import annotations

import json
import re
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.signal import resample_poly

SPLITS = ("train", "val", "test")
SAMPLE_RATE = 16000
PREPARE_HINT = "make it with `tokcom prepare RAW_VIDEO_DIR OUT_DIR`"

# MUSIC-AVQA's 22 instruments, spelled as its answers spell them.
INSTRUMENTS = (
    "accordion", "acoustic_guitar", "bagpipe", "banjo", "bassoon", "cello", "clarinet",
    "congas", "drum", "electric_bass", "erhu", "flute", "guzheng", "piano", "pipa",
    "saxophone", "suona", "trumpet", "tuba", "ukulele", "violin", "xylophone",
)
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# MUSIC-AVQA's 42 answers.
ANSWERS = ("yes", "no", *NUMBERS, "more than ten", "left", "right", "middle",
           "indoor", "outdoor", "simultaneously", *INSTRUMENTS)

# The nine question types: short names, in this order, and MUSIC-AVQA's type pairs.
QTYPES = ("A-Count", "A-Cmp", "V-Count", "V-Loc", "AV-Ext", "AV-Count", "AV-Loc", "AV-Cmp", "AV-Temp")
QTYPE_PAIRS = {
    "A-Count": ("Audio", "Counting"),
    "A-Cmp": ("Audio", "Comparative"),
    "V-Count": ("Visual", "Counting"),
    "V-Loc": ("Visual", "Location"),
    "AV-Ext": ("Audio-Visual", "Existential"),
    "AV-Count": ("Audio-Visual", "Counting"),
    "AV-Loc": ("Audio-Visual", "Location"),
    "AV-Cmp": ("Audio-Visual", "Comparative"),
    "AV-Temp": ("Audio-Visual", "Temporal"),
}
QTYPE_GROUPS = {
    group: [q for q in QTYPES if QTYPE_PAIRS[q][0] == group]
    for group in ("Audio", "Visual", "Audio-Visual")
}
_SHORT = {pair: short for short, pair in QTYPE_PAIRS.items()}
_PLACEHOLDER = re.compile(r"<[A-Za-z]+>")


@dataclass(frozen=True)
class Caption:
    clip_id: str
    text: str


@dataclass(frozen=True)
class Question:
    question_id: str
    clip_id: str
    qtype: str  # one of QTYPES
    text: str  # placeholders filled
    answer: str
    template: str = ""  # MUSIC-AVQA's question_content, placeholders unfilled


def qtype_from_json(type_field: str) -> str:
    """'["Audio", "Counting"]' -> 'A-Count'."""
    try:
        pair = tuple(json.loads(type_field))
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"question type {type_field!r} is not a JSON list; "
                         f"expected e.g. '[\"Audio\", \"Counting\"]'") from e
    if pair not in _SHORT:
        raise ValueError(f"question type {type_field!r} is not one of MUSIC-AVQA's nine types "
                         f"{sorted(QTYPE_PAIRS.values())}; fix the annotation file")
    return _SHORT[pair]


def qtype_to_json(qtype: str) -> str:
    """'A-Count' -> '["Audio", "Counting"]' (MUSIC-AVQA's exact spelling)."""
    return json.dumps(list(QTYPE_PAIRS[qtype]))


def fill_template(text: str, values: list[str]) -> str:
    """Replace the placeholders (`<Object>`, `<LR>`, ...) left to right with `values`."""
    slots = _PLACEHOLDER.findall(text)
    if len(slots) != len(values):
        raise ValueError(f"question {text!r} has {len(slots)} placeholders but templ_values "
                         f"{values!r} has {len(values)}; fix the annotation file")
    parts = _PLACEHOLDER.split(text)
    return "".join(p + v for p, v in zip(parts, [*values, ""]))


# ---------------------------------------------------------------- annotations


def _load_json_list(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a JSON list of records; is it the right file?")
    return data


def read_valor(path: Path) -> list[Caption]:
    """Captions from a VALOR-32K `desc_{split}.json`."""
    try:
        return [Caption(str(r["video_id"]), str(r["desc"]).strip()) for r in _load_json_list(path)]
    except KeyError as e:
        raise ValueError(f"{path}: a record lacks the key {e}; VALOR records need "
                         f"'video_id' and 'desc'") from e


def read_avqa(path: Path) -> list[Question]:
    """Questions from a MUSIC-AVQA `avqa-{split}.json`, placeholders filled, deleted ones skipped."""
    out = []
    for r in _load_json_list(path):
        qid = str(r.get("question_id"))
        try:
            if int(r.get("question_deleted", 0)) == 1:
                continue
            values = [str(v) for v in json.loads(r["templ_values"])]
            out.append(Question(
                question_id=str(r["question_id"]),
                clip_id=str(r["video_id"]),
                qtype=qtype_from_json(r["type"]),
                text=fill_template(r["question_content"], values).strip(),
                answer=str(r["anser"]).strip(),
                template=str(r["question_content"]).strip(),
            ))
        except KeyError as e:
            raise ValueError(f"{path}: question '{qid}' lacks the key {e}; "
                             f"MUSIC-AVQA records need video_id, question_id, type, "
                             f"question_content, templ_values, anser") from e
        except ValueError as e:
            raise ValueError(f"{path}: question '{qid}': {e}") from e
    return out


def write_json(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=0)


def valor_path(valor_dir: Path, split: str) -> Path:
    return Path(valor_dir) / f"desc_{split}.json"


def avqa_path(avqa_dir: Path, split: str) -> Path:
    return Path(avqa_dir) / f"avqa-{split}.json"


# ---------------------------------------------------------------- media


def media_root(media_dir: Path) -> Path:
    """The folder holding `ast_audio/` and `vivit_frames/`: `media_dir/extraction` if present."""
    media_dir = Path(media_dir)
    nested = media_dir / "extraction"
    return nested if nested.is_dir() else media_dir


def audio_path(root: Path, clip_id: str) -> Path:
    return Path(root) / "ast_audio" / f"{clip_id}.wav"


def frames_dir(root: Path, clip_id: str) -> Path:
    return Path(root) / "vivit_frames" / clip_id


def write_wav(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono float audio (n,) in [-1, 1] -> 16-bit PCM wav."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def _pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    if width == 1:  # 8-bit wav is unsigned
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if width == 4:
        return np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    raise ValueError(f"unsupported wav sample width {width} bytes; re-encode as 16-bit PCM")


def read_wav(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A PCM wav as float32 (n,) mono at `sample_rate` (channels averaged, resampled)."""
    with wave.open(str(path), "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    audio = _pcm_to_float(raw, width).reshape(-1, channels).mean(axis=1)  # (n,)
    if rate != sample_rate:
        ratio = Fraction(sample_rate, rate)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator)
    return audio.astype(np.float32)


def write_frames(folder: Path, frames: np.ndarray) -> None:
    """Frames (t, h, w, 3) uint8 -> folder/frame_0001.png ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.png")


def read_frames(folder: Path) -> np.ndarray:
    """folder/frame_*.png in order -> (t, h, w, 3) uint8."""
    paths = sorted(Path(folder).glob("frame_*.png"))
    if not paths:
        raise FileNotFoundError(f"no frame_*.png files in {folder}; {PREPARE_HINT}")
    frames = []
    for p in paths:
        with Image.open(p) as im:
            frames.append(np.asarray(im.convert("RGB")))
    return np.stack(frames)  # (t, h, w, 3)
