"""The edge drives the rounds: one loop for both stages and the evaluation.

The loop is the same for the in-process reference and the gRPC cluster; only the
`Transport` differs (how the step's symbols reach the edge and how gradients go
back). Multi-user (`train.schedule`, see edge_server.step): `sequential` serves user
k mod N at training step k, `concurrent` every user at every step, its uplinks all in
flight at once; evaluation runs every user over the whole evaluation split (in
`concurrent`, every user's evaluation batch k in one round).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm import tqdm

from configs.loader import config_digest
from edge_server.checkpoint import Position, atomic_torch_save
from edge_server.evaluate import Scorer
from edge_server.rundir import RunDir
from edge_server.step import EdgeNode, Received, UserBatch, round_plan
from foundation.assets import cache_dir
from foundation.baselines import answer_prior_baselines
from foundation.data import open_dataset

log = logging.getLogger(__name__)


@dataclass
class Uplink:
    """One user's uplink in a round, as the edge sees it."""

    received: dict[str, Received]
    labels: dict


@dataclass
class Exchange:
    """One round's uplinks, every user of the round, as the edge sees them."""

    users: dict[int, Uplink]
    device_ms: float = 0.0  # slowest device's compute (at most the driver's wait for the uplinks)
    uplink_ms: float = 0.0  # the rest of the round's uplink wall time
    airtime_ms: float = 0.0  # modelled airtime of the slowest device uplink (0: unlimited rates)


TIMELINE = ("device_ms", "uplink_ms", "uplink_airtime_ms", "edge_ms", "downlink_ms")


@dataclass
class Timeline:
    """Per training round: where its wall time went (summary.json `timeline`, one list per
    column; device, uplink, edge and downlink add up to the round). `device_ms` is the slowest
    device's compute, at most the driver's wait for the tokens; `uplink_ms` is the rest of that
    wait (transport, the emulated link, of which `uplink_airtime_ms` is the airtime, and the
    devices' update from the previous round, which runs there because a device applies its
    gradient before its next transmission). A round is started while the edge steps its
    weights (`Transport.post`), so these two are what that step did not hide. `downlink_ms` is
    the edge's time to hand the gradients and the next round's tasks to the transport."""

    stage: list[str] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    cols: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in TIMELINE})

    def add(self, stage: str, step: int, **ms: float) -> None:
        self.stage.append(stage)
        self.step.append(step)
        for k in TIMELINE:
            self.cols[k].append(round(ms[k], 3))

    def to_dict(self) -> dict:
        return {"stage": self.stage, "step": self.step, **self.cols}


class Transport(Protocol):
    def exchange(self, phase: str, step: int, ids: dict[int, list[str]]) -> Exchange:
        """TRANSMIT `ids[u]` to every device of each user u, all at once; their uplinks."""

    def post(self, phase: str, step: int, ids: dict[int, list[str]]) -> None:
        """Start the round now (with the UPDATEs sent before it); its `exchange` then only waits.
        A transport that computes the round when asked may do nothing here."""

    def send_grads(self, phase: str, step: int, grads: dict[int, dict[str, torch.Tensor]]) -> None:
        """UPDATE each user's trained devices with the gradient of their symbols (b, c)."""

    def save_devices(self, ckpt_dir: str) -> None: ...

    def load_devices(self, ckpt_dir: str) -> None: ...

    def finish(self) -> None: ...

    def links(self) -> list[dict]: ...

    def processes(self) -> list[dict]: ...


@dataclass
class _Timer:
    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0

    def add(self, **ms: float) -> None:
        self.n += 1
        for k, v in ms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def eval_batches(ids: list[str], b: int) -> list[tuple[list[str], int]]:
    """Full batches of b; the last is padded by repeating ids (every uplink message
    carries exactly b samples). Returns (batch ids, number of real ids)."""
    out = []
    for i in range(0, len(ids), b):
        chunk = ids[i:i + b]
        real = len(chunk)
        while len(chunk) < b:
            chunk = chunk + ids[: b - len(chunk)]
        out.append((chunk, real))
    return out


class Driver:
    def __init__(self, cfg, edge: EdgeNode, transport: Transport, manifest: dict[str, list[str]],
                 run_dir: RunDir, progress: bool = True):
        self.cfg, self.edge, self.transport, self.manifest = cfg, edge, transport, manifest
        self.run_dir, self.progress = run_dir, progress
        self.timer = _Timer()
        self.timeline = Timeline()
        self.losses: dict[str, dict[str, float]] = {}
        self.position = Position("stage1", 0)  # the next training round

    def _train(self, phase: str, bar: tqdm, start: int = 0) -> None:
        st = getattr(self.cfg.train, phase)
        every = self.cfg.train.checkpoint_every
        t_start = time.perf_counter()

        def round_ids(step: int) -> tuple[list[tuple[int, int]], dict[int, list[str]]]:
            plan = round_plan(self.cfg.train.schedule, self.cfg.users, step)
            return plan, {u: self.edge.sample_ids(self.manifest, phase, slot) for u, slot in plan}

        nxt = round_ids(start)
        for step in range(start, st.steps):
            plan, ids = nxt
            t0 = time.perf_counter()
            ex = self.transport.exchange(phase, step, ids)
            nxt = round_ids(step + 1) if step + 1 < st.steps else None
            # The next round starts with this one's UPDATEs while the edge steps its own weights;
            # not across a checkpoint (the devices save their state after this round's update only).
            ahead = nxt is not None and not (every and (step + 1) % every == 0)
            down_ms = 0.0

            def ready(grads):  # called inside this round's train_step
                nonlocal down_ms
                t1 = time.perf_counter()
                self.transport.send_grads(phase, step, grads)
                if ahead:
                    self.transport.post(phase, step + 1, nxt[1])
                down_ms = (time.perf_counter() - t1) * 1e3

            out = self.edge.train_step(phase, step, [UserBatch(u, slot, ex.users[u].received, ex.users[u].labels)
                                                     for u, slot in plan], ready)
            self.timer.add(device_compute=ex.device_ms, uplink=ex.uplink_ms, edge_compute=out.compute_ms,
                           downlink=down_ms, total=(time.perf_counter() - t0) * 1e3)
            self.timeline.add(phase, step, device_ms=ex.device_ms, uplink_ms=ex.uplink_ms,
                              uplink_airtime_ms=ex.airtime_ms, edge_ms=out.compute_ms, downlink_ms=down_ms)
            rec = self.losses.setdefault(phase, {"first": out.loss})
            rec["last"] = out.loss
            if step % st.log_every == 0 or step == st.steps - 1:
                who = {"user": plan[0][0]} if len(plan) == 1 else {"users": len(plan)}
                self.run_dir.log_metrics({"stage": phase, "step": step, **who, "loss": out.loss,
                                          "lr": st.lr, "wall_s": time.perf_counter() - t_start, **out.parts})
            bar.set_postfix_str(f"{phase} loss {out.loss:.4f}")
            bar.update(1)
            self.position = Position(phase, step + 1)
            if every and (step + 1) % every == 0 and step + 1 < st.steps:
                self.checkpoint()
        self.position = Position(phase, st.steps)

    def _evaluate(self, bar: tqdm) -> dict:
        scorer = Scorer()
        b = self.cfg.eval.batch
        ids = self.manifest["eval"]
        if self.cfg.eval.max_samples:
            ids = ids[: self.cfg.eval.max_samples]
        users = list(range(self.cfg.users))
        groups = [users] if self.cfg.train.schedule == "concurrent" else [[u] for u in users]
        for group in groups:
            batches = eval_batches(ids, b)
            for k, (chunk, real) in enumerate(batches):
                ex = self.transport.exchange("eval", k, {u: chunk for u in group})
                if k + 1 < len(batches):  # the devices send the next batch while the edge generates
                    self.transport.post("eval", k + 1, {u: batches[k + 1][0] for u in group})
                for user in group:
                    up = ex.users[user]
                    preds = self.edge.predict(user, up.received, up.labels)
                    lab = up.labels
                    scorer.add(user, lab["qtypes"][:real], preds[:real], lab["answers"][:real])
                    for qid, qt, p, a in zip(chunk[:real], lab["qtypes"], preds, lab["answers"]):
                        self.run_dir.log_prediction({"user": user, "question_id": qid, "qtype": qt, "answer": a,
                                                     "prediction": p})
                    bar.update(1)
        return scorer.summary()

    def probe(self, tag: str) -> None:
        """Save pooled features of the first `eval.probe_samples` evaluation clips."""
        n = self.cfg.eval.probe_samples
        if n <= 0:
            return
        ids = self.manifest["probe"][:n]
        feats: dict[str, list[torch.Tensor]] = {}
        for k, (chunk, real) in enumerate(eval_batches(ids, self.cfg.eval.batch)):
            ex = self.transport.exchange("probe", k + (0 if tag == "before" else 10**6), {0: chunk})
            for m, f in self.edge.probe(0, ex.users[0].received, ex.users[0].labels).items():
                feats.setdefault(m, []).append(f[:real])
        torch.save({"clip_ids": ids, **{m: torch.cat(v) for m, v in feats.items()}},
                   self.run_dir.path / f"probe_{tag}.pt")

    def resume(self, ckpt: Path, pos: Position, progress: dict) -> None:
        """Restore the edge and every device from the checkpoint at `ckpt`; training continues at `pos`."""
        if progress.get("config_digest") != config_digest(self.cfg):
            raise ResumeError(f"the checkpoint {ckpt} was written with another config; resume with the same "
                              f"config file and --set overrides as the run that wrote it")
        self.edge.load_state_dict(torch.load(ckpt / "edge.pt", map_location="cpu", weights_only=True))
        self.transport.load_devices(str(ckpt / "devices"))
        self.losses, self.position = progress["losses"], pos
        log.info("resumed from %s: %s step %d", ckpt, pos.stage, pos.step)

    def run(self) -> dict:
        t0 = time.perf_counter()
        n_eval = self.cfg.users * len(eval_batches(self.manifest["eval"][: self.cfg.eval.max_samples or None],
                                                   self.cfg.eval.batch))
        total = self.cfg.train.stage1.steps + self.cfg.train.stage2.steps + n_eval
        start = self.position
        with tqdm(total=total, desc="rounds", unit="round", disable=not self.progress) as bar:
            if start.stage == "stage1":
                if start.step == 0:
                    self.probe("before")
                bar.update(start.step)
                self._train("stage1", bar, start.step)
                self.probe("after")
            else:
                bar.update(self.cfg.train.stage1.steps + start.step)
            self._train("stage2", bar, start.step if start.stage == "stage2" else 0)
            if self.cfg.train.checkpoint:
                self.checkpoint()
            bar.set_postfix_str("evaluating")
            accuracy = self._evaluate(bar)
        self.transport.finish()
        wall = time.perf_counter() - t0
        steps = {p: getattr(self.cfg.train, p).steps for p in ("stage1", "stage2")}
        per_round = self.cfg.users if self.cfg.train.schedule == "concurrent" else 1
        samples = per_round * sum(getattr(self.cfg.train, p).steps * getattr(self.cfg.train, p).batch for p in steps)
        summary = {"accuracy": accuracy, "steps": steps, "wall_s": wall,
                   "samples_per_s": samples / wall if wall > 0 else 0.0,
                   "step_time_breakdown_ms": self.timer.mean(),
                   "loss": self.losses, "processes": self.transport.processes(), "baselines": self.baselines(),
                   "timeline": self.timeline.to_dict(), "resumed_from": None if start == Position("stage1", 0)
                   else {"stage": start.stage, "step": start.step}}
        self.run_dir.write_links(self.transport.links())
        self.run_dir.write_summary(summary)
        return summary

    def baselines(self) -> dict:
        """Chance and per-template majority on the evaluated questions (train answers only)."""
        dataset = open_dataset(self.cfg.data, cache_dir(self.cfg))
        ids = self.manifest["eval"][: self.cfg.eval.max_samples or None]
        return answer_prior_baselines(dataset.questions("train"), [dataset.question(i) for i in ids])

    def checkpoint(self) -> None:
        """A complete checkpoint at the current position: the devices first (their SAVE follows
        the round's UPDATEs), then the edge, then `latest` points at it."""
        ckpts = self.run_dir.checkpoints
        path = ckpts.begin(self.position)
        self.transport.save_devices(str(path / "devices"))
        self.save_edge(path)
        ckpts.commit(self.position, {"losses": self.losses, "config_digest": config_digest(self.cfg)})
        log.info("checkpoint at %s step %d written to %s", self.position.stage, self.position.step, path)

    def save_edge(self, path: Path) -> None:
        """The LoRA adapter in peft's format, plus receivers, optimiser and the position reached."""
        # the frozen base embeddings need not travel with the adapter (a LoRA on the tied head is only A, B)
        self.edge.lm.peft.save_pretrained(str(path / "adapter"), save_embedding_layers=False)
        atomic_torch_save({**self.edge.state_dict(), "position": [self.position.stage, self.position.step]},
                          path / "edge.pt")

    def save_interrupted(self) -> Path:
        """The edge's state after a fault, beside (never over) the last good checkpoint."""
        path = self.run_dir.checkpoints.interrupted()
        self.save_edge(path)
        return path


class ResumeError(RuntimeError):
    """A run directory that cannot be resumed; the message says why and what to do."""
