"""Episodes from events: one forced-down period of one device, from its first force-down (or
adoption) to recovery, give-up, release, a foreign change or the device's deletion; pure."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from alert_handler.core.times import from_iso
from alert_handler.events.journal import EPISODE_ENDS, Event

ONGOING = "ongoing"


@dataclass(frozen=True)
class Episode:
    """What `alert-handler history` shows for one episode."""

    episode: str
    device_id: int | None
    hostname: str | None
    start: str
    end: str | None = None
    attempts: int = 0
    outcome: str = ONGOING  # the ending event's type, or "ongoing"
    original_overwrite_ip: str | None = None
    detail: str = ""

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None while ongoing)."""
        if self.end is None:
            return None
        start, end = from_iso(self.start), from_iso(self.end)
        return None if start is None or end is None else max(0.0, end - start)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (`history --json`)."""
        return {
            "episode": self.episode,
            "device_id": self.device_id,
            "hostname": self.hostname,
            "start": self.start,
            "end": self.end,
            "duration_seconds": self.duration,
            "attempts": self.attempts,
            "outcome": self.outcome,
            "original_overwrite_ip": self.original_overwrite_ip,
            "detail": self.detail,
        }


def advance(episode: Episode | None, event: Event) -> Episode | None:
    """The episode after one more of its events (None before its first)."""
    if event.episode is None:
        return episode
    if episode is None:
        episode = Episode(
            episode=event.episode,
            device_id=event.device_id,
            hostname=event.hostname,
            start=event.time,
        )
    if episode.end is not None:
        return episode  # a repeated ending (an event written again after a crash)
    updates: dict[str, Any] = {"hostname": event.hostname or episode.hostname}
    if event.attempt:
        updates["attempts"] = max(episode.attempts, event.attempt)
    if event.original_known:
        updates["original_overwrite_ip"] = event.original_overwrite_ip
    if event.type in {t.value for t in EPISODE_ENDS}:
        updates.update(end=event.time, outcome=event.type, detail=event.detail)
    return replace(episode, **updates)


def episodes(events: Iterable[Event]) -> list[Episode]:
    """Every episode in `events` (oldest first), in the order they began."""
    found: dict[str, Episode] = {}
    for event in events:
        if event.episode is None:
            continue
        updated = advance(found.get(event.episode), event)
        if updated is not None:
            found[event.episode] = updated
    return list(found.values())


class EpisodeBook:
    """The most recent episodes, kept in memory for the status page; thread-safe."""

    def __init__(self, size: int = 50) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._episodes: OrderedDict[str, Episode] = OrderedDict()

    def add(self, events: Iterable[Event]) -> None:
        """Fold in events (oldest first)."""
        with self._lock:
            for event in events:
                if event.episode is None:
                    continue
                updated = advance(self._episodes.get(event.episode), event)
                if updated is None:
                    continue
                self._episodes[event.episode] = updated
                if len(self._episodes) > self._size:
                    self._episodes.popitem(last=False)

    def recent(self) -> list[Episode]:
        """The kept episodes, newest first."""
        with self._lock:
            return list(reversed(self._episodes.values()))
