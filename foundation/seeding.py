"""Randomness is passed, not global.

Every random draw in tokcom comes from a `torch.Generator` seeded from a tuple of
parts, typically (run seed, node or link id, round key, step). The same parts give
the same stream in every process, which is what lets the in-process reference and
the multi-process cluster agree number for number.
"""
from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, stable across processes and runs."""
    text = "/".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(*parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` seeded by `derive_seed(*parts)`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(*parts))
    return gen
