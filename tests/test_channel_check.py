"""`tokcom channel-check` and the closed-form QPSK BERs it checks against."""
import argparse
import json
import math

import numpy as np
import pytest
from scipy import integrate, special, stats

import channel.check as check
from channel.ber import qpsk_ber, qpsk_ber_awgn, qpsk_ber_rayleigh, qpsk_ber_rician, rician_power_pdf

SNRS = [10 ** (db / 10) for db in (0, 5, 10, 15, 20)]


# ---------------------------------------------------------------- closed forms, independently


@pytest.mark.parametrize("snr", SNRS)
def test_awgn_ber_is_q_of_sqrt_snr(snr):
    # Gray QPSK = two BPSK rails, each with amplitude sqrt(Es/2) and noise variance N0/2
    assert qpsk_ber_awgn(snr) == pytest.approx(stats.norm.sf(math.sqrt(snr)), rel=1e-9)


@pytest.mark.parametrize("snr", SNRS)
def test_rayleigh_ber_equals_awgn_ber_averaged_over_exponential_power(snr):
    avg, _ = integrate.quad(lambda p: stats.norm.sf(math.sqrt(snr * p)) * math.exp(-p), 0, np.inf,
                            epsabs=0, epsrel=1e-10, limit=200)
    assert qpsk_ber_rayleigh(snr) == pytest.approx(avg, rel=1e-6)


def _craig_rician(snr, k):
    """Craig's form with the Rician MGF: (1/pi) int_0^{pi/2} M(-snr/(2 sin^2 phi)) dphi."""
    def mgf(phi):
        s = -snr / 2 / math.sin(phi) ** 2
        a = 1 + k - s
        return (1 + k) / a * math.exp(k * s / a)
    return integrate.quad(mgf, 0, math.pi / 2, epsabs=0, epsrel=1e-12)[0] / math.pi


@pytest.mark.parametrize("snr", SNRS)
@pytest.mark.parametrize("k", [0.5, 3.0, 20.0])
def test_rician_ber_matches_craig_mgf_form(snr, k):
    assert qpsk_ber_rician(snr, k) == pytest.approx(_craig_rician(snr, k), rel=1e-6)


def test_rician_limits_and_density():
    for snr in SNRS:
        assert qpsk_ber_rician(snr, 0.0) == pytest.approx(qpsk_ber_rayleigh(snr), rel=1e-8)
    # 2(K+1)|h|^2 is noncentral chi-square with 2 degrees of freedom and nc = 2K
    k, s = 3.0, np.linspace(0.01, 4, 50)
    assert np.allclose(rician_power_pdf(s, k), 2 * (k + 1) * stats.ncx2.pdf(2 * (k + 1) * s, 2, 2 * k))
    # no overflow at large K: the density stays finite and keeps unit mass near |h|^2 = 1
    assert integrate.quad(lambda v: rician_power_pdf(v, 400.0), 0, 3, points=[1.0])[0] == \
        pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="unknown fading"):
        qpsk_ber("tdl", 1.0)


# ---------------------------------------------------------------- the measured check


@pytest.fixture(scope="module")
def quick_result():
    return check.run_check(snrs_db=(0, 10), bits=400_000, seed=0, progress=False)


def test_check_rows_agree_with_theory(quick_result):
    rows = quick_result["rows"]
    assert [(r["fading"], r["snr_db"]) for r in rows] == [
        (f, s) for f in ("awgn", "rayleigh", "rician") for s in (0.0, 10.0)]
    assert quick_result["pass"] is True
    for r in rows:
        assert r["bits"] == 400_000
        assert r["snr_measured_db"] == pytest.approx(r["snr_db"], abs=0.1)
        assert r["ber"] == pytest.approx(r["bit_errors"] / r["bits"])
    by = {(r["fading"], r["snr_db"]): r for r in rows}
    # expected values computed here, not by the code under test
    assert by[("awgn", 0.0)]["ber"] == pytest.approx(stats.norm.sf(1.0), rel=0.03)
    assert by[("rayleigh", 0.0)]["ber"] == pytest.approx(0.5 * (1 - math.sqrt(1 / 3)), rel=0.03)
    assert by[("rayleigh", 10.0)]["ber"] == pytest.approx(0.5 * (1 - math.sqrt(5 / 6)), rel=0.05)
    assert by[("rician", 10.0)]["ber"] == pytest.approx(_craig_rician(10.0, 3.0), rel=0.05)
    # awgn at 10 dB: 7.8e-4 is below the 1e-3 floor, reported but not checked
    assert by[("awgn", 10.0)]["ber_checked"] is False
    assert by[("rician", 10.0)]["k_factor"] == 3.0 and by[("awgn", 0.0)]["k_factor"] is None


def test_check_is_reproducible_for_a_seed():
    a = check.run_check(snrs_db=(5,), bits=20_000, seed=3, fadings=("rayleigh",), progress=False)
    b = check.run_check(snrs_db=(5,), bits=20_000, seed=3, fadings=("rayleigh",), progress=False)
    c = check.run_check(snrs_db=(5,), bits=20_000, seed=4, fadings=("rayleigh",), progress=False)
    assert a == b and a["rows"][0]["bit_errors"] != c["rows"][0]["bit_errors"]


def test_check_fails_when_theory_and_measurement_disagree(monkeypatch):
    monkeypatch.setattr(check, "qpsk_ber", lambda fading, snr, k: 2 * qpsk_ber(fading, snr, k))
    result = check.run_check(snrs_db=(0,), bits=100_000, fadings=("awgn",), progress=False)
    assert result["pass"] is False and result["rows"][0]["pass"] is False


def _parse(argv):
    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_json_output_and_exit_code(capsys):
    rc = check.run(_parse(["--json", "--snr-db", "0,5", "--bits", "100000", "--seed", "1"]))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["pass"] is True and set(out) == {"rows", "pass"}
    assert [r["snr_db"] for r in out["rows"]] == [0.0, 5.0] * 3


def test_cli_table_and_failing_exit_code(capsys, monkeypatch):
    monkeypatch.setattr(check, "qpsk_ber", lambda fading, snr, k: 0.5)
    rc = check.run(_parse(["--snr-db", "0", "--bits", "20000"]))
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert lines[0].split() == ["fading", "SNR", "dB", "measured", "BER", "theory", "rel.err",
                                "checked", "pass"]
    assert len(lines) == 2 + 3 + 1 and lines[-1].endswith("FAIL")
    assert len({len(line) for line in lines[2:5]}) == 1  # aligned columns


def test_cli_rejects_a_malformed_snr_list():
    with pytest.raises(SystemExit):
        _parse(["--snr-db", "ten"])
    assert _parse([]).snr_db == (0.0, 5.0, 10.0, 15.0, 20.0)
