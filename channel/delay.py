"""Real-time release of held messages: the relay's netem.

`Release.at(t, fn)` runs `fn` on one worker thread once `time.monotonic()` reaches `t`,
in order of `t` (ties in submission order). The network model gives each link
non-decreasing arrival times, so a link's messages leave in the order they came.
Waiting here is the emulated link itself (airtime, queueing, propagation), not a
readiness wait.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Release:
    def __init__(self, name: str = "link-release"):
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._count = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def at(self, t: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (t, next(self._count), fn))
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, fn = heapq.heappop(self._heap)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            try:
                fn()
            except Exception:  # a failed delivery must not stop the others
                log.exception("delivering a held message failed")
