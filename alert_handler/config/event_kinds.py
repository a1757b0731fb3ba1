"""The kinds of the events settings (see `kinds.py`): webhook URL and secret, Apprise URLs,
event type names; and which parts of an Apprise URL are secrets."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

from alert_handler.config.kinds import ConfigError, Kind
from alert_handler.core.event_types import EventType

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
# Between Apprise URLs: blanks, or a comma that starts another URL (a comma may sit inside one,
# as in mailto://...?to=a@x,b@y).
_SPLIT_RE = re.compile(r"\s+|,\s*(?=[a-z][a-z0-9+.-]*://)", re.I)


def _webhook_url(key: str, raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, "must start with http:// or https:// and name a host")
    return raw


WEBHOOK_URL = Kind("URL", "http:// or https:// and a host", _webhook_url)


def secret_key(text: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError (never quoting it) otherwise."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX} and base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must hold 24 to 64 bytes (alert-handler webhook-secret makes one)")
    return key


def _webhook_secret(key: str, raw: str) -> str:
    try:
        secret_key(raw)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    return raw


WEBHOOK_SECRET = Kind(
    "secret",
    f"{SECRET_PREFIX} and the base64 of 24 to 64 bytes (Standard Webhooks)",
    _webhook_secret,
)


def split_urls(raw: str) -> tuple[str, ...]:
    """Apprise URLs separated by blanks or commas."""
    return tuple(part for part in _SPLIT_RE.split(raw.strip()) if part)


def _apprise_urls(key: str, raw: str) -> tuple[str, ...]:
    urls = split_urls(raw)
    for n, url in enumerate(urls, 1):
        if not _SCHEME_RE.match(url):
            # The URL itself is never quoted: it may hold a token.
            raise ConfigError(key, f"URL {n} is not an Apprise URL (scheme://...)")
    return urls


APPRISE_URLS = Kind("URL list", "Apprise URLs separated by blanks or commas", _apprise_urls)


def _event_types(key: str, raw: str) -> tuple[str, ...]:
    names = tuple(p.strip().lower() for p in raw.split(",") if p.strip())
    known = {t.value for t in EventType}
    for name in names:
        if name not in known:
            raise ConfigError(
                key, f"unknown event type {name!r}; known: {', '.join(sorted(known))}"
            )
    return names


EVENT_TYPES = Kind("list", "comma-separated event types (docs/events.md)", _event_types)


_TIME_RE = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


def _time_of_day(key: str, raw: str) -> str:
    match = _TIME_RE.match(raw)
    if match is None:
        raise ConfigError(key, f"must be a time of day HH:MM (00:00 to 23:59), got {raw!r}")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


TIME_OF_DAY = Kind("time of day", "HH:MM, 00:00 to 23:59, in this host's time zone", _time_of_day)


def target_name(n: int, url: str) -> str:
    """How a notification target is shown: its number and service, never its secrets."""
    scheme = url.partition("://")[0].lower() if "://" in url else "?"
    return f"#{n} {scheme}"


# Query parameters of Apprise URLs that name places or formats, not credentials.
_PLAIN_PARAMS = frozenset(
    [
        "to",
        "from",
        "cc",
        "bcc",
        "smtp",
        "name",
        "format",
        "overflow",
        "mode",
        "facility",
        "port",
        "reply",
        "subject",
        "priority",
        "avatar",
        "footer",
        "image",
        "tz",
        "lang",
        "logo",
    ]
)


def url_secrets(url: str) -> list[str]:
    """The URL and each part of it that may be a secret, for redaction. Apprise puts tokens in
    the user, password, host (slack://TokenA/...), path or query; host names (with a dot),
    addresses and the plain query parameters (to, from, smtp, ...) are left readable."""
    found = [url]
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return found
    # The netloc as written (hostname is lower-cased): user, password, host, "port" (tgram's
    # bot token is 123456:ABC...), each kept unless it is a host name, an address or a port.
    # Tokens in the host or path are long; shorter pieces there are words ("hook", "api").
    pieces = [p for p in re.split(r"[@:]", parts.netloc) if "." not in p and not p.isdigit()]
    pieces = [p for p in pieces if p.lower() != "localhost" and not p.startswith("[")]
    pieces += [p for p in parts.path.split("/") if "." not in p]
    pieces = [p for p in pieces if len(p) >= 8]
    pieces.append(parts.password or "")
    pieces += [v for k, v in urllib.parse.parse_qsl(parts.query) if k.lower() not in _PLAIN_PARAMS]
    for piece in pieces:
        for value in (piece, urllib.parse.unquote(piece)):
            if len(value) >= 4 and value not in found:
                found.append(value)
    return found
