"""What a generated clip contains: instruments, where they are, which ones sound.

Each instrument has a look (a colour and a shape) and a sound (a fundamental
frequency, a harmonic timbre, and a sustained or plucked envelope). The
fundamentals of the instruments in use share one octave, [400, 800) Hz, evenly
spaced in log frequency, so no harmonic of one instrument lands on another's
fundamental.

A scene has 1-3 VISIBLE instruments at distinct slots (left / middle / right) and a
set of SOUNDING ones: some visible ones sound, some are silent, and sometimes an
off-screen instrument sounds (heard, not seen). Every sounding instrument has an
onset (0, 1/4 or 1/2 of the clip) and a loudness level (6 dB steps).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from foundation.data.formats import INSTRUMENTS

SLOTS = ("left", "middle", "right")
SHAPES = ("circle", "square", "diamond", "triangle", "cross", "bar")
# (name, RMS amplitude of the instrument's signal while it sounds)
LEVELS = (("soft", 0.05), ("moderate", 0.1), ("loud", 0.2))
ONSET_QUARTERS = (0, 1, 2)  # onset = quarters * duration / 4
PLUCKED = frozenset({"acoustic_guitar", "banjo", "congas", "drum", "electric_bass",
                     "guzheng", "piano", "pipa", "ukulele", "xylophone"})
F0_LOW_HZ = 400.0
P_VISIBLE_SOUNDS = 0.6
P_OFFSCREEN_SOUNDS = 0.5


@dataclass(frozen=True)
class Instrument:
    name: str  # MUSIC-AVQA spelling, e.g. "acoustic_guitar"
    f0: float  # fundamental, Hz
    harmonics: tuple[float, ...]  # amplitude of harmonic k = 1, 2, ...
    pulse_hz: float  # plucked: notes per second; 0: sustained
    colour: tuple[int, int, int]  # RGB
    shape: str

    @property
    def spoken(self) -> str:
        """The name as caption text writes it ("acoustic guitar")."""
        return self.name.replace("_", " ")


@dataclass(frozen=True)
class Source:
    instrument: int  # index into the instrument table
    slot: str | None  # one of SLOTS, or None when off-screen
    sounding: bool
    onset_quarters: int = 0  # meaningful when sounding
    level: int = 0  # index into LEVELS, meaningful when sounding

    @property
    def visible(self) -> bool:
        return self.slot is not None


@dataclass(frozen=True)
class Scene:
    clip_id: str
    sources: tuple[Source, ...]  # visible ones ordered left to right, then the off-screen one

    @property
    def visible(self) -> list[Source]:
        return [s for s in self.sources if s.visible]

    @property
    def sounding(self) -> list[Source]:
        return [s for s in self.sources if s.sounding]

    def at(self, slot: str) -> Source | None:
        return next((s for s in self.sources if s.slot == slot), None)


def instrument_table(n: int) -> tuple[Instrument, ...]:
    """The first `n` MUSIC-AVQA instruments with their looks and sounds."""
    table = []
    for i, name in enumerate(INSTRUMENTS[:n]):
        tilt = (0.7, 1.2, 1.8)[i % 3]  # spectral slope: bright .. mellow
        odd_only = (i // 3) % 2 == 1  # clarinet-like: even harmonics weak
        harmonics = tuple(
            (0.15 if odd_only and k % 2 == 0 else 1.0) / k ** tilt for k in range(1, 7)
        )
        r, g, b = colorsys.hsv_to_rgb(i / n, 0.85, 1.0 if i % 2 == 0 else 0.75)
        table.append(Instrument(
            name=name,
            f0=F0_LOW_HZ * 2.0 ** (i / n),
            harmonics=harmonics,
            pulse_hz=(3.0 + i % 4) if name in PLUCKED else 0.0,
            colour=(round(255 * r), round(255 * g), round(255 * b)),
            shape=SHAPES[i % len(SHAPES)],
        ))
    return tuple(table)


def sample_scene(clip_id: str, num_instruments: int, rng: np.random.Generator) -> Scene:
    """Draw one clip's content: who is seen where, who sounds, when and how loud."""
    n_visible = int(rng.integers(1, 4))
    slots = sorted(rng.choice(len(SLOTS), size=n_visible, replace=False).tolist())
    chosen = rng.choice(num_instruments, size=n_visible + 1, replace=False).tolist()
    sounds = [bool(rng.random() < P_VISIBLE_SOUNDS) for _ in range(n_visible)]
    sounds.append(bool(rng.random() < P_OFFSCREEN_SOUNDS))
    if not any(sounds):  # every clip has some sound
        sounds[int(rng.integers(n_visible))] = True
    onsets = rng.choice(ONSET_QUARTERS, size=n_visible + 1).tolist()
    levels = rng.integers(0, len(LEVELS), size=n_visible + 1).tolist()
    sources = []
    for j in range(n_visible + 1):
        slot = SLOTS[slots[j]] if j < n_visible else None
        if slot is None and not sounds[j]:
            continue  # an off-screen silent instrument is not in the clip at all
        sources.append(Source(chosen[j], slot, sounds[j],
                              int(onsets[j]) if sounds[j] else 0,
                              int(levels[j]) if sounds[j] else 0))
    return Scene(clip_id, tuple(sources))
