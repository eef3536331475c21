"""The split model at its cuts: shapes, power, the split gradient vs end-to-end autograd,
and which parameters train."""
import copy

import pytest
import torch

from channel.link import apply_link
from channel.symbols import complex_to_real
from configs.loader import replace
from device_node.build import build_device
from edge_server.step import EdgeNode, Received
from foundation.manifest import build_manifest
from launch.inprocess import InProcessTransport


@pytest.fixture(scope="module")
def parts(small_cfg, assets, cache_dir):
    cfg = replace(small_cfg, ["channel.fading=rayleigh", "channel.snr_db=6", "models.lora.dropout=0.0"])
    dataset, (lm, tok) = assets
    devices = {(0, m): build_device(cfg, 0, m, dataset, cache_dir, foundation=(lm, tok))
               for m in ("audio", "video", "text")}
    return cfg, dataset, lm, tok, devices


def test_symbol_shapes_and_unit_power_at_the_device_cut(parts):
    cfg, dataset, lm, tok, devices = parts
    ids = build_manifest(dataset, "test")["stage2"][:4]
    d = lm.config.hidden_size
    for m, dev in devices.items():
        tx = dev.transmit("stage2", 0, ids)
        s = cfg.data.text_len if m[1] == "text" else getattr(cfg.transmitter, m[1]).tokens
        assert tx.symbols.shape == (4, s * d // 2) and tx.symbols.dtype == torch.complex64
        real = complex_to_real(tx.symbols, s, d)  # (b, s, d)
        mask = tx.labels["text_mask"] if m[1] == "text" else torch.ones(4, s, dtype=torch.bool)
        for i in range(4):
            zs = real[i][mask[i]].reshape(-1)
            power = (zs[0::2] ** 2 + zs[1::2] ** 2).mean()
            assert abs(float(power) - 1.0) < 1e-4
            assert float(real[i][~mask[i]].abs().sum()) == 0.0  # padding sent as zeros


def test_split_gradient_equals_end_to_end_autograd(parts):
    """dL/dF_audio computed across the cut (edge grad -> conj(h) -> device backward) must equal
    the gradient of one autograd graph spanning device, channel and edge."""
    cfg, dataset, lm, tok, devices = parts
    ids = build_manifest(dataset, "test")["stage2"][:4]
    received = {}
    for m in ("audio", "video", "text"):
        tx = devices[(0, m)].transmit("stage2", 0, ids)
        out = apply_link(cfg.channel.link(f"user0/{m}"), cfg.seed, f"user0/{m}", "stage2", 0, tx.symbols)
        received[m] = Received(out.y, tx.s, out.h_hat, out.noise_var)
        if m == "audio":
            h, noise = out.h, out.y - out.h * tx.symbols
        if m == "text":
            labels = tx.labels
    dev = devices[(0, "audio")]
    feats = dev.features([dataset.question(i).clip_id for i in ids])
    w = dev.tx.proj.weight
    # one autograd graph through device, channel (y = h x + n) and edge
    edge_ref = EdgeNode(cfg, copy.deepcopy(lm), tok)
    r = received["audio"]
    toks = edge_ref._receive(0, dict(received, audio=Received(h * dev.tx(feats) + noise, r.s, r.h_hat,
                                                               r.noise_var)), {})
    prefix, pmask = edge_ref._prefix(toks, labels["text_mask"])
    loss = edge_ref.lm.answer_loss(prefix, pmask, labels["answer_ids"], labels["answer_mask"])
    (g_ref,) = torch.autograd.grad(loss, w)
    # across the cut: the edge's gradient, the relay's conj(h), the device's backward
    out = EdgeNode(cfg, copy.deepcopy(lm), tok).train_step(0, "stage2", 0, received, labels)
    g_dev = torch.conj(h) * out.grads["audio"]
    (g_split,) = torch.autograd.grad(torch.view_as_real(dev.tx(feats)), w, grad_outputs=torch.view_as_real(g_dev))
    assert abs(float(loss) - out.loss) < 1e-5
    assert float(g_ref.abs().sum()) > 0
    assert torch.allclose(g_split, g_ref, rtol=1e-3, atol=1e-7), float((g_split - g_ref).abs().max())


def test_only_lora_and_transceivers_train(parts):
    cfg, dataset, lm, tok, _ = parts
    devices = {(0, m): build_device(cfg, 0, m, dataset, cfg.data.cache_dir, foundation=(lm, tok))
               for m in ("audio", "video", "text")}
    edge = EdgeNode(cfg, copy.deepcopy(lm), tok)
    before_lm = {n: p.detach().clone() for n, p in edge.lm.named_parameters()}
    before_rx = {n: p.detach().clone() for n, p in edge.receivers.named_parameters()}
    before_tx = {k: {n: p.detach().clone() for n, p in d.tx.named_parameters()} for k, d in devices.items()}
    transport = InProcessTransport(cfg, devices)
    manifest = build_manifest(dataset, "test")
    # two stage-2 steps: LoRA's B starts at zero, so A only moves from the second step on
    for phase, step in (("stage1", 0), ("stage2", 0), ("stage2", 1)):
        ex = transport.exchange(0, phase, step, edge.sample_ids(manifest, phase, step))
        out = edge.train_step(0, phase, step, ex.received, ex.labels)
        transport.send_grads(0, phase, step, out.grads)
    for n, p in edge.lm.named_parameters():
        assert (not torch.equal(p, before_lm[n])) == ("lora_" in n), n  # LoRA trains, the base LM never
    assert all(not torch.equal(p, before_rx[n]) for n, p in edge.receivers.named_parameters())
    for k, d in devices.items():
        for n, p in d.tx.named_parameters():
            assert not torch.equal(p, before_tx[k][n]), (k, n)
    assert not list(devices[(0, "text")].tx.parameters())  # the text node has nothing to train


def test_stage1_caption_term_is_the_caption_cross_entropy_given_the_media(parts):
    """caption_weight adds w * CE(caption | [audio, video]) through the frozen LM, computed
    here independently with the HF model's own shifted-label loss."""
    cfg, dataset, lm, tok, devices = parts
    ids = build_manifest(dataset, "test")["stage1"][:4]
    w = 0.7
    losses, received, labels = {}, {}, None
    for m in ("audio", "video", "text"):
        tx = devices[(0, m)].transmit("stage1", 0, ids)
        out = apply_link(cfg.channel.link(f"user0/{m}"), cfg.seed, f"user0/{m}", "stage1", 0, tx.symbols)
        received[m] = Received(out.y, tx.s, out.h_hat, out.noise_var)
        labels = tx.labels if m == "text" else labels
    for weight in (0.0, w):
        edge = EdgeNode(replace(cfg, [f"train.caption_weight={weight}"]), copy.deepcopy(lm), tok)
        losses[weight] = edge.train_step(0, "stage1", 0, received, labels)
    assert "caption" not in losses[0.0].parts
    edge = EdgeNode(cfg, copy.deepcopy(lm), tok)
    edge.receivers.train()
    with torch.no_grad(), torch.random.fork_rng():
        toks = edge._receive(0, received, {})
        media = torch.cat([toks["audio"], toks["video"]], dim=1)  # (b, P, d)
        caption = lm.get_input_embeddings()(labels["text_ids"])  # (b, L, d)
        target = torch.cat([torch.full(media.shape[:2], -100), labels["text_ids"].masked_fill(
            ~labels["text_mask"].bool(), -100)], dim=1)
        mask = torch.cat([torch.ones(media.shape[:2], dtype=torch.long), labels["text_mask"].long()], dim=1)
        ref = lm(inputs_embeds=torch.cat([media, caption], dim=1), attention_mask=mask, labels=target).loss
    assert abs(losses[w].parts["caption"] - float(ref)) < 1e-4
    assert abs(losses[w].loss - (losses[0.0].loss + w * float(ref))) < 1e-4
