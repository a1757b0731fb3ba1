"""The last original overwrite_ip the journal knows for each device: built from the journal
files at start and kept up to date as events are written, so that adoption and `track` can
look one up in memory instead of scanning the files. Also when the daemon last let each device
go (its last closing event), so that reconciliation does not take a device on again, after a
restart too, for an alert raised before it was let go (recovered, dismissed, discarded)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from alert_handler.core.event_types import EPISODE_ENDS
from alert_handler.core.times import from_iso
from alert_handler.events.journal import Event

_ENDS = frozenset(t.value for t in EPISODE_ENDS)


class LastOriginals:
    """device id -> its last known original (which may be null); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._originals: dict[int, str | None] = {}
        self._ended: dict[int, float] = {}

    def add(self, events: Iterable[Event]) -> None:
        """Learn from events (oldest first): only those whose original is known count."""
        with self._lock:
            for event in events:
                if not isinstance(event.device_id, int):
                    continue
                if event.original_known:
                    self._originals[event.device_id] = event.original_overwrite_ip
                if event.type in _ENDS:
                    at = from_iso(event.time)
                    if at is not None:
                        self._ended[event.device_id] = at

    def get(self, device_id: int) -> tuple[str | None] | None:
        """`(original,)` when one is known, else None."""
        with self._lock:
            if device_id in self._originals:
                return (self._originals[device_id],)
            return None

    def ended(self) -> dict[int, float]:
        """device id -> when the daemon last let it go (its last closing event)."""
        with self._lock:
            return dict(self._ended)

    def __len__(self) -> int:
        with self._lock:
            return len(self._originals)
