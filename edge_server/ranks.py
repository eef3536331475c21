"""The edge as several torch.distributed ranks (`edge.ranks`).

Rank 0 is the edge process the relay talks to: it drives the rounds, evaluates and
writes the run directory. Ranks 1..R-1 hold the same receivers and LoRA LM and take
part in the training rounds: each round rank 0 hands every rank its users' batches
(user u belongs to rank u mod R), each rank runs `EdgeNode.train_share` on its own
users, the receiver and LoRA gradients are summed over the ranks by one all-reduce,
and every rank takes the same optimiser step, so R ranks make the update one rank
makes over the same global batch. Rank 0 then collects each user's symbol gradients.

Why one flat all-reduce instead of DistributedDataParallel: DDP's reducer hooks into
one forward of one wrapped module per step, while a round runs the receivers and the
LM once per user (each with its own seeded dropout and its own backward) through
several entry points, and in `sequential` a rank may have no user at all. Summing the
flattened gradients once per step is what DDP's reducer does underneath; the weights
b_u / B (B: the round's samples over every rank) take the place of DDP's division by
R, so ranks with unequal sample counts still give the mean over the union. Parameters
are broadcast from rank 0 at start, as DDP does.

Rendezvous: env://, as torchrun and SLURM launchers set it (MASTER_ADDR, MASTER_PORT,
RANK, WORLD_SIZE; LOCAL_RANK picks the GPU). Gradients travel on nccl with CUDA and
gloo on CPU; the batches and results between rank 0 and the others live on the CPU
and travel on a gloo group, as one byte buffer per rank and round beside a small
description of its tensors.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from configs.schema import Config
from edge_server.step import EdgeNode, Received, StepOutput, UserBatch

log = logging.getLogger(__name__)

ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
# Followers wait in a collective while rank 0 evaluates (minutes for the whole test split
# and many users); the launcher, or torchrun, stops them if rank 0 dies.
COLLECTIVE_TIMEOUT_S = 6 * 3600
ALIGN = 8  # bytes: the widest element a packed tensor is viewed as (int64, float64)


# ---------------------------------------------------------------- tensors in one buffer

@dataclass(frozen=True)
class _T:
    """A tensor's place in a packed buffer."""

    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]


def pack(obj) -> tuple[object, torch.Tensor]:
    """(skeleton, uint8 buffer): `obj` (dicts, lists, tensors, plain values) with each tensor
    replaced by its place in one byte buffer."""
    chunks: list[torch.Tensor] = []
    offset = 0

    def walk(x):
        nonlocal offset
        if torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            raw = (torch.view_as_real(t) if t.is_complex() else t).reshape(-1).view(torch.uint8)
            pad = -raw.numel() % ALIGN  # the next tensor starts aligned, so it can be viewed in place
            chunks.extend([raw, torch.zeros(pad, dtype=torch.uint8)])
            place = _T(offset, raw.numel(), str(t.dtype).removeprefix("torch."), tuple(t.shape))
            offset += raw.numel() + pad
            return place
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    skeleton = walk(obj)
    return skeleton, (torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8))


def buffer_size(skeleton) -> int:
    if isinstance(skeleton, _T):
        return skeleton.offset + skeleton.nbytes
    if isinstance(skeleton, dict):
        return max((buffer_size(v) for v in skeleton.values()), default=0)
    if isinstance(skeleton, list):
        return max((buffer_size(v) for v in skeleton), default=0)
    return 0


def unpack(skeleton, buf: torch.Tensor):
    """The inverse of `pack`: tensors are views of `buf`."""
    if isinstance(skeleton, _T):
        dtype = getattr(torch, skeleton.dtype)
        raw = buf[skeleton.offset: skeleton.offset + skeleton.nbytes]
        if dtype.is_complex:
            real = torch.float32 if dtype == torch.complex64 else torch.float64
            return torch.view_as_complex(raw.view(real).reshape(*skeleton.shape, 2))
        return raw.view(dtype).reshape(skeleton.shape)
    if isinstance(skeleton, dict):
        return {k: unpack(v, buf) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unpack(v, buf) for v in skeleton]
    return skeleton


def _plain(b: UserBatch) -> dict:
    return {"user": b.user, "slot": b.slot, "labels": b.labels,
            "received": {m: {"y": r.y, "s": r.s, "h_hat": r.h_hat, "noise_var": r.noise_var}
                         for m, r in b.received.items()}}


def _batch(d: dict) -> UserBatch:
    return UserBatch(d["user"], d["slot"], {m: Received(**r) for m, r in d["received"].items()}, d["labels"])


# ---------------------------------------------------------------- the ranks

class Shards:
    """One rank's side of a multi-rank edge; `EdgeNode.train_step` calls it on rank 0,
    `follow` runs the other ranks."""

    def __init__(self, rank: int, world: int, grad_group, cpu_group):
        self.rank, self.world = rank, world
        self.grad_group, self.cpu_group = grad_group, cpu_group
        me = {"role": "edge", "rank": rank, "pid": os.getpid(), "host": socket.gethostname()}
        everyone: list = [None] * world
        dist.all_gather_object(everyone, me, group=cpu_group)
        self.processes: list[dict] = everyone

    def owner(self, user: int) -> int:
        return user % self.world

    # ------------------------------------------------------------ rank 0
    def scatter(self, phase: str, step: int, total: int, batches: list[UserBatch]) -> list[UserBatch]:
        """Send each rank its users' batches; returns rank 0's own."""
        shares = {r: [b for b in batches if self.owner(b.user) == r] for r in range(self.world)}
        packed = {r: pack([_plain(b) for b in shares[r]]) for r in range(1, self.world)}
        header = {"op": "train", "phase": phase, "step": step, "total": total,
                  "skeletons": {r: packed[r][0] for r in packed}}
        dist.broadcast_object_list([header], src=0, group=self.cpu_group)
        for r, (_, buf) in packed.items():
            if buf.numel():
                dist.send(buf, r, group=self.cpu_group)
        return shares[0]

    def gather(self, own: StepOutput) -> StepOutput:
        """Rank 0's output merged with every other rank's: losses summed, gradients by user."""
        skeletons: list = [None] * self.world
        dist.gather_object(pack(self._result(own))[0], skeletons, dst=0, group=self.cpu_group)
        loss, parts, grads = own.loss, dict(own.parts), dict(own.grads)
        for r in range(1, self.world):
            buf = torch.empty(buffer_size(skeletons[r]), dtype=torch.uint8)
            if buf.numel():
                dist.recv(buf, r, group=self.cpu_group)
            res = unpack(skeletons[r], buf)
            loss += res["loss"]
            for k, v in res["parts"].items():
                parts[k] = parts.get(k, 0.0) + v
            grads.update({int(u): g for u, g in res["grads"].items()})
        return StepOutput(loss, parts, grads)

    def close(self) -> None:
        """Tell the other ranks the run is over."""
        dist.broadcast_object_list([{"op": "stop"}], src=0, group=self.cpu_group)
        dist.destroy_process_group()

    # ------------------------------------------------------------ ranks 1..R-1
    def follow(self, edge: EdgeNode) -> None:
        """Take part in training rounds until rank 0 says stop."""
        while True:
            box: list = [None]
            dist.broadcast_object_list(box, src=0, group=self.cpu_group)
            header = box[0]
            if header["op"] == "stop":
                dist.destroy_process_group()
                return
            skeleton = header["skeletons"][self.rank]
            buf = torch.empty(buffer_size(skeleton), dtype=torch.uint8)
            if buf.numel():
                dist.recv(buf, 0, group=self.cpu_group)
            batches = [_batch(d) for d in unpack(skeleton, buf)]
            out = edge.train_share(header["phase"], header["step"], batches, header["total"])
            skeleton, buf = pack(self._result(out))
            dist.gather_object(skeleton, None, dst=0, group=self.cpu_group)
            if buf.numel():
                dist.send(buf, 0, group=self.cpu_group)

    @staticmethod
    def _result(out: StepOutput) -> dict:
        return {"loss": out.loss, "parts": out.parts, "grads": {str(u): g for u, g in out.grads.items()}}

    # ------------------------------------------------------------ every rank
    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of `params` over the ranks in one collective; a parameter that
        no rank gave a gradient keeps none (so the optimiser skips it, as with one rank)."""
        if not params:
            return
        device = params[0].device
        flat = torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=device)
                          for p in params]
                         + [torch.tensor([float(p.grad is not None) for p in params], device=device)])  # (n + k,)
        dist.all_reduce(flat, group=self.grad_group)
        present = flat[-len(params):].tolist()
        offset = 0
        for p, has in zip(params, present):
            n = p.numel()
            p.grad = flat[offset: offset + n].view_as(p).clone() if has > 0 else None
            offset += n

    def broadcast_parameters(self, params: list[torch.nn.Parameter]) -> None:
        """Every rank starts from rank 0's parameters, as DistributedDataParallel does."""
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, 0, group=self.grad_group)


def join(cfg: Config, edge: EdgeNode) -> Shards | None:
    """Join the edge's process group when `edge.ranks` > 1 (None for one rank)."""
    if cfg.edge.ranks == 1:
        return None
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise RuntimeError(f"edge.ranks={cfg.edge.ranks} but {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not set; start the edge with "
                           f"`tokcom run`, torchrun or SLURM, or set MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != cfg.edge.ranks:
        raise RuntimeError(f"WORLD_SIZE={world} but edge.ranks={cfg.edge.ranks}; start as many edge processes as "
                           f"edge.ranks says")
    backend = cfg.edge.backend
    if backend == "auto":
        backend = "nccl" if edge.device.type == "cuda" else "gloo"
    if backend == "nccl" and edge.device.type != "cuda":
        raise RuntimeError("edge.backend=nccl needs the edge on CUDA; use edge.backend=gloo on CPU")
    timeout = datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    log.info("rank %d of %d joining the edge's process group at %s:%s (%s)", rank, world,
             os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"], backend)
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    shards = Shards(rank, world, dist.group.WORLD, cpu_group)
    shards.broadcast_parameters(list(edge.receivers.parameters())
                                + [p for n, p in edge.lm.named_parameters() if "lora_" in n])
    edge.shards = shards
    return shards
