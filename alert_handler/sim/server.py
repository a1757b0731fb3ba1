"""The simulator's HTTP side: a threaded HTTP/1.1 server that parses a request, asks its `app`
for a `Reply` and writes it in one `sendall`; it can cut every open keep-alive connection."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alert_handler.sim.api import Reply, error_reply, phrase

log = logging.getLogger(__name__)

App = Callable[[str, str, str | None, bytes, str], Reply]  # ..., body, User-Agent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the daemon talks through a requests.Session
    server: SimServer
    timeout = 120  # an idle keep-alive connection gives its thread back eventually

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            body = None
        if body is None:
            self.close_connection = True
            self._write(Reply(400, b'{"message":"Bad Request"}'))
            return
        try:
            token, agent = self.headers.get("X-Auth-Token"), self.headers.get("User-Agent") or ""
            reply = self.server.app(self.command, self.path, token, body, agent)
        except Exception:  # a simulator bug: answer like an uncaught PHP error, but say so
            log.exception("simulator: %s %s failed", self.command, self.path.split("?")[0])
            reply = error_reply(500)
        if reply.drop:
            self.close_connection = True
            return
        self._write(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _write(self, reply: Reply) -> None:
        lines = [
            f"HTTP/1.1 {reply.status} {phrase(reply.status)}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Cache-Control: no-cache, private",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + reply.body)  # unbuffered socket writer: one sendall
        self.log_request(reply.status)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator: %s %s", self.address_string(), format % args)


class SimServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server that hands each request to `app` and can cut every connection."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        """Remember open connections so `close_connections` can end idle keep-alives."""
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down every open connection; their threads then exit on EOF."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-reply is routine here: log it, don't print a traceback."""
        log.debug("simulator: connection from %s failed", client_address, exc_info=True)
