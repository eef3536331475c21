"""Assemble a `DeviceNode` from the config: its dataset view, frozen input path and
transmitter. Used by the device process and by the in-process reference."""
from __future__ import annotations

from pathlib import Path

import torch

from configs.schema import Config
from device_node.encoders import build_encoder
from device_node.features import selected_features
from device_node.step import DeviceNode
from foundation.lm import lm_width, load_foundation
from foundation.manifest import build_manifest, clip_of


class FeatureBank:
    """Cached selected encoder tokens: clip ids -> (b, s, e)."""

    def __init__(self, table: dict[str, torch.Tensor], width: int):
        self.table, self.width = table, width

    def __call__(self, clips: list[str]) -> torch.Tensor:
        return torch.stack([self.table[c] for c in clips])  # (b, s, e)


def needed_clips(dataset, manifest: dict[str, list[str]]) -> list[str]:
    """Every clip any phase of the manifest refers to."""
    return sorted({clip_of(dataset, phase, i) for phase, ids in manifest.items() for i in ids})


def build_device(cfg: Config, user: int, modality: str, dataset, cache_dir: Path,
                 foundation=None) -> DeviceNode:
    """A ready device. `foundation` = (lm, tokenizer) may be passed to share one load."""
    if modality == "text":
        lm, tok = foundation or load_foundation(cfg.models, dataset, cache_dir, cfg.seed)
        table = lm.get_input_embeddings().weight.detach().float().cpu()  # (V, d)
        return DeviceNode(cfg, user, modality, dataset, table.shape[1], tokenizer=tok, embed_table=table)
    sel = getattr(cfg.transmitter, modality)
    encoder = build_encoder(modality, cfg.models)
    if sel.tokens > encoder.num_tokens:
        raise ValueError(f"transmitter.{modality}.tokens={sel.tokens} exceeds the {modality} encoder's "
                         f"{encoder.num_tokens} tokens; choose at most {encoder.num_tokens}")
    clips = needed_clips(dataset, build_manifest(dataset, cfg.eval.split))
    table = selected_features(encoder, dataset, clips, sel.tokens, sel.selection, Path(cache_dir))
    return DeviceNode(cfg, user, modality, dataset, lm_width(cfg.models),
                      features=FeatureBank(table, encoder.width))
