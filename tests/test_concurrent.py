"""Concurrent rounds in-process: the schedule's samples, and one round against an independent
computation of the loss over the union of the users' samples; the pieces of the multi-rank
edge and the device host that need no sockets."""
import copy

import pytest
import torch

from channel.symbols import as_pairs, from_pairs
from configs.loader import replace
from configs.schema import ConfigError
from device_node.build import build_devices
from device_node.host import format_users, parse_users
from edge_server.ranks import buffer_size, pack, unpack
from edge_server.step import EdgeNode, UserBatch, round_plan
from foundation.manifest import build_manifest
from launch.inprocess import InProcessTransport

MODALITIES = ("audio", "video", "text")


def test_round_plans():
    assert [round_plan("sequential", 3, k) for k in range(4)] == [[(0, 0)], [(1, 1)], [(2, 2)], [(0, 3)]]
    assert round_plan("concurrent", 3, 2) == [(0, 6), (1, 7), (2, 8)]
    assert round_plan("concurrent", 1, 5) == round_plan("sequential", 1, 5)  # one user: the same run


def test_concurrent_users_draw_disjoint_batches(small_cfg, assets):
    dataset, (lm, tok) = assets
    edge = EdgeNode(small_cfg, copy.deepcopy(lm), tok)
    manifest = build_manifest(dataset, "test")
    per_epoch = len(manifest["stage2"]) // small_cfg.train.stage2.batch
    seen = [i for k in range(per_epoch // 4) for _, slot in round_plan("concurrent", 4, k)
            for i in edge.sample_ids(manifest, "stage2", slot)]
    assert len(seen) == len(set(seen))  # within an epoch no sample is drawn twice, across users or steps


@pytest.mark.parametrize("phase", ["stage1", "stage2"])
def test_concurrent_round_equals_one_computation_over_the_union(phase, small_cfg, assets, cache_dir):
    """Two users, one round: the edge's loss is sum_u (b_u / B) L_u, one AdamW step, and each
    device's gradient is d(union loss)/d(its symbols); checked against one autograd graph."""
    cfg = replace(small_cfg, ["users=2", "train.schedule=concurrent", "models.lora.dropout=0.0"])
    dataset, (lm, tok) = assets
    devices = {(d.user, m): d for m in MODALITIES
               for d in build_devices(cfg, [0, 1], m, dataset, cache_dir, foundation=(lm, tok))}
    edge = EdgeNode(cfg, copy.deepcopy(lm), tok)
    ref = EdgeNode(cfg, copy.deepcopy(lm), tok)  # the independent computation's own copy
    manifest = build_manifest(dataset, "test")
    plan = round_plan("concurrent", 2, 0)
    ex = InProcessTransport(cfg, devices).exchange(phase, 0, {u: edge.sample_ids(manifest, phase, s) for u, s in plan})
    out = edge.train_step(phase, 0, [UserBatch(u, s, ex.users[u].received, ex.users[u].labels) for u, s in plan])

    # one graph over the union: each user's loss on its own batch, weighted by its share of the samples
    params = ref.trainable(phase)
    for p in params:
        p.requires_grad_(True)
    total, union, leaves = 16, 0.0, {}
    for u in (0, 1):
        up = ex.users[u]
        leaves[u] = {m: as_pairs(up.received[m].y).clone().requires_grad_(True) for m in ("audio", "video")}
        toks = ref._receive(u, up.received, leaves[u])
        mask = up.labels["text_mask"]
        if phase == "stage1":
            loss, _ = ref._stage1(toks, up.labels["text_ids"], mask)
        else:
            prefix, pmask = ref._prefix(toks, mask)
            loss = ref.lm.answer_loss(prefix, pmask, up.labels["answer_ids"], up.labels["answer_mask"])
        union = union + 8 / total * loss
    union.backward()
    assert out.loss == pytest.approx(union.item(), rel=1e-6)
    for u in (0, 1):
        for m in ("audio", "video"):
            want = from_pairs(leaves[u][m].grad)
            assert torch.allclose(out.grads[u][m], want, rtol=1e-4, atol=1e-9), (u, m)
    st = getattr(cfg.train, phase)
    opt = torch.optim.AdamW(params, lr=st.lr, weight_decay=st.weight_decay)
    opt.step()
    for p_edge, p_ref in zip(edge.trainable(phase), params):
        assert torch.allclose(p_edge, p_ref, rtol=1e-5, atol=1e-7)


def test_pack_round_trips_every_dtype_the_ranks_exchange():
    obj = {"y": torch.randn(3, 5, dtype=torch.complex64), "mask": torch.rand(3, 4) > 0.5, "s": 32,
           "ids": torch.arange(6).reshape(2, 3), "h": None, "answers": ["yes", "two"],
           "nested": [{"x": torch.randn(2)}]}
    skeleton, buf = pack(obj)
    assert buf.dtype == torch.uint8 and buffer_size(skeleton) == buf.numel()
    back = unpack(skeleton, buf.clone())
    for k in ("y", "mask", "ids"):
        assert back[k].dtype == obj[k].dtype and torch.equal(back[k], obj[k])
    assert back["s"] == 32 and back["h"] is None and back["answers"] == ["yes", "two"]
    assert torch.equal(back["nested"][0]["x"], obj["nested"][0]["x"])


def test_device_host_user_ranges():
    assert parse_users("0-3", 8) == [0, 1, 2, 3]
    assert parse_users("0,2,5-7", 8) == [0, 2, 5, 6, 7]
    assert format_users([4, 5, 6]) == "4-6" and format_users([2]) == "2"
    for bad in ("3-1", "0-8", "a", ""):
        with pytest.raises(ValueError, match="--users"):
            parse_users(bad, 8)


def test_scale_config_keys_are_checked(small_cfg):
    for key in ("train.schedule=parallel", "edge.ranks=0", "edge.backend=mpi", "launch.devices_per_process=0"):
        with pytest.raises(ConfigError, match=key.split("=")[0]):
            replace(small_cfg, [key])
