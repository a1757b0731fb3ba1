"""The request threads: a fixed pool that handles complete requests the event loop read.

A request thread runs the `handler` over the request's bytes (parsing, limits, auth, routes),
waits as the endpoint does until an alert is durable, and sends the reply in one write. Then it
closes the connection, or hands it back to the loop to linger when a refused body was not read.
A fixed pool (not a thread per connection) costs no thread start per alert, and since the loop
does all the reading, a slow client can never hold one of these threads.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable

from alert_handler.http.connection import Conn
from alert_handler.http.handler import Handler, Shared

log = logging.getLogger(__name__)

REQUEST_THREADS = 32  # requests handled at once; an alert's thread waits for its group commit


class RequestThreads:
    """The pool; `finish(conn)` closes a connection, `linger(conn)` gives it back to the loop."""

    def __init__(
        self,
        shared: Shared,
        client_timeout: float,
        finish: Callable[[Conn], None],
        linger: Callable[[Conn], None],
    ) -> None:
        self.shared = shared
        self.client_timeout = client_timeout
        self._finish = finish
        self._linger = linger
        self._queue: queue.SimpleQueue[tuple[Conn, bytes] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads (once)."""
        with self._lock:
            while len(self._threads) < REQUEST_THREADS:
                thread = threading.Thread(
                    target=self._work, name=f"http-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def submit(self, conn: Conn, data: bytes) -> None:
        """Handle this complete request on the next free thread."""
        self._queue.put((conn, data))

    def stop(self) -> None:
        """Each thread ends after the request it handles now."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            conn, data = item
            try:
                self._handle(conn, data)
            except Exception:  # a bug: this thread must live on for the next request
                log.exception("step=http client=%s unexpected error", conn.peer)
                self._finish(conn)

    def _handle(self, conn: Conn, data: bytes) -> None:
        """Run the handler over the request, send the reply in one write, then close (or hand
        the connection back to linger)."""
        handler = Handler(data, conn.address, None, conn, self.shared)
        reply = handler.reply()
        if reply:
            try:
                conn.sock.settimeout(self.client_timeout)
                conn.sock.sendall(reply)
            except OSError as exc:
                log.debug("step=http client=%s reply not delivered: %s", conn.peer, exc)
                self._finish(conn)
                return
        if handler.linger:
            self._linger(conn)
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._finish(conn)
