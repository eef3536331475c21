"""The device-side step, written once for both transports.

Legend: b batch, s tokens (s_m), e encoder width, d LM width, c = s*d/2 complex
symbols, L text tokens, A answer tokens.

A `DeviceNode` is one (user, modality). Per round the edge names the phase, step
and sample ids; the node answers with its transmitted symbols (and, for the text
node, the ideal digital label payload); in training it later receives the gradient
of its symbols and steps its own optimiser. The in-process reference and the gRPC
device process call exactly these methods.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from channel.symbols import as_pairs
from configs.schema import Config
from device_node.transmitter import TokenTransmitter
from foundation.manifest import CAPTION_PHASES, TRAIN_PHASES, clip_of
from foundation.seeding import make_generator

log = logging.getLogger(__name__)


@dataclass
class Transmission:
    """What a device sends for one round."""

    symbols: torch.Tensor  # (b, c) complex64, detached
    s: int
    d: int
    labels: dict = field(default_factory=dict)  # text node only: ideal digital payload
    compute_ms: float = 0.0


def text_batch(tokenizer, texts: list[str], length: int, eos: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise, truncate and pad to `length`: ids (b, L) int64, mask (b, L) bool."""
    ids = torch.full((len(texts), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, t in enumerate(texts):
        row = tokenizer(t)["input_ids"]
        row = (row[: length - 1] + [tokenizer.eos_token_id]) if eos else row[:length]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


class DeviceNode:
    """One device: frozen input path + trainable transmitter + its own optimiser.

    `source` maps (phase, sample ids) to the transmitter's input: for audio/video a
    callable clip ids -> (b, s, e) cached selected encoder tokens; for text the
    tokenizer and the frozen embedding table.
    """

    def __init__(self, cfg: Config, user: int, modality: str, dataset, width: int,
                 features=None, tokenizer=None, embed_table: torch.Tensor | None = None):
        self.cfg, self.user, self.modality, self.dataset = cfg, user, modality, dataset
        self.node = f"user{user}/{modality}"
        self.d = width
        self.features, self.tokenizer = features, tokenizer
        gen = make_generator(cfg.seed, self.node, "transmitter-init")
        if modality == "text":
            if tokenizer is None or embed_table is None:
                raise ValueError("the text node needs the LM tokenizer and its embedding table")
            self.embed = embed_table.detach()  # (V, d), frozen; devices of one host share it
            self.s = cfg.data.text_len
            self.tx = TokenTransmitter(width, width, project=False)
        else:
            sel = getattr(cfg.transmitter, modality)
            self.s = sel.tokens
            self.tx = TokenTransmitter(features.width, width, project=True, gen=gen)
        self.opt: torch.optim.Optimizer | None = None
        self.opt_phase = ""
        self._pending: tuple[str, int, torch.Tensor] | None = None

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.tx.parameters())

    # ------------------------------------------------------------- inputs
    def _inputs(self, phase: str, ids: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        if self.modality != "text":
            clips = [clip_of(self.dataset, phase, i) for i in ids]
            return self.features(clips), None, {}  # (b, s, e)
        ds, L = self.dataset, self.cfg.data.text_len
        if phase in CAPTION_PHASES:
            texts = [ds.caption(i).text for i in ids]
        else:
            qs = [ds.question(i) for i in ids]
            texts = [q.text for q in qs]
        tok_ids, mask = text_batch(self.tokenizer, texts, L)  # (b, L)
        labels = {"text_ids": tok_ids, "text_mask": mask}
        if phase not in CAPTION_PHASES:
            # the answer word as the LM learnt it: a line of its own, no leading space
            ans_ids, ans_mask = text_batch(self.tokenizer, [q.answer for q in qs], self.cfg.data.answer_len,
                                           eos=True)  # (b, A)
            labels.update(answer_ids=ans_ids, answer_mask=ans_mask, answers=[q.answer for q in qs],
                          qtypes=[q.qtype for q in qs])
        return self.embed[tok_ids], mask, labels  # (b, L, d)

    # ------------------------------------------------------------- the step
    def transmit(self, phase: str, step: int, sample_ids: list[str]) -> Transmission:
        """Encode (cached), select, project, normalise and map `sample_ids` to symbols."""
        t0 = time.perf_counter()
        tokens, mask, labels = self._inputs(phase, sample_ids)
        train = phase in TRAIN_PHASES and self.trainable
        with torch.set_grad_enabled(train):
            z = self.tx(tokens, mask)  # (b, c)
        expect = (len(sample_ids), self.s * self.d // 2)
        assert tuple(z.shape) == expect, f"{self.node}: symbols {tuple(z.shape)} != {expect}"
        self._pending = (phase, step, z) if train else None
        return Transmission(z.detach(), self.s, self.d, labels, (time.perf_counter() - t0) * 1e3)

    def update(self, phase: str, step: int, grad: torch.Tensor | None) -> None:
        """Back-propagate dL/d(symbols) (b, c) complex (dL/dRe + j dL/dIm) into F_m, step."""
        if grad is None or not self.trainable:
            return
        if self._pending is None:  # a restarted device gets the gradient its former self was owed
            log.warning("%s: skipping the gradient of %s step %d: no transmission of that round is pending "
                        "(restarted since)", self.node, phase, step)
            return
        if self._pending[:2] != (phase, step):
            raise RuntimeError(f"{self.node}: gradient for {phase} step {step} but the pending "
                               f"round is {self._pending[:2] if self._pending else None}")
        z = self._pending[2]
        if grad.shape != z.shape:
            raise ValueError(f"{self.node}: gradient shape {tuple(grad.shape)} != symbols {tuple(z.shape)}")
        if self.opt is None or self.opt_phase != phase:
            st = getattr(self.cfg.train, phase)
            self.opt = torch.optim.AdamW(self.tx.parameters(), lr=st.lr, weight_decay=st.weight_decay)
            self.opt_phase = phase
        self.opt.zero_grad()
        as_pairs(z).backward(as_pairs(grad.to(z.dtype)))  # (b, c, 2)
        self.opt.step()
        self._pending = None

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"node": self.node, "transmitter": self.tx.state_dict(),
                "optimizer": self.opt.state_dict() if self.opt else None, "opt_phase": self.opt_phase}

    def load_state_dict(self, state: dict) -> None:
        self.tx.load_state_dict(state["transmitter"])
        self.opt_phase = state.get("opt_phase", "")
        self.opt = None
        if state.get("optimizer") and self.opt_phase:
            st = getattr(self.cfg.train, self.opt_phase)
            self.opt = torch.optim.AdamW(self.tx.parameters(), lr=st.lr, weight_decay=st.weight_decay)
            self.opt.load_state_dict(state["optimizer"])

    def save(self, path: Path) -> None:
        """Write to a temp file beside `path`, then rename: a kill never leaves half a checkpoint."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
