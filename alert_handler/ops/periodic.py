"""A named daemon thread that runs one pass now and then, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `fn` `first_delay` seconds after `start()`, then every `interval` seconds, in a
    daemon thread named `name`, until `stop()`; `trigger()` runs a pass now. While `active()`
    is false (an HA standby) no pass runs: it is looked at every `look` seconds, and a pass runs
    as soon as it turns true. A pass that raises is logged (`step=<step>`, with its traceback)
    and the next one runs as planned. The pauses wait on an Event, never `time.sleep` (under
    libfaketime clock_nanosleep can fail), so `stop()` ends one at once."""

    def __init__(
        self,
        name: str,
        fn: Callable[[], None],
        interval: float,
        first_delay: float = 0.0,
        step: str | None = None,
        active: Callable[[], bool] | None = None,
        look: float = 0.5,
    ) -> None:
        self.name = name
        self.step = step or name
        self.interval = interval
        self.first_delay = first_delay
        self._fn = fn
        self._active = active
        self._look = look
        self.passes = 0  # passes ended, whether they raised or not (tests wait on it)
        self._stop = threading.Event()
        self._kick = threading.Event()  # set by stop() and trigger(): the pause ends at once
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass (does not wait for it)."""
        self._stop.set()
        self._kick.set()

    def trigger(self) -> None:
        """Run a pass now (HA: the lease was just taken), or as soon as the current one ends."""
        self._kick.set()

    def _run(self) -> None:
        if self._stop.wait(self.first_delay):
            return
        while not self._stop.is_set():
            if self._active is not None and not self._active():
                self._stop.wait(self._look)  # a standby: a pass once it may act
                continue
            self._kick.clear()
            try:
                self._fn()
            except Exception:
                log.exception("step=%s unexpected error", self.step)
            self.passes += 1
            self._kick.wait(self.interval)
