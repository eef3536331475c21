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
    """Cached selected encoder tokens: clip ids -> (b, s, e).

    With `standardize`, each feature dimension is shifted and scaled by its mean and
    standard deviation over the training clips' tokens (fixed statistics, part of the
    frozen input path). A frozen encoder's output can be dominated by a constant
    offset; the tiny random-init ViViT's tokens vary by ~10 % around one, which
    leaves the trainable projection little to work with.
    """

    def __init__(self, table: dict[str, torch.Tensor], width: int, stats_clips: list[str] | None = None):
        self.table, self.width = table, width
        self.mean = self.scale = None
        if stats_clips:
            x = torch.stack([table[c] for c in stats_clips]).reshape(-1, width)  # (n*s, e)
            self.mean, self.scale = x.mean(0), 1.0 / (x.std(0) + 1e-6)

    def __call__(self, clips: list[str]) -> torch.Tensor:
        x = torch.stack([self.table[c] for c in clips])  # (b, s, e)
        return x if self.mean is None else (x - self.mean) * self.scale


def needed_clips(dataset, manifest: dict[str, list[str]]) -> list[str]:
    """Every clip any phase of the manifest refers to."""
    return sorted({clip_of(dataset, phase, i) for phase, ids in manifest.items() for i in ids})


def build_devices(cfg: Config, users: list[int], modality: str, dataset, cache_dir: Path,
                  foundation=None) -> list[DeviceNode]:
    """Ready devices of `users` for one modality, sharing one frozen input path (the encoder's
    cached features, or the LM's embedding table); each has its own transmitter and
    optimiser. `foundation` = (lm, tokenizer) may be passed to share one load."""
    if modality == "text":
        lm, tok = foundation or load_foundation(cfg.models, dataset, cache_dir, cfg.seed)
        table = lm.get_input_embeddings().weight.detach().float().cpu()  # (V, d), frozen, shared
        return [DeviceNode(cfg, u, modality, dataset, table.shape[1], tokenizer=tok, embed_table=table)
                for u in users]
    bank = feature_bank(cfg, modality, dataset, cache_dir)
    return [DeviceNode(cfg, u, modality, dataset, lm_width(cfg.models), features=bank) for u in users]


def build_device(cfg: Config, user: int, modality: str, dataset, cache_dir: Path,
                 foundation=None) -> DeviceNode:
    """One ready device (see `build_devices`)."""
    return build_devices(cfg, [user], modality, dataset, cache_dir, foundation)[0]


def feature_bank(cfg: Config, modality: str, dataset, cache_dir: Path) -> FeatureBank:
    """The audio or video device's frozen input path: every clip of the manifest through the
    frozen encoder once (cached on disk under `cache_dir`, shared by every user)."""
    sel = getattr(cfg.transmitter, modality)
    encoder = build_encoder(modality, cfg.models)
    if sel.tokens > encoder.num_tokens:
        raise ValueError(f"transmitter.{modality}.tokens={sel.tokens} exceeds the {modality} encoder's "
                         f"{encoder.num_tokens} tokens; choose at most {encoder.num_tokens}")
    manifest = build_manifest(dataset, cfg.eval.split)
    table = selected_features(encoder, dataset, needed_clips(dataset, manifest), sel.tokens, sel.selection,
                              Path(cache_dir))
    train = needed_clips(dataset, {p: manifest[p] for p in ("stage1", "stage2")}) if cfg.transmitter.standardize \
        else None
    return FeatureBank(table, encoder.width, train)


def prepare_features(cfg: Config, dataset, cache_dir: Path) -> None:
    """Fill the feature caches of the audio and the video devices, so that devices start
    (and register) at once: with the paper's encoders this takes minutes to hours."""
    for modality in ("audio", "video"):
        feature_bank(cfg, modality, dataset, cache_dir)
