"""A fixed pool of daemon threads for the recovery jobs."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("alert_handler.recovery.scheduler")


class Pool:
    """`size` daemon threads running jobs from a queue, started at the first job.

    Not a ThreadPoolExecutor: the interpreter joins its threads at exit, so a step still running
    at the STOP_TIMEOUT_SEC deadline would hold the process. A cut-off step is resumed after
    the restart instead (every step is persisted before the next change is made).
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on a free thread (the caller serialises calls)."""
        if not self._threads:
            for n in range(self.size):
                thread = threading.Thread(target=self._run, name=f"{self.name}-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        self._jobs.put(job)

    def shutdown(self) -> None:
        """Let each thread exit after the jobs queued so far."""
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a job handles its own errors; this thread must survive anyway
                log.exception("step=worker unexpected error")
