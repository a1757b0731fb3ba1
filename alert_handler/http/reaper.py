"""Deadlines for HTTP connections: whatever has not delivered its request in time is cut.

A connection is watched from accept until its request is complete. The reaper shuts down the
descriptor of a late one, which makes the read its thread is blocked in return EOF at once: a
per-read timeout alone lets a client that dribbles one byte at a time stay forever. The same
cut makes room when the server is full (`evict_oldest`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

log = logging.getLogger(__name__)


class Conn:
    """One accepted connection: its descriptor (the same after a TLS wrap) and peer address."""

    __slots__ = ("fd", "peer")

    def __init__(self, fd: int, peer: str) -> None:
        self.fd = fd
        self.peer = peer


def shutdown_fd(fd: int) -> None:
    """shutdown(2) on a descriptor another thread reads from; that thread closes it."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


class Reaper:
    """Cuts connections whose request is not complete by their deadline.

    Descriptors are shut down under the lock, and the owner calls `done` before it closes its
    socket, so a descriptor number reused by a newer connection is never hit.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reaped = 0  # connections cut, late or evicted
        self._lock = threading.Lock()
        self._pending: dict[Conn, float] = {}  # insertion order is accept order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-reaper", daemon=True)
        self._thread.start()

    def watch(self, conn: Conn) -> None:
        """Start the clock for `conn`."""
        with self._lock:
            self._pending[conn] = time.monotonic() + self.timeout

    def done(self, conn: Conn) -> None:
        """`conn` delivered its request, or is about to be closed: leave it alone."""
        with self._lock:
            self._pending.pop(conn, None)

    def evict_oldest(self) -> bool:
        """Cut the oldest connection still waiting for its request; False if there is none."""
        with self._lock:
            if not self._pending:
                return False
            conn = next(iter(self._pending))
            del self._pending[conn]
            shutdown_fd(conn.fd)
            self.reaped += 1
        log.debug("step=http client=%s cut to make room", conn.peer)
        return True

    def stop(self) -> None:
        """Stop the thread and cut every connection still waiting for its request."""
        self._stop.set()
        with self._lock:
            for conn in self._pending:
                shutdown_fd(conn.fd)
            self._pending.clear()

    def _run(self) -> None:
        tick = min(0.1, self.timeout / 4)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                late = [c for c, deadline in self._pending.items() if deadline <= now]
                for conn in late:
                    del self._pending[conn]
                    shutdown_fd(conn.fd)
                self.reaped += len(late)
            for conn in late:
                log.debug("step=http client=%s dropped: no complete request in time", conn.peer)
