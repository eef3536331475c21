"""Network emulation (channel.network, channel.delay) and its config: airtime, queueing,
shared media, loss with retransmission, replayable draws — against hand computations."""
from __future__ import annotations

import threading
import time

import pytest

from channel.delay import Release
from channel.network import DOWNLINK, UPLINK, NetworkModel
from configs.loader import load_config
from configs.schema import ConfigError, NetworkConfig
from tests.conftest import REPO

LINKS = ["user0/audio", "user0/video", "user0/text", "user1/audio", "user1/video", "user1/text"]


def model(**kw) -> NetworkModel:
    return NetworkModel(NetworkConfig(**kw), seed=0, device_links=LINKS)


def test_airtime_is_uses_over_symbol_rate_and_bits_over_bit_rate():
    net = model(symbol_rate=1e6, bit_rate=8e6, links={"user0/video": {"symbol_rate": 2e6}})
    assert net.analog_airtime("user0/audio", 16384) == pytest.approx(0.016384)
    assert net.analog_airtime("user0/video", 16384) == pytest.approx(0.008192)  # its own override
    assert net.digital_airtime("user0/audio", 1000) == pytest.approx(1e-3)  # 8000 bits at 8 Mbit/s
    free = model()
    assert free.analog_airtime("user0/audio", 10**9) == 0 and free.digital_airtime("user0/audio", 10**9) == 0
    assert not free.enabled and free.send("user0/audio", UPLINK, ("stage1", 0, "tokens"), 0.0, 5.0).arrive == 5.0


def test_fdma_splits_the_band_among_the_device_uplinks():
    net = model(symbol_rate=6e5, medium="fdma")
    assert net.analog_airtime("user0/audio", 1000) == pytest.approx(1000 / (6e5 / len(LINKS)))
    a = net.send("user0/audio", UPLINK, ("s", 0, "tokens"), 0.01, 0.0)
    b = net.send("user1/audio", UPLINK, ("s", 0, "tokens"), 0.01, 0.0)
    assert a.queueing_s == b.queueing_s == 0  # every user on the air at once, each on its share


def test_a_link_sends_one_message_at_a_time_and_delivers_in_order():
    net = model(symbol_rate=1e6, delay_ms=5.0, jitter_ms=4.0)
    first = net.send("user0/audio", DOWNLINK, ("stage1", 0, "UPDATE"), 0.010, 100.0)
    second = net.send("user0/audio", DOWNLINK, ("stage1", 1, "TRANSMIT"), 0.001, 100.0)
    assert first.queueing_s == 0 and second.queueing_s == pytest.approx(0.010)  # waits for the first's airtime
    assert 0.005 <= first.propagation_s <= 0.009
    assert first.arrive == pytest.approx(100.0 + 0.010 + first.propagation_s)
    assert second.arrive >= first.arrive  # jitter never reorders a link
    other = net.send("user0/video", DOWNLINK, ("stage1", 1, "TRANSMIT"), 0.001, 100.0)
    assert other.queueing_s == 0  # another link has its own band


def test_tdma_makes_every_device_uplink_queue_for_one_band():
    net = model(symbol_rate=1e6, medium="tdma")
    times = [net.send(link, UPLINK, ("stage1", 0, "tokens"), 0.004, 0.0) for link in LINKS[:3]]
    assert [t.queueing_s for t in times] == pytest.approx([0.0, 0.004, 0.008])
    down = net.send("user0/audio", DOWNLINK, ("stage1", 0, "UPDATE"), 0.004, 0.0)
    assert down.queueing_s == 0  # the shared band is the uplink's


def test_loss_costs_airtime_and_timeouts_with_geometric_attempts():
    p, rto = 0.3, 20.0
    net = model(loss=p, retransmit_ms=rto, max_attempts=50)
    attempts = []
    for step in range(4000):
        t = net.send("user0/audio", UPLINK, ("stage2", step, "tokens"), 0.002, float(step))
        assert t.airtime_s == pytest.approx(t.attempts * 0.002)
        assert t.queueing_s == pytest.approx((t.attempts - 1) * rto / 1e3)
        attempts.append(t.attempts)
    mean = sum(attempts) / len(attempts)
    assert mean == pytest.approx(1 / (1 - p), rel=0.05)  # geometric: E[attempts] = 1 / (1 - p)
    assert sum(a == 1 for a in attempts) / len(attempts) == pytest.approx(1 - p, abs=0.03)


def test_draws_replay_per_seed_link_and_step():
    a, b = model(loss=0.5, jitter_ms=3.0), model(loss=0.5, jitter_ms=3.0)
    key = ("stage1", 7, "tokens")
    ta, tb = a.send("user0/text", UPLINK, key, 0.001, 0.0), b.send("user0/text", UPLINK, key, 0.001, 0.0)
    assert (ta.attempts, ta.propagation_s) == (tb.attempts, tb.propagation_s)
    other_seed = NetworkModel(NetworkConfig(loss=0.5, jitter_ms=3.0), seed=1, device_links=LINKS)
    draws = {other_seed.send("user0/text", UPLINK, ("stage1", s, "tokens"), 0.001, 10.0 * s).propagation_s
             for s in range(20)}
    assert len(draws) == 20  # a fresh draw per step


def test_max_attempts_bounds_the_retransmissions():
    net = model(loss=0.99, max_attempts=3)
    assert all(net.send("user0/audio", UPLINK, ("s", k, "t"), 0.0, 0.0).attempts <= 3 for k in range(50))


def test_network_config_validates_and_names_the_key():
    cfg = load_config(REPO / "configs" / "tiny.yaml", ["network.symbol_rate=1000000",
                                                       "network.links={user0/audio: {delay_ms: 3}}"])
    assert cfg.network.link("user0/audio").delay_ms == 3 and cfg.network.link("user0/video").delay_ms == 0
    assert cfg.network.link("user0/video").symbol_rate == 1e6 and cfg.network.emulated
    assert not load_config(REPO / "configs" / "tiny.yaml").network.emulated
    with pytest.raises(ConfigError, match=r"'network.links.user0/audio.loss': must be in \[0, 1\)"):
        NetworkConfig(links={"user0/audio": {"loss": 1.0}})
    with pytest.raises(ConfigError, match=r"'network.links.user0/audio.rate': unknown key"):
        NetworkConfig(links={"user0/audio": {"rate": 1.0}})
    with pytest.raises(ConfigError, match=r"'network.links.audio0': links are named like 'user0/audio'"):
        NetworkConfig(links={"audio0": {}})
    with pytest.raises(ConfigError, match=r"'network.medium'"):
        NetworkConfig(medium="cdma")
    with pytest.raises(ConfigError, match=r"'network.symbol_rate': must be >= 0"):
        NetworkConfig(symbol_rate=-1)


def test_release_runs_each_callback_at_its_time_in_time_order():
    rel = Release()
    done, lock, finished = [], threading.Lock(), threading.Event()
    t0 = time.monotonic()

    def mark(name):
        def fn():
            with lock:
                done.append((name, time.monotonic() - t0))
                if len(done) == 3:
                    finished.set()
        return fn

    rel.at(t0 + 0.06, mark("late"))
    rel.at(t0 + 0.02, mark("early"))
    rel.at(t0 + 0.02, mark("early-2"))  # a tie keeps submission order
    assert finished.wait(10)
    rel.close()
    assert [n for n, _ in done] == ["early", "early-2", "late"]
    assert done[0][1] >= 0.02 and done[2][1] >= 0.06  # never before its time
