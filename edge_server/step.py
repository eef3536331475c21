"""The edge-side step, written once for both transports.

Legend: b batch, s tokens, d LM width, c = s*d/2 complex symbols, L text tokens,
A answer tokens.

Per round the edge gets, for each user of the round and each modality, the received
symbols (after the channel) with the CSI the relay passes, plus the text node's ideal
label payload. It runs the receivers and the stage's loss, steps its own optimiser
(receivers, and LoRA in stage 2), and returns the gradient of the loss with respect
to each trainable device's received symbols (dL/dRe + j dL/dIm, shape (b, c)).

Schedules (`train.schedule`, `round_plan`): `sequential` serves user k mod N at step k
with the sampler's batch k; `concurrent` serves every user u at step k with the
sampler's batch k*N + u, so the users draw disjoint batches from one seeded permutation
per epoch (with one user the two schedules are the same run). A round's loss is the
mean over the union of its samples: sum_u (b_u / B) L_u, where L_u is the stage's loss
on user u's batch exactly as a one-user round computes it (InfoNCE takes its negatives
from the same user's batch) and B = sum_u b_u. Each user's forward draws its LoRA
dropout from a generator seeded by its batch index, so which process computes a user
(edge_server.ranks) never changes the numbers.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from channel.symbols import as_pairs, from_pairs
from configs.schema import MODALITIES, Config
from edge_server.guard import check_finite_step
from edge_server.losses import info_nce, masked_mean_pool, masked_mse
from edge_server.lm import FoundationLM, left_align
from edge_server.receiver import TokenReceiver
from foundation.seeding import derive_seed, make_generator

TRAINED_DEVICES = ("audio", "video")  # the text node has nothing to train

GradsReady = Callable[[dict[int, dict[str, torch.Tensor]]], None]  # user -> modality -> (b, c) complex64


@dataclass
class Received:
    """One link's symbols as they reach the edge."""

    y: torch.Tensor  # (b, c) complex64
    s: int
    h_hat: torch.Tensor | None = None  # (b, c) complex64, CSI passed by the relay
    noise_var: float = 0.0


@dataclass
class UserBatch:
    """One user's share of a training round."""

    user: int
    slot: int  # the sampler's batch index: picks the samples, seeds the LoRA dropout
    received: dict[str, Received]
    labels: dict

    @property
    def size(self) -> int:
        return int(self.labels["text_mask"].shape[0])


@dataclass
class StepOutput:
    loss: float  # sum_u (b_u / B) L_u over the users this output covers
    parts: dict[str, float]
    grads: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # user -> modality -> (b, c) complex64
    compute_ms: float = 0.0


def round_plan(schedule: str, users: int, step: int) -> list[tuple[int, int]]:
    """The (user, sampler batch index) pairs that train at `step`."""
    if schedule == "concurrent":
        return [(u, step * users + u) for u in range(users)]
    return [(step % users, step)]


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The edge's device; with CUDA, GPU `local_rank` (an edge rank's LOCAL_RANK)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("models.device=cuda but no CUDA device is visible; use models.device=auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


class EdgeNode:
    """Receivers G_m + LoRA LM, their optimisers and the round schedule."""

    def __init__(self, cfg: Config, base_lm, tokenizer, device: str | torch.device = "cpu"):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.device = torch.device(device)
        d = base_lm.config.hidden_size
        # Receiver init and LoRA init draw from the global RNG inside their
        # libraries; a fork seeded from the run seed makes them identical everywhere.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, "edge-init"))
            self.receivers = nn.ModuleDict({m: TokenReceiver(d, cfg.models.receiver_hidden) for m in MODALITIES})
            self.lm = FoundationLM(base_lm, cfg.models.lora)
        self.receivers.to(self.device)
        self.lm.to(self.device)
        self.opt: torch.optim.Optimizer | None = None
        self.opt_phase = ""
        self.shards = None  # edge_server.ranks.Shards when the edge runs as several ranks

    # ------------------------------------------------------------- schedule
    def sample_ids(self, manifest: dict[str, list[str]], phase: str, step: int) -> list[str]:
        """The sampler's batch number `step`: a seeded permutation per epoch, full batches only."""
        ids = manifest[phase]
        b = getattr(self.cfg.train, phase).batch
        per_epoch = len(ids) // b
        if per_epoch == 0:
            raise ValueError(f"{phase}: {len(ids)} samples is fewer than one batch of {b}")
        epoch, k = divmod(step, per_epoch)
        perm = torch.randperm(len(ids), generator=make_generator(self.cfg.seed, "sampler", phase, epoch))
        return [ids[i] for i in perm[k * b:(k + 1) * b].tolist()]

    def trainable(self, phase: str) -> list[nn.Parameter]:
        params = list(self.receivers.parameters())
        if phase == "stage2":
            params += [p for n, p in self.lm.named_parameters() if "lora_" in n]
        return params

    def _set_phase(self, phase: str) -> None:
        for p in self.lm.parameters():
            p.requires_grad_(False)
        for p in self.trainable(phase):
            p.requires_grad_(True)
        if self.opt is None or self.opt_phase != phase:
            st = getattr(self.cfg.train, phase)
            self.opt = torch.optim.AdamW(self.trainable(phase), lr=st.lr, weight_decay=st.weight_decay)
            self.opt_phase = phase

    # ------------------------------------------------------------- receivers
    def _receive(self, user: int, received: dict[str, Received], leaves: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
        out = {}
        for m, r in received.items():
            link = self.cfg.channel.link(f"user{user}/{m}")
            y = from_pairs(leaves[m]) if m in leaves else r.y.to(self.device)
            h_hat = r.h_hat.to(self.device) if r.h_hat is not None else None
            out[m] = self.receivers[m](y, r.s, h_hat, r.noise_var, link.equalizer)  # (b, s, d)
        return out

    def _prefix(self, toks: dict[str, torch.Tensor], text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LM's input prefix in the configured order, the question left-padded."""
        parts, masks = [], []
        for m in self.cfg.transmitter.order:
            b, s = toks[m].shape[:2]
            if m == "text":
                x, mask = left_align(toks[m], text_mask)  # (b, L, d), (b, L)
            else:
                x, mask = toks[m], torch.ones(b, s, dtype=torch.bool, device=self.device)
            parts.append(x)
            masks.append(mask)
        return torch.cat(parts, dim=1), torch.cat(masks, dim=1)  # (b, P, d), (b, P)

    # ------------------------------------------------------------- the step
    def train_step(self, phase: str, step: int, batches: list[UserBatch],
                   ready: GradsReady | None = None) -> StepOutput:
        """One round over `batches` (every user of the round): one loss, one optimiser step.

        `ready(grads)` is called once with the devices' gradients as soon as they are known to
        be finite, before the edge's own weights are checked and stepped, so the downlink can
        overlap the optimiser step; the time spent in it is not in `compute_ms`.

        With several edge ranks (`self.shards`), rank 0 hands each rank its users' batches,
        every rank runs `train_share` on its own, and rank 0 collects the users' gradients
        (`ready` is then called once they are collected, after every rank stepped)."""
        t0 = time.perf_counter()
        spent = [0.0]

        def timed(grads: dict[int, dict[str, torch.Tensor]]) -> None:
            t = time.perf_counter()
            ready(grads)
            spent[0] += time.perf_counter() - t

        total = sum(b.size for b in batches)
        if self.shards is not None:
            batches = self.shards.scatter(phase, step, total, batches)
        out = self.train_share(phase, step, batches, total,
                               timed if ready is not None and self.shards is None else None)
        if self.shards is not None:
            out = self.shards.gather(out)
            if ready is not None:
                timed(out.grads)
        out.compute_ms = (time.perf_counter() - t0 - spent[0]) * 1e3
        return out

    def train_share(self, phase: str, step: int, batches: list[UserBatch], total: int,
                    ready: GradsReady | None = None) -> StepOutput:
        """This process's users of a round of `total` samples: backward of (b_u / total) L_u per
        user, the gradients summed over the edge ranks, then the optimiser step (`ready`: see
        `train_step`)."""
        self._set_phase(phase)
        self.receivers.train()
        self.lm.train()
        self.opt.zero_grad()
        devices = [self.device] if self.device.type == "cuda" else []
        loss_sum, parts_sum, grads, all_leaves = 0.0, {}, {}, []
        for batch in batches:
            w = batch.size / total
            leaves = {m: as_pairs(batch.received[m].y).to(self.device).requires_grad_(True)
                      for m in TRAINED_DEVICES if m in batch.received}  # (b, c, 2)
            all_leaves += leaves.values()
            labels = batch.labels
            text_mask = labels["text_mask"].to(self.device)
            with torch.random.fork_rng(devices=devices):  # LoRA dropout, replayable per user batch
                torch.manual_seed(derive_seed(self.cfg.seed, "edge", phase, batch.slot))
                toks = self._receive(batch.user, batch.received, leaves)
                if phase == "stage1":
                    loss, parts = self._stage1(toks, labels["text_ids"].to(self.device), text_mask)
                else:
                    prefix, pmask = self._prefix(toks, text_mask)
                    loss = self.lm.answer_loss(prefix, pmask, labels["answer_ids"].to(self.device),
                                               labels["answer_mask"].to(self.device))
                    parts = {"lm": loss.item()}
            (loss * w).backward()
            loss_sum += w * loss.item()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + w * v
            grads[batch.user] = {m: from_pairs(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
                                 .detach().cpu() for m, leaf in leaves.items()}  # unused modality: zero
        if self.shards is not None:
            self.shards.all_reduce_grads(self.trainable(phase))
        loss_t = torch.tensor(loss_sum)
        check_finite_step(phase, step, loss_t, all_leaves)  # what goes down to the devices ...
        if ready is not None:
            ready(grads)
        check_finite_step(phase, step, loss_t, self.trainable(phase))  # ... and what the edge applies
        self.opt.step()
        return StepOutput(loss_sum, parts_sum, grads)

    def _stage1(self, toks: dict[str, torch.Tensor], text_ids: torch.Tensor, text_mask: torch.Tensor):
        """Text reconstruction (MSE) + InfoNCE of pooled audio/video vs pooled clean text,
        and, with `caption_weight`, the caption's cross-entropy given the media alone."""
        clean = self.lm.embed(text_ids).float()  # (b, L, d)
        recon = masked_mse(toks["text"], clean, text_mask)
        anchor = masked_mean_pool(clean, text_mask)  # (b, d)
        parts = {"recon": recon.item()}
        loss = self.cfg.train.recon_weight * recon
        for m in TRAINED_DEVICES:
            if m in toks:
                nce = info_nce(masked_mean_pool(toks[m], None), anchor, self.cfg.train.tau)
                parts[f"align_{m}"] = nce.item()
                loss = loss + self.cfg.train.align_weight * nce
        media = [m for m in self.cfg.transmitter.order if m in TRAINED_DEVICES and m in toks]
        if self.cfg.train.caption_weight > 0 and media:
            prefix = torch.cat([toks[m] for m in media], dim=1)  # (b, P, d), the media tokens only
            pmask = torch.ones(prefix.shape[:2], dtype=torch.bool, device=self.device)
            cap = self.lm.answer_loss(prefix, pmask, text_ids, text_mask)
            parts["caption"] = cap.item()
            loss = loss + self.cfg.train.caption_weight * cap
        return loss, parts

    @torch.no_grad()
    def predict(self, user: int, received: dict[str, Received], labels: dict) -> list[str]:
        """Greedy generation of each sample's answer text."""
        self.receivers.eval()
        self.lm.eval()
        toks = self._receive(user, received, {})
        prefix, pmask = self._prefix(toks, labels["text_mask"].to(self.device))
        out = self.lm.generate(prefix, pmask, self.cfg.eval.max_new_tokens, self.tokenizer.eos_token_id)
        return [self.tokenizer.decode(t, skip_special_tokens=True) for t in out]

    @torch.no_grad()
    def probe(self, user: int, received: dict[str, Received], labels: dict) -> dict[str, torch.Tensor]:
        """Pooled features (b, d) per modality: receiver outputs for audio/video, the clean
        text embeddings (the alignment anchor) and the received text."""
        self.receivers.eval()
        toks = self._receive(user, received, {})
        mask = labels["text_mask"].to(self.device)
        out = {m: masked_mean_pool(toks[m], None).cpu() for m in TRAINED_DEVICES if m in toks}
        out["text"] = masked_mean_pool(self.lm.embed(labels["text_ids"].to(self.device)).float(), mask).cpu()
        out["text_received"] = masked_mean_pool(toks["text"], mask).cpu()
        return out

    # ------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"receivers": self.receivers.state_dict(), "lora": self.lm.adapter_state(),
                "optimizer": self.opt.state_dict() if self.opt else None, "opt_phase": self.opt_phase}

    def load_state_dict(self, state: dict) -> None:
        self.receivers.load_state_dict(state["receivers"])
        self.lm.peft.load_state_dict(state["lora"], strict=False)
        self.opt, self.opt_phase = None, ""
        if state.get("optimizer") and state.get("opt_phase"):
            self._set_phase(state["opt_phase"])
            self.opt.load_state_dict(state["optimizer"])
