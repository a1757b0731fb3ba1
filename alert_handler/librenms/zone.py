"""The LibreNMS server's time zone, and its times read as epoch seconds.

LibreNMS writes its database times in the server's local time with no offset: `/alerts`
timestamps and the raw rows of `/devices` are naive local times; the Eloquent-cast rows of
`GET /devices/{id}` (26.5 and later) are ISO 8601 in UTC. LIBRENMS_TIMEZONE names the server's
zone; unset, this host's own zone is taken (LibreNMS usually runs on, or next to, this host).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCALTIME = "/etc/localtime"


def librenms_zone(name: str | None) -> tzinfo:
    """The zone `name` (IANA, validated by the config), or this host's: $TZ when it names a
    zone, else /etc/localtime, else UTC."""
    if name:
        return ZoneInfo(name)
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open(LOCALTIME, "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return timezone.utc


def read_time(text: object, zone: tzinfo) -> float | None:
    """Epoch seconds of a LibreNMS time: a naive one ("2026-08-01 10:00:00") is in `zone`, one
    with an offset or "Z" is absolute; None for anything that is not a time."""
    if not isinstance(text, str) or not text.strip():
        return None
    stamp = text.strip()
    stamp = stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()
