"""The HA_* settings' kinds and the rules between them; no Redis import (settings are read
whether or not HA is used)."""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass

from alert_handler.config.kinds import ConfigError, Kind

LEASE_BOUNDS = (2.0, 300.0)  # seconds: shorter makes every Redis hiccup a failover
RENEW_BOUNDS = (0.2, 150.0)
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")
_KEY_RE = re.compile(r"^[!-~]{1,200}$")


SENTINEL = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """`redis+sentinel://[[user]:password@]host[:port],host[:port]/service[/db]`: the sentinels
    (LibreNMS's REDIS_SENTINEL), the master's name (REDIS_SENTINEL_SERVICE), the database and
    the master's credentials (REDIS_PASSWORD); the sentinels themselves without a password."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None


def sentinel_url(key: str, raw: str) -> SentinelURL:
    """Parse a redis+sentinel:// URL or raise ConfigError naming `key`."""
    rest = raw[len(SENTINEL) + 3 :]
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        item = item.strip()
        host, colon, port = item.rpartition(":")
        if not colon:
            host, port = item, str(SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(key, f"has an invalid sentinel {item!r} (host:port)")
        sentinels.append((host, int(port)))
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ConfigError(key, "needs the master's name: redis+sentinel://host:26379/mymaster")
    if db and not db.isdigit():
        raise ConfigError(key, "the path is /service/db, the database a number")
    return SentinelURL(
        tuple(sentinels),
        urllib.parse.unquote(service),
        int(db or 0),
        urllib.parse.unquote(username) or None,
        urllib.parse.unquote(password) or None,
    )


def _redis_url(key: str, raw: str) -> str:
    if raw.startswith(SENTINEL + "://"):
        sentinel_url(key, raw)
        return raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(
            key, "must start with redis://, rediss:// (TLS) or redis+sentinel:// (Sentinel)"
        )
    try:
        host, _ = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        raise ConfigError(key, "has an invalid port") from None
    if not host:
        raise ConfigError(key, "needs a host, e.g. redis://redis.example:6379/0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(key, "the path is the database number, e.g. /0")
    return raw


REDIS_URL = Kind("Redis URL", "redis:// or rediss:// [user:password@]host[:port][/db]", _redis_url)


def _between(low: float, high: float) -> Kind[float]:
    def read(key: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(key, f"must be a number of seconds, got {raw!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(key, f"must be from {low:g} to {high:g} seconds, got {raw!r}")
        return value

    return Kind("seconds", f"{low:g} to {high:g}; decimals allowed", read)


LEASE_SECONDS = _between(*LEASE_BOUNDS)
RENEW_SECONDS = _between(*RENEW_BOUNDS)


def _instance(key: str, raw: str) -> str:
    if not _INSTANCE_RE.match(raw):
        raise ConfigError(key, "must be 1 to 100 letters, digits and . _ : @ -")
    return raw


INSTANCE = Kind("name", "1 to 100 letters, digits and . _ : @ -", _instance)


def _lease_key(key: str, raw: str) -> str:
    if not _KEY_RE.match(raw):
        raise ConfigError(key, "must be 1 to 200 printable characters without spaces")
    return raw


LEASE_KEY = Kind("Redis key", "1 to 200 printable characters, no spaces", _lease_key)


def check_timing(lease: float, renew: float) -> None:
    """Renewal must leave room for a failed renewal before the fencing deadline."""
    if renew >= lease / 2:
        raise ConfigError(
            "HA_RENEW_SEC",
            f"must be less than half of HA_LEASE_SEC ({lease:g} s), got {renew:g}",
        )


def margin(lease: float) -> float:
    """How long before the lease would expire in Redis the holder stops writing: a fifth of
    the lease (2 s of the default 10 s)."""
    return lease / 5
