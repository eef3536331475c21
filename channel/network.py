"""Network emulation of the links: airtime, queueing, propagation, loss.

Conventions (DESIGN.md "Link emulation conventions"):

- A device's token uplink is analog: a message of U complex channel uses (pilots
  included) is on air for U / symbol_rate seconds. Digital payloads (the text node's
  labels, every downlink task and gradient) are on air for 8 * bytes / bit_rate seconds.
  A rate of 0 means unlimited (no airtime).
- Loss: each transmission is lost with probability `loss`; a lost one costs its airtime
  and `retransmit_ms` before it is sent again, up to `max_attempts` transmissions (the
  last always arrives: the protocol needs reliable, ordered delivery).
- Propagation: `delay_ms` plus a uniform draw from [0, jitter_ms] per message.
- Queueing: a link (per direction) sends one message at a time, first come first
  served; a message waits while the one before it is on air. Retransmission timeouts
  count as queueing. Delivery keeps each link's order (jitter never reorders).
- Shared medium for the device uplinks (`network.medium`): `dedicated` gives each link
  its own band; `tdma` makes every device uplink queue for one band at the full rate;
  `fdma` splits the symbol rate evenly among the run's device uplinks, all sending at once.

Every draw comes from a generator seeded by (run seed, link, direction, phase, step,
kind), so the relay and the in-process reference model the same costs: the relay holds
each message until its modelled arrival (in real time, like netem), the in-process
reference only adds the numbers up.

`now` is any clock in seconds: the relay passes time.monotonic(), the in-process
transport a virtual clock.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from configs.schema import NetLinkConfig, NetworkConfig
from foundation.seeding import derive_seed

UPLINK, DOWNLINK = "uplink", "downlink"


@dataclass(frozen=True)
class Transfer:
    """The modelled cost of one message on one link (seconds), and when it arrives."""

    airtime_s: float = 0.0  # on air, every transmission
    queueing_s: float = 0.0  # waiting for the medium, retransmission timeouts included
    propagation_s: float = 0.0
    attempts: int = 1
    arrive: float = 0.0  # on the caller's clock

    @property
    def total_s(self) -> float:
        return self.airtime_s + self.queueing_s + self.propagation_s


class NetworkModel:
    """The links of one run. Thread-safe: the relay schedules from several threads."""

    def __init__(self, cfg: NetworkConfig, seed: int, device_links: list[str]):
        self.cfg, self.seed = cfg, seed
        self.enabled = cfg.emulated
        self._share = len(device_links) if cfg.medium == "fdma" else 1
        self._busy: dict[tuple[str, str], float] = {}  # medium -> free from
        self._last: dict[tuple[str, str], float] = {}  # (link, direction) -> last arrival
        self._lock = threading.Lock()

    def link(self, name: str) -> NetLinkConfig:
        return self.cfg.link(name)

    # ------------------------------------------------------------ airtime of one transmission
    def analog_airtime(self, link: str, channel_uses: int) -> float:
        """Seconds on air for `channel_uses` complex symbols on `link`'s uplink."""
        rate = self.link(link).symbol_rate / self._share
        return channel_uses / rate if rate > 0 else 0.0

    def digital_airtime(self, link: str, nbytes: int) -> float:
        """Seconds on air for `nbytes` of a digital payload on `link`."""
        rate = self.link(link).bit_rate
        return 8.0 * nbytes / rate if rate > 0 else 0.0

    # ------------------------------------------------------------ one message
    def send(self, link: str, direction: str, key: tuple, airtime_s: float, now: float) -> Transfer:
        """Schedule one message of `airtime_s` (one transmission) on `link` at `now`.

        key: (phase, step, kind), naming the message for its draws.
        """
        if not self.enabled:
            return Transfer(arrive=now)
        net = self.link(link)
        rng = random.Random(derive_seed(self.seed, "network", link, direction, *key))
        attempts = 1
        while attempts < net.max_attempts and net.loss > 0 and rng.random() < net.loss:
            attempts += 1
        jitter = rng.random() * net.jitter_ms / 1e3 if net.jitter_ms > 0 else 0.0
        on_air = attempts * airtime_s
        waits = (attempts - 1) * net.retransmit_ms / 1e3
        propagation = net.delay_ms / 1e3 + jitter
        medium = ("*", UPLINK) if direction == UPLINK and self.cfg.medium == "tdma" else (link, direction)
        with self._lock:
            start = max(now, self._busy.get(medium, now))
            end = start + on_air + waits
            self._busy[medium] = end
            arrive = max(end + propagation, self._last.get((link, direction), now))
            self._last[(link, direction)] = arrive
        return Transfer(on_air, start - now + waits, arrive - end, attempts, arrive)
