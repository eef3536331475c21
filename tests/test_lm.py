"""The LoRA LM wrapper: loss on answer positions only, generation, what trains."""
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from configs.schema import LoraConfig
from edge_server.lm import FoundationLM, left_align


def _tiny_lm(seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128)
    return Qwen2ForCausalLM(cfg).eval()


def test_answer_loss_equals_full_forward_loss():
    lm = FoundationLM(_tiny_lm(), LoraConfig(dropout=0.0))
    lm.eval()
    g = torch.Generator().manual_seed(0)
    prefix = torch.randn(3, 7, 32, generator=g) * 0.1
    pmask = torch.ones(3, 7, dtype=torch.bool)
    ans = torch.randint(0, 64, (3, 4), generator=g)
    amask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    ours = lm.answer_loss(prefix, pmask, ans, amask)
    # independent: HF's own shifted loss over the whole sequence, labels only on answers
    inputs = torch.cat([prefix, lm.embed(ans)], dim=1)
    labels = torch.cat([torch.full((3, 7), -100), ans.masked_fill(~amask, -100)], dim=1)
    attn = torch.cat([pmask, amask], dim=1).long()
    ref = lm.causal(inputs_embeds=inputs, attention_mask=attn, labels=labels).loss
    assert torch.allclose(ours, ref, atol=1e-5), (float(ours), float(ref))


def test_generate_matches_uncached_greedy_loop():
    lm = FoundationLM(_tiny_lm(1), LoraConfig(dropout=0.0))
    lm.eval()
    g = torch.Generator().manual_seed(1)
    prefix = torch.randn(2, 5, 32, generator=g)
    pmask = torch.ones(2, 5, dtype=torch.bool)
    out = lm.generate(prefix, pmask, max_new_tokens=4, eos_id=63)
    for i in range(2):
        seq = prefix[i:i + 1]
        expect = []
        for _ in range(4):
            logits = lm.causal(inputs_embeds=seq).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == 63:
                break
            expect.append(nxt)
            seq = torch.cat([seq, lm.embed(torch.tensor([[nxt]]))], dim=1)
        assert out[i] == expect


def test_only_lora_is_trainable():
    lm = FoundationLM(_tiny_lm(), LoraConfig(r=4, alpha=16, target_modules=("q_proj", "v_proj")))
    trainable = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("v_proj" in n for n in trainable)
    assert not any("k_proj" in n or "o_proj" in n for n in trainable)


def test_missing_paper_weights_is_a_clear_error(tmp_path):
    import pytest

    from configs.schema import ModelsConfig
    from foundation.lm import MissingWeightsError, load_foundation, lm_width

    cfg = ModelsConfig(preset="paper", lm_path=str(tmp_path / "no-such-model"))
    with pytest.raises(MissingWeightsError, match="models.lm_path"):
        load_foundation(cfg, dataset=None, cache_dir=tmp_path)
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        lm_width(cfg)


def test_left_align_moves_padding_to_the_front():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 4, generator=g)
    lens = [6, 2, 4]
    mask = torch.tensor([[j < n for j in range(6)] for n in lens])
    y, m = left_align(x, mask)
    for i, n in enumerate(lens):  # independent: slice and concatenate per row
        assert torch.equal(y[i], torch.cat([x[i, n:], x[i, :n]]))
        assert m[i].tolist() == [False] * (6 - n) + [True] * n


def test_answer_follows_the_last_real_question_token():
    """The edge's prefix with a padded question gives the same answer loss and the same
    generated tokens as the question with no padding at all: the first answer token is
    predicted from the last real question token, never from a padding slot."""
    from configs.loader import load_config
    from edge_server.step import EdgeNode

    base = _tiny_lm(3)
    cfg = load_config(None, ["models.lora.dropout=0.0"])
    edge = EdgeNode(cfg, base, tokenizer=None)
    edge.lm.eval()
    g = torch.Generator().manual_seed(3)
    b, L, d = 2, 7, 32
    toks = {m: torch.randn(b, n, d, generator=g) for m, n in (("audio", 3), ("video", 2), ("text", L))}
    lens = [4, 6]
    text_mask = torch.tensor([[j < n for j in range(L)] for n in lens])
    prefix, pmask = edge._prefix(toks, text_mask)
    assert pmask[:, -1].all()
    ans = torch.randint(0, 64, (b, 3), generator=g)
    amask = torch.ones(b, 3, dtype=torch.bool)
    for i, n in enumerate(lens):
        assert torch.equal(prefix[i, -1], toks["text"][i, n - 1])
        bare = torch.cat([toks["audio"][i], toks["video"][i], toks["text"][i, :n]])[None]  # no padding
        ones = torch.ones(1, bare.shape[1], dtype=torch.bool)
        ref = edge.lm.answer_loss(bare, ones, ans[i:i + 1], amask[i:i + 1])
        ours = edge.lm.answer_loss(prefix[i:i + 1], pmask[i:i + 1], ans[i:i + 1], amask[i:i + 1])
        assert torch.allclose(ours, ref, atol=1e-5), (i, float(ours), float(ref))
        assert edge.lm.generate(prefix[i:i + 1], pmask[i:i + 1], 4, 63) == edge.lm.generate(bare, ones, 4, 63)
