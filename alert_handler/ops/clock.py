"""The daemon's clock: wall-clock time that advances with the monotonic clock.

Records keep wall times (the state file and `status` show them, and a restart reads them back),
but schedules must not stall when the wall clock steps: an NTP correction or a VM resume that
moves it back an hour would otherwise delay every attempt by an hour. `SteadyClock()` is the
wall time at the last anchor plus the monotonic time since. The main loop calls `check_step()`
every second; a step between the two is logged once, the clock is re-anchored, and the caller
shifts the stored times by the step so every schedule keeps its distance from now. A step that
is in flight across the check may store times from before it, so that one device's next attempt
can come early (or late) once; nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

STEP_THRESHOLD = 2.0  # seconds of disagreement that count as a step, not as drift


class SteadyClock:
    """Callable like time.time, but never jumps; thread-safe."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._anchor_wall = wall()
        self._anchor_mono = monotonic()

    def __call__(self) -> float:
        """Seconds since the epoch, on the monotonic clock's pace since the last anchor."""
        with self._lock:
            return self._anchor_wall + (self._monotonic() - self._anchor_mono)

    def check_step(self) -> float:
        """How far the wall clock stepped since the last check (0.0 if it did not); on a step
        the clock takes the new wall time, so what it returns from now on matches it again."""
        with self._lock:
            wall, mono = self._wall(), self._monotonic()
            step = wall - (self._anchor_wall + (mono - self._anchor_mono))
            if abs(step) < STEP_THRESHOLD:
                return 0.0
            self._anchor_wall, self._anchor_mono = wall, mono
        log.warning(
            "step=clock the wall clock stepped %s by %.1fs: schedules keep their distance "
            "from now (they run on the monotonic clock); stored times are shifted to match",
            "forward" if step > 0 else "back",
            abs(step),
        )
        return step
