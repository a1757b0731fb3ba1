"""Deadlines for HTTP connections: whatever has not delivered its request in time is cut.

A connection is watched from accept until its request is complete (the TLS handshake included).
The listener's event loop asks the `Reaper` which connections are late (`expired`) and closes
them, so a client that dribbles one byte at a time cannot stay: it is the deadline of the whole
request, not a per-read timeout. The same book makes room when the server is full
(`evict_oldest`). Only the loop's thread uses it.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class Reaper(Generic[C]):
    """The connections still waiting for their request, oldest first, with their deadlines."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reaped = 0  # connections cut, late or evicted
        self._pending: dict[C, float] = {}  # insertion order is accept order

    def watch(self, conn: C) -> None:
        """Start the clock for `conn`."""
        self._pending[conn] = time.monotonic() + self.timeout

    def done(self, conn: C) -> None:
        """`conn` delivered its request, or is closed: leave it alone."""
        self._pending.pop(conn, None)

    def evict_oldest(self) -> C | None:
        """Forget and return the oldest connection still waiting for its request (the caller
        cuts it), or None when there is none."""
        if not self._pending:
            return None
        conn = next(iter(self._pending))
        del self._pending[conn]
        self.reaped += 1
        return conn

    def expired(self, now: float) -> list[C]:
        """Forget and return every connection past its deadline (the caller cuts them)."""
        late = []
        for conn, deadline in self._pending.items():
            if deadline > now:
                break  # deadlines grow with accept order
            late.append(conn)
        for conn in late:
            del self._pending[conn]
        self.reaped += len(late)
        return late

    def pending(self) -> list[C]:
        """Every watched connection, oldest first."""
        return list(self._pending)
