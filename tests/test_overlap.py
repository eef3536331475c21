"""The next round starts while the edge steps: `EdgeNode.train_step` hands the devices'
gradients to `ready` before it checks and steps its own weights, and the driver sends them
with the next round's TRANSMIT from there (`Transport.post`), except across a checkpoint
and at a stage's end; in the evaluation the next batch is posted before the edge generates.
The numbers do not move: the cluster-equals-reference tests run this order end to end."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from configs.loader import load_config
from edge_server.guard import NonFiniteStep
from edge_server.step import EdgeNode, Received, UserBatch
from launch.inprocess import InProcessTransport
from launch.reference import run_reference
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)


def _round(cfg, lm, noise_var=0.01):
    b, d = 8, lm.config.hidden_size
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 10, (b, cfg.data.text_len), generator=gen)
    labels = {"text_ids": ids, "text_mask": torch.ones_like(ids, dtype=torch.bool)}

    def rx(s, nv=0.01):
        return Received(torch.randn(b, s * d // 2, dtype=torch.complex64, generator=gen), s,
                        torch.ones(b, s * d // 2, dtype=torch.complex64), nv)

    return {"audio": rx(32), "video": rx(32, noise_var), "text": rx(cfg.data.text_len)}, labels


def test_ready_gets_the_gradients_before_the_edge_steps(small_cfg, assets):
    _, (lm, tok) = assets
    edge = EdgeNode(small_cfg, copy.deepcopy(lm), tok)
    received, labels = _round(small_cfg, lm)
    edge.train_step("stage1", 0, [UserBatch(0, 0, received, labels)])  # the optimiser exists from here
    before = {k: v.clone() for k, v in edge.receivers.state_dict().items()}
    calls = []

    def ready(grads):
        now = edge.receivers.state_dict()
        calls.append((grads, all(torch.equal(before[k], now[k]) for k in before)))

    out = edge.train_step("stage1", 1, [UserBatch(0, 1, received, labels)], ready)
    assert len(calls) == 1
    grads, unstepped = calls[0]
    assert unstepped, "ready was called after the edge's optimiser step"
    assert grads is out.grads and set(grads[0]) == {"audio", "video"}
    assert all(g.shape == received[m].y.shape and g.dtype == torch.complex64 for m, g in grads[0].items())
    after = edge.receivers.state_dict()
    assert not all(torch.equal(before[k], after[k]) for k in before)  # and the step was then applied


def test_no_gradient_leaves_a_non_finite_step(small_cfg, assets):
    _, (lm, tok) = assets
    edge = EdgeNode(small_cfg, copy.deepcopy(lm), tok)
    received, labels = _round(small_cfg, lm, noise_var=math.nan)
    calls = []
    with pytest.raises(NonFiniteStep):
        edge.train_step("stage1", 0, [UserBatch(0, 0, received, labels)], calls.append)
    assert calls == []


def test_the_driver_posts_the_next_round_with_the_gradients(tmp_path, small_overrides, assets, monkeypatch):
    cfg = load_config(REPO / "configs" / "tiny.yaml", small_overrides + ["train.stage1.steps=5", "train.stage2.steps=4",
                                                                         "train.checkpoint_every=3"])
    events = []
    for name in ("exchange", "post", "send_grads"):
        real = getattr(InProcessTransport, name)

        def record(self, phase, step, *a, real=real, name=name):
            events.append((name, phase, step))
            return real(self, phase, step, *a)

        monkeypatch.setattr(InProcessTransport, name, record)
    run_reference(cfg, str(tmp_path / "run"), progress=False)

    for phase, steps in (("stage1", 5), ("stage2", 4)):
        for t in range(steps):
            i = events.index(("send_grads", phase, t))
            posted = ("post", phase, t + 1)
            if t + 1 < steps and (t + 1) % 3:  # the next round, right after the gradients
                assert events[i + 1] == posted
                assert events[i + 2] == ("exchange", phase, t + 1)
            else:  # not past the stage's end, nor across the checkpoint after step 3
                assert posted not in events
    rounds = [e for e in events if e[1] == "eval"]
    n = cfg.eval.max_samples // cfg.eval.batch
    assert rounds == [x for k in range(n) for x in
                      ([("exchange", "eval", k)] + ([("post", "eval", k + 1)] if k + 1 < n else []))]
