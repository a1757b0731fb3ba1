"""What people are told: a short message per event, and the per-target rate limit that turns a
storm into one digest ("37 more devices forced down in the last 5 minutes"); pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from alert_handler.core.times import span
from alert_handler.events.journal import Event, EventType


@dataclass(frozen=True)
class Message:
    """One notification: a title and a short body."""

    title: str
    body: str


def _span(seconds: float | None) -> str:
    return "?" if seconds is None else span(seconds)


def _who(event: Event) -> str:
    if event.device_id is None:
        return "alert-handler"
    return f"{event.hostname or 'device'} (device {event.device_id})"


def message(event: Event) -> Message:
    """The message for one event: device, hostname, what happened, for how long."""
    who, kind = _who(event), event.type
    original = "null" if event.original_overwrite_ip is None else event.original_overwrite_ip
    attempts = f"{event.attempt} attempt{'s' if event.attempt != 1 else ''}"
    if kind == EventType.FORCED_DOWN:
        return Message(
            f"{who} forced down",
            f"{who} lost its port and was forced down; it is checked every interval. "
            f"Original overwrite_ip: {original}.",
        )
    if kind == EventType.RECOVERED:
        return Message(
            f"{who} recovered",
            f"{who} is back after {_span(event.down_seconds)} ({attempts}).",
        )
    if kind == EventType.GAVE_UP:
        return Message(
            f"{who}: gave up",
            f"{who} is still down after {attempts} ({_span(event.down_seconds)}): original "
            f"overwrite_ip {original} restored, no longer handled. {event.detail}",
        )
    if kind == EventType.STORM_ENGAGED:
        return Message("Storm guard engaged", f"Storm guard engaged: {event.detail}.")
    if kind == EventType.STORM_CLEARED:
        return Message("Storm guard cleared", f"Storm guard cleared: {event.detail}.")
    if kind == EventType.HEALTH:
        level = (event.level or "?").upper()
        return Message(f"alert-handler health: {level}", f"Health {level}: {event.detail}.")
    return Message(
        f"{who}: {kind.replace('_', ' ')}", f"{who}: {kind.replace('_', ' ')}. {event.detail}"
    )


_PHRASES = {  # (one, more than one)
    EventType.FORCED_DOWN.value: ("device forced down", "devices forced down"),
    EventType.RECOVERED.value: ("device recovered", "devices recovered"),
    EventType.GAVE_UP.value: ("device given up", "devices given up"),
    EventType.STILL_DOWN.value: (
        "check found a device still down",
        "checks found devices still down",
    ),
    EventType.RELEASED.value: ("device released", "devices released"),
    EventType.ADOPTED.value: ("device adopted", "devices adopted"),
}


def _phrase(kind: str, count: int) -> str:
    """ "1 more device forced down", "3 more devices forced down", "1 more paused event"."""
    if kind in _PHRASES:
        one, more = _PHRASES[kind]
    else:
        one = kind.replace("_", " ") + " event"
        more = one + "s"
    return f"{count} more {one if count == 1 else more}"


def _window(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def digest(held: Counter[str], window: float) -> Message:
    """One message for the events held back in a window."""
    parts = [_phrase(kind, count) for kind, count in held.most_common()]
    text = ", ".join(parts) + f" in the last {_window(window)}"
    total = sum(held.values())
    title = f"alert-handler: {total} more event{'' if total == 1 else 's'}"
    return Message(title, text[0].upper() + text[1:])


class RateLimit:
    """At most `limit` messages in a window of `window` seconds (from the first message); the
    rest is counted and sent as one digest when the window ends. So a target gets at most
    limit + 1 messages per window, however many events there are."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._start: float | None = None
        self._sent = 0
        self._held: Counter[str] = Counter()

    def offer(self, event: Event, now: float) -> Message | None:
        """The event's message if it may go now, else None (held for the digest)."""
        if self._start is None or (now >= self._start + self.window and not self._held):
            self._start, self._sent = now, 0
        if self._sent < self.limit and not self._held:
            self._sent += 1
            return message(event)
        self._held[event.type] += 1
        return None

    def due(self, now: float) -> Message | None:
        """The digest, once the window with held events has ended."""
        if self._start is None or not self._held or now < self._start + self.window:
            return None
        text = digest(self._held, self.window)
        self._held = Counter()
        self._start, self._sent = now, 1  # the digest opens the next window
        return text

    def next_due(self) -> float | None:
        """When `due` will have a digest (None: nothing held)."""
        return None if self._start is None or not self._held else self._start + self.window
