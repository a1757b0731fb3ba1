"""A log throttle: at most `burst` lines per period, with a count of what was held back."""

from __future__ import annotations

import threading
import time


class Throttle:
    """`take()` lets at most `burst` callers through per `period` seconds; thread-safe."""

    def __init__(self, burst: int = 1, period: float = 60.0) -> None:
        self.burst = burst
        self.period = period
        self._lock = threading.Lock()
        self._window = -1e18
        self._used = 0
        self._held = 0

    def take(self) -> int | None:
        """None: stay silent; otherwise how many were held back before this one."""
        now = time.monotonic()
        with self._lock:
            if now - self._window >= self.period:
                self._window, self._used = now, 0
            if self._used >= self.burst:
                self._held += 1
                return None
            self._used += 1
            held, self._held = self._held, 0
            return held
