"""Times as operators read them: epoch seconds to ISO 8601 UTC and back; pure."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from alert_handler.core.alerts import plain


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string with milliseconds (what operators read)."""
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last moment `iso` can write


def from_iso(text: Any) -> float | None:
    """The inverse of `iso`; also accepts epoch numbers. ValueError on junk or on a time that
    `iso` could not write back (NaN, infinities, before 1970 or after 9999)."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        try:
            value = float(text)
        except OverflowError:
            raise ValueError(f"not a time: {plain(text)}") from None
    elif isinstance(text, str):
        stamp = text[:-1] + "+00:00" if text.endswith("Z") else text
        try:
            moment = datetime.fromisoformat(stamp)
        except ValueError:  # its message quotes the text as a Python repr
            raise ValueError(f"not a time: {plain(text)}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        value = moment.timestamp()
    else:
        raise ValueError(f"not a time: {plain(text)}")
    if not 0.0 <= value <= _LAST_TIME:  # also false for NaN
        raise ValueError(f"time out of range: {plain(text)}")
    return value


def span(seconds: float) -> str:
    """A duration as operators read it: `0.4s`, `42s`, `12m05s`, `3h07m`, `2d04h`."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
