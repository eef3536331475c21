"""The channel hop both transports call: the link, the kept gains and the gradient, the CSI
at its real size, the wire rounding — against computations made here."""
from __future__ import annotations

import math

import pytest
import torch

from channel.fading import LinkChannel
from channel.hop import ChannelHop, HopError
from channel.link import apply_link, expand_csi, link_generator
from configs.loader import load_config
from protos import codec
from protos.precision import PRECISIONS, round_to_wire, symbol_bytes
from tests.conftest import REPO


def cfg(*overrides):
    return load_config(REPO / "configs" / "tiny.yaml", list(overrides))


def symbols(b=4, c=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(b, c, generator=g), torch.randn(b, c, generator=g)) / math.sqrt(2)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_round_to_wire_is_what_the_codec_gives_back(precision):
    z = symbols()
    assert torch.equal(round_to_wire(z, precision), codec.decode_symbols(codec.encode_symbols(z, precision)))
    assert symbol_bytes(z.numel(), precision) == len(codec.encode_symbols(z, precision).data)


def test_uplink_then_downlink_is_the_channel_and_its_vjp():
    c = cfg("channel.fading=rayleigh", "channel.coherence=100", "wire.precision=float16")
    hop, x = ChannelHop(c), round_to_wire(symbols(), "float16")
    up = hop.uplink("user0/audio", "stage1", 3, x)
    # the same draws, made here: y = h x + n with the generator of (seed, link, phase, step)
    ref = LinkChannel(c.channel.link("user0/audio"))(x, link_generator(c.seed, "user0/audio", "stage1", 3))
    assert torch.equal(up.y, round_to_wire(ref.y, "float16"))
    assert up.csi.shape == (4, 3)  # one gain per block of 100 symbols per sample
    assert torch.equal(expand_csi(up.csi, 300, c.channel.link("user0/audio")), round_to_wire(ref.h_hat, "float16"))
    assert up.channel_uses == 4 * 300 and up.payload_bytes == 4 * 300 * 2 * 2
    g = round_to_wire(symbols(seed=1), "float16")
    dx = hop.downlink("user0/audio", "stage1", 3, g)
    assert torch.equal(dx, round_to_wire(torch.conj(ref.h) * g, "float16"))


def test_csi_is_absent_when_the_receiver_does_not_use_it_and_tiny_under_awgn():
    assert ChannelHop(cfg("channel.equalizer=none")).uplink("user0/audio", "eval", 0, symbols()).csi is None
    assert ChannelHop(cfg("channel.csi=none")).uplink("user0/audio", "eval", 0, symbols()).csi is None
    up = ChannelHop(cfg()).uplink("user0/audio", "eval", 0, symbols())  # awgn, perfect CSI, one block
    assert up.csi.shape == (4, 1) and torch.equal(up.csi, torch.ones(4, 1, dtype=torch.complex64))


def test_estimated_csi_counts_its_pilots_as_channel_uses():
    up = ChannelHop(cfg("channel.csi=estimated", "channel.coherence=100", "channel.pilots=8")).uplink(
        "user0/video", "stage2", 1, symbols())
    assert up.channel_uses == 4 * (300 + 3 * 8)


def test_gradient_needs_its_own_rounds_channel_state():
    hop = ChannelHop(cfg())
    with pytest.raises(HopError, match="no channel state of user0/audio for stage1 step 0"):
        hop.downlink("user0/audio", "stage1", 0, symbols())
    hop.uplink("user0/audio", "stage1", 0, symbols())
    hop.uplink("user0/audio", "stage1", 1, symbols())  # the next round replaces it
    with pytest.raises(HopError, match="holds stage1 step 1"):
        hop.downlink("user0/audio", "stage1", 0, symbols())
    with pytest.raises(HopError, match="shape"):
        hop.downlink("user0/audio", "stage1", 1, symbols(c=10))


def test_eval_rounds_keep_h_too_so_both_transports_hold_the_same_state():
    hop = ChannelHop(cfg("channel.fading=rayleigh"))
    x = symbols()
    hop.uplink("user0/video", "eval", 2, x)
    ref = apply_link(cfg("channel.fading=rayleigh").channel.link("user0/video"), 0, "user0/video", "eval", 2, x)
    assert torch.equal(hop.downlink("user0/video", "eval", 2, torch.ones_like(x)), torch.conj(ref.h))


def test_uplink_cost_splits_analog_airtime_and_the_labels():
    hop = ChannelHop(cfg("network.symbol_rate=1000000", "network.bit_rate=8000000"))
    t, labels = hop.uplink_cost("user0/text", "stage1", 0, channel_uses=2048, label_bytes=1000, now=0.0)
    assert t.airtime_s == pytest.approx(2048 / 1e6 + 1e-3) and labels == pytest.approx(1e-3)


@pytest.mark.parametrize("channel", [["channel.fading=awgn"], ["channel.fading=rayleigh"],
                                     ["channel.fading=rician", "channel.coherence=64", "channel.csi=estimated"]])
def test_a_draw_made_ahead_gives_the_uplink_bit_for_bit(channel):
    """What the relay draws before the symbols arrive is the draw the reference makes inline."""
    c = cfg(*channel)
    x = symbols(b=4, c=300)
    inline = ChannelHop(c).uplink("user0/video", "stage2", 5, x)
    hop = ChannelHop(c)
    ahead = hop.uplink("user0/video", "stage2", 5, x, hop.draw("user0/video", "stage2", 5, 4, 300))
    assert torch.equal(ahead.y, inline.y) and ahead.noise_var == inline.noise_var
    assert (ahead.csi is None) == (inline.csi is None) and (ahead.csi is None or torch.equal(ahead.csi, inline.csi))
    # h = 1 under AWGN: y - x is the noise alone, of the configured variance
    if channel == ["channel.fading=awgn"]:
        noise = inline.y - x
        assert noise.abs().square().mean().item() == pytest.approx(10 ** (-c.channel.snr_db / 10), rel=0.15)
    g = symbols(b=4, c=300, seed=1)
    ref = LinkChannel(c.channel.link("user0/video"))(x, link_generator(c.seed, "user0/video", "stage2", 5))
    assert torch.equal(hop.downlink("user0/video", "stage2", 5, g), torch.conj(ref.h) * g)  # conj(h) g; g under AWGN
    # a draw for another batch shape is not used: the uplink draws its own
    other = ChannelHop(c).uplink("user0/video", "stage2", 5, x, hop.draw("user0/video", "stage2", 5, 2, 300))
    assert torch.equal(other.y, inline.y)
