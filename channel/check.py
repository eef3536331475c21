"""`tokcom channel-check`: the link model against closed-form QPSK bit error rates.

For AWGN, Rayleigh and Rician (K = 3) fading, with coherence 1 (independent fades per
symbol) and perfect CSI, at each SNR: Gray-coded QPSK from Sionna's `Mapper` goes
through this project's `LinkChannel`, is zero-forced with the true gain and
hard-demapped by Sionna's `Demapper`. Each row reports the SNR measured from the draws
(E|h x|^2 / E|n|^2) beside the nominal one, and the measured BER beside the closed
form of `channel.ber`. A row passes when the SNR is within 0.2 dB and, wherever the
closed form is at least 1e-3, the BER is within 10 % of it (2e6 bits per point keep
the relative error of a 1e-3 BER near 2 %).

Shapes: c complex symbols per chunk (the batch dimension is 1).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys

import torch
from tqdm import tqdm

from channel.ber import qpsk_ber
from channel.equalize import equalize
from channel.fading import LinkChannel
from configs.schema import LinkConfig
from foundation.seeding import make_generator

log = logging.getLogger(__name__)

FADINGS = ("awgn", "rayleigh", "rician")
K_FACTOR = 3.0
SNR_TOL_DB = 0.2
BER_REL_TOL = 0.10
BER_FLOOR = 1e-3  # below this the closed form is reported but not checked
CHUNK_SYMBOLS = 1 << 20  # bounds memory for large --bits


def _measure_point(fading: str, snr_db: float, bits: int, seed: int) -> dict:
    """Send `bits` random bits (rounded up to whole QPSK symbols) over one link."""
    from sionna.phy.mapping import Demapper, Mapper  # Sionna imports take seconds

    mapper = Mapper("qam", 2, device="cpu")
    demapper = Demapper("maxlog", "qam", 2, hard_out=True, device="cpu")
    link = LinkChannel(LinkConfig(fading=fading, snr_db=snr_db, k_factor=K_FACTOR,
                                  coherence=1, csi="perfect", pilots=1, equalizer="zf"))
    gen = make_generator("channel-check", seed, fading, snr_db)
    symbols = math.ceil(bits / 2)
    errors, signal_power, noise_power = 0, 0.0, 0.0
    for start in range(0, symbols, CHUNK_SYMBOLS):
        c = min(CHUNK_SYMBOLS, symbols - start)
        b = torch.randint(0, 2, (1, 2 * c), generator=gen).float()  # (1, 2c)
        x = mapper(b)  # (1, c)
        out = link(x, gen)
        hx = out.h * x  # (1, c)
        signal_power += hx.abs().square().double().sum().item()
        noise_power += (out.y - hx).abs().square().double().sum().item()
        x_hat = equalize(out.y, out.h_hat, out.noise_var, "zf")  # (1, c)
        no = out.noise_var / out.h.abs().square()  # (1, c) noise variance after ZF
        b_hat = demapper(x_hat, no)  # (1, 2c)
        errors += int((b_hat != b).sum())
    n_bits = 2 * symbols
    ber = errors / n_bits
    theory = qpsk_ber(fading, 10 ** (snr_db / 10), K_FACTOR)
    snr_measured = 10 * math.log10(signal_power / noise_power)
    checked = theory >= BER_FLOOR
    ok = abs(snr_measured - snr_db) <= SNR_TOL_DB
    if checked:
        ok = ok and abs(ber - theory) <= BER_REL_TOL * theory
    return {
        "fading": fading,
        "k_factor": K_FACTOR if fading == "rician" else None,
        "snr_db": float(snr_db),
        "snr_measured_db": snr_measured,
        "bits": n_bits,
        "bit_errors": errors,
        "ber": ber,
        "ber_theory": theory,
        "ber_checked": checked,
        "pass": ok,
    }


def run_check(snrs_db: tuple[float, ...] = (0, 5, 10, 15, 20), bits: int = 2_000_000,
              seed: int = 0, fadings: tuple[str, ...] = FADINGS, progress: bool = True) -> dict:
    """Measure every (fading, SNR) point; returns {"rows": [...], "pass": bool}."""
    if bits < 2:
        raise ValueError(f"bits={bits} is too few; send at least one QPSK symbol (bits >= 2)")
    points = [(f, float(s)) for f in fadings for s in snrs_db]
    rows = [_measure_point(f, s, bits, seed)
            for f, s in tqdm(points, desc="channel-check", disable=not progress)]
    for r in rows:
        if not r["pass"]:
            log.warning("channel-check failed at %s %.1f dB: SNR %.2f dB, BER %.3e vs %.3e",
                        r["fading"], r["snr_db"], r["snr_measured_db"], r["ber"], r["ber_theory"])
    return {"rows": rows, "pass": all(r["pass"] for r in rows)}


def format_table(result: dict) -> str:
    """The rows as an aligned text table with a verdict line."""
    head = (f"{'fading':<12}{'SNR dB':>7}{'measured':>10}{'BER':>12}{'theory':>12}"
            f"{'rel.err':>9}  {'checked':<8}{'pass':<4}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        name = r["fading"] + (f" K={r['k_factor']:g}" if r["k_factor"] is not None else "")
        rel = (r["ber"] - r["ber_theory"]) / r["ber_theory"]
        rel_text = f"{100 * rel:+.1f}%" if r["ber_checked"] else "-"
        lines.append(f"{name:<12}{r['snr_db']:>7.1f}{r['snr_measured_db']:>10.2f}"
                     f"{r['ber']:>12.3e}{r['ber_theory']:>12.3e}{rel_text:>9}  "
                     f"{'yes' if r['ber_checked'] else 'no':<8}{'ok' if r['pass'] else 'FAIL':<4}")
    lines.append(f"SNR within {SNR_TOL_DB} dB; BER within {BER_REL_TOL:.0%} where theory >= "
                 f"{BER_FLOOR:g}: {'PASS' if result['pass'] else 'FAIL'}")
    return "\n".join(lines)


def _snr_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a list of SNRs; write comma-separated dB values such as 0,5,10")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("--snr-db", type=_snr_list, default=(0.0, 5.0, 10.0, 15.0, 20.0),
                        help="comma-separated SNRs in dB (default 0,5,10,15,20)")
    parser.add_argument("--bits", type=int, default=2_000_000, help="bits per point (default 2e6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bit and channel draws")


def run(args: argparse.Namespace) -> int:
    """Run the check and print the result; exit code 0 when every row passes."""
    result = run_check(args.snr_db, bits=args.bits, seed=args.seed)
    text = json.dumps(result, indent=2) if args.json else format_table(result)
    sys.stdout.write(text + "\n")
    return 0 if result["pass"] else 1
