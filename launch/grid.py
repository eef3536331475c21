"""The sweep grid: axes, cells, their names and their config overrides.

Every axis is a comma list on the command line; an axis not given keeps the base
config's single value (except `snr_links`, which defaults to `media`). The grid is the
cartesian product; each cell is one run, named from its values, e.g.
`snr-20_media_awgn_a32_v32_aligned_tau0.07_avt_seed0`.

Channel axes (SNR, fading) apply to the links `snr_links` names:
- `media` (default): every user's audio and video links, as per-link overrides
  (`channel.links.user0/audio.snr_db=...`); the question's text link stays at the base
  config's settings, so question corruption does not mix with media corruption;
- `all`: the channel defaults (`channel.snr_db=...`), every link, the text link included.
An SNR of `inf` means a noise-free link (sigma^2 = 0).

Alignment: `aligned` is stage 1 as configured; `unaligned` is the equal-rounds control,
stage 1 with the same rounds but `train.align_weight=0` (receivers and text
reconstruction still train, only InfoNCE is off); `skip` leaves stage 1 out
(`train.stage1.steps=0`), which also removes those rounds of receiver training.
Inputs: the LM's input modalities, '+'-joined (`text` alone: the question-only model).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from configs.schema import MODALITIES, Config, ConfigError

MEDIA = ("audio", "video")
SNR_LINKS = ("media", "all")
ALIGN_VALUES = ("aligned", "unaligned", "skip")


def yaml_float(v: float) -> str:
    """A float as a YAML override value ('inf' would read back as a string)."""
    return ".inf" if v == math.inf else repr(float(v))


def parse_snr(text: str) -> float:
    if text.lower() in ("inf", "+inf", ".inf"):
        return math.inf
    v = float(text)
    if math.isnan(v) or v == -math.inf:
        raise ValueError(f"'{text}' is not a usable SNR; give dB values or inf (noise-free)")
    return v


def _choice(values: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"'{text}' is not one of {', '.join(values)}")
        return text
    return parse


def _parse_inputs(text: str) -> str:
    mods = text.split("+")
    if "text" not in mods or len(set(mods)) != len(mods) or not set(mods) <= set(MODALITIES):
        raise ValueError(f"'{text}' must '+'-join distinct modalities of {MODALITIES}, text included")
    return text


def _media_links(cfg: Config) -> list[str]:
    return [f"user{u}/{m}" for u in range(cfg.users) for m in MEDIA]


def snr_links_of(cfg: Config) -> str:
    """'media' when every user's audio and video link sets its own SNR, else 'all'."""
    return "media" if all("snr_db" in cfg.channel.links.get(k, {}) for k in _media_links(cfg)) else "all"


def align_of(cfg: Config) -> str:
    if cfg.train.stage1.steps == 0:
        return "skip"
    return "unaligned" if cfg.train.align_weight == 0 else "aligned"


@dataclass(frozen=True)
class Axis:
    """One grid dimension: its CLI option, how to parse a value, read it from a config,
    turn it into overrides and into a part of the cell name. A `per_link` axis gives
    link settings ('snr_db=...') that the cell's `snr_links` places."""

    key: str
    option: str
    parse: Callable[[str], Any]
    of_config: Callable[[Config], Any]
    overrides: Callable[[Any], list[str]]
    label: Callable[[Any], str]
    what: str
    example: str
    per_link: bool = False
    default: tuple | None = None  # values when the option is not given (None: the base config's)


AXES: tuple[Axis, ...] = (
    Axis("snr_db", "--snr-db", parse_snr, lambda c: c.channel.link("user0/audio").snr_db,
         lambda v: [f"snr_db={yaml_float(v)}"], lambda v: f"snr{v:g}",
         "SNRs in dB (inf: noise-free) of the links --snr-links names; a list that starts with a minus "
         "needs '=': --snr-db=-40,-20,0,10,inf", "-40,-20,0,10,inf", per_link=True),
    Axis("snr_links", "--snr-links", _choice(SNR_LINKS), snr_links_of, lambda v: [], str,
         "links the SNR and fading axes set: media (audio + video; the text link keeps the base config's "
         "channel; the default) or all", "media", default=("media",)),
    Axis("fading", "--fading", str, lambda c: c.channel.link("user0/audio").fading,
         lambda v: [f"fading={v}"], str, "fading models", "awgn,rayleigh,rician", per_link=True),
    Axis("audio_tokens", "--audio-tokens", int, lambda c: c.transmitter.audio.tokens,
         lambda v: [f"transmitter.audio.tokens={v}"], lambda v: f"a{v}", "audio token lengths s_A", "2,8,32,128"),
    Axis("video_tokens", "--video-tokens", int, lambda c: c.transmitter.video.tokens,
         lambda v: [f"transmitter.video.tokens={v}"], lambda v: f"v{v}", "video token lengths s_V", "2,8,32,128"),
    Axis("align", "--align", _choice(ALIGN_VALUES), align_of,
         lambda v: {"aligned": [], "unaligned": ["train.align_weight=0.0"], "skip": ["train.stage1.steps=0"]}[v], str,
         "aligned (stage 1 as configured), unaligned (same rounds, train.align_weight=0) or skip "
         "(train.stage1.steps=0)", "aligned,unaligned"),
    Axis("tau", "--tau", float, lambda c: c.train.tau,
         lambda v: [f"train.tau={float(v)!r}"], lambda v: f"tau{v:g}", "InfoNCE temperatures", "0.03,0.07,0.13"),
    Axis("inputs", "--inputs", _parse_inputs, lambda c: "+".join(c.transmitter.order),
         lambda v: [f"transmitter.order=[{', '.join(v.split('+'))}]"], lambda v: "".join(m[0] for m in v.split("+")),
         "LM inputs, '+'-joined (text alone: the question-only model)", "audio+video+text,text"),
    Axis("seed", "--seeds", int, lambda c: c.seed, lambda v: [f"seed={v}"], lambda v: f"seed{v}",
         "run seeds", "0,1,2"),
)
AXIS_KEYS = tuple(a.key for a in AXES)
BY_KEY = {a.key: a for a in AXES}


def parse_list(axis: Axis, text: str) -> list:
    """'0,3,6' -> [0.0, 3.0, 6.0] for the axis' type; duplicates dropped, order kept."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{axis.option} needs at least one value; give a comma list such as {axis.example}")
    try:
        values = [axis.parse(t) for t in items]
    except ValueError as e:
        raise ConfigError(f"{axis.option} '{text}': {e}; give a comma list such as {axis.example}") from None
    return list(dict.fromkeys(values))


def full_grid(base: Config, given: dict[str, list]) -> dict[str, list]:
    """Every axis with its values: the given lists, else the axis default or the base config's value."""
    unknown = set(given) - set(AXIS_KEYS)
    if unknown:
        raise ConfigError(f"unknown sweep axes {sorted(unknown)}; known: {list(AXIS_KEYS)}")
    return {a.key: list(given[a.key]) if a.key in given else list(a.default or [a.of_config(base)]) for a in AXES}


def expand(grid: dict[str, list]) -> list[dict[str, Any]]:
    """The cartesian product, axes in AXES order, last axis fastest."""
    return [dict(zip(AXIS_KEYS, combo)) for combo in itertools.product(*(grid[k] for k in AXIS_KEYS))]


def cell_name(cell: dict[str, Any]) -> str:
    """A readable directory name, e.g. 'snr-20_media_awgn_a32_v32_aligned_tau0.07_avt_seed0'."""
    return "_".join(BY_KEY[k].label(cell[k]) for k in AXIS_KEYS)


def link_prefixes(snr_links: str, users: int) -> list[str]:
    """Where a per-link setting goes: every user's media links, or the channel defaults."""
    if snr_links == "all":
        return ["channel."]
    return [f"channel.links.user{u}/{m}." for u in range(users) for m in MEDIA]


def cell_overrides(cell: dict[str, Any], users: int = 1) -> list[str]:
    """The dotted overrides that make the base config into this cell (`users`: the base's)."""
    out = []
    for k in AXIS_KEYS:
        axis = BY_KEY[k]
        for o in axis.overrides(cell[k]):
            out += [p + o for p in link_prefixes(cell["snr_links"], users)] if axis.per_link else [o]
    return out


def unique_cells(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells in order with repeats (same name) dropped: grids may overlap."""
    return list({cell_name(c): c for c in cells}.values())


def run_values(cfg: Config) -> dict[str, Any]:
    """The grid values a config has, plus the text link's SNR."""
    return {**{a.key: a.of_config(cfg) for a in AXES}, "text_snr_db": cfg.channel.link("user0/text").snr_db}


def check_cell(name: str, cell: dict[str, Any], cfg: Config) -> None:
    """The resolved config must read back as the cell (a base override can undo an axis)."""
    got = run_values(cfg)
    for k in AXIS_KEYS:
        if got[k] != cell[k]:
            hint = ("stage 1 needs train.stage1.steps > 0 and, for 'aligned', train.align_weight > 0; "
                    "set them with --set" if k == "align" else "remove the base override that sets it")
            raise ConfigError(f"cell {name} asks for {k}={cell[k]} but its config reads back as {got[k]}; {hint}")
