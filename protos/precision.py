"""Wire precisions: the one table of them.

Complex symbols, CSI and gradients travel as real pairs in one of these float formats
(`wire.precision`). The config schema validates against `PRECISIONS`, the codec encodes
with `torch_dtype`, and the channel hop and the in-process transport round with
`round_to_wire`, so a value that crossed the real wire and one that crossed the
in-process transport are the same number.

Importing this module does not import torch (the config schema imports it).

Shapes: b batch, c complex symbols.
"""
from __future__ import annotations

BYTES_PER_REAL = {"float32": 4, "float16": 2, "bfloat16": 2}
PRECISIONS = tuple(BYTES_PER_REAL)


def torch_dtype(precision: str):
    """The torch dtype of a wire precision name (float32 | float16 | bfloat16)."""
    import torch

    if precision not in BYTES_PER_REAL:
        raise ValueError(f"unknown wire precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return getattr(torch, precision)


def round_to_wire(z, precision: str):
    """(b, c) complex64 -> (b, c) complex64 whose real pairs are representable in `precision`:
    exactly what decoding the encoded tensor gives back."""
    import torch

    if precision == "float32":
        return z
    pairs = torch.view_as_real(z).to(torch_dtype(precision)).float()  # (b, c, 2)
    return torch.view_as_complex(pairs.contiguous())  # (b, c)


def symbol_bytes(complex_values: int, precision: str) -> int:
    """Bytes of `complex_values` complex numbers as real pairs in `precision`."""
    return 2 * int(complex_values) * BYTES_PER_REAL[precision]
