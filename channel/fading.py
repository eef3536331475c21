"""One wireless link: block fading, complex AWGN and the receiver's CSI.

Conventions (DESIGN.md "Channel conventions"):

- Input: unit-power complex symbols x (b, c) (see `channel.symbols`), E|x|^2 = 1.
- y = h * x + n, n ~ CN(0, sigma^2) (variance sigma^2/2 per real dimension),
  sigma^2 = 10^(-snr_db/10), so SNR = E|h x|^2 / sigma^2 with E|h|^2 = 1.
- awgn: h = 1. rayleigh: h ~ CN(0, 1). rician (linear K):
  h = sqrt(K/(K+1)) e^{j theta} + sqrt(1/(K+1)) g, theta ~ U[0, 2pi), g ~ CN(0, 1).
- Block fading along the symbol axis: one h per block of `coherence` symbols,
  ceil(c / coherence) blocks per sample (the last may be short); coherence 0 means
  one block per sample.
- CSI: `perfect` gives h_hat = h; `estimated` sends `pilots` unit-power pilots per
  block and gives the LS estimate (error variance sigma^2 / pilots, see `channel.csi`);
  `none` gives h_hat = None.
- Gradients: complex gradients mean dL/dRe + j dL/dIm (PyTorch's convention for real
  losses), so for y = h x + n the vector-Jacobian product is dL/dx = conj(h) dL/dy.

Order of draws from the generator (fixed; a replay with the same generator state gives
bit-identical outputs, in this process or another):
  1. fading, per (b, n) block grid: rician draws theta = 2 pi * rand(b, n) then
     g = CN(0,1) (b, n); rayleigh draws g only; awgn draws nothing;
  2. pilot noise CN(0,1) (b, n, pilots), only when csi == "estimated";
  3. data noise CN(0,1) (b, c).
Draws are made on the generator's device in float32 and moved to x's device.

Why not Sionna's `AWGN` / `RayleighBlockFading` blocks: they draw from Sionna's
process-wide generator (`sionna.phy.config.torch_rng`), global state that a relay
serving several links cannot seed per (run seed, link, step); replaying a step in
another process needs the generator passed in. `tokcom channel-check` compares this
module against the closed forms with Sionna's QPSK mapper and demapper around it.

Shapes: b batch, c complex symbols per sample, n fading blocks per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from channel.csi import estimate_gains
from channel.symbols import complex_normal
from configs.schema import LinkConfig


def symbols_per_block(c: int, coherence: int) -> int:
    """Block length in symbols: `coherence`, or the whole sample when it is 0."""
    return max(c, 1) if coherence == 0 else coherence


def num_blocks(c: int, coherence: int) -> int:
    """Fading blocks per sample of c symbols: ceil(c / coherence), 1 when coherence is 0."""
    return math.ceil(c / symbols_per_block(c, coherence)) if c else 0


def expand_blocks(h_blk: Tensor, c: int, coherence: int) -> Tensor:
    """(b, n) per-block gains -> (b, c) per-symbol gains (the last block may be short)."""
    length = symbols_per_block(c, coherence)
    return h_blk.repeat_interleave(length, dim=1)[:, :c]  # (b, c)


def _symbols_shape(x: Tensor) -> tuple[int, int]:
    if x.dim() != 2 or not x.is_complex():
        raise ValueError(f"LinkChannel expects complex symbols (b, c), got {x.dtype} "
                         f"{tuple(x.shape)}; convert tokens with channel.symbols.real_to_complex")
    return tuple(x.shape)


@dataclass
class Draws:
    """One link's randomness for one round: block gains h (b, n), the receiver's estimate
    (b, n) when `csi` is "estimated", and the noise sigma * CN(0, 1) (b, c)."""

    b: int
    c: int
    h_blk: Tensor
    h_hat_blk: Tensor | None
    noise: Tensor


@dataclass
class ChannelOutput:
    """What one pass through the link produced.

    y: (b, c) complex received symbols. h: (b, c) complex true per-symbol gain (1 for
    awgn). h_hat: (b, c) complex receiver's CSI (h, the LS estimate, or None).
    noise_var: sigma^2, the complex noise variance. h_hat_blocks: (b, n) the receiver's
    CSI at its real size, one gain per fading block (None with csi = "none");
    `expand_blocks(h_hat_blocks, c, coherence)` gives h_hat.
    """

    y: Tensor
    h: Tensor
    h_hat: Tensor | None
    noise_var: float
    h_hat_blocks: Tensor | None = None


class LinkChannel:
    """A wireless link with the parameters of one `LinkConfig` (its `equalizer` is the
    receiver's business and is not used here).

    Call with x (b, c) complex and a `torch.Generator`; see the module docstring for
    the model and the order of draws.
    """

    def __init__(self, cfg: LinkConfig) -> None:
        self.fading = cfg.fading
        self.snr_db = float(cfg.snr_db)
        self.k_factor = float(cfg.k_factor)
        self.coherence = int(cfg.coherence)
        self.csi = cfg.csi
        self.pilots = int(cfg.pilots)

    @property
    def snr_linear(self) -> float:
        return 10.0 ** (self.snr_db / 10.0)

    @property
    def noise_var(self) -> float:
        """sigma^2 = 1 / SNR (unit signal power, E|h|^2 = 1)."""
        return 1.0 / self.snr_linear

    def channel_uses(self, c: int) -> int:
        """Complex channel uses per sample for c data symbols, pilots included."""
        pilots = self.pilots * num_blocks(c, self.coherence) if self.csi == "estimated" else 0
        return c + pilots

    def _draw_gains(self, b: int, n: int, gen: torch.Generator) -> Tensor:
        """(b, n) complex64 block gains with E|h|^2 = 1, on the generator's device."""
        if self.fading == "awgn":
            return torch.ones(b, n, dtype=torch.complex64, device=gen.device)
        if self.fading == "rayleigh":
            return complex_normal((b, n), gen)
        k = self.k_factor
        theta = torch.rand(b, n, generator=gen, device=gen.device) * (2 * math.pi)
        g = complex_normal((b, n), gen)
        los = torch.polar(torch.full_like(theta, math.sqrt(k / (k + 1))), theta)
        return los + math.sqrt(1 / (k + 1)) * g  # (b, n)

    def draw(self, b: int, c: int, gen: torch.Generator) -> Draws:
        """This link's randomness for a batch of b samples of c symbols: everything but the symbols
        (so a relay can draw it before they arrive, see `channel.hop`)."""
        n = num_blocks(c, self.coherence)
        sigma2 = self.noise_var
        h_blk = self._draw_gains(b, n, gen)  # (b, n)
        h_hat_blk = (estimate_gains(h_blk, sigma2, self.pilots, gen)
                     if self.csi == "estimated" else None)  # (b, n)
        noise = math.sqrt(sigma2) * complex_normal((b, c), gen)  # (b, c)
        return Draws(b, c, h_blk, h_hat_blk, noise)

    def apply(self, x: Tensor, d: Draws) -> ChannelOutput:
        """y = h x + n with the randomness `d` (drawn for x's shape)."""
        b, c = _symbols_shape(x)
        if (b, c) != (d.b, d.c):
            raise ValueError(f"symbols {(b, c)}, but the channel was drawn for {(d.b, d.c)}")
        if self.fading == "awgn":  # h = 1 exactly: skip the product (and the (b, c) gains in memory)
            h = torch.ones(1, 1, dtype=x.dtype, device=x.device).expand(b, c)  # (b, c) view
            y = x + d.noise.to(x.device, x.dtype)  # (b, c)
        else:
            h = (d.h_blk.expand(b, c) if d.h_blk.shape[1] == 1  # one block per sample: a view, no copy
                 else expand_blocks(d.h_blk, c, self.coherence)).to(x.device, x.dtype)  # (b, c)
            y = h * x + d.noise.to(x.device, x.dtype)  # (b, c)
        h_hat_blk = d.h_hat_blk
        if self.csi == "perfect":
            h_hat, h_hat_blk = h, d.h_blk.to(x.device, x.dtype)  # (b, c), (b, n)
        elif self.csi == "estimated":
            h_hat_blk = h_hat_blk.to(x.device, x.dtype)  # (b, n)
            h_hat = expand_blocks(h_hat_blk, c, self.coherence)  # (b, c)
        else:
            h_hat = None
        return ChannelOutput(y=y, h=h, h_hat=h_hat, noise_var=self.noise_var, h_hat_blocks=h_hat_blk)

    def __call__(self, x: Tensor, gen: torch.Generator) -> ChannelOutput:
        return self.apply(x, self.draw(*_symbols_shape(x), gen))

    @staticmethod
    def vjp(grad_y: Tensor, h: Tensor) -> Tensor:
        """dL/dx = conj(h) * dL/dy for y = h x + n (complex grads = dL/dRe + j dL/dIm)."""
        return torch.conj(h) * grad_y  # (b, c)
