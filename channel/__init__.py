"""The wireless channel: complex symbols, block fading, CSI and equalisation.

Conventions (DESIGN.md "Channel conventions"): real tokens (b, s, d) -> complex
symbols (b, s*d/2), adjacent reals as (re, im); per-sample unit mean power over real
symbols; y = h x + n with n ~ CN(0, sigma^2), sigma^2 = 10^(-snr_db/10), E|h|^2 = 1;
gradients travel back as dL/dx = conj(h) dL/dy. `channel.check` is the
`tokcom channel-check` command.
"""
from channel.equalize import equalize
from channel.fading import ChannelOutput, LinkChannel, num_blocks, symbols_per_block
from channel.symbols import (as_pairs, complex_to_real, from_pairs, power_normalize,
                             real_to_complex, symbol_mask)

__all__ = [
    "ChannelOutput", "LinkChannel", "as_pairs", "complex_to_real", "equalize", "from_pairs",
    "num_blocks", "power_normalize", "real_to_complex", "symbol_mask", "symbols_per_block",
]
