"""Standard Webhooks 1.0 signatures: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`
keyed with the base64-decoded part of a `whsec_` secret; pure but for `new_secret`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from alert_handler.config.event_kinds import SECRET_PREFIX, secret_key


def new_secret() -> str:
    """A fresh `whsec_` secret of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header value for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, and the content type."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret_key(secret), msg_id, timestamp, body),
    }
