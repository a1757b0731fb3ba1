"""The webhook listener: one event loop reads every connection, a fixed pool of request threads
handles complete requests; admission and deadlines; built apart from running it.

Every byte that arrives is hostile until proven otherwise. The loop (`serve_forever`, stdlib
`selectors`) accepts connections, drives TLS handshakes and reads each connection until its
request is complete (`connection`); only then does a request thread (`workers`) see it, so idle,
half-sent or dribbling clients hold no thread, however many there are. A connection must deliver
its whole request within CLIENT_TIMEOUT_SEC of being accepted (the TLS handshake included), or
the loop cuts it (`reaper`). Past MAX_CONNECTIONS the oldest connection still reading is cut to
make room (503 when none can be). A refused request whose body was not read comes back to the
loop to be drained for a moment before the close, so that the client sees the answer.

Built apart from running it (`make_server`), port 0 allowed. Every socket has TCP_NODELAY
(a reply split over two sends would stall 40 ms on delayed ACKs).
"""

from __future__ import annotations

import errno
import logging
import queue
import resource
import selectors
import socket
import ssl
import threading
import time
from typing import Any

from alert_handler.http.auth import Network, WebhookAuth
from alert_handler.http.connection import Conn, Stage
from alert_handler.http.endpoints import App
from alert_handler.http.handler import Shared
from alert_handler.http.reaper import Reaper
from alert_handler.http.replies import raw_reply
from alert_handler.http.workers import RequestThreads
from alert_handler.ops.throttle import Throttle

log = logging.getLogger(__name__)

_EVICTION_MARGIN = 64  # descriptors beyond MAX_CONNECTIONS: files, the API pool, SSH
_ACCEPT_PAUSE = 0.05  # after EMFILE: the listener stays readable, so stop looking at it a moment


class AlertServer:
    """The listener, its event loop and its request threads; holds the App's HTTP settings."""

    address_family = socket.AF_INET  # of the class; an instance may be IPv6
    request_queue_size = 1024  # the stdlib's default of 5 drops connections in a burst

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
        """Bind and listen; OSError if the address is unusable."""
        self.client_timeout = client_timeout
        self.max_connections = max_connections
        self.tls = tls
        self.reaper: Reaper[Conn] = Reaper(client_timeout)
        self.shared = Shared(
            app,
            WebhookAuth(webhook_token, allowed_clients),
            client_timeout,
            Throttle(burst=20, period=10.0),
        )
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(self.request_queue_size)
        except BaseException:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        self._lock = threading.Lock()  # _active
        self._active = 0
        self._threads = RequestThreads(self.shared, client_timeout, self._finish, self._give_back)
        self._handback: queue.SimpleQueue[Conn] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._open: set[Conn] = set()  # owned by the loop: every connection it watches
        self._lingering: set[Conn] = set()
        self._accept_again = 0.0
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def auth(self) -> WebhookAuth:
        """Who may talk to the webhook."""
        return self.shared.auth

    @property
    def active_connections(self) -> int:
        """Connections open right now (reading, being handled or lingering)."""
        with self._lock:
            return self._active

    # -- running -----------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.1) -> None:
        """Run the event loop until shutdown(), which then returns within `poll_interval`."""
        self._stopped.clear()
        self._threads.start()
        sel = self._selector
        sel.register(self.socket, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        tick = min(poll_interval, self.client_timeout / 4)  # how late a deadline may be seen
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(tick):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._woken()
                    else:
                        self._ready(key.data)
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop and wait until serve_forever has returned."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listener and every connection still waiting for its request; the request
        threads finish what they handle and end."""
        for conn in list(self._open):
            self._close(conn)
        with self._lock:  # handed back after the loop's last look: nothing drains them now
            left: list[Conn] = []
            while True:
                try:
                    left.append(self._handback.get_nowait())
                except queue.Empty:
                    break
        for conn in left:
            self._finish(conn)
        self._selector.close()
        self.socket.close()
        self._threads.stop()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full (the loop will wake anyway) or closed

    def _woken(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        while True:
            try:
                conn = self._handback.get_nowait()
            except queue.Empty:
                return
            self._start_lingering(conn)

    # -- accepting ---------------------------------------------------------------------------
    def _accept(self) -> None:
        """Accept every pending connection; admit each (cutting the oldest unfinished one when
        full) and read what it sent already."""
        while True:
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    if self.shared.rejections.take() is not None:
                        log.error("step=http cannot accept a connection: %s", exc.strerror)
                    self._selector.unregister(self.socket)
                    self._accept_again = time.monotonic() + _ACCEPT_PAUSE
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            if not self._admit():
                try:
                    sock.send(raw_reply(503, {"error": "too many connections"}))
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                sock.close()
                continue
            self._open_conn(sock, address)

    def _admit(self) -> bool:
        with self._lock:
            if self._active < self.max_connections:
                self._active += 1
                return True
        victim = self.reaper.evict_oldest()
        if victim is None:
            return False
        log.debug("step=http client=%s cut to make room", victim.peer)
        self._close(victim, watched=False)
        with self._lock:
            self._active += 1
        return True

    def _open_conn(self, sock: socket.socket, address: Any) -> None:
        conn = Conn(sock, address)
        self._open.add(conn)
        self.reaper.watch(conn)
        if self.tls is not None:
            try:
                conn.sock = self.tls.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ValueError) as exc:
                log.debug("step=http client=%s TLS refused: %s", conn.peer, exc)
                self._close(conn)
                return
            conn.stage = Stage.HANDSHAKE
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            self._handshake(conn)
            return
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self._read(conn)  # on loopback the request is often there already

    # -- the connections ---------------------------------------------------------------------
    def _ready(self, conn: Conn) -> None:
        if conn.stage is Stage.HANDSHAKE:
            self._handshake(conn)
        elif conn.stage is Stage.READING:
            self._read(conn)
        elif conn.stage is Stage.LINGERING:
            self._drain(conn)

    def _handshake(self, conn: Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._selector.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self._selector.modify(sock, selectors.EVENT_WRITE, conn)
            return
        except OSError as exc:  # a failed handshake, plain http on the https port, a reset
            log.debug("step=http client=%s connection ended: %s", conn.peer, exc)
            self._close(conn)
            return
        conn.stage = Stage.READING
        self._selector.modify(sock, selectors.EVENT_READ, conn)
        self._read(conn)

    def _read(self, conn: Conn) -> None:
        """Read what is there; hand the request over once it is complete (or at EOF)."""
        sock = conn.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except OSError as exc:
                log.debug("step=http client=%s connection ended: %s", conn.peer, exc)
                self._close(conn)
                return
            if not data:  # the client finished sending: whatever it sent is the request
                if conn.buf:
                    self._dispatch(conn)
                else:
                    self._close(conn)
                return
            if conn.feed(data):
                self._dispatch(conn)
                return

    def _dispatch(self, conn: Conn) -> None:
        """The request is complete: give it to a request thread; the loop lets go of it."""
        self.reaper.done(conn)
        self._selector.unregister(conn.sock)
        self._open.discard(conn)
        conn.stage = Stage.HANDLING
        data, conn.buf = bytes(conn.buf), bytearray()
        self._threads.submit(conn, data)

    def _give_back(self, conn: Conn) -> None:
        """A request thread answered without reading the body: the loop drains it (once the
        loop has stopped, the connection is closed at once: nothing would drain it)."""
        with self._lock:
            stopped = self._stop.is_set()
            if not stopped:
                self._handback.put(conn)
        if stopped:
            self._finish(conn)
            return
        self._wake()

    def _expire(self, now: float) -> None:
        for conn in self.reaper.expired(now):
            log.debug("step=http client=%s dropped: no complete request in time", conn.peer)
            self._close(conn, watched=False)
        for conn in [c for c in self._lingering if c.until <= now]:
            self._close(conn)
        if self._accept_again and now >= self._accept_again:
            self._accept_again = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ, None)

    def _start_lingering(self, conn: Conn) -> None:
        """Half-close after the reply, then discard what the client still sends, briefly."""
        try:
            conn.start_lingering()
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            self._finish(conn)
            return
        self._open.add(conn)
        self._lingering.add(conn)
        self._drain(conn)

    def _drain(self, conn: Conn) -> None:
        if conn.drain():
            self._close(conn)

    def _close(self, conn: Conn, *, watched: bool = True) -> None:
        """Loop thread: forget a connection it watches and close it."""
        if watched:
            self.reaper.done(conn)
        self._open.discard(conn)
        self._lingering.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        self._finish(conn)

    def _finish(self, conn: Conn) -> None:
        """Close the socket (any thread) and count it gone."""
        try:
            conn.sock.close()
        except OSError:
            pass
        with self._lock:
            self._active -= 1


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
