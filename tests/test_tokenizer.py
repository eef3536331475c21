"""The byte-level BPE tokenizer and answer normalisation."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from configs.schema import SyntheticData
from foundation import tokenizer as tokmod
from foundation.data import ANSWERS, AVDataset
from foundation.data.synth import generate_synthetic
from foundation.tokenizer import load_or_train_tokenizer, normalize_answer, train_tokenizer

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> AVDataset:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(SyntheticData(num_clips=30), root)
    return AVDataset(root / "valor", root / "music-avqa", None, annotations_only=True)


@pytest.fixture(scope="module")
def tok(dataset: AVDataset):
    return train_tokenizer(dataset.corpus(), vocab_size=2000)


def test_eos_is_pad_and_not_added(tok):
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id == tok.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert tok.eos_token_id not in tok.encode("yes")
    assert tok.decode(tok.encode("yes") + [tok.eos_token_id], skip_special_tokens=True) == "yes"


def test_answers_and_questions_round_trip(tok, dataset: AVDataset):
    for answer in ANSWERS:
        assert tok.decode(tok.encode(answer)) == answer
    texts = [q.text for s in dataset.splits_present() for q in dataset.questions(s)]
    texts += [c.text for s in dataset.splits_present() for c in dataset.captions(s)]
    for text in texts:
        assert tok.decode(tok.encode(text)) == text
    # text never seen in training, with non-ASCII, still round-trips (byte level)
    for text in ("How many sounding erhu in the video？", "Ünïcödé  double  spaces\tand tab"):
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="the shared real sample files are absent")
def test_real_questions_round_trip(tok):
    real = AVDataset(None, SAMPLES / "music-avqa", None, annotations_only=True)
    for q in real.questions("val")[:2000]:
        assert tok.decode(tok.encode(q.text)) == q.text


def test_training_is_deterministic_across_processes(dataset: AVDataset, tmp_path: Path):
    corpus = dataset.corpus()
    here = hashlib.sha256(train_tokenizer(corpus, 400).backend_tokenizer.to_str().encode()).hexdigest()
    assert here == hashlib.sha256(train_tokenizer(corpus, 400).backend_tokenizer.to_str().encode()).hexdigest()
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))
    script = (
        "import hashlib, json, sys; from foundation.tokenizer import train_tokenizer; "
        "t = train_tokenizer(json.load(open(sys.argv[1])), 400); "
        "sys.stdout.write(hashlib.sha256(t.backend_tokenizer.to_str().encode()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "corpus.json")], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout == here


def test_vocab_size_is_respected(dataset: AVDataset):
    assert len(train_tokenizer(dataset.corpus(), vocab_size=300)) == 300  # 256 bytes + EOS + 43 merges
    with pytest.raises(ValueError, match="corpus is empty"):
        train_tokenizer([])


def test_cache_loads_and_retrains_on_a_new_corpus(dataset: AVDataset, tmp_path: Path, monkeypatch):
    corpus = dataset.corpus()
    first = load_or_train_tokenizer(corpus, tmp_path / "tok", vocab_size=500)
    assert (tmp_path / "tok" / "tokenizer.json").is_file()

    def fail(*a, **k):
        raise AssertionError("retrained a cached tokenizer")

    monkeypatch.setattr(tokmod, "train_tokenizer", fail)
    again = load_or_train_tokenizer(corpus, tmp_path / "tok", vocab_size=500)
    text = corpus[0]
    assert again.encode(text) == first.encode(text) and again.eos_token == again.pad_token == "<|endoftext|>"
    assert again.decode(again.encode(text)) == text
    monkeypatch.undo()
    other = load_or_train_tokenizer(["completely different words"] * 5, tmp_path / "tok", vocab_size=500)
    assert other.encode(text) != first.encode(text)
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temporary folders left


@pytest.mark.parametrize("raw, expected", [
    ("Yes", "yes"),
    ("  acoustic_guitar. ", "acoustic guitar"),
    ("Acoustic Guitar", "acoustic guitar"),
    ("more   than\tten!", "more than ten"),
    ("left？", "left"),
    ("", ""),
])
def test_normalize_answer(raw: str, expected: str):
    assert normalize_answer(raw) == expected
