"""The relay's channel drawn ahead (`channel.ahead.DrawAhead`) against the reference's inline draw.

The relay object is driven directly with real Tokens messages: its edge stream is a stand-in
that never answers, and what it forwards is read from its outbox to the edge. Links large
enough are drawn ahead in the relay's drawing thread, small ones inline; both must give the
symbols `ChannelHop.uplink` gives with the draw made inline, bit for bit, round after round."""
from __future__ import annotations

import threading

import pytest
import torch

from channel import ahead as ahead_mod
from channel import relay as relay_mod
from channel.hop import ChannelHop
from protos import codec
from protos import tokcom_pb2 as pb
from protos.parts import NONE, Parts
from tests.test_hop import cfg, symbols


class _SilentEdge:
    """An edge stream that stays open and sends nothing."""

    def __init__(self):
        self.done = threading.Event()

    def Link(self, requests):
        def responses():
            self.done.wait()
            return
            yield

        return responses()


def _tokens(node: str, step: int, x: torch.Tensor, s: int, d: int) -> pb.Up:
    up = pb.Up()
    t = up.tokens
    t.node, t.phase, t.step, t.s, t.d = node, "stage1", step, s, d
    codec.encode_symbols(x, into=t.symbols, parts=Parts(), path="tokens.symbols")
    return up


@pytest.mark.parametrize("minimum", [0, 1 << 30], ids=["drawn-ahead", "inline"])
def test_relay_forwards_the_reference_channel_output_bit_for_bit(monkeypatch, minimum):
    monkeypatch.setattr(ahead_mod, "DRAW_AHEAD_MIN", minimum)
    c = cfg("channel.fading=rayleigh", "channel.coherence=16")
    edge = _SilentEdge()
    relay = relay_mod.Relay(c, edge)
    try:
        node, s = "user0/audio", c.transmitter.audio.tokens
        d = 8
        reference = ChannelHop(c)
        given = []  # whether each uplink got a draw made ahead
        inner = relay.hop.uplink
        relay.hop.uplink = lambda *a, **k: given.append(a[4] is not None) or inner(*a, **k)
        for step in range(4):
            x = symbols(b=2, c=s * d // 2, seed=step)
            relay._uplink(node, _tokens(node, step, x, s, d), NONE)
            if minimum == 0 and step >= 1:  # after the first tokens the next round's draw is under way
                assert relay.ahead.draws[node][0] == ("stage1", step + 1)
            if minimum:
                assert node not in relay.ahead.draws
            fwd = relay.to_edge._q.get(timeout=5)
            y = codec.decode_symbols(fwd.tokens.symbols)
            want = reference.uplink(node, "stage1", step, x)
            assert torch.equal(y, want.y)
        assert given == ([False, True, True, True] if minimum == 0 else [False] * 4)
    finally:
        edge.done.set()
        relay.close()
