"""The bytes of an HTTP/1.0 reply: status line, headers and a JSON (or given) body."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

ERRORS = {
    400: "bad request",
    404: "no such endpoint",
    408: "request timed out",
    414: "request line is longer than 8 KiB",
    431: "request headers are too large or too many",
    501: "method not implemented",
    505: "HTTP version not supported",
}


def raw_reply(status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.0 response with a JSON body."""
    payload = json.dumps(body).encode()
    return head(status, "application/json", len(payload), extra) + payload


def head(status: int, content_type: str, length: int, extra: dict[str, str] | None) -> bytes:
    """The status line and headers of a reply with a `length`-byte body."""
    lines = [
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        "Cache-Control: no-store",
        "X-Content-Type-Options: nosniff",
        "Connection: close",
    ]
    lines.extend(f"{key}: {value}" for key, value in (extra or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
