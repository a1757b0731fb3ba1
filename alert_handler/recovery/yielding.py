"""Recovery yields to acks: while alerts are arriving, the scheduler starts no new recovery job.

A recovery job spends CPU on LibreNMS API calls and polls; during an alert storm that CPU is
taken from the acknowledgements, which LibreNMS waits for. So a new job waits until alerts have
been quiet for QUIET seconds; jobs in flight go on. A due job is held at most LONGEST seconds:
then one scheduling pass starts what is due and the clock restarts, so a storm that never ends
cannot stop recovery.
"""

from __future__ import annotations

QUIET = 0.25
LONGEST = 5.0


class AckYield:
    """When the last alert arrived, and how long new jobs are held for it (pure: times are
    passed in; the scheduler calls `hold` under its own lock)."""

    def __init__(self, quiet: float = QUIET, longest: float = LONGEST) -> None:
        self.quiet = quiet
        self.longest = longest
        self.last_alert = -1e18  # monotonic; written by request threads without a lock
        self._held_since: float | None = None

    def alert_arrived(self, now: float) -> None:
        """An alert is being acknowledged (one float store: no lock on the ack's path)."""
        self.last_alert = now

    def hold(self, now: float) -> float:
        """Seconds to wait before starting a new job (0: start now)."""
        quiet_in = self.last_alert + self.quiet - now
        if quiet_in <= 0:
            self._held_since = None
            return 0.0
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since >= self.longest:
            self._held_since = now  # one pass now; the next job is held afresh
            return 0.0
        return min(quiet_in, self._held_since + self.longest - now)
