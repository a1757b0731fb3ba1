"""How the commands reach the running daemon: the address it wrote into `<STATE_FILE>.lock`
(its real port, whatever the env file says), else LISTEN_HOST:LISTEN_PORT from the settings.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from alert_handler.config.table import Config
from alert_handler.store.files import read_lock

_TIMEOUT = 10.0  # seconds for one request; the daemon answers its API in milliseconds


class DaemonDown(Exception):
    """No alert-handler answers on any address the commands know."""


def local_url(scheme: str, host: str, port: int) -> str:
    """The URL a client on this host uses for a listener bound to `host`: a wildcard address
    (0.0.0.0, ::) is reached on loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def configured_url(cfg: Config) -> str:
    """The daemon's URL as the settings describe it (LISTEN_HOST, LISTEN_PORT, TLS_CERT_FILE)."""
    return local_url("https" if cfg.tls_cert_file else "http", cfg.listen_host, cfg.listen_port)


def _announced_url(cfg: Config) -> str | None:
    """The URL in the lock file of a live daemon on this STATE_FILE, reached from this host."""
    holder = read_lock(Path(cfg.state_file))
    if holder is None or holder.url is None:
        return None
    parts = urlsplit(holder.url)
    if parts.hostname is None or parts.port is None:
        return None
    return local_url(parts.scheme, parts.hostname, parts.port)


class DaemonLink:
    """Requests to the running daemon, on the first address that answers: the lock file's,
    then the configured one. `url` is the address used (or tried first)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        announced = _announced_url(cfg)
        configured = configured_url(cfg)
        self.candidates = [announced] if announced and announced != configured else []
        self.candidates.append(configured)
        self.url = self.candidates[0]
        self._settled = False

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """One request (with `body` as JSON): (status, JSON body); DaemonDown if no address
        answers."""
        if self._settled:
            return self._call(self.url, method, path, body)
        failure: DaemonDown | None = None
        for url in self.candidates:
            try:
                answer = self._call(url, method, path, body)
            except DaemonDown as exc:
                failure = failure or exc
                continue
            self.url, self._settled = url, True
            return answer
        assert failure is not None
        raise failure

    def where(self) -> str:
        """The addresses tried, for a "no daemon answers" line."""
        return " or ".join(self.candidates)

    def _call(
        self, base: str, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        if data is None and method == "POST":
            data = b""
        url = base + path  # always http(s): built here from the lock file or settings
        request = urllib.request.Request(url, method=method, data=data)  # noqa: S310
        if self.cfg.webhook_token:
            request.add_header("Authorization", f"Bearer {self.cfg.webhook_token}")
        try:
            with _opener(base).open(request, timeout=_TIMEOUT) as resp:
                status, raw = int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                status, raw = exc.code, exc.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonDown(f"{base}: {exc}") from None
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            raise DaemonDown(f"{base} answered something that is not alert-handler") from None
        return status, answer if isinstance(answer, dict) else {}


def _opener(base: str) -> urllib.request.OpenerDirector:
    """urllib without proxies: the daemon is on this host, http_proxy must not catch it."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if base.startswith("https://"):
        # Our own listener on this host: the point is reaching it, not authenticating it.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)
