"""The webhook listener: a stdlib ThreadingHTTPServer whose handler only speaks HTTP.

Built apart from running it (`make_server`), port 0 allowed. Every reply is one `sendall` with
TCP_NODELAY (a reply split over two sends stalls 40 ms on delayed ACKs). A reaper closes
connections that have not delivered a whole request within CLIENT_TIMEOUT_SEC, so idle or
dribbling clients cannot pile up; past MAX_CONNECTIONS a new connection gets 503 at once.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alert_handler.alerts import MAX_BODY, BadPayload
from alert_handler.app import App

log = logging.getLogger(__name__)

_RELEASE_RE = re.compile(r"^/devices/([^/]+)/(release|track)$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Reaper:
    """Closes connections whose request is not complete by its deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines[sock] = time.monotonic() + self.timeout

    def done(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(sock, None)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        tick = min(0.25, self.timeout / 4)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                late = [s for s, deadline in self._deadlines.items() if deadline <= now]
                for sock in late:
                    del self._deadlines[sock]
            for sock in late:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class AlertServer(ThreadingHTTPServer):
    """The listener; holds the App and the HTTP-level settings."""

    daemon_threads = True
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
        self.app = app
        self.webhook_token = webhook_token.encode() if webhook_token else None
        self.allowed_clients = allowed_clients
        self.client_timeout = client_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.reaper = _Reaper(client_timeout)
        self.tls = tls
        try:
            super().__init__(address, Handler)
        except BaseException:
            self.reaper.stop()
            raise

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(_raw_reply(503, {"error": "too many connections"}))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        self.reaper.watch(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                request.settimeout(self.client_timeout)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self.reaper.done(request)
            self._slots.release()

    def server_close(self) -> None:
        self.reaper.stop()
        super().server_close()


def _raw_reply(status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> bytes:
    from http import HTTPStatus

    payload = json.dumps(body).encode()
    phrase = HTTPStatus(status).phrase
    lines = [
        f"HTTP/1.0 {status} {phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class Handler(BaseHTTPRequestHandler):
    """Routes requests to the App; writes bytes and nothing else."""

    server: AlertServer
    server_version = "alert-handler"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.client_timeout)

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("step=http client=%s " + format, self.client_address[0], *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, 414, 431) as JSON."""
        self.close_connection = True
        self._reply(code, {"error": message or "request rejected"})

    def _reply(
        self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        self.server.reaper.done(self.connection)
        if status >= 400:
            self.log_message('"%s" %s', _safe_line(self.requestline), status)
        try:
            self.wfile.write(_raw_reply(status, body, extra))
        except OSError:
            pass

    def _client_allowed(self) -> bool:
        nets = self.server.allowed_clients
        if not nets:
            return True
        try:
            addr = ipaddress.ip_address(self.client_address[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in nets)

    def _authorized(self) -> bool:
        token = self.server.webhook_token
        if token is None:
            return True
        offered: list[bytes] = []
        auth = self.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip().encode("utf-8", "replace"))
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
                offered.append(decoded.partition(b":")[2])
            except ValueError:
                pass
        header = self.headers.get("X-Auth-Token")
        if header is not None:
            offered.append(header.strip().encode("utf-8", "replace"))
        # Every offered value is compared, in constant time, whatever the first one gave.
        ok = False
        for value_bytes in offered:
            ok |= hmac.compare_digest(value_bytes, token)
        return ok

    def _deny_unauthorized(self) -> None:
        self.server.app.metrics.alerts.labels("unauthorized").inc()
        log.warning(
            "step=auth client=%s %s %s: missing or wrong webhook token",
            self.client_address[0],
            self.command,
            _safe_line(self.path.split("?", 1)[0]),
        )
        self._reply(
            401,
            {"error": "authentication required"},
            {"WWW-Authenticate": 'Bearer realm="alert-handler", Basic realm="alert-handler"'},
        )

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 411/413/400."""
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self._reply(411, {"error": "chunked bodies are not supported; send Content-Length"})
            return None
        if length_header is None:
            return b""
        if not length_header.strip().isdigit():
            self._reply(400, {"error": "bad Content-Length"})
            return None
        length = int(length_header)
        if length > MAX_BODY:
            self.close_connection = True
            self._reply(413, {"error": "body is larger than 64 KiB"})
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            return None  # the client went away or timed out mid-body
        return body

    # -- routes ------------------------------------------------------------------------------
    def _gate(self, *, auth: bool) -> bool:
        if not self._client_allowed():
            log.warning("step=auth client=%s not in ALLOWED_CLIENTS", self.client_address[0])
            self._reply(403, {"error": "client not allowed"})
            return False
        if auth and not self._authorized():
            self._deny_unauthorized()
            return False
        return True

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        app = self.server.app
        known = path in ("/", "/alert", "/pause", "/resume") or _RELEASE_RE.match(path)
        if not known:
            self._reply(*self._unknown(path))
            return
        if not self._gate(auth=True):
            return
        body = self._read_body()
        if body is None:
            return
        self.server.reaper.done(self.connection)
        try:
            if path in ("/", "/alert"):
                self._reply(*app.receive(body, query, self.client_address[0]))
            elif path == "/pause":
                self._reply(*app.set_paused(True))
            elif path == "/resume":
                self._reply(*app.set_paused(False))
            else:
                match = _RELEASE_RE.match(path)
                assert match is not None
                raw_id, verb = match.groups()
                handler = app.release if verb == "release" else app.track
                self._reply(*handler(raw_id))
        except BadPayload as exc:
            self._reply(400, {"error": str(exc)})

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        app = self.server.app
        if path == "/health":
            if self._gate(auth=False):
                self._reply(*app.health())
        elif path == "/metrics":
            if self._gate(auth=False):
                self._write_metrics(app.metrics.render())
        elif path == "/devices":
            if self._gate(auth=True):
                self._reply(*app.devices())
        else:
            self._reply(*self._unknown(path))

    def _write_metrics(self, payload: bytes) -> None:
        self.server.reaper.done(self.connection)
        head = (
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        try:
            self.wfile.write(head.encode("latin-1") + payload)
        except OSError:
            pass

    def _unknown(self, path: str) -> tuple[int, dict[str, Any]]:
        get_paths = ("/health", "/metrics", "/devices")
        post_paths = ("/", "/alert", "/pause", "/resume")
        if path in get_paths or path in post_paths or _RELEASE_RE.match(path):
            return 405, {"error": f"method {self.command} not allowed on {_safe_line(path)}"}
        return 404, {"error": "no such endpoint"}

    def _method_not_allowed(self) -> None:
        path = self.path.partition("?")[0]
        status, body = self._unknown(path)
        self._reply(405 if status == 405 else 404, body)

    do_PUT = _method_not_allowed
    do_DELETE = _method_not_allowed
    do_PATCH = _method_not_allowed
    do_HEAD = _method_not_allowed
    do_OPTIONS = _method_not_allowed


def _safe_line(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:200]


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
    if ":" in host:
        AlertServer.address_family = socket.AF_INET6
    return AlertServer(
        (host, port),
        app,
        webhook_token=webhook_token,
        allowed_clients=allowed_clients,
        client_timeout=client_timeout,
        max_connections=max_connections,
        tls=tls,
    )
