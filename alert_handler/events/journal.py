"""The event journal: what the daemon did, one JSON object per line in EVENTS_FILE.

`Event` is one line. `EventMaker` stamps events with an id and the time. `EventJournal` appends
a batch of lines and fdatasyncs them before it returns: the state writer calls it for the events
of a batch before the state file is written and before the batch's waiters wake, so no change is
acknowledged without its event (a crash in between may leave an event whose change must be made
again: an event can repeat, never go missing). The file is rotated by size
(`events.jsonl.1` is the newest old file); a line cut by a crash is never followed by another:
the journal cuts it off when it opens the file, and readers skip an unterminated last line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from alert_handler.core.event_types import EPISODE_ENDS as EPISODE_ENDS
from alert_handler.core.event_types import EventType as EventType
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import iso
from alert_handler.events.ids import IdSource
from alert_handler.store.wal import append_durably, cut_torn_tail, fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One line of the journal; every field is always written (null when it does not apply)."""

    id: str
    time: str  # UTC, ISO 8601 with milliseconds and Z
    type: str
    device_id: int | None = None
    hostname: str | None = None
    episode: str | None = None
    attempt: int | None = None
    original_overwrite_ip: str | None = None
    original_known: bool = False  # False: no original is known (null is then no value)
    detail: str = ""
    down_seconds: float | None = None  # since the episode's force-down
    client: str | None = None  # who asked (operator events, pause and resume)
    level: str | None = None  # health events: the new level

    def to_line(self) -> str:
        """The journal line (no newline; json escapes any inside a value)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> Event:
        """An event from its JSON object; ValueError when id, time or type is missing."""
        if not all(isinstance(obj.get(key), str) for key in ("id", "time", "type")):
            raise ValueError("an event needs id, time and type")
        known = {f.name for f in fields(Event)}
        return Event(**{k: v for k, v in obj.items() if k in known})


def parse_line(line: bytes | str) -> Event | None:
    """The event on one journal line, None for a line that is not one."""
    try:
        obj = json.loads(line)
        return Event.from_dict(obj) if isinstance(obj, dict) else None
    except (ValueError, TypeError):
        return None


class EventMaker:
    """Builds events stamped with a fresh id and the time of `clock`."""

    def __init__(self, clock: Callable[[], float], ids: IdSource | None = None) -> None:
        self.clock = clock
        self.ids = ids or IdSource("evt")

    def make(
        self,
        kind: EventType,
        rec: DeviceRecord | None = None,
        now: float | None = None,
        **more: Any,
    ) -> Event:
        """An event of `kind`, with the device fields of `rec` (if any) and `more` on top."""
        now = self.clock() if now is None else now
        base: dict[str, Any] = {}
        if rec is not None:
            known = rec.original_recorded and not rec.adopted
            original = rec.original_overwrite_ip
            if not rec.original_recorded and rec.knows_original:
                known, original = True, rec.known_original
            base = {
                "device_id": rec.device_id,
                "hostname": rec.hostname,
                "episode": rec.episode,
                "attempt": rec.attempts or None,
                "original_overwrite_ip": original,
                "original_known": known,
                "down_seconds": None
                if rec.forced_down_at is None
                else round(max(0.0, now - rec.forced_down_at), 3),
            }
        base.update(more)
        return Event(id=self.ids.new(), time=iso(now) or "", type=kind.value, **base)


Listener = Callable[[list[Event]], None]


class EventJournal:
    """Appends event lines to EVENTS_FILE durably, rotating it by size; owns its lock."""

    def __init__(self, path: Path, max_bytes: int = 10_000_000, keep: int = 4) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = max(1, keep)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call `listener` with the events of every batch once they are durable (in the
        appending thread: it must be quick)."""
        self._listeners.append(listener)

    def open(self) -> str | None:
        """Open (or create) the file, cut off a line torn by a crash; the last event's id."""
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> str | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size, last = cut_torn_tail(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._size = fd, size
        fsync_dir(self.path.parent)
        event = parse_line(last) if last else None
        return event.id if event is not None else None

    def append_batch(self, lines: Sequence[str]) -> None:
        """Append `lines` and fdatasync them: durable when this returns. On an error nothing of
        the batch stays in the file (it is cut back), so a retry cannot duplicate a line."""
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        with self._lock:
            if self._fd is None:
                self._open_locked()
            assert self._fd is not None
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate_locked()
            start = self._size
            append_durably(self._fd, data, start)
            self._size = start + len(data)
        if self._listeners:
            events = [e for e in (parse_line(line) for line in lines) if e is not None]
            for listener in self._listeners:
                try:
                    listener(events)
                except Exception:
                    log.exception("step=events listener failed")

    def _rotate_locked(self) -> None:
        """events.jsonl -> .1 -> .2 ... ; the oldest beyond `keep` is removed."""
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        name = self.path.name
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path.with_name(f"{name}.{self.keep}"))
        for n in range(self.keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(
                    self.path.with_name(f"{name}.{n}"), self.path.with_name(f"{name}.{n + 1}")
                )
        os.rename(self.path, self.path.with_name(f"{name}.1"))
        self._open_locked()  # also fsyncs the directory: the renames are durable

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
