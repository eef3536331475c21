"""The LoRA-adapted Qwen2 causal LM at the edge, fed `inputs_embeds`.

Legend: b batch, P prefix tokens (received modalities), A answer tokens, d width,
V vocabulary.

The prefix is the receivers' outputs concatenated in the configured order, the
question left-padded so that its last real token comes last (`left_align`); the
answer follows as the LM's own (frozen) embeddings. Position ids count real tokens
only (padding inside the prefix is masked and skipped), identically in training
and generation. Logits are computed only where a loss or a generation step needs
them: at the A answer-predicting positions, or at the last position.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from torch import nn
from transformers import DynamicCache, Qwen2ForCausalLM

from configs.schema import LoraConfig


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(b, L) attention mask -> (b, L) position ids counting real tokens only."""
    return (mask.long().cumsum(dim=1) - 1).clamp_min(0)


def left_align(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the end, padding to the front.

    x (b, L, d), mask (b, L) bool with the real tokens first (right padding) ->
    the same tokens with row i rotated by its real length n_i: new[j] = old[(j + n_i) mod L].
    The answer is then predicted right after the last real question token, never after
    a padding slot (the authors' layout read it off padding for every short question).
    """
    b, L = mask.shape
    n = mask.long().sum(dim=1, keepdim=True)  # (b, 1)
    idx = (torch.arange(L, device=mask.device)[None, :] + n) % L  # (b, L)
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2])), mask.gather(1, idx)


class FoundationLM(nn.Module):
    """Qwen2ForCausalLM, frozen, with a peft LoRA adapter (the only trained part)."""

    def __init__(self, base: Qwen2ForCausalLM, lora: LoraConfig):
        super().__init__()
        for p in base.parameters():
            p.requires_grad_(False)
        peft_cfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                  target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # a LoRA on the tied LM head adapts the output side only, by design
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
            self.peft = get_peft_model(base, peft_cfg)
        self.causal = self.peft.get_base_model()  # Qwen2ForCausalLM with LoRA layers inside

    @property
    def width(self) -> int:
        return self.causal.config.hidden_size

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(b, L) token ids -> (b, L, d) rows of the frozen input-embedding table."""
        return self.causal.get_input_embeddings()(ids)

    def answer_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, answer_ids: torch.Tensor,
                    answer_mask: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of the answer tokens given the prefix.

        prefix (b, P, d), prefix_mask (b, P) bool, answer_ids (b, A), answer_mask (b, A) bool.
        """
        P = prefix.shape[1]
        A = answer_ids.shape[1]
        inputs = torch.cat([prefix, self.embed(answer_ids).to(prefix.dtype)], dim=1)  # (b, P+A, d)
        mask = torch.cat([prefix_mask, answer_mask], dim=1).long()  # (b, P+A)
        hidden = self.causal.model(inputs_embeds=inputs, attention_mask=mask,
                                   position_ids=positions(mask), use_cache=False).last_hidden_state
        logits = self.causal.lm_head(hidden[:, P - 1: P + A - 1])  # (b, A, V)
        targets = answer_ids.masked_fill(~answer_mask.bool(), -100)  # (b, A)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=-100)

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, max_new_tokens: int,
                 eos_id: int) -> list[list[int]]:
        """Greedy autoregressive decoding over the whole vocabulary, with a KV cache.

        Returns, per sample, the generated token ids up to (not including) EOS.
        """
        b = prefix.shape[0]
        mask = prefix_mask.long()  # (b, P)
        pos = positions(mask)
        cache = DynamicCache()
        out = self.causal(inputs_embeds=prefix, attention_mask=mask, position_ids=pos,
                          past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_pos = pos[:, -1:] + 1  # (b, 1)
        done = torch.zeros(b, dtype=torch.bool, device=prefix.device)
        tokens: list[list[int]] = [[] for _ in range(b)]
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(dim=-1)  # (b,)
            for i in range(b):
                if not done[i] and int(nxt[i]) != eos_id:
                    tokens[i].append(int(nxt[i]))
            done |= nxt == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            emb = self.embed(nxt[:, None]).to(prefix.dtype)  # (b, 1, d)
            out = self.causal(inputs_embeds=emb, attention_mask=mask, position_ids=next_pos,
                              past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
            next_pos = next_pos + 1
        return tokens

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The trainable LoRA weights only."""
        return {k: v for k, v in self.peft.state_dict().items() if "lora_" in k}
