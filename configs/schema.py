"""The config tree: frozen dataclasses, validated in `__post_init__`.

Classes elsewhere take plain arguments; these objects are built from YAML by
`configs.loader.load_config`, and every preset in this folder loads through it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from protos.precision import PRECISIONS

MODALITIES = ("audio", "video", "text")
SELECTIONS = ("window_mean", "window_max", "stride")
FADINGS = ("awgn", "rayleigh", "rician")
CSI_MODES = ("perfect", "estimated", "none")
EQUALIZERS = ("none", "zf", "mmse")
MEDIA = ("dedicated", "tdma", "fdma")
SCHEDULES = ("sequential", "concurrent")
QUESTION_SETS = ("scene", "musicavqa")  # foundation.data.synth_text.templates
BACKENDS = ("auto", "gloo", "nccl")


class ConfigError(ValueError):
    """A config file or override is malformed; the message names the key."""


def require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


@dataclass(frozen=True)
class SyntheticData:
    """The generated MUSIC-AVQA / VALOR-like dataset (the embedded default)."""

    num_clips: int = 1500
    num_instruments: int = 8
    frames: int = 16
    image_size: int = 32
    sample_rate: int = 16000
    duration_s: float = 1.28
    questions_per_clip: int = 8  # at most (and at most one per template); a few clips fit fewer
    # scene: whole-scene questions the tiny LM can learn from the media; musicavqa: the sixteen
    # MUSIC-AVQA-style templates that bind an answer to a named instrument or slot
    # (foundation.data.synth_text.templates)
    question_set: str = "scene"
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.num_clips >= 10, "data.synthetic.num_clips", "must be at least 10")
        require(2 <= self.num_instruments <= 22, "data.synthetic.num_instruments", "must be in 2..22")
        require(self.question_set in QUESTION_SETS, "data.synthetic.question_set",
                f"must be one of {QUESTION_SETS}")
        require(len(self.split) == 3 and abs(sum(self.split) - 1) < 1e-6,
               "data.synthetic.split", "must be three fractions summing to 1")


@dataclass(frozen=True)
class RealData:
    """Paths of the real datasets (VALOR-32K captions, MUSIC-AVQA questions)."""

    valor_dir: str = ""
    avqa_dir: str = ""
    media_dir: str = ""
    annotations_only: bool = False


@dataclass(frozen=True)
class DataConfig:
    kind: str = "synthetic"
    cache_dir: str = ""  # empty: $TOKCOM_CACHE or ~/.cache/tokcom
    synthetic: SyntheticData = field(default_factory=SyntheticData)
    real: RealData = field(default_factory=RealData)
    text_len: int = 32  # question/caption tokens transmitted, padded
    answer_len: int = 6  # answer tokens incl. EOS, padded

    def __post_init__(self) -> None:
        require(self.kind in ("synthetic", "real"), "data.kind", "must be 'synthetic' or 'real'")
        require(self.text_len >= 2, "data.text_len", "must be at least 2")
        require(self.answer_len >= 2, "data.answer_len", "must be at least 2")


@dataclass(frozen=True)
class LoraConfig:
    r: int = 4
    alpha: int = 16
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        require(self.r >= 1, "models.lora.r", "must be >= 1")
        require(0 <= self.dropout < 1, "models.lora.dropout", "must be in [0, 1)")


@dataclass(frozen=True)
class PretrainConfig:
    """Brief causal-LM pretraining of the tiny LM on the generated corpus."""

    steps: int = 400
    batch: int = 8  # documents: a caption and its clip's questions, ~140 tokens
    lr: float = 3e-3


@dataclass(frozen=True)
class ModelsConfig:
    """`tiny`: random-init small configs; `paper`: real weights via from_pretrained."""

    preset: str = "tiny"
    random_init: bool = False  # paper preset: the paper's shapes without weights
    lm_path: str = "Qwen/Qwen2.5-1.5B"
    audio_path: str = "MIT/ast-finetuned-audioset-10-10-0.4593"
    video_path: str = "google/vivit-b-16x2"
    lora: LoraConfig = field(default_factory=LoraConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    receiver_hidden: int = 256
    device: str = "auto"  # auto | cpu | cuda (the edge's LM and receivers)

    def __post_init__(self) -> None:
        require(self.preset in ("tiny", "paper"), "models.preset", "must be 'tiny' or 'paper'")
        require(self.device in ("auto", "cpu", "cuda"), "models.device", "must be auto, cpu or cuda")


@dataclass(frozen=True)
class ModalityTx:
    tokens: int = 32  # s_m
    selection: str = "window_mean"

    def __post_init__(self) -> None:
        require(self.tokens >= 1, "transmitter.<modality>.tokens", "must be >= 1")
        require(self.selection in SELECTIONS, "transmitter.<modality>.selection",
               f"must be one of {SELECTIONS}")


@dataclass(frozen=True)
class TransmitterConfig:
    audio: ModalityTx = field(default_factory=lambda: ModalityTx(tokens=32))
    video: ModalityTx = field(default_factory=lambda: ModalityTx(tokens=32))
    # LM input order; leaving a modality out feeds the LM without it (e.g. [text]: the
    # question-only baseline). Stage 1 aligns every modality regardless.
    order: tuple[str, ...] = ("audio", "video", "text")
    # standardise encoder features per dimension with training-clip statistics (see device_node.build)
    standardize: bool = True

    def __post_init__(self) -> None:
        require("text" in self.order and len(set(self.order)) == len(self.order)
               and set(self.order) <= set(MODALITIES), "transmitter.order",
               f"must list distinct modalities of {MODALITIES}, text included")
        require(self.order[-1] == "text", "transmitter.order",
                "must end with text: the answer is generated right after the question's last token")


def _memo(cfg, name: str, build):
    """`build()` once per link name of a frozen config (the relay and the edge ask per message).
    Kept in the instance's __dict__, outside the dataclass fields: digests and equality ignore it."""
    memo = cfg.__dict__.setdefault("_links_memo", {})
    if name not in memo:
        memo[name] = build()
    return memo[name]


@dataclass(frozen=True)
class LinkConfig:
    """One wireless link. See channel/ for the conventions."""

    fading: str = "awgn"
    snr_db: float = 10.0
    k_factor: float = 3.0  # Rician K (linear)
    coherence: int = 0  # symbols per fading block; 0: one block per sample
    csi: str = "perfect"
    pilots: int = 8  # pilot symbols per block for csi=estimated
    equalizer: str = "mmse"  # receiver-side use of the CSI

    def __post_init__(self) -> None:
        require(self.fading in FADINGS, "channel.fading", f"must be one of {FADINGS}")
        require(self.csi in CSI_MODES, "channel.csi", f"must be one of {CSI_MODES}")
        require(self.equalizer in EQUALIZERS, "channel.equalizer", f"must be one of {EQUALIZERS}")
        require(self.coherence >= 0, "channel.coherence", "must be >= 0")
        require(self.pilots >= 1, "channel.pilots", "must be >= 1")
        require(self.k_factor >= 0, "channel.k_factor", "must be >= 0")


@dataclass(frozen=True)
class ChannelConfig:
    """Default link parameters plus per-link overrides keyed 'user0/audio'."""

    fading: str = "awgn"
    snr_db: float = 10.0
    k_factor: float = 3.0
    coherence: int = 0
    csi: str = "perfect"
    pilots: int = 8
    equalizer: str = "mmse"
    links: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        LinkConfig(**self._defaults())  # validates the defaults
        names = {f.name for f in dataclasses.fields(LinkConfig)}
        for link, over in self.links.items():
            require(isinstance(over, dict), f"channel.links.{link}", "must be a mapping")
            for k in over:
                require(k in names, f"channel.links.{link}.{k}", f"unknown key; known: {sorted(names)}")
            LinkConfig(**{**self._defaults(), **over})

    def _defaults(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(LinkConfig)}

    def link(self, name: str) -> LinkConfig:
        """The parameters of link `name` ('user0/audio'): defaults plus overrides."""
        return _memo(self, name, lambda: LinkConfig(**{**self._defaults(), **self.links.get(name, {})}))


@dataclass(frozen=True)
class NetLinkConfig:
    """One link's network parameters, emulated at the relay (see channel/network.py)."""

    symbol_rate: float = 0.0  # complex channel uses per second on the device's uplink; 0: unlimited
    bit_rate: float = 0.0  # bits per second for digital payloads (labels, downlink tasks); 0: unlimited
    delay_ms: float = 0.0  # propagation delay, each direction
    jitter_ms: float = 0.0  # extra delay drawn uniformly from [0, jitter_ms]
    loss: float = 0.0  # probability that one transmission of a message is lost
    retransmit_ms: float = 0.0  # timeout before a lost transmission is sent again
    max_attempts: int = 16  # transmissions at most; the last one always gets through

    def __post_init__(self) -> None:
        for key in ("symbol_rate", "bit_rate", "delay_ms", "jitter_ms", "retransmit_ms"):
            require(getattr(self, key) >= 0, f"network.{key}", "must be >= 0")
        require(0 <= self.loss < 1, "network.loss", "must be in [0, 1)")
        require(self.max_attempts >= 1, "network.max_attempts", "must be >= 1")


@dataclass(frozen=True)
class NetworkConfig:
    """Default link network parameters plus per-link overrides keyed 'user0/audio', and how
    the device uplinks share the band: `dedicated` (each its own symbol_rate), `tdma` (one
    transmission at a time, each at the full rate) or `fdma` (the rate split evenly)."""

    symbol_rate: float = 0.0
    bit_rate: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    retransmit_ms: float = 0.0
    max_attempts: int = 16
    medium: str = "dedicated"
    links: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(self.medium in MEDIA, "network.medium", f"must be one of {MEDIA}")
        NetLinkConfig(**self._defaults())
        names = {f.name for f in dataclasses.fields(NetLinkConfig)}
        for link, over in self.links.items():
            require(isinstance(link, str) and link.startswith("user") and link.partition("/")[2] in MODALITIES
                    and link[4:].partition("/")[0].isdigit(), f"network.links.{link}",
                    "links are named like 'user0/audio'")
            require(isinstance(over, dict), f"network.links.{link}", "must be a mapping")
            for k in over:
                require(k in names, f"network.links.{link}.{k}", f"unknown key; known: {sorted(names)}")
            try:
                NetLinkConfig(**{**self._defaults(), **over})
            except ConfigError as e:
                raise ConfigError(str(e).replace("'network.", f"'network.links.{link}.", 1)) from None

    def _defaults(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(NetLinkConfig)}

    def link(self, name: str) -> NetLinkConfig:
        """The parameters of link `name` ('user0/audio'): defaults plus overrides."""
        return _memo(self, name, lambda: NetLinkConfig(**{**self._defaults(), **self.links.get(name, {})}))

    @property
    def emulated(self) -> bool:
        """Whether any link costs time (otherwise the relay forwards every message at once)."""
        links = [self.link(""), *(self.link(n) for n in self.links)]
        return any(n.symbol_rate or n.bit_rate or n.delay_ms or n.jitter_ms or (n.loss and n.retransmit_ms)
                   for n in links)


@dataclass(frozen=True)
class StageConfig:
    steps: int = 100
    batch: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    log_every: int = 1

    def __post_init__(self) -> None:
        require(self.steps >= 0, "train.stageN.steps", "must be >= 0")
        require(self.batch >= 1, "train.stageN.batch", "must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    stage1: StageConfig = field(default_factory=lambda: StageConfig(steps=100, lr=1e-3))
    stage2: StageConfig = field(default_factory=lambda: StageConfig(steps=300, lr=1e-3))
    tau: float = 0.07
    recon_weight: float = 1.0
    align_weight: float = 1.0
    # Stage 1 also trains the media path to caption the clip through the frozen LM (LLaVA's
    # feature-alignment objective): cross-entropy of the caption given [audio, video] only.
    # 0 keeps the paper's stage 1 (reconstruction + InfoNCE).
    caption_weight: float = 0.0
    checkpoint: bool = True  # a checkpoint after the last training step
    checkpoint_every: int = 0  # also one every this many steps of each stage (0: off); `--resume` starts there
    # sequential: step k trains user k mod N alone; concurrent: every user in every step,
    # one loss over the union of their samples (edge_server.step)
    schedule: str = "sequential"

    def __post_init__(self) -> None:
        require(self.tau > 0, "train.tau", "must be > 0")
        for key in ("recon_weight", "align_weight", "caption_weight"):
            require(getattr(self, key) >= 0, f"train.{key}", "must be >= 0")
        require(self.schedule in SCHEDULES, "train.schedule", f"must be one of {SCHEDULES}")
        require(self.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0 (0 turns it off)")


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    max_samples: int = 0  # 0: the whole split
    batch: int = 8
    max_new_tokens: int = 6
    probe_samples: int = 0  # >0: save pooled features of this many clips before/after stage 1

    def __post_init__(self) -> None:
        require(self.split in ("train", "val", "test"), "eval.split", "must be train, val or test")


@dataclass(frozen=True)
class WireConfig:
    precision: str = "float32"
    max_message_mb: int = 256
    step_timeout_s: float = 60.0
    part_kb: int = 1024  # a tensor above this travels in Parts of this size (protos.parts); receivers take any

    def __post_init__(self) -> None:
        require(self.precision in PRECISIONS, "wire.precision", f"must be one of {PRECISIONS}")
        require(1 <= self.part_kb <= self.max_message_mb * 1024, "wire.part_kb",
                "must be between 1 and wire.max_message_mb * 1024")

    @property
    def limit_bytes(self) -> int:
        """Bytes of one message with its parts that a receiver accepts."""
        return self.max_message_mb << 20

    @property
    def part_bytes(self) -> int:
        """Bytes of one Part: a tensor above this travels in parts of this size."""
        return self.part_kb << 10


@dataclass(frozen=True)
class EdgeConfig:
    """The edge as `ranks` torch.distributed processes (edge_server.ranks): users sharded
    across them, gradients all-reduced. `backend` auto: nccl with CUDA, gloo otherwise."""

    ranks: int = 1
    backend: str = "auto"

    def __post_init__(self) -> None:
        require(self.ranks >= 1, "edge.ranks", "must be >= 1")
        require(self.backend in BACKENDS, "edge.backend", f"must be one of {BACKENDS}")


@dataclass(frozen=True)
class LaunchConfig:
    """How `tokcom run` lays the roles out in processes: `devices_per_process` > 1 starts
    device hosts (`tokcom devices`), each running that many users' devices of one modality."""

    devices_per_process: int = 1

    def __post_init__(self) -> None:
        require(self.devices_per_process >= 1, "launch.devices_per_process", "must be >= 1")


@dataclass(frozen=True)
class Config:
    name: str = "tiny"
    seed: int = 0
    users: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    transmitter: TransmitterConfig = field(default_factory=TransmitterConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wire: WireConfig = field(default_factory=WireConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def __post_init__(self) -> None:
        require(self.users >= 1, "users", "must be >= 1")

    def link_names(self) -> list[str]:
        """Every device link, e.g. ['user0/audio', 'user0/video', 'user0/text']."""
        return [f"user{u}/{m}" for u in range(self.users) for m in MODALITIES]
