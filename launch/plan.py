"""The reproduction's plan: which cells it runs, from the SNR list to the seeds.

Every list is one field, so a range is one line to change. Cells (each at every seed,
media links only, the question's text link at the base config's SNR, tau fixed):
- the SNR curve: AWGN, aligned, s = ref_tokens, at each of `snrs` and at inf (noise-free
  media links: the ceiling);
- Rayleigh fading, aligned, at each of `rayleigh_snrs`;
- the alignment control: `unaligned` (stage 1 with the same rounds, InfoNCE weight 0),
  AWGN, at each of `align_snrs` (their aligned twins are on the SNR curve);
- token length: s_A = s_V = each of `tokens`, AWGN, aligned, at `ref_snr`;
- the question-only model: inputs [text], otherwise the full model's cell.
The full model is the SNR curve's point at `ref_snr`. With the defaults: 10 cells per seed,
30 runs at 3 seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from configs.schema import ConfigError
from launch.grid import unique_cells

FULL_INPUTS = "audio+video+text"
QUESTION_ONLY = "text"


@dataclass(frozen=True)
class Plan:
    seeds: tuple[int, ...] = (0, 1, 2)
    # media SNR (dB) of the AWGN curve: from where the media are destroyed to the plateau
    snrs: tuple[float, ...] = (-40.0, -30.0, -20.0, -10.0, 10.0)
    rayleigh_snrs: tuple[float, ...] = (-20.0,)  # in the transition, where fading matters
    align_snrs: tuple[float, ...] = (10.0,)  # aligned vs the align_weight=0 control
    tokens: tuple[int, ...] = (2, 32)  # s_A = s_V
    ref_snr: float = 10.0  # the operating point: full model, token lengths, question-only
    ref_tokens: int = 32
    tau: float = 0.07
    paper_align_gain: float = 0.073  # the paper's smallest stated gain (0 dB)

    def __post_init__(self) -> None:
        if self.ref_snr not in self.snrs:
            raise ConfigError(f"Plan.ref_snr {self.ref_snr} must be one of Plan.snrs {self.snrs}")
        if self.ref_tokens not in self.tokens:
            raise ConfigError(f"Plan.ref_tokens {self.ref_tokens} must be one of Plan.tokens {self.tokens}")
        stray = [s for s in self.align_snrs if s not in (*self.snrs, math.inf)]
        if stray:
            raise ConfigError(f"Plan.align_snrs {stray} are not on the SNR curve {self.snrs}; their aligned runs "
                              "come from it, so add them to Plan.snrs")

    @property
    def curve(self) -> tuple[float, ...]:
        """The AWGN curve's SNRs, noise-free last."""
        return (*sorted(self.snrs), math.inf)

    def cell(self, seed: int, snr: float | None = None, fading: str = "awgn", tokens: int | None = None,
             align: str = "aligned", inputs: str = FULL_INPUTS) -> dict[str, Any]:
        """One cell; SNR and tokens default to the operating point."""
        s = self.ref_tokens if tokens is None else tokens
        return {"snr_db": self.ref_snr if snr is None else snr, "snr_links": "media", "fading": fading,
                "audio_tokens": s, "video_tokens": s, "align": align, "tau": self.tau, "inputs": inputs,
                "seed": seed}

    def groups(self) -> dict[str, list[dict[str, Any]]]:
        """Cells per purpose (a cell shared by two purposes is listed in both)."""
        by = {"SNR curve (AWGN, with the noise-free ceiling)": [(s, "awgn", None, "aligned", FULL_INPUTS)
                                                                 for s in self.curve],
              "Rayleigh fading": [(s, "rayleigh", None, "aligned", FULL_INPUTS) for s in self.rayleigh_snrs],
              "alignment control (align_weight 0)": [(s, "awgn", None, "unaligned", FULL_INPUTS)
                                                     for s in self.align_snrs],
              "token lengths": [(None, "awgn", t, "aligned", FULL_INPUTS) for t in self.tokens],
              "question only": [(None, "awgn", None, "aligned", QUESTION_ONLY)]}
        return {name: [self.cell(seed, *args) for args in cells for seed in self.seeds] for name, cells in by.items()}

    def cells(self) -> list[dict[str, Any]]:
        return unique_cells(c for cells in self.groups().values() for c in cells)


def quick_plan(seeds: tuple[int, ...]) -> Plan:
    """A few cells at one seed, for trying the pipeline out."""
    return Plan(seeds=seeds[:1], snrs=(-20.0, 10.0), rayleigh_snrs=(10.0,), align_snrs=(10.0,), tokens=(8, 32))
