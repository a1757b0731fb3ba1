"""The state: the single in-memory copy of the records and its group-committing writer.

Changes are applied in memory under the store's lock and get a version number; a writer thread
saves the newest version (`files.write_atomic`: temp file, fsync, rename, fsync the directory)
and wakes everyone waiting for a version at or below it. Changes that arrive while a write is
under way share the next write: group commit, so an alert storm costs one fsync per batch
instead of one per alert. The writer keeps the file's text in cached pieces and rebuilds only
what changed, so a batch against a 10,000-device file costs the write and fsync of its bytes,
not a re-serialisation of every record.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from alert_handler.core.records import DeviceRecord
from alert_handler.store.codec import Snapshot, record_to_json, snapshot_to_json
from alert_handler.store.files import write_atomic

log = logging.getLogger(__name__)

_BLOCK = 64  # device ids per cached block of the state file's text


class StateWriteError(OSError):
    """The state could not be made durable (disk full, read-only directory, ...)."""


# Event journal lines that go with a change, or a function of (current, new) record giving them
# (called under the store's lock, so they describe exactly the change that is stored).
Events = Sequence[str] | Callable[[DeviceRecord | None, DeviceRecord | None], Sequence[str]]


class StateStore:
    """The records in memory plus a group-committing writer thread. Owns its lock.

    Request threads change records under the lock and wait on `_written`; the writer waits on
    `_changed`, so a change wakes the writer alone, and a finished write wakes its waiters once.
    The file text is cached by the writer thread in blocks of `_BLOCK` device ids: a write
    re-serialises only the records changed since the last one and re-joins only their blocks,
    outside the lock, so a storm against a large file costs a little CPU and one fsync per batch.
    """

    def __init__(
        self,
        path: Path,
        snapshot: Snapshot,
        *,
        on_write: Callable[[float, int], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        retry_delay: float = 0.5,
        gather: float = 0.002,
        append_events: Callable[[list[str]], None] | None = None,
    ) -> None:
        """`gather`: under load (the last write carried several changes), how long the writer
        waits before taking the next batch, so that requests being parsed join it (fewer,
        larger writes: less CPU per alert). A lone change is written at once.
        `append_events`: the event journal's durable append; a batch's event lines go through
        it before the state file is written and before any of the batch's waiters wake."""
        self.path = path
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the writer waits here
        self._written = threading.Condition(self._lock)  # wait_durable waits here
        self._records: dict[int, DeviceRecord] = dict(snapshot.devices)
        self._paused = snapshot.paused
        self._dirty: set[int] = set(self._records)  # ids whose line the writer must rebuild
        self._version = 0
        self._durable = 0
        self._failed_version = 0
        self._last_error: str | None = None
        self._closing = False
        self._on_write = on_write
        self._on_error = on_error  # each failed write, with its reason (for /health)
        self._retry_delay = retry_delay
        self._gather = gather
        self._last_batch = 0  # changes carried by the last successful write
        self._thread: threading.Thread | None = None
        # Events: lines waiting for the next batch; the version of the last state change (a
        # batch of events alone does not rewrite the state file).
        self._append_events = append_events
        self._events: list[str] = []
        self._state_version = 0
        self._state_written = 0
        # Owned by the writer thread (no lock): the file text in pieces.
        self._lines: dict[int, bytes] = {}  # device -> b'"<id>": {...}'
        self._members: dict[int, set[int]] = {}  # block -> its device ids
        self._blocks: dict[int, bytes] = {}  # block -> its lines joined
        if snapshot.migrated_from_legacy:
            self._version = self._state_version = 1  # write the migrated file at once

    # -- reading -----------------------------------------------------------------------------
    def get(self, device_id: int) -> DeviceRecord | None:
        """The current record of a device, or None."""
        with self._lock:
            return self._records.get(device_id)

    def records(self) -> dict[int, DeviceRecord]:
        """A copy of all records (records themselves are immutable)."""
        with self._lock:
            return dict(self._records)

    def count(self) -> int:
        """How many devices are tracked."""
        with self._lock:
            return len(self._records)

    @property
    def paused(self) -> bool:
        """Whether maintenance mode is on."""
        with self._lock:
            return self._paused

    @property
    def healthy(self) -> bool:
        """False while the newest change could not be written."""
        with self._lock:
            return self._failed_version <= self._durable

    @property
    def last_error(self) -> str | None:
        """The last write error, if the last write failed."""
        with self._lock:
            return self._last_error if self._failed_version > self._durable else None

    # -- changing ----------------------------------------------------------------------------
    def put(self, record: DeviceRecord) -> int:
        """Store one record; returns the version to wait for."""
        with self._lock:
            self._records[record.device_id] = record
            return self._bump(record.device_id)

    def update(
        self,
        device_id: int,
        change: Callable[[DeviceRecord | None], DeviceRecord | None],
        events: Events = (),
    ) -> tuple[DeviceRecord | None, int]:
        """Replace one record by `change(current)` (None removes it); returns (new, version).
        `events` are journaled in the same batch (durable when the version is)."""
        with self._lock:
            current = self._records.get(device_id)
            new = change(current)
            lines = events(current, new) if callable(events) else events
            self._events.extend(lines)
            if new is current:
                return current, self._bump(None, state=False) if lines else 0
            if new is None:
                self._records.pop(device_id, None)
            else:
                self._records[device_id] = new
            return new, self._bump(device_id)

    def set_paused(self, paused: bool, events: Sequence[str] = ()) -> int:
        """Turn maintenance mode on or off; returns the version to wait for."""
        with self._lock:
            self._paused = paused
            self._events.extend(events)
            return self._bump(None)

    def add_events(self, events: Sequence[str]) -> int:
        """Journal events that go with no state change; returns the version to wait for."""
        if not events:
            return 0
        with self._lock:
            self._events.extend(events)
            return self._bump(None, state=False)

    def _bump(self, device_id: int | None, *, state: bool = True) -> int:
        """Under the lock: note a change, wake the writer, return the new version."""
        if device_id is not None:
            self._dirty.add(device_id)
        self._version += 1
        if state:
            self._state_version = self._version
        self._changed.notify()
        return self._version

    def wait_durable(self, version: int, timeout: float | None = None) -> None:
        """Block until `version` is on disk; StateWriteError if its write failed or timed out."""
        if version <= 0:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._durable < version:
                if self._failed_version >= version:
                    raise StateWriteError(f"cannot write {self.path}: {self._last_error}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise StateWriteError(f"cannot write {self.path}: timed out")
                self._written.wait(remaining)

    # -- the writer --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending and stop the writer."""
        with self._lock:
            self._closing = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything changed so far is on disk."""
        with self._lock:
            version = self._version
        self.wait_durable(version, timeout)

    def _prepare(self) -> tuple[int, list[bytes]]:
        """Writer thread: the newest version and the file's bytes in pieces, rebuilding only what
        changed. Only taking the changed records is done under the lock."""
        with self._lock:
            version, paused = self._version, self._paused
            dirty, self._dirty = self._dirty, set()
            changed = [(device_id, self._records.get(device_id)) for device_id in dirty]
        try:
            return version, self._build(changed, paused)
        except BaseException:
            with self._lock:  # rebuild these next time rather than write a stale line
                self._dirty |= dirty
            raise

    def _journal(self) -> tuple[int, int]:
        """Writer thread: append the pending event lines durably (kept for a retry if that
        fails). Returns the version whose events are now all on disk (no later one may be
        called durable by this batch) and the newest state-changing version, which the state
        file must reach."""
        with self._lock:
            lines, self._events = self._events, []
            version, state_version = self._version, self._state_version
        if lines and self._append_events is not None:
            try:
                self._append_events(lines)
            except BaseException:
                with self._lock:
                    self._events[:0] = lines
                raise
        return version, state_version

    def _build(self, changed: list[tuple[int, DeviceRecord | None]], paused: bool) -> list[bytes]:
        """The file's pieces after re-serialising `changed` (writer thread only)."""
        stale: set[int] = set()
        for device_id, rec in changed:
            block = device_id // _BLOCK
            stale.add(block)
            members = self._members.setdefault(block, set())
            if rec is None:
                self._lines.pop(device_id, None)
                members.discard(device_id)
            else:
                self._lines[device_id] = f'"{device_id}": {record_to_json(rec)}'.encode()
                members.add(device_id)
        for block in stale:
            members = self._members[block]
            if members:
                self._blocks[block] = b",\n".join([self._lines[i] for i in sorted(members)])
            else:
                del self._members[block]
                self._blocks.pop(block, None)
        # snapshot_to_json's layout, one device per line: head, blocks joined by ",\n", tail.
        head = snapshot_to_json([], paused)[: -len("}}\n")].encode()
        if not self._blocks:
            return [head, b"}}\n"]
        parts = [head]
        for block in sorted(self._blocks):
            parts += (b",\n", self._blocks[block])
        parts[1] = b"\n"
        parts.append(b"\n}}\n")
        return parts

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # a failure here shows again at the first write
            self._prepare()  # serialise every loaded record now, not when the first alert waits
        while True:
            with self._lock:
                while self._durable >= self._version and not self._closing:
                    self._changed.wait()
                if self._durable >= self._version and self._closing:
                    return
            if self._gather and self._last_batch > 1:
                time.sleep(self._gather)
            started = time.monotonic()
            with self._lock:
                version = self._version
            parts: list[bytes] = []
            try:
                version, state_version = self._journal()
                if state_version > self._state_written:
                    # The file may include later changes; they are durable only once their
                    # events are too (the next batch), so `version` stays the journal's.
                    prepared, parts = self._prepare()
                    write_atomic(self.path, parts)
                    self._state_written = prepared
            except Exception as exc:
                # OSError: disk full, read-only... Anything else is a bug; either way the
                # writer lives on, /health turns 503 and waiters get StateWriteError.
                reason = exc.strerror if isinstance(exc, OSError) else None
                with self._lock:
                    first = self._failed_version <= self._durable
                    self._failed_version = version
                    self._last_error = reason or f"{type(exc).__name__}: {exc}"
                    self._written.notify_all()
                    closing = self._closing
                if self._on_error is not None:
                    self._on_error(reason or f"{type(exc).__name__}: {exc}")
                if first:
                    log.error(
                        "step=state-write file=%s failed: %s",
                        self.path,
                        reason or exc,
                        exc_info=None if isinstance(exc, OSError) else exc,
                    )
                if closing:
                    return
                time.sleep(self._retry_delay)
                continue
            took = time.monotonic() - started
            with self._lock:
                recovered = self._failed_version > self._durable
                self._last_batch = version - self._durable
                self._durable = version
                self._written.notify_all()
            if recovered:
                log.warning("step=state-write file=%s writable again", self.path)
            if self._on_write is not None and parts:
                self._on_write(took, sum(len(p) for p in parts))
