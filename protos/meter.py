"""Per-link metering: messages, payload bytes, serialised bytes, complex channel
uses, airtime and latency, one entry per (link, direction).

The entry format is the run directory's `links.json` contract (DESIGN.md), plus
`airtime_s` (total seconds on air) and `latency_split_ms`: the mean per message of the
modelled airtime, queueing and propagation and of the measured transport time (the
measured latency minus the modelled parts; None where nothing was measured, as in the
in-process reference). The receiver of a message meters the link it crossed.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Entry:
    messages: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    channel_uses: int = 0
    samples: int = 0
    latencies: list[float] = field(default_factory=list)
    airtime_s: float = 0.0
    queueing_s: float = 0.0
    propagation_s: float = 0.0
    transport_s: float = 0.0  # sum over the messages with a measured latency


_SUMS = ("airtime_s", "queueing_s", "propagation_s", "transport_s")


class LinkMeter:
    """Thread-safe accumulator; `report()` gives the `links.json` entries."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def record(self, link: str, direction: str, *, payload_bytes: int, wire_bytes: int,
               channel_uses: int = 0, samples: int = 0, latency_ms: float | None = None,
               airtime_s: float = 0.0, queueing_s: float = 0.0, propagation_s: float = 0.0) -> None:
        """One message. latency_ms: measured, from the sender taking it to the receiver having it
        (modelled parts included); the modelled parts are given in seconds."""
        if direction not in ("uplink", "downlink"):
            raise ValueError(f"direction must be 'uplink' or 'downlink', got {direction!r}")
        with self._lock:
            e = self._entries.setdefault((link, direction), _Entry())
            e.messages += 1
            e.payload_bytes += int(payload_bytes)
            e.wire_bytes += int(wire_bytes)
            e.channel_uses += int(channel_uses)
            e.samples += int(samples)
            e.airtime_s += airtime_s
            e.queueing_s += queueing_s
            e.propagation_s += propagation_s
            if latency_ms is not None:
                e.latencies.append(float(latency_ms))
                e.transport_s += max(0.0, latency_ms / 1e3 - airtime_s - queueing_s - propagation_s)

    def export(self) -> list[dict]:
        """Raw entries (every latency sample kept) for sending to another process."""
        with self._lock:
            return [{"link": link, "direction": d, "messages": e.messages, "payload_bytes": e.payload_bytes,
                     "wire_bytes": e.wire_bytes, "channel_uses": e.channel_uses, "samples": e.samples,
                     "latency_ms": list(e.latencies), **{k: getattr(e, k) for k in _SUMS}}
                    for (link, d), e in sorted(self._entries.items())]

    def merge(self, raw: list[dict]) -> None:
        """Add entries produced by another process's `export()`."""
        with self._lock:
            for r in raw:
                e = self._entries.setdefault((r["link"], r["direction"]), _Entry())
                e.messages += int(r["messages"])
                e.payload_bytes += int(r["payload_bytes"])
                e.wire_bytes += int(r["wire_bytes"])
                e.channel_uses += int(r["channel_uses"])
                e.samples += int(r["samples"])
                e.latencies.extend(float(x) for x in r["latency_ms"])
                for k in _SUMS:
                    setattr(e, k, getattr(e, k) + float(r[k]))

    def report(self) -> list[dict]:
        with self._lock:
            items = sorted(self._entries.items())
        out = []
        for (link, direction), e in items:
            lat = np.asarray(e.latencies, dtype=np.float64)
            latency = ({"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                        "p99": float(np.percentile(lat, 99)), "mean": float(lat.mean())}
                       if lat.size else {"p50": None, "p95": None, "p99": None, "mean": None})
            n = max(e.messages, 1)
            split = {"airtime": e.airtime_s / n * 1e3, "queueing": e.queueing_s / n * 1e3,
                     "propagation": e.propagation_s / n * 1e3,
                     "transport": e.transport_s / lat.size * 1e3 if lat.size else None}
            out.append({"link": link, "direction": direction, "messages": e.messages,
                        "payload_bytes": e.payload_bytes, "wire_bytes": e.wire_bytes,
                        "channel_uses": e.channel_uses, "samples": e.samples, "airtime_s": e.airtime_s,
                        "latency_ms": latency, "latency_split_ms": split})
        return out


def format_links(entries: list[dict]) -> str:
    """The per-link table printed at the end of a run."""
    head = f"{'link':<34} {'dir':<8} {'msgs':>6} {'payload MB':>11} {'wire MB':>9} {'ch. uses':>11} " \
           f"{'airtime s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    lines = [head, "-" * len(head)]
    for e in entries:
        lat = e["latency_ms"]
        fmt = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
        lines.append(f"{e['link']:<34} {e['direction']:<8} {e['messages']:>6} {e['payload_bytes'] / 1e6:>11.3f} "
                     f"{e['wire_bytes'] / 1e6:>9.3f} {e['channel_uses']:>11} {e.get('airtime_s', 0.0):>9.3f} "
                     f"{fmt(lat['p50'])} "
                     f"{fmt(lat['p95'])} {fmt(lat['p99'])}")
    return "\n".join(lines)
