"""One request: bounded parsing, admission, routing to the App, one reply.

The listener's event loop (`server`) reads a connection until its request is complete and hands
the bytes to a request thread, which runs this handler over them: http.server's parser, with
the bounds below, and the routes. In order: the request line (8 KiB, else 414) and the header
block (8 KiB a line, 32 KiB and 100 lines in all, else 431; a malformed one 400) are bounded
before anything is parsed, and answered whoever sent them. Then ALLOWED_CLIENTS (403), before
the path is looked at; then the webhook token (401, see `auth`) for everything but /health and
/metrics (the status page at GET / too: a browser answers the challenge with Basic auth); then,
for a POST, the body length (413, answered from the headers alone: the loop does not read a
body larger than MAX_BODY). HEAD is answered as GET, without the body.

A rejected request whose body was not read is drained for a moment after the answer (`linger`,
done by the loop): closing a socket with unread data makes the kernel send RST, and the client
may then never see the 4xx. Every reply is one write of the whole response (`reply()`).
"""

from __future__ import annotations

import http.client
import io
import logging
import re
import socketserver
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from io import BufferedIOBase
from typing import Any, cast

from alert_handler.core.alerts import MAX_BODY, BadPayload, log_safe
from alert_handler.http import routes
from alert_handler.http.auth import CHALLENGE, WebhookAuth
from alert_handler.http.endpoints import App
from alert_handler.http.replies import ERRORS, head, raw_reply
from alert_handler.http.routes import Answer
from alert_handler.ops.throttle import Throttle

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_LINE = 8 * 1024
MAX_HEADER_BYTES = 32 * 1024
LINGER_SECONDS = 2.0  # after a reply to a request whose body was not read
LINGER_BYTES = 1024 * 1024  # ... drain at most this much of it, then close anyway

_CONTENT_LENGTH_RE = re.compile(r"[0-9]+")
_HUGE = 2**62
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}


class _HeaderReader:
    """The request's rfile while headers are parsed: bounds each line and the whole block."""

    def __init__(self, raw: BufferedIOBase) -> None:
        self._raw = raw
        self._left = MAX_HEADER_BYTES

    def readline(self, size: int = -1) -> bytes:
        line = self._raw.readline(min(MAX_HEADER_LINE, self._left) + 1)
        if len(line) > MAX_HEADER_LINE:
            raise http.client.LineTooLong("header line")
        self._left -= len(line)
        if self._left <= 0:
            raise http.client.LineTooLong("header block")
        return line


@dataclass(frozen=True)
class Shared:
    """What every request on one listener uses: the App, the admission rules, the connection
    deadline, and the throttle on refusal log lines."""

    app: App
    auth: WebhookAuth
    client_timeout: float
    rejections: Throttle


class Peer:
    """Who sent a request: the client's address (for ALLOWED_CLIENTS and log lines)."""

    __slots__ = ("peer",)

    def __init__(self, peer: str) -> None:
        self.peer = peer


class Handler(BaseHTTPRequestHandler):
    """Routes one request, given as the bytes the loop read, to the App; produces the reply's
    bytes (`reply()`) and whether the connection must linger (`linger`), nothing else."""

    server_version = "alert-handler"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def __init__(
        self,
        data: bytes,
        client_address: Any,
        server: socketserver.BaseServer | None,
        conn: Peer,
        shared: Shared,
    ) -> None:
        self.conn = conn
        self.shared = shared
        self.replied = False
        self.body_pending = True  # until the body is known to be read, or absent
        self.linger = False
        super().__init__(data, client_address, server)  # type: ignore[arg-type]

    def setup(self) -> None:
        """The request's bytes as rfile; the reply collected in wfile, sent by the caller."""
        self.rfile = io.BytesIO(self.request)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        """Nothing to flush or close: the caller sends `reply()`."""

    def reply(self) -> bytes:
        """The whole response (empty when the client went away before a request)."""
        return self.wfile.getvalue()  # type: ignore[attr-defined, no-any-return]

    def handle(self) -> None:
        """One request per connection (HTTP/1.0); linger if it was refused with a body unread."""
        self.close_connection = True
        self.handle_one_request()
        self.linger = self.replied and self.body_pending

    def handle_one_request(self) -> None:
        """Read and bound the request line and headers, then route."""
        self.command, self.path, self.requestline = "", "", ""
        self.request_version = self.default_request_version
        line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        if not line:
            return  # connected and left, or cut by the reaper
        if len(line) > MAX_REQUEST_LINE:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        self.raw_requestline = line
        rfile = self.rfile
        self.rfile = cast(BufferedIOBase, _HeaderReader(rfile))
        try:
            parsed = self.parse_request()
        finally:
            self.rfile = rfile
        if not parsed:
            if not self.replied:
                self.send_error(HTTPStatus.BAD_REQUEST)
            return
        if "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers:
            self.body_pending = False  # nothing follows the headers: no lingering close
        try:
            self._route()
        except Exception:
            log.exception("step=http client=%s unexpected error", self.conn.peer)
            if not self.replied:
                self._reply(500, {"error": "internal error"})

    # -- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        """http.server's own messages, escaped (they may quote the request)."""
        log.debug("step=http client=%s %s", self.conn.peer, _safe_line(format % args))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (bad request line, 414, 431, 505) as JSON.

        The stdlib's message quotes the request; the reply gives a fixed reason instead.
        """
        self.close_connection = True
        status = int(code)
        self._reply(status, {"error": ERRORS.get(status, HTTPStatus(status).phrase.lower())})

    def _where(self) -> str:
        """Method and path (never the query string, which may carry anything) for a log line."""
        return f"{_safe_line(self.command or '-')} {_safe_line(self.path.partition('?')[0])}"

    def _reply(
        self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        self._send(raw_reply(status, body, extra))
        self._count(status)
        if status >= 400:
            log.debug("step=http client=%s %s -> %d", self.conn.peer, self._where(), status)

    def _send(self, data: bytes) -> None:
        if not self.replied:  # one reply per request
            self.replied = True
            if self.command == "HEAD":  # the GET answer's head, Content-Length included
                data = data[: data.find(b"\r\n\r\n") + 4]
            self.wfile.write(data)

    def _answer(
        self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
    ) -> None:
        """Reply without using the body; a small one (the loop read it) is consumed first, so
        that closing cannot RST; a large one is drained after the reply (`linger`)."""
        length = self._declared_length()
        if length is not None and 0 < length <= MAX_BODY and self.body_pending:
            self._read_exactly(length)
        self._reply(status, body, extra)

    def _warn(self, message: str) -> None:
        held = self.shared.rejections.take()
        if held is None:
            return
        suffix = f" ({held} similar lines suppressed)" if held else ""
        log.warning("step=auth client=%s %s: %s%s", self.conn.peer, self._where(), message, suffix)

    def _token_ok(self) -> bool:
        """True when the request carries WEBHOOK_TOKEN (or none is set); else answers 401."""
        auth = self.shared.auth
        if auth.authorized(self.headers.get("Authorization"), self.headers.get("X-Auth-Token")):
            return True
        self._refused("unauthorized")
        self._warn("missing or wrong webhook token")
        self._answer(
            401,
            {"error": "authentication required"},
            {"WWW-Authenticate": CHALLENGE},
        )
        return False

    def _declared_length(self) -> int | None:
        """Content-Length when there is exactly one and it is ASCII digits; 0 when absent."""
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        text = values[0].strip()
        if len(values) > 1 or not _CONTENT_LENGTH_RE.fullmatch(text):
            return None
        digits = text.lstrip("0")
        return int(digits or "0") if len(digits) <= 15 else _HUGE  # no int() of 8 KiB of digits

    def _endpoint(self) -> str | None:
        """The operator endpoint this request is for (a label of `routes`), or None for an
        alert delivery."""
        return routes.match(self.command, self.path.partition("?")[0]).label

    def _refused(self, result: str) -> None:
        """A 401, 403 or 413 to an alert delivery is a delivery LibreNMS lost: counted in
        alerts_received_total. An operator's refusal is counted by `_count` (an operator's
        stale token must not look like failing deliveries)."""
        if self._endpoint() is None:
            self.shared.app.metrics.alerts.labels(result).inc()

    def _count(self, status: int) -> None:
        """Count an operator endpoint's answer by result (alert deliveries are counted by the
        App and by `_refused`)."""
        endpoint = self._endpoint()
        if endpoint is not None:
            self.shared.app.metrics.operator_request(endpoint, status)

    def _rejected(self, status: int, why: str) -> None:
        """Log a body refused before it was read (only clients past the token get here)."""
        log.warning("step=http client=%s %s -> %d: %s", self.conn.peer, self._where(), status, why)

    def _read_exactly(self, length: int) -> bytes | None:
        """`length` body bytes, or None when the client stopped short (EOF before the body)."""
        body = self.rfile.read(length)
        if len(body) < length:
            return None
        self.body_pending = False
        return body

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400/411/413."""
        if self.headers.get("Transfer-Encoding") is not None:
            self._rejected(411, "chunked body (Transfer-Encoding)")
            self._reply(411, {"error": "chunked bodies are not supported; send Content-Length"})
            return None
        length = self._declared_length()
        if length is None:
            self._rejected(400, "bad Content-Length")
            self._reply(400, {"error": "bad Content-Length"})
            return None
        if length > MAX_BODY:
            self._refused("too_large")
            size = f"{length} bytes" if length < _HUGE else "a Content-Length of 16+ digits"
            self._rejected(413, f"body of {size} is larger than 64 KiB")
            self._reply(413, {"error": "body is larger than 64 KiB"})
            return None
        if length == 0:
            self.body_pending = False
            return b""
        return self._read_exactly(length)

    # -- routes ------------------------------------------------------------------------------
    def _route(self) -> None:
        if not self.shared.auth.client_allowed(self.conn.peer):
            self._refused("forbidden")
            self._warn("client not in ALLOWED_CLIENTS")
            self._answer(403, {"error": "client not allowed"})
            return
        path, _, query = self.path.partition("?")
        found = routes.match(self.command, path)
        route = found.route
        if route is None:
            if found.allow:
                error = {"error": f"method {self._where()} not allowed"}
                self._answer(405, error, {"Allow": ", ".join(found.allow)})
            else:
                self._answer(404, {"error": "no such endpoint", "endpoints": routes.listing()})
            return
        if route.token and not self._token_ok():
            return
        body = b""
        if self.command in ("POST", "PUT"):
            read = self._read_body()
            if read is None:
                return
            body = read
        try:
            self._dispatch(route.answer, body, query, found.device_id)
        except BadPayload as exc:
            self._reply(400, {"error": str(exc)})

    def _dispatch(self, answer: Answer, body: bytes, query: str, raw_id: str | None) -> None:
        """Answer one routed request (token and body already checked)."""
        app, client = self.shared.app, self.conn.peer
        steering = app.steering
        if answer is Answer.PAGE:  # a browser answers the token's 401 with Basic auth
            page = app.status_page().encode()
            self._send(head(200, "text/html; charset=utf-8", len(page), _PAGE_HEADERS) + page)
            self._count(200)
            return
        if answer is Answer.METRICS:
            payload = app.metrics.render()
            content_type = "text/plain; version=0.0.4; charset=utf-8"
            self._send(head(200, content_type, len(payload), None) + payload)
            self._count(200)
            return
        calls: dict[Answer, Callable[[], tuple[int, dict[str, Any]]]] = {
            Answer.ALERT: lambda: app.receive(body, query, client),
            Answer.HEALTH: app.health,
            Answer.DEVICES: app.devices,
            Answer.SILENCES: steering.silences,
            Answer.SILENCE: lambda: steering.silence(body, client),
            Answer.UNSILENCE: lambda: steering.unsilence(body, client),
            Answer.PAUSE: lambda: app.set_paused(True, client),
            Answer.RESUME: lambda: app.set_paused(False, client),
            Answer.CONFIRM: lambda: steering.confirm(client),
            Answer.DISCARD: lambda: steering.discard(client),
            Answer.RELEASE: lambda: app.release(raw_id or "", client),
            Answer.TRACK: lambda: app.track(raw_id or "", client, body),
        }
        status, reply = calls[answer]()
        if self.command in ("POST", "PUT"):
            self._reply(status, reply)
        else:
            self._answer(status, reply)


def _safe_line(text: str) -> str:
    """Client-supplied text made safe for one log line: control characters escaped, cut short."""
    return log_safe(text, 200)
