"""The webhook listener: a thread per connection, admission and deadlines, built apart from
running it.

Every byte that arrives is hostile until proven otherwise. A connection must deliver its whole
request within CLIENT_TIMEOUT_SEC of being accepted (the TLS handshake included): the `reaper`
shuts down whatever is late, so idle and dribbling clients cannot pile up. Past MAX_CONNECTIONS
the oldest unfinished connection is cut to make room (503 when none can be), so idle sockets
cannot starve a real request either. What a request may contain, and in which order it is
refused, is the `handler`'s business.

Built apart from running it (`make_server`), port 0 allowed. Every socket has TCP_NODELAY
(a reply split over two sends would stall 40 ms on delayed ACKs).
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import socketserver
import ssl
import threading
import time
from typing import Any, cast

from alert_handler.http.auth import Network, WebhookAuth
from alert_handler.http.endpoints import App
from alert_handler.http.handler import Handler, Shared
from alert_handler.http.reaper import Conn, Reaper
from alert_handler.http.replies import raw_reply
from alert_handler.throttle import Throttle

log = logging.getLogger(__name__)

_EVICTION_MARGIN = 64  # connections being cut may still hold a thread for a moment


class AlertServer(socketserver.TCPServer):
    """The listener; holds the App and the HTTP-level settings."""

    allow_reuse_address = True
    request_queue_size = 1024  # socketserver's default of 5 drops connections in a burst

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        webhook_token: str | None = None,
        allowed_clients: tuple[Network, ...] = (),
        client_timeout: float = 10.0,
        max_connections: int = 1000,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.client_timeout = client_timeout
        self.max_connections = max_connections
        self.tls = tls
        self._lock = threading.Lock()
        self._active = 0
        self._serial = 0
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.reaper = Reaper(client_timeout)
        self.shared = Shared(
            app,
            WebhookAuth(webhook_token, allowed_clients),
            client_timeout,
            self.reaper,
            Throttle(burst=20, period=10.0),
        )
        try:
            # process_request builds each Handler itself (it takes the connection too).
            super().__init__(address, socketserver.BaseRequestHandler)
        except BaseException:
            self.reaper.stop()
            raise

    @property
    def auth(self) -> WebhookAuth:
        """Who may talk to the webhook."""
        return self.shared.auth

    @property
    def active_connections(self) -> int:
        """Connections that hold a thread right now."""
        with self._lock:
            return self._active

    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Serve until shutdown(), which then returns within `poll_interval`."""
        super().serve_forever(poll_interval)

    def get_request(self) -> tuple[Any, Any]:
        try:
            sock, addr = super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The listening socket stays readable: without a pause this loop would spin.
                if self.shared.rejections.take() is not None:
                    log.error("step=http cannot accept a connection: %s", exc.strerror)
                time.sleep(0.05)
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection (cut the oldest unfinished one when full); start its thread."""
        sock = cast(socket.socket, request)
        conn = Conn(sock.fileno(), str(client_address[0]))
        with self._lock:
            full = self._active >= self.max_connections
            admitted = not full or (
                self._active < self.max_connections + _EVICTION_MARGIN
                and self.reaper.evict_oldest()
            )
            if admitted:
                self._active += 1
                self._serial += 1
                serial = self._serial
        if not admitted:
            try:
                sock.sendall(raw_reply(503, {"error": "too many connections"}))
            except OSError:
                pass
            self.shutdown_request(sock)
            return
        self.reaper.watch(conn)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(sock, client_address, conn),
            name=f"http-{serial}",
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had (TasksMax): drop this connection
            self.reaper.done(conn)
            self.shutdown_request(sock)
            self._release()
            if self.shared.rejections.take() is not None:
                log.error("step=http client=%s dropped: %s", conn.peer, exc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver's last resort: logged (so secrets are redacted), never printed."""
        log.exception("step=http client=%s unexpected error", client_address[0])

    def _serve_connection(self, sock: socket.socket, client_address: Any, conn: Conn) -> None:
        try:
            if self.tls is not None:
                sock.settimeout(self.client_timeout)
                # The handshake is driven here, not inside wrap_socket, so that a failed one
                # cannot close the descriptor before the reaper lets go of it.
                sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                sock.do_handshake()
            Handler(sock, client_address, self, conn, self.shared)
        except OSError as exc:  # resets, timeouts, failed handshakes: the client's problem
            log.debug("step=http client=%s connection ended: %s", conn.peer, exc)
        except Exception:
            log.exception("step=http client=%s unexpected error", conn.peer)
        finally:
            self.reaper.done(conn)
            self.shutdown_request(sock)
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def server_close(self) -> None:
        """Close the listener and cut every connection still waiting for its request."""
        self.reaper.stop()
        super().server_close()


def _fd_headroom(max_connections: int) -> None:
    """Raise the soft descriptor limit to fit MAX_CONNECTIONS, or warn that it does not fit."""
    need = max_connections + _EVICTION_MARGIN + 128  # files, SSH, API pool, the listener
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (OSError, ValueError):
        pass
    if soft < need:
        log.warning(
            "step=start MAX_CONNECTIONS=%d needs about %d file descriptors, the limit is %d "
            "(raise LimitNOFILE or lower MAX_CONNECTIONS)",
            max_connections,
            need,
            soft,
        )


def make_server(
    host: str,
    port: int,
    app: App,
    *,
    webhook_token: str | None = None,
    allowed_clients: tuple[Network, ...] = (),
    client_timeout: float = 10.0,
    max_connections: int = 1000,
    tls_cert_file: str | None = None,
    tls_key_file: str | None = None,
) -> AlertServer:
    """Build (bind) the server without running it; OSError if the address is unusable."""
    tls = None
    if tls_cert_file and tls_key_file:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(tls_cert_file, tls_key_file)
    _fd_headroom(max_connections)
    return AlertServer(
        (host, port),
        app,
        webhook_token=webhook_token,
        allowed_clients=allowed_clients,
        client_timeout=client_timeout,
        max_connections=max_connections,
        tls=tls,
    )
