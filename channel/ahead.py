"""The relay's channel randomness, drawn ahead of the symbols.

A round's gains, pilots and noise do not depend on the symbols, so the relay draws them in a
background thread, as a channel emulator's noise source runs ahead: after a device's tokens,
for its next round of the phase (the stride is learnt, so users taking turns are foreseen),
or when a TRANSMIT passes down that was not foreseen. The draw is `ChannelHop.draw`, the same
generator and order as the inline draw, so the outputs are bitwise the same either way.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from channel.fading import Draws
from channel.hop import ChannelHop

# Complex samples per round below which a link's draw is made inline, when its tokens arrive: a
# hand-off to the drawing thread and back costs ~0.3-0.4 ms of CPU on a busy 2-core machine, what
# drawing ~50k samples costs (6.8 ns each). Measured at the tiny preset (16,384 samples per link):
# drawing ahead cost the relay 1.2 ms of CPU per round, most of it the hand-offs.
DRAW_AHEAD_MIN = 1 << 16


class DrawAhead:
    def __init__(self, hop: ChannelHop):
        self.hop = hop
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-draw")
        self.draws: dict[str, tuple[tuple[str, int], Future]] = {}  # node -> ((phase, step), the draw)
        self.widths: dict[str, int] = {}  # complex symbols per sample of each device, from its last tokens
        self.last_step: dict[str, tuple[str, int]] = {}  # (phase, step) of each device's last tokens

    def start(self, node: str, phase: str, step: int, b: int) -> None:
        """Start drawing `node`'s channel for (phase, step) for b samples, unless that draw is under
        way, the node's width is not known yet, or it is too small to pay for the hand-off."""
        c = self.widths.get(node)
        if c and b * c >= DRAW_AHEAD_MIN and self.draws.get(node, ((None, None),))[0] != (phase, step):
            self.draws[node] = ((phase, step), self.pool.submit(self.hop.draw, node, phase, step, b, c))

    def take(self, node: str, phase: str, step: int, c: int) -> Draws | None:
        """The draw made ahead for these tokens (c symbols per sample), or None to draw inline."""
        self.widths[node] = c
        key, drawn = self.draws.pop(node, (None, None))
        return drawn.result() if key == (phase, step) else None

    def after(self, node: str, phase: str, step: int, b: int) -> None:
        """`node`'s tokens of (phase, step) have passed: start the draw of its next round."""
        last = self.last_step.get(node)  # a node's rounds come every `stride` steps (users taking turns)
        stride = step - last[1] if last and last[0] == phase and step > last[1] else 1
        self.last_step[node] = (phase, step)
        self.start(node, phase, step + stride, b)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
