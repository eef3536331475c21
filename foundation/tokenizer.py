"""A small byte-level BPE tokenizer for the tiny preset, and answer normalisation.

`train_tokenizer(corpus)` trains a byte-level BPE (the GPT-2 / Qwen2 scheme: every
string is representable, decode(encode(text)) == text) with the `tokenizers`
library and wraps it as a `transformers.PreTrainedTokenizerFast`. The one special
token `<|endoftext|>` is both EOS and padding, as in Qwen2. No BOS is added;
callers append EOS where they need it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

EOS = "<|endoftext|>"
_FINGERPRINT = "corpus.sha256"


def train_tokenizer(corpus: list[str], vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `corpus` (deterministic for a given corpus and size)."""
    if not corpus:
        raise ValueError("the tokenizer corpus is empty; pass the dataset's corpus() "
                         "(captions, questions and answers)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, clean_up_tokenization_spaces=False,
    )


def _fingerprint(corpus: list[str], vocab_size: int) -> str:
    h = hashlib.sha256(json.dumps({"vocab_size": vocab_size}).encode())
    for text in corpus:
        h.update(text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def load_or_train_tokenizer(corpus: list[str], cache_path: Path,
                            vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """The tokenizer saved at `cache_path` if it was trained on this corpus, else train and save it.

    The folder is written with `save_pretrained` into a temporary folder and renamed
    into place, so a crash never leaves half a tokenizer behind.
    """
    cache_path = Path(cache_path)
    fingerprint = _fingerprint(corpus, vocab_size)
    stamp = cache_path / _FINGERPRINT
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return PreTrainedTokenizerFast.from_pretrained(str(cache_path))
    logger.info("training a byte-level BPE tokenizer (vocab %d) on %d texts", vocab_size, len(corpus))
    tokenizer = train_tokenizer(corpus, vocab_size)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_path.name}-", dir=cache_path.parent))
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / _FINGERPRINT).write_text(fingerprint + "\n")
        if stamp.is_file() and stamp.read_text().strip() == fingerprint:
            shutil.rmtree(tmp)  # another process saved the same tokenizer meanwhile
        else:
            if cache_path.exists():  # trained on another corpus: replace it
                shutil.rmtree(cache_path)
            os.rename(tmp, cache_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tokenizer


_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation removed ('_' and '-' become spaces), spaces collapsed.

    'Acoustic_Guitar.' -> 'acoustic guitar'; used by the exact-match evaluation.
    """
    text = text.lower().replace("_", " ").replace("-", " ")
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return _SPACE.sub(" ", text).strip()
