"""Render a scene: a mono waveform and a short frame sequence.

Audio (n,) float32: each sounding instrument is a harmonic tone (its fundamental
slightly detuned per clip, random phases) under its envelope, silent before its
onset, scaled so its RMS while sounding is its level; plus white noise.
Frames (t, h, w, 3) uint8: a dark noisy background per clip, each visible instrument
a filled shape in its colour centred in its slot's third of the width, drifting a
little over time. Nothing in the picture tells whether an instrument sounds.
"""
from __future__ import annotations

import numpy as np

from foundation.data.synth_scene import LEVELS, Instrument, Scene

DETUNE = 0.003  # relative, per clip and instrument
NOISE_RMS = (0.002, 0.006)
PLUCK_DECAY_S = 0.2
ATTACK_S = 0.02  # smooth attacks keep plucked notes' sidebands narrow
PIXEL_NOISE = 5.0
SHAPE_RADIUS = 0.13  # of the image size
SLOT_X = {"left": 1 / 6, "middle": 1 / 2, "right": 5 / 6}  # slot centre, of the width


def _attack(t: np.ndarray) -> np.ndarray:
    """A raised-cosine rise from 0 to 1 over ATTACK_S."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t / ATTACK_S, 0.0, 1.0))


def _envelope(inst: Instrument, t_rel: np.ndarray) -> np.ndarray:
    """Gain over time since the onset (t_rel >= 0)."""
    if inst.pulse_hz > 0:  # plucked: a decaying note every 1/pulse_hz seconds
        since_note = np.mod(t_rel, 1.0 / inst.pulse_hz)
        return np.exp(-since_note / PLUCK_DECAY_S) * _attack(since_note)
    return _attack(t_rel) * (1.0 - 0.2 * t_rel / max(t_rel[-1], 1e-9))


def render_audio(scene: Scene, table: tuple[Instrument, ...], sample_rate: int,
                 duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """The clip's waveform, (n,) float32 with n = round(duration_s * sample_rate)."""
    n = round(duration_s * sample_rate)
    t = np.arange(n) / sample_rate  # (n,)
    mix = rng.normal(0.0, rng.uniform(*NOISE_RMS), size=n)
    for src in scene.sounding:
        inst = table[src.instrument]
        f0 = inst.f0 * (1.0 + rng.uniform(-DETUNE, DETUNE))
        phases = rng.uniform(0.0, 2 * np.pi, size=len(inst.harmonics))
        start = round(src.onset_quarters * n / 4)
        t_rel = t[start:] - t[start]  # (n - start,)
        tone = np.zeros_like(t_rel)
        for k, (amp, phase) in enumerate(zip(inst.harmonics, phases), start=1):
            if k * f0 < 0.45 * sample_rate:
                tone += amp * np.sin(2 * np.pi * k * f0 * t_rel + phase)
        tone *= _envelope(inst, t_rel)
        mix[start:] += tone * (LEVELS[src.level][1] / np.sqrt(np.mean(tone ** 2)))
    peak = np.max(np.abs(mix))
    if peak > 0.99:  # keep the 16-bit PCM from clipping; relative levels are kept
        mix *= 0.99 / peak
    return mix.astype(np.float32)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside `shape` of radius r, given offsets from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "square":
        return (ax <= 0.8 * r) & (ay <= 0.8 * r)
    if shape == "diamond":
        return ax + ay <= 1.1 * r
    if shape == "triangle":  # apex up
        return (dy <= 0.8 * r) & (ax <= (dy + r) * 0.55)
    if shape == "cross":
        return ((ax <= 0.35 * r) & (ay <= r)) | ((ay <= 0.35 * r) & (ax <= r))
    if shape == "bar":
        return (ax <= r) & (ay <= 0.45 * r)
    raise ValueError(f"unknown shape {shape!r}; use one of circle, square, diamond, triangle, cross, bar")


def render_frames(scene: Scene, table: tuple[Instrument, ...], frames: int, size: int,
                  rng: np.random.Generator) -> np.ndarray:
    """The clip's frames, (t, h, w, 3) uint8 with h = w = size."""
    background = rng.uniform(15.0, 60.0, size=3)
    video = background + rng.normal(0.0, PIXEL_NOISE, size=(frames, size, size, 3))  # (t, h, w, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)  # (h, w)
    time = np.arange(frames)[:, None, None] / max(frames, 1)  # (t, 1, 1)
    r = SHAPE_RADIUS * size
    for src in scene.visible:
        inst = table[src.instrument]
        cx = SLOT_X[src.slot] * size - 0.5 + rng.uniform(-0.5, 0.5)
        cy = size / 2 - 0.5 + rng.uniform(-0.12, 0.12) * size
        phase = rng.uniform(0.0, 2 * np.pi)
        drift_x = rng.uniform(0.0, 0.03) * size * np.cos(2 * np.pi * time + phase)  # (t, 1, 1)
        drift_y = rng.uniform(0.0, 0.08) * size * np.sin(2 * np.pi * time + phase)  # (t, 1, 1)
        mask = _shape_mask(inst.shape, xx - cx - drift_x, yy - cy - drift_y, r)  # (t, h, w)
        colour = np.asarray(inst.colour, dtype=np.float64)
        video[mask] = colour + rng.normal(0.0, PIXEL_NOISE, size=(int(mask.sum()), 3))
    return np.clip(np.round(video), 0, 255).astype(np.uint8)

