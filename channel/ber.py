"""Closed-form bit error rates of Gray-coded QPSK with coherent detection, perfect CSI.

`snr` is linear Es/N0 per complex symbol (E|h|^2 = 1, unit symbol power), so each
bit sees an effective per-dimension SNR of snr * |h|^2 / 2.

    awgn:     Pb = 0.5 erfc(sqrt(snr / 2))
    rayleigh: Pb = 0.5 (1 - sqrt(g / (1 + g))),  g = snr / 2
    rician:   Pb = integral of the awgn Pb over the Rician |h|^2 density (numeric)
"""
from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special


def qpsk_ber_awgn(snr: float) -> float:
    return 0.5 * math.erfc(math.sqrt(snr / 2))


def qpsk_ber_rayleigh(snr: float) -> float:
    g = snr / 2
    return 0.5 * (1 - math.sqrt(g / (1 + g)))


def rician_power_pdf(s: float | np.ndarray, k: float) -> float | np.ndarray:
    """Density of |h|^2 for unit-power Rician fading with linear K factor.

    f(s) = (K+1) exp(-K - (K+1) s) I0(2 sqrt(K (K+1) s)), written with the scaled
    Bessel i0e so that large K does not overflow.
    """
    z = 2 * np.sqrt(k * (k + 1) * s)
    return (k + 1) * np.exp(-(np.sqrt(k) - np.sqrt((k + 1) * s)) ** 2) * special.i0e(z)


def qpsk_ber_rician(snr: float, k: float) -> float:
    """Pb = int_0^inf 0.5 erfc(sqrt(snr s / 2)) f_K(s) ds by adaptive quadrature."""
    def integrand(s: float) -> float:
        return 0.5 * special.erfc(math.sqrt(snr * s / 2)) * rician_power_pdf(s, k)

    # The mass of f_K sits near s = 1 and the erfc factor near s ~ 1/snr: split there.
    knee = min(1.0, 10.0 / max(snr, 1e-12))
    head, _ = integrate.quad(integrand, 0.0, knee, epsabs=0.0, epsrel=1e-10, limit=200)
    tail, _ = integrate.quad(integrand, knee, np.inf, epsabs=0.0, epsrel=1e-10, limit=200)
    return head + tail


def qpsk_ber(fading: str, snr: float, k: float = 0.0) -> float:
    """Closed-form QPSK BER for fading 'awgn', 'rayleigh' or 'rician' (with K = k)."""
    if fading == "awgn":
        return qpsk_ber_awgn(snr)
    if fading == "rayleigh":
        return qpsk_ber_rayleigh(snr)
    if fading == "rician":
        return qpsk_ber_rician(snr, k)
    raise ValueError(f"unknown fading '{fading}'; use awgn, rayleigh or rician")
