"""A named daemon thread that runs one pass now and then, until stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    """Runs `fn` `first_delay` seconds after `start()`, then every `interval` seconds, in a
    daemon thread named `name`, until `stop()`. A pass that raises is logged (`step=<step>`,
    with its traceback) and the next one runs as planned. The pauses wait on an Event, never
    `time.sleep` (under libfaketime clock_nanosleep can fail), so `stop()` ends one at once."""

    def __init__(
        self,
        name: str,
        fn: Callable[[], None],
        interval: float,
        first_delay: float = 0.0,
        step: str | None = None,
    ) -> None:
        self.name = name
        self.step = step or name
        self.interval = interval
        self.first_delay = first_delay
        self._fn = fn
        self.passes = 0  # passes ended, whether they raised or not (tests wait on it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass (does not wait for it)."""
        self._stop.set()

    def _run(self) -> None:
        if self._stop.wait(self.first_delay):
            return
        while not self._stop.is_set():
            try:
                self._fn()
            except Exception:
                log.exception("step=%s unexpected error", self.step)
            self.passes += 1
            self._stop.wait(self.interval)
