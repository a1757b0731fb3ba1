"""A real webhook receiver on loopback for the tests: verifies every request's Standard Webhooks
signature with the `standardwebhooks` library and answers as the test says (accept, refuse with
a status, or hang)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

# The answer to one request: a status, or None to hang until the receiver is closed.
Answer = Callable[[dict[str, Any]], int | None]


class Receiver:
    """A ThreadingHTTPServer whose requests are verified and recorded in arrival order."""

    def __init__(self, secret: str, port: int = 0, answer: Answer | None = None) -> None:
        self.webhook = Webhook(secret)
        self.answer: Answer = answer or (lambda _event: 204)
        self.received: list[dict[str, Any]] = []  # verified events, every delivery
        self.bad: list[str] = []  # why a request failed verification
        self.hanging = 0
        self.lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    event = receiver.webhook.verify(body, headers)
                except WebhookVerificationError as exc:
                    with receiver.lock:
                        receiver.bad.append(str(exc))
                    self.send_response(401)
                    self.end_headers()
                    return
                assert isinstance(event, dict) and event["id"] == headers["webhook-id"]
                assert json.loads(body) == event
                status = receiver.answer(event)
                if status is None:
                    with receiver.lock:
                        receiver.hanging += 1
                    receiver._release.wait(120)
                    return
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.received.append(event)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}/hooks/alert-handler"

    def ids(self) -> list[str]:
        """Ids of the events accepted, in arrival order, repeats included."""
        with self.lock:
            return [e["id"] for e in self.received]

    def unique_ids(self) -> list[str]:
        """Ids accepted, each once (first arrival), as a receiver de-duplicating by webhook-id."""
        return list(dict.fromkeys(self.ids()))

    def close(self) -> None:
        """Stop serving and let hanging requests go."""
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
