"""A log throttle: say something at most once per period, with a count of what was held back."""

from __future__ import annotations

import threading
import time


class Throttle:
    """`allow()` is true at most once per `period` seconds; thread-safe."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._lock = threading.Lock()
        self._last = -1e18
        self._held = 0

    def allow(self) -> tuple[bool, int]:
        """(may log now, how many were held back since the last time it could)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.period:
                self._held += 1
                return False, 0
            held, self._held, self._last = self._held, 0, now
            return True, held
