"""The foundation language model's assets: tokenizer and Qwen2 causal LM.

Both the text device (which transmits rows of the LM's frozen input-embedding
table) and the edge server (which runs the LM) load them from here.

Presets:
- `tiny`: a small random-init Qwen2 and a BPE tokenizer trained on the generated
  corpus. Before it is frozen, the LM is pretrained briefly on that corpus (captions,
  bare questions and the answer words alone; never a question with its answer) so
  that it knows its language the way Qwen knows English; the checkpoint is cached, keyed by everything it depends on.
- `paper`: Qwen/Qwen2.5-1.5B via `from_pretrained` from a local folder or the HF
  cache (never downloaded here); `random_init` builds the same shapes without
  weights, with the corpus tokenizer standing in for Qwen's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from configs.schema import ModelsConfig
from foundation.seeding import derive_seed, make_generator
from foundation.tokenizer import load_or_train_tokenizer

log = logging.getLogger(__name__)

TINY_LM = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=256, max_position_embeddings=512, tie_word_embeddings=True)
# Qwen2.5-1.5B's shapes, for `random_init` (no weights needed).
PAPER_LM = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                intermediate_size=8960, max_position_embeddings=32768, vocab_size=151936,
                rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY_VOCAB = 2000
PRETRAIN_VERSION = 3  # bump when pretraining changes in a way its inputs do not show


class MissingWeightsError(FileNotFoundError):
    """Real weights were asked for but are not on this machine."""


def pretraining_texts(dataset) -> list[str]:
    """What the tiny LM learns from, one document per item, lines joined by newlines.

    A TRAIN clip's document is its caption followed by its bare questions: the questions
    name what the caption describes, so the LM learns to look back over a long context
    to the description, which is where stage 2 puts the media tokens (aligned to
    captions in stage 1). Each answer word is also a document of its own, once, so the
    LM can say it (as Qwen can say any English word). Never a question with its answer:
    the LM would learn each template's answer prior before it sees any media (and test
    answers must never reach it at all).
    """
    questions: dict[str, list[str]] = {}
    for q in dataset.questions("train"):
        questions.setdefault(q.clip_id, []).append(q.text.strip())
    docs = {"\n".join([c.text.strip(), *questions.get(c.clip_id, [])]) for c in dataset.captions("train")}
    docs |= {q.answer.strip() for q in dataset.questions("train")}
    return sorted(d for d in docs if d)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_tiny(model: Qwen2ForCausalLM, tok: PreTrainedTokenizerFast, texts: list[str],
                  steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """Causal-LM pretraining on `texts` (documents of newline-separated lines); returns
    the loss per step."""
    gen = make_generator(seed, "lm-pretrain")
    # Every line starts after an EOS (Qwen's document separator), so its first token is
    # predicted too: that is how the LM learns to say an answer word (a line of its own).
    eos = tok.eos_token_id
    enc = [[eos] + [i for line in t.split("\n") for i in tok(line)["input_ids"] + [eos]] for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="pretrain tiny LM", unit="step", leave=False):
        idx = torch.randint(len(enc), (batch,), generator=gen)
        rows = [enc[i] for i in idx.tolist()]
        width = max(len(r) for r in rows)
        ids = torch.full((batch, width), tok.pad_token_id)  # (b, L)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def corpus_tokenizer(dataset, cache_dir: Path) -> PreTrainedTokenizerFast:
    """The BPE tokenizer trained on the dataset's whole text corpus (vocabulary only)."""
    corpus = dataset.corpus()
    return load_or_train_tokenizer(corpus, cache_dir / "tokenizer" / _digest(corpus, TINY_VOCAB), TINY_VOCAB)


def _tiny_lm(cfg: ModelsConfig, dataset, cache_dir: Path, seed: int
             ) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    tok = corpus_tokenizer(dataset, cache_dir)
    texts = pretraining_texts(dataset)
    key = _digest(TINY_LM, len(tok), texts, cfg.pretrain, seed, PRETRAIN_VERSION)
    path = cache_dir / "lm" / f"tiny-{key}"
    if (path / "config.json").is_file():
        return Qwen2ForCausalLM.from_pretrained(path).eval(), tok
    log.info("pretraining the tiny LM on %d corpus lines (cached at %s)", len(texts), path)
    config = Qwen2Config(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.eos_token_id, **TINY_LM)
    # Init inside a forked RNG so the weights are identical in every process while
    # the caller's global RNG stays untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "lm", "tiny"))
        model = Qwen2ForCausalLM(config)
    losses = pretrain_tiny(model, tok, texts, cfg.pretrain.steps, cfg.pretrain.batch, cfg.pretrain.lr, seed)
    log.info("tiny LM pretraining loss %.3f -> %.3f", losses[0] if losses else float("nan"),
             losses[-1] if losses else float("nan"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    model.save_pretrained(tmp)
    (tmp / "pretrain_losses.json").write_text(json.dumps(losses))
    try:
        os.replace(tmp, path)
    except OSError:  # another process won the race; use its checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
    return Qwen2ForCausalLM.from_pretrained(path).eval(), tok


def _paper_lm(cfg: ModelsConfig, dataset, cache_dir: Path, seed: int
              ) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    if cfg.random_init:
        tok = corpus_tokenizer(dataset, cache_dir)
        config = Qwen2Config(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **PAPER_LM)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "lm", "paper-random"))
            return Qwen2ForCausalLM(config).eval(), tok
    try:
        tok = AutoTokenizer.from_pretrained(cfg.lm_path, local_files_only=True)
        model = Qwen2ForCausalLM.from_pretrained(cfg.lm_path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"the LM weights '{cfg.lm_path}' are not on this machine ({type(e).__name__}). Download them "
            f"where there is internet (`huggingface-cli download {cfg.lm_path}`) and copy the HF cache here, "
            f"or set models.lm_path=/path/to/local/folder; models.random_init=true runs the shapes without "
            f"weights.") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def load_foundation(cfg: ModelsConfig, dataset, cache_dir: Path, seed: int = 0
                    ) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """The frozen foundation LM (eval mode, no grad) and its tokenizer.

    `dataset` is a `foundation.data.AVDataset` (its corpus trains the tiny tokenizer
    and its train split pretrains the tiny LM)."""
    build = _tiny_lm if cfg.preset == "tiny" else _paper_lm
    model, tok = build(cfg, dataset, Path(cache_dir), seed)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def embedding_fingerprint(table: torch.Tensor) -> str:
    """A short hash of an embedding table, so nodes can check they hold the same LM."""
    t = table.detach().float().cpu().contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def lm_width(cfg: ModelsConfig) -> int:
    """d_T, the LM's hidden width, without loading its weights."""
    if cfg.preset == "tiny":
        return TINY_LM["hidden_size"]
    if cfg.random_init:
        return PAPER_LM["hidden_size"]
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(cfg.lm_path, local_files_only=True).hidden_size
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"the LM config '{cfg.lm_path}' is not on this machine; download it "
            f"(`huggingface-cli download {cfg.lm_path}`) or set models.lm_path=/local/folder") from e
