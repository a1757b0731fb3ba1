"""Who may talk to the webhook: ALLOWED_CLIENTS and WEBHOOK_TOKEN; pure.

LibreNMS's API transport cannot sign a request. What it can send is a static header line
(`Authorization=Bearer <token>` or `X-Auth-Token=<token>`) or HTTP Basic auth from its
"Auth Username/Password" fields: all three carry the token, and any one that matches admits
the request. Tokens are compared as SHA-256 digests with `hmac.compare_digest`: constant time,
and equal lengths, so not even the token's length leaks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Basic first: Chromium reads only the first challenge of a comma-joined header, and a browser
# can answer Basic (the status page); API clients send their Bearer token unasked.
CHALLENGE = 'Basic realm="alert-handler", Bearer realm="alert-handler"'


def offered_tokens(authorization: str | None, x_auth_token: str | None) -> list[bytes]:
    """Every token a request offers: a Bearer value, a Basic password, an X-Auth-Token.

    Header values are str as http.server decoded them (latin-1): encoding back to latin-1
    gives the bytes that were sent.
    """
    offered: list[bytes] = []
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip().encode("latin-1", "replace"))
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip().encode("latin-1", "replace"), validate=True)
        except ValueError:
            decoded = b""
        _user, colon, password = decoded.partition(b":")
        if colon:
            offered.append(password)
    if x_auth_token is not None:
        offered.append(x_auth_token.strip().encode("latin-1", "replace"))
    return offered


class WebhookAuth:
    """The listener's admission rules; holds only a digest of the token."""

    def __init__(self, token: str | None, allowed_clients: tuple[Network, ...] = ()) -> None:
        self._digest = hashlib.sha256(token.encode()).digest() if token else None
        self.allowed_clients = allowed_clients

    def __repr__(self) -> str:
        return f"WebhookAuth(enabled={self.enabled}, allowed_clients={self.allowed_clients})"

    @property
    def enabled(self) -> bool:
        """Whether WEBHOOK_TOKEN is set."""
        return self._digest is not None

    def client_allowed(self, address: str) -> bool:
        """Whether `address` may connect at all (always, without ALLOWED_CLIENTS)."""
        if not self.allowed_clients:
            return True
        try:
            addr = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
        return any(addr in net for net in self.allowed_clients)

    def authorized(self, authorization: str | None, x_auth_token: str | None) -> bool:
        """Whether the request carries the token (always, without WEBHOOK_TOKEN)."""
        if self._digest is None:
            return True
        ok = False
        # Every offered value is compared, whatever an earlier one gave: no early exit.
        for value in offered_tokens(authorization, x_auth_token):
            ok |= hmac.compare_digest(hashlib.sha256(value).digest(), self._digest)
        return ok
