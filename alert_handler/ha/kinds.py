"""The HA_* settings' kinds and the rules between them; no Redis import (settings are read
whether or not HA is used)."""

from __future__ import annotations

import math
import re
import urllib.parse

from alert_handler.settings import ConfigError, Kind

LEASE_BOUNDS = (2.0, 300.0)  # seconds: shorter makes every Redis hiccup a failover
RENEW_BOUNDS = (0.2, 150.0)
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")
_KEY_RE = re.compile(r"^[!-~]{1,200}$")


def _redis_url(key: str, raw: str) -> str:
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigError(key, "must start with redis:// or rediss:// (TLS)")
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
