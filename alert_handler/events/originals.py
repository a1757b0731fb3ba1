"""The last original overwrite_ip the journal knows for each device: built from the journal
files at start and kept up to date as events are written, so that adoption and `track` can
look one up in memory instead of scanning the files."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from alert_handler.events.journal import Event


class LastOriginals:
    """device id -> its last known original (which may be null); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._originals: dict[int, str | None] = {}

    def add(self, events: Iterable[Event]) -> None:
        """Learn from events (oldest first): only those whose original is known count."""
        with self._lock:
            for event in events:
                if event.original_known and isinstance(event.device_id, int):
                    self._originals[event.device_id] = event.original_overwrite_ip

    def get(self, device_id: int) -> tuple[str | None] | None:
        """`(original,)` when one is known, else None."""
        with self._lock:
            if device_id in self._originals:
                return (self._originals[device_id],)
            return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._originals)
