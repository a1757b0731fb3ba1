"""The daily report for the NOC, built from the event journal only; pure (events in, a `Report`
out, and its text and JSON forms).

What a window (by default the last 24 hours) held: devices forced down, recovered (with the
median and 95th percentile outage length), given up, still down at its end, the devices that
flapped most, and everything that needed a person (storm guard, confirmations, operator actions,
pauses, health changes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from alert_handler.core.alerts import log_safe
from alert_handler.core.times import from_iso, iso, span
from alert_handler.events.history import ONGOING, Episode, episodes
from alert_handler.events.journal import Event, EventType

DAY = 86400.0
_OPENS = frozenset({EventType.FORCED_DOWN.value, EventType.ADOPTED.value})
TOP_FLAPPING = 5
LIST_IDS = 10  # device ids listed after the number forced down
# Events that a person caused or must act on.
ATTENTION = frozenset(
    {
        EventType.STORM_ENGAGED.value,
        EventType.STORM_CLEARED.value,
        EventType.OPERATOR.value,
        EventType.PAUSED.value,
        EventType.RESUMED.value,
        EventType.HEALTH.value,
    }
)


@dataclass(frozen=True)
class DeviceLine:
    """One device in a list of the report."""

    device_id: int | None
    hostname: str | None
    seconds: float | None = None  # outage length (recovered, gave up) or down so far
    count: int = 0  # episodes in the window (flapping)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"device_id": self.device_id, "hostname": self.hostname}
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        if self.count:
            out["count"] = self.count
        return out


@dataclass(frozen=True)
class Attention:
    """An event that needed a person."""

    time: str
    type: str
    device_id: int | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "time": self.time,
            "type": self.type,
            "device_id": self.device_id,
            "text": self.text,
        }


@dataclass(frozen=True)
class Report:
    """What happened between `since` and `until` (epoch seconds)."""

    since: float
    until: float
    forced_down: tuple[DeviceLine, ...]  # episodes that began in the window
    recovered: tuple[DeviceLine, ...]  # episodes that ended recovered in the window
    gave_up: tuple[DeviceLine, ...]
    released: int  # other endings in the window: released, foreign change, device gone
    still_down: tuple[DeviceLine, ...]  # episodes open at `until`
    flapping: tuple[DeviceLine, ...]  # devices with two or more episodes, most first
    attention: tuple[Attention, ...]
    median_outage: float | None
    p95_outage: float | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`report --json`)."""
        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "forced_down": len(self.forced_down),
            "recovered": len(self.recovered),
            "median_outage_seconds": _rounded(self.median_outage),
            "p95_outage_seconds": _rounded(self.p95_outage),
            "gave_up": [d.as_dict() for d in self.gave_up],
            "released_or_left": self.released,
            "still_down": [d.as_dict() for d in self.still_down],
            "flapping": [d.as_dict() for d in self.flapping],
            "needed_a_person": [a.as_dict() for a in self.attention],
            "forced_down_devices": [d.as_dict() for d in self.forced_down],
            "recovered_devices": [d.as_dict() for d in self.recovered],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: Iterable[float], pct: float) -> float | None:
    """The `pct` percentile by the nearest-rank method (a value that occurred); None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Iterable[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None if empty."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def _time(text: str | None) -> float | None:
    try:
        return from_iso(text)
    except ValueError:
        return None


def _line(ep: Episode, seconds: float | None) -> DeviceLine:
    return DeviceLine(ep.device_id, ep.hostname, seconds)


def _attention(event: Event) -> Attention:
    text = event.detail
    if event.type == EventType.HEALTH.value:
        text = f"health {event.level or '?'}: {event.detail}"
    elif event.client and event.client not in text:
        text = f"{event.detail} (by {event.client})"
    elif not text:
        text = event.type.replace("_", " ")
    return Attention(event.time, event.type, event.device_id, log_safe(text, 200))


def build_report(events: Iterable[Event], since: float, until: float) -> Report:
    """The report of the window [since, until] from the journal's events, oldest first (events
    before `since` tell which episodes were already open; events after `until` are ignored)."""
    kept: list[Event] = []
    attention: list[Attention] = []
    for event in events:
        when = _time(event.time)
        if when is None or when > until:
            continue
        kept.append(event)
        if when >= since and event.type in ATTENTION:
            attention.append(_attention(event))
    forced: list[DeviceLine] = []
    recovered: list[DeviceLine] = []
    gave_up: list[DeviceLine] = []
    still: list[DeviceLine] = []
    released = 0
    per_device: Counter[int] = Counter()
    names: dict[int, str | None] = {}
    # An episode counts from its force-down (or adoption); a device released while still new
    # gets an episode id too, but was never forced down.
    opened = {e.episode for e in kept if e.type in _OPENS}
    for ep in episodes(kept):
        start, end = _time(ep.start), _time(ep.end)
        if start is None or ep.episode not in opened:
            continue
        if since <= start:
            forced.append(_line(ep, None))
            if ep.device_id is not None:
                per_device[ep.device_id] += 1
                names[ep.device_id] = ep.hostname
        if ep.outcome == ONGOING or end is None:
            still.append(_line(ep, until - start))
            continue
        if end < since:
            continue
        if ep.outcome == EventType.RECOVERED.value:
            recovered.append(_line(ep, ep.duration))
        elif ep.outcome == EventType.GAVE_UP.value:
            gave_up.append(_line(ep, ep.duration))
        else:
            released += 1
    flapping = [
        DeviceLine(device_id, names.get(device_id), count=count)
        for device_id, count in sorted(per_device.items(), key=lambda kv: (-kv[1], kv[0]))
        if count >= 2
    ][:TOP_FLAPPING]
    outages = [d.seconds for d in recovered if d.seconds is not None]
    return Report(
        since=since,
        until=until,
        forced_down=tuple(forced),
        recovered=tuple(recovered),
        gave_up=tuple(gave_up),
        released=released,
        still_down=tuple(sorted(still, key=lambda d: -(d.seconds or 0.0))),
        flapping=tuple(flapping),
        attention=tuple(attention),
        median_outage=median(outages),
        p95_outage=percentile(outages, 95),
    )


def _who(line: DeviceLine) -> str:
    name = f" {log_safe(line.hostname, 60)}" if line.hostname else ""
    return f"device {line.device_id}{name}"


def _span(seconds: float | None) -> str:
    return "-" if seconds is None else span(seconds)


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def report_title(report: Report) -> str:
    """A one-line summary, the notification's title."""
    return (
        f"alert-handler daily report: {len(report.forced_down)} forced down, "
        f"{len(report.recovered)} recovered, {len(report.still_down)} still down"
    )


def report_text(report: Report) -> str:
    """The report as plain text for a person (the command and the notification's body)."""
    out = [f"alert-handler report from {iso(report.since)} to {iso(report.until)}", ""]
    ids = sorted({d.device_id for d in report.forced_down if d.device_id is not None})
    line = (
        f"Forced down:  {_plural(len(report.forced_down), 'time')}, {_plural(len(ids), 'device')}"
    )
    if ids:
        shown = ", ".join(str(i) for i in ids[:LIST_IDS])
        line += f" ({shown}{', ...' if len(ids) > LIST_IDS else ''})"
    out.append(line)
    line = f"Recovered:    {_plural(len(report.recovered), 'time')}"
    if report.recovered:
        line += (
            f" (outage median {_span(report.median_outage)}, "
            f"95th percentile {_span(report.p95_outage)})"
        )
    out.append(line)
    out.append(f"Gave up:      {_plural(len(report.gave_up), 'device')}")
    out += [f"  {_who(d)} after {_span(d.seconds)}" for d in report.gave_up]
    if report.released:
        out.append(f"Released or left alone: {_plural(report.released, 'device')}")
    out.append(f"Still down:   {_plural(len(report.still_down), 'device')}")
    out += [f"  {_who(d)} for {_span(d.seconds)}" for d in report.still_down]
    if report.flapping:
        out.append("Flapped most:")
        out += [f"  {_who(d)}: forced down {d.count} times" for d in report.flapping]
    else:
        out.append("Flapped most: none (no device was forced down twice)")
    if report.attention:
        out.append(f"Needed a person: {_plural(len(report.attention), 'event')}")
        out += [f"  {a.time} {a.type}: {a.text}" for a in report.attention]
    else:
        out.append("Needed a person: nothing")
    return "\n".join(out)
