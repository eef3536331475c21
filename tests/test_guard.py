"""Guarded training without sockets: poisoned labels, noise variances and CSI are refused;
a non-finite step is stopped before anything of it is applied; status details are clipped."""
from __future__ import annotations

import math

import pytest
import torch

from edge_server.guard import MAX_CSI_GAIN, GuardError, NonFiniteStep, check_channel, check_labels
from edge_server.step import EdgeNode, Received, UserBatch
from protos.rpc import DETAILS_MAX, Outbox, _Abort, clip


def _labels(b=2, L=4, A=3, top=9):
    return {"text_ids": torch.full((b, L), top), "text_mask": torch.ones(b, L, dtype=torch.bool),
            "answer_ids": torch.zeros(b, A, dtype=torch.long), "answer_mask": torch.ones(b, A, dtype=torch.bool)}


def test_token_ids_must_lie_in_the_vocabulary():
    check_labels("user0/text", _labels(top=9), vocab=10)
    with pytest.raises(GuardError, match=r"text_ids .*\[9, 9\].*\[0, 9\)"):
        check_labels("user0/text", _labels(top=9), vocab=9)
    bad = _labels()
    bad["answer_ids"][0, 0] = -1
    with pytest.raises(GuardError, match="answer_ids"):
        check_labels("user0/text", bad, vocab=10)
    bad = _labels()
    bad["text_mask"] = bad["text_mask"].long()
    with pytest.raises(GuardError, match="bool"):
        check_labels("user0/text", bad, vocab=10)


@pytest.mark.parametrize("noise_var", [math.nan, math.inf, -1e-3, 1e12])
def test_noise_variance_out_of_range(noise_var):
    with pytest.raises(GuardError, match="noise_var"):
        check_channel("user0/audio", noise_var, None)


def test_csi_gains_finite_and_bounded():
    check_channel("user0/audio", 0.1, torch.ones(2, 3, dtype=torch.complex64))
    check_channel("user0/audio", 0.0, None)
    with pytest.raises(GuardError, match="csi"):
        check_channel("user0/audio", 0.1, torch.full((2, 3), 2 * MAX_CSI_GAIN, dtype=torch.complex64))


def test_a_non_finite_step_names_stage_and_step_and_changes_nothing(small_cfg, assets):
    dataset, (lm, tok) = assets
    edge = EdgeNode(small_cfg, lm, tok)
    b, d = 8, lm.config.hidden_size
    ids = torch.randint(0, 10, (b, small_cfg.data.text_len))
    labels = {"text_ids": ids, "text_mask": torch.ones_like(ids, dtype=torch.bool)}

    def rx(s, noise_var=0.01):
        return Received(torch.randn(b, s * d // 2, dtype=torch.complex64), s,
                        torch.ones(b, s * d // 2, dtype=torch.complex64), noise_var)

    received = {"audio": rx(32), "video": rx(32), "text": rx(small_cfg.data.text_len)}
    edge.train_step("stage1", 0, [UserBatch(0, 0, received, labels)])  # a good step first: the optimiser exists
    before = {k: v.clone() for k, v in edge.receivers.state_dict().items()}
    opt_before = edge.opt.state_dict()["state"][0]["step"].clone()
    received["video"] = rx(32, noise_var=math.nan)  # past the guard, as a bug would let it
    with pytest.raises(NonFiniteStep, match="stage1 step 1"):
        edge.train_step("stage1", 1, [UserBatch(0, 1, received, labels)])
    after = edge.receivers.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(edge.opt.state_dict()["state"][0]["step"], opt_before)


def test_status_details_are_clipped():
    assert clip("x" * 10) == "x" * 10
    long = clip("n" * 1_000_000)
    assert len(long) < DETAILS_MAX + 40 and "999800 more characters" in long
    box = Outbox()
    box.abort(None, "y" * 10_000)
    with pytest.raises(_Abort) as e:
        list(box)
    assert len(e.value.details) < DETAILS_MAX + 40
