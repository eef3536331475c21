"""Frozen modality encoders (E_A: AST, E_V: ViViT) fed by transformers' own extractors.

Shapes: `b` batch, `n` encoder tokens, `d` encoder width (d_enc), `t` samples or frames.

- audio: 16 kHz mono waveforms, np.float32 (t,) -> `ASTFeatureExtractor` (numpy log-mel
  fbank) -> `ASTModel` -> (b, n, d); n = 2 + patches (CLS and distillation tokens).
- video: frames np.uint8 (t, H, W, 3) -> evenly sampled to the config's `num_frames` ->
  `VivitImageProcessor` -> `VivitModel` -> (b, n, d); n = 1 + tubelets (CLS token).

Presets: `tiny` builds small random-init models (with sinusoidal position embeddings,
since transformers initialises them to zeros) whose weights are identical in every
process (seeded from `derive_seed`; nodes compare `fingerprint()` to confirm); `paper` loads the real weights
with `from_pretrained(..., local_files_only=True)`, or with `random_init` builds the paper's
shapes (AST 1214 x 768, ViViT-B 16x2 3137 x 768) without weights.
"""
from __future__ import annotations

import abc
import hashlib
import json
import logging
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from transformers import (ASTConfig, ASTFeatureExtractor, ASTModel, VivitConfig,
                          VivitImageProcessor, VivitModel)
from transformers.utils import is_speech_available

from configs.schema import ModelsConfig
from foundation.seeding import derive_seed

log = logging.getLogger(__name__)

ENCODER_MODALITIES = ("audio", "video")
# Config and extractor keys that say where, how or by which version a model was saved
# (save_pretrained fills in architectures and dtype), not what it computes; the weights'
# dtype is hashed with the weights. Left out of the fingerprint.
_VOLATILE_KEYS = ("transformers_version", "_name_or_path", "architectures", "dtype",
                  "processor_class", "_processor_class")
_EMPTY_MEL_WARNING = "At least one mel filter has all zero values"


class FrozenEncoder(abc.ABC):
    """A frozen (eval, requires_grad False) transformers encoder and its input extractor."""

    modality = ""

    def __init__(self, model: torch.nn.Module, extractor: Any, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.extractor = extractor
        pos = self.model.embeddings.position_embeddings  # (1, n, d)
        self.num_tokens = int(pos.shape[1])
        self.width = int(pos.shape[2])
        self._fingerprint: str | None = None

    @abc.abstractmethod
    def _inputs(self, raw_list: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for a batch of raw clips."""

    def _extra_identity(self) -> dict[str, Any]:
        """Anything besides config, extractor settings and weights that changes the output."""
        return {}

    @torch.no_grad()
    def encode(self, raw_list: Sequence[np.ndarray]) -> torch.Tensor:
        """Encode a batch of raw clips; the full token sequence (b, n, d) float32 on `self.device`."""
        if len(raw_list) == 0:
            raise ValueError(f"{self.modality} encoder got an empty batch; pass at least one clip")
        inputs = {k: v.to(self.device) for k, v in self._inputs(raw_list).items()}
        out = self.model(**inputs).last_hidden_state  # (b, n, d)
        return out.float()

    def fingerprint(self) -> str:
        """A short hash of the config, extractor settings and weights (16 hex digits).

        Computed once: the weights are frozen.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            ident = {"modality": self.modality,
                     "config": _stable_dict(self.model.config.to_dict()),
                     "extractor": _stable_dict(self.extractor.to_dict()),
                     **self._extra_identity()}
            h.update(json.dumps(ident, sort_keys=True, default=str).encode("utf-8"))
            for name, t in sorted(self.model.state_dict().items()):
                t = t.detach().to("cpu").contiguous()
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode("utf-8"))
                h.update(t.view(-1).view(torch.uint8).numpy())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


class AudioEncoder(FrozenEncoder):
    """AST over 16 kHz mono waveforms, np.float32 (t,)."""

    modality = "audio"

    def _inputs(self, raw_list: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        waves = [np.asarray(w, dtype=np.float32) for w in raw_list]
        if any(w.ndim != 1 for w in waves):
            raise ValueError(f"audio clips must be mono waveforms of shape (t,), got "
                             f"{[w.shape for w in waves]}; downmix to one channel at 16 kHz")
        feats = self.extractor(waves, sampling_rate=self.extractor.sampling_rate, return_tensors="np")
        return {"input_values": torch.from_numpy(feats["input_values"])}  # (b, frames, mel)

    def _extra_identity(self) -> dict[str, Any]:
        # ASTFeatureExtractor uses torchaudio's Kaldi fbank when it imports, numpy otherwise;
        # the two differ slightly, so the features (and caches) differ too.
        return {"fbank": "torchaudio" if is_speech_available() else "numpy"}


class VideoEncoder(FrozenEncoder):
    """ViViT over frame stacks, np.uint8 (t, H, W, 3), resampled to `num_frames` frames."""

    modality = "video"

    def __init__(self, model: torch.nn.Module, extractor: Any, device: str | torch.device = "cpu") -> None:
        super().__init__(model, extractor, device)
        self.num_frames = int(model.config.num_frames)

    def _inputs(self, raw_list: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        videos = [list(sample_frames(np.asarray(v), self.num_frames)) for v in raw_list]
        pix = self.extractor(videos, input_data_format="channels_last", return_tensors="np")
        return {"pixel_values": torch.from_numpy(pix["pixel_values"])}  # (b, f, 3, H, W)


def sample_frames(frames: np.ndarray, count: int) -> np.ndarray:
    """Evenly spaced `count` frames (t, H, W, 3) -> (count, H, W, 3); repeats frames if t < count."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"video frames must be a non-empty uint8 array (t, H, W, 3), got shape "
                         f"{frames.shape}; check the dataset's load_frames")
    if frames.shape[0] == count:
        return frames
    idx = np.linspace(0, frames.shape[0] - 1, count).round().astype(np.int64)
    return frames[idx]  # (count, H, W, 3)


def _stable_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in _VOLATILE_KEYS}


# ---------------------------------------------------------------- builders


def _tiny_parts(modality: str) -> tuple[Any, type, Any]:
    if modality == "audio":
        cfg = ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_length=128, num_mel_bins=128)  # 146 tokens
        return cfg, ASTModel, _ast_extractor(max_length=128, num_mel_bins=128)
    cfg = VivitConfig(image_size=32, num_frames=16, tubelet_size=[2, 8, 8], hidden_size=64,
                      num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)  # 129 tokens
    proc = VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return cfg, VivitModel, proc


def _paper_random_parts(modality: str) -> tuple[Any, type, Any]:
    if modality == "audio":
        return ASTConfig(), ASTModel, _ast_extractor()  # 1214 x 768
    return VivitConfig(), VivitModel, VivitImageProcessor()  # 3137 x 768


def _ast_extractor(**kwargs: Any) -> ASTFeatureExtractor:
    # 128 mel bins over AST's 400-sample window leave some filters empty; the released AST
    # uses the same settings, so transformers' warning about it is expected noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_EMPTY_MEL_WARNING)
        return ASTFeatureExtractor(**kwargs)


def _model_kwargs(model_cls: type) -> dict[str, Any]:
    # ViViT's pooler is unused (we keep every token); leaving it out saves its weights.
    return {"add_pooling_layer": False} if model_cls is VivitModel else {}


POSITION_AMPLITUDE = 0.25  # about the spread of the tiny encoders' patch embeddings across patches


def sinusoidal_positions(n: int, d: int, amplitude: float = POSITION_AMPLITUDE) -> torch.Tensor:
    """(1, n, d) fixed sine/cosine position table over the token index (Vaswani et al.)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]  # (n, 1)
    freq = torch.exp(-np.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    table = torch.zeros(n, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return (amplitude * table).float()[None]  # (1, n, d)


def _seeded_model(modality: str, tag: str, cfg: Any, model_cls: type) -> torch.nn.Module:
    # The random init draws from the global CPU generator. fork_rng restores it afterwards,
    # so callers' randomness is untouched, while the fixed seed makes the weights identical
    # in every process. Only the CPU generator is seeded: torch.manual_seed would also seed
    # (lazily) every CUDA generator, which fork_rng(devices=[]) would not restore.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed("encoder", modality, tag))
        model = model_cls(cfg, **_model_kwargs(model_cls))
    # transformers initialises AST's and ViViT's position embeddings to zeros, which
    # leaves a random-init encoder blind to where (and when) each patch is; the real
    # checkpoints learned theirs. A fixed sinusoidal table stands in for them.
    pe = model.embeddings.position_embeddings  # (1, n, d)
    with torch.no_grad():
        pe.copy_(sinusoidal_positions(pe.shape[1], pe.shape[2]))
    return model


def _pretrained_parts(modality: str, path: str) -> tuple[torch.nn.Module, Any]:
    model_cls, proc_cls = (ASTModel, ASTFeatureExtractor) if modality == "audio" else (VivitModel, VivitImageProcessor)
    try:
        model = model_cls.from_pretrained(path, local_files_only=True, dtype=torch.float32,
                                          **_model_kwargs(model_cls))
    except OSError as e:
        raise FileNotFoundError(_missing_weights_message(modality, path)) from e
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_EMPTY_MEL_WARNING)
            extractor = proc_cls.from_pretrained(path, local_files_only=True)
    except OSError:
        # Some checkpoints ship no preprocessor config; the defaults are the published ones.
        log.warning("no %s extractor settings in '%s'; using %s defaults", modality, path, proc_cls.__name__)
        extractor = _ast_extractor() if modality == "audio" else VivitImageProcessor()
    return model, extractor


def _missing_weights_message(modality: str, path: str) -> str:
    key = f"models.{modality}_path"
    if path.startswith(("/", ".", "~")) or path.count("/") != 1:  # a folder, not a hub name
        return (f"{modality} encoder folder '{path}' holds no loadable model; set {key} to the folder "
                "of a downloaded checkpoint, or use models.random_init=true for the paper's shapes "
                "without weights")
    return (f"{modality} encoder '{path}' is not in the local HF cache; on a machine with internet run "
            f"`huggingface-cli download {path}` and copy ~/.cache/huggingface/hub here, or set "
            f"{key}=/local/folder, or use models.random_init=true for the paper's shapes without weights")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_encoder(modality: str, models_cfg: ModelsConfig, device: str | torch.device = "cpu") -> FrozenEncoder:
    """The frozen encoder of `modality` ('audio' or 'video') for `models_cfg.preset`."""
    if modality not in ENCODER_MODALITIES:
        raise ValueError(f"no encoder for modality '{modality}'; use one of {ENCODER_MODALITIES} "
                         "(text uses the LM's embedding table)")
    cls = AudioEncoder if modality == "audio" else VideoEncoder
    if models_cfg.preset == "tiny":
        cfg, model_cls, extractor = _tiny_parts(modality)
        model = _seeded_model(modality, "tiny", cfg, model_cls)
    elif models_cfg.random_init:
        cfg, model_cls, extractor = _paper_random_parts(modality)
        model = _seeded_model(modality, "paper-random", cfg, model_cls)
    else:
        path = models_cfg.audio_path if modality == "audio" else models_cfg.video_path
        model, extractor = _pretrained_parts(modality, path)
    enc = cls(model, extractor, resolve_device(device))
    log.info("%s encoder (%s%s): %d tokens x %d, on %s", modality, models_cfg.preset,
             ", random init" if models_cfg.preset == "paper" and models_cfg.random_init else "",
             enc.num_tokens, enc.width, enc.device)
    return enc
