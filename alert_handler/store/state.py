"""The state: the single in-memory copy of the records and its group-committing writer.

Changes are applied in memory under the store's lock and get a version number; a writer thread
appends the changed records to the journal (`journal`: one JSON line each, then fdatasync) and
wakes everyone waiting for a version at or below it. Changes that arrive while an append is
under way share the next one: group commit, so an alert storm costs one fdatasync per batch
instead of one per alert, and an acknowledgement costs a line, not the whole file, whatever the
number of devices. The state file is the journal's checkpoint, written in the background at most
about a second behind (`checkpoint`), and at shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from alert_handler.core.records import DeviceRecord
from alert_handler.store import wal as journal
from alert_handler.store.checkpoint import Checkpointer
from alert_handler.store.codec import Snapshot, record_to_json

log = logging.getLogger(__name__)

CHECKPOINT_DELAY = 0.8  # seconds a durable change waits at most before its checkpoint starts
# How long a caller waits at most for its change to be on disk (`wait_durable`):
ACK_WAIT = 5.0  # a request thread, for its reply: well inside LibreNMS's 30 s transport timeout
STEP_WAIT = 30.0  # the recovery side (a step, a reconciliation's take-on, the shutdown flush)

# Event lines for a second file written in the same group commit (the event journal): given
# with a change, or computed from the record before and after it, under the store's lock.
EventsFor = Callable[[DeviceRecord | None, DeviceRecord | None], Sequence[str]]


class StateWriteError(OSError):
    """The state could not be made durable (disk full, read-only directory, ...)."""


class StateStore:
    """The records in memory plus a group-committing writer thread. Owns its lock.

    Request threads change records under the lock and wait on `_written`; the writer waits on
    `_changed`, so a change wakes the writer alone, and a finished append wakes its waiters once.

    `snapshot` is what `files.load_state` returned for `path` (the checkpoint with its journal
    replayed): the journal goes on after its sequence number. `on_batch(lines)`, when given, is
    called by the writer with the event lines of a batch before its state lines are appended; it
    must append and fdatasync them (raising OSError when it cannot). Waiters are woken only when
    both are on disk; a crash between the two leaves an event of a change that was never
    acknowledged (at least once), never an acknowledged change without its event.
    """

    def __init__(
        self,
        path: Path,
        snapshot: Snapshot,
        *,
        on_write: Callable[[float, int], None] | None = None,
        on_batch: Callable[[list[str]], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        retry_delay: float = 0.5,
        gather: float = 0.002,
        checkpoint_delay: float = CHECKPOINT_DELAY,
    ) -> None:
        """`gather`: under load (the last append carried several changes), how long the writer
        waits before taking the next batch, so that requests being parsed join it (fewer,
        larger appends: less CPU per alert). A lone change is written at once."""
        self.path = path
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # the writer waits here
        self._written = threading.Condition(self._lock)  # wait_durable waits here
        self._records: dict[int, DeviceRecord] = dict(snapshot.devices)
        self._paused = snapshot.paused
        self._dirty: set[int] = set()  # ids changed since the last batch was taken
        self._paused_dirty = False
        self._events: list[str] = []
        self._version = 0
        self._durable = 0
        self._failed_version = 0
        self._last_error: str | None = None
        self._closing = False
        self._on_write = on_write
        self._on_batch = on_batch
        self._on_error = on_error  # each failed write, with its reason (for /health)
        self._retry_delay = retry_delay
        self._gather = gather
        self._last_batch = 0  # changes carried by the last successful append
        self._committing = False  # an append is under way (the writer's or a waiter's)
        # The writer's pauses wait on this (never set) rather than time.sleep, which can fail
        # with EINVAL under libfaketime and would end the thread.
        self._pause = threading.Event()
        self._thread: threading.Thread | None = None
        # Owned by the writer thread: the journal and its last sequence number (never below a
        # line already on disk, whatever snapshot the caller passed).
        self._journal = journal.JournalFile(path)
        old_seq = journal.last_seq(self._journal.old_path)
        self._seq = max(snapshot.seq, old_seq, journal.last_seq(self._journal.path))
        self._checkpoint = Checkpointer(
            path,
            snapshot,
            delay=checkpoint_delay,
            wake=self._wake_writer,
        )

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
        """False while the newest change could not be made durable."""
        with self._lock:
            return self._failed_version <= self._durable

    @property
    def last_error(self) -> str | None:
        """The last write error, if the last write failed."""
        with self._lock:
            return self._last_error if self._failed_version > self._durable else None

    # -- changing ----------------------------------------------------------------------------
    def put(self, record: DeviceRecord, events: Sequence[str] = ()) -> int:
        """Store one record; returns the version to wait for."""
        with self._lock:
            self._records[record.device_id] = record
            self._events += events
            return self._bump(record.device_id)

    def update(
        self,
        device_id: int,
        change: Callable[[DeviceRecord | None], DeviceRecord | None],
        events: Sequence[str] | EventsFor = (),
    ) -> tuple[DeviceRecord | None, int]:
        """Replace one record by `change(current)` (None removes it); returns (new, version).
        Version 0 (nothing to wait for) when nothing changed and there are no events."""
        with self._lock:
            current = self._records.get(device_id)
            new = change(current)
            lines = events(current, new) if callable(events) else events
            if new is current:
                if not lines:
                    return current, 0
                self._events += lines
                return current, self._bump(None)
            if new is None:
                self._records.pop(device_id, None)
            else:
                self._records[device_id] = new
            self._events += lines
            return new, self._bump(device_id)

    def set_paused(self, paused: bool, events: Sequence[str] = ()) -> int:
        """Turn maintenance mode on or off; returns the version to wait for."""
        with self._lock:
            self._paused = paused
            self._paused_dirty = True
            self._events += events
            return self._bump(None)

    def add_events(self, events: Sequence[str]) -> int:
        """Event lines that change no record (an operator action, the storm guard...): written
        with the next batch; returns the version to wait for."""
        with self._lock:
            self._events += events
            return self._bump(None)

    def _bump(self, device_id: int | None) -> int:
        """Under the lock: note a change, wake the writer, return the new version."""
        if device_id is not None:
            self._dirty.add(device_id)
        self._version += 1
        self._changed.notify()
        return self._version

    def wait_durable(self, version: int, timeout: float | None = None) -> None:
        """Block until `version` is on disk; StateWriteError if its write failed or timed out.

        When no append is under way, the caller appends the batch itself (it leads this group
        commit) rather than waking the writer thread and waiting to be woken: two thread
        hand-offs less per acknowledgement. Changes made meanwhile join the next batch."""
        if version <= 0:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._durable < version:
                if self._failed_version >= version:
                    raise StateWriteError(f"cannot write {self.path}: {self._last_error}")
                if not self._committing and self._thread is not None and not self._closing:
                    self._lead()
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise StateWriteError(f"cannot write {self.path}: timed out")
                self._written.wait(remaining)

    def _lead(self) -> None:
        """Under the lock: append the pending batch in this thread (the lock is let go
        meanwhile)."""
        self._committing = True
        self._lock.release()
        try:
            if self._commit():
                # A steady stream of acks may leave the writer thread no gap: the leader hands
                # a due checkpoint over itself (a rotation, once a second at most).
                self._checkpoint.start_job(time.monotonic(), self._journal.rotate)
        finally:
            self._lock.acquire()
            self._committing = False
            self._changed.notify()  # the writer, for changes that came meanwhile
            self._written.notify()  # and one waiter, which may lead the next batch

    # -- the writer --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and checkpoint threads."""
        self._checkpoint.start()
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending, then the last checkpoint, and stop the threads. After a clean
        close the state file holds everything and the journal is gone."""
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

    def _wake_writer(self) -> None:
        with self._lock:
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._committing:  # a waiter appends: it notifies when done
                        self._changed.wait()
                        continue
                    if self._durable < self._version or self._closing:
                        break
                    wait = self._checkpoint.wait_time(time.monotonic())
                    if wait is not None and wait <= 0:
                        break  # a checkpoint is due
                    self._changed.wait(wait)
                pending = self._durable < self._version
                closing = self._closing
                self._committing = True  # the journal is this thread's until released
            try:
                ok = True
                if pending:
                    if self._gather and self._last_batch > 1:
                        self._pause.wait(self._gather)
                    ok = self._commit()
                elif closing:
                    break
                if ok and not closing:
                    self._checkpoint.start_job(time.monotonic(), self._journal.rotate)
            finally:
                with self._lock:
                    self._committing = False
                    self._written.notify()  # a waiter may lead the next batch
            if not ok:
                if closing:
                    break
                self._pause.wait(self._retry_delay)
        self._finish()

    def _commit(self) -> bool:
        """Append one batch to the journal (its events first); False if that failed."""
        started = time.monotonic()
        with self._lock:
            version = self._version
            dirty, self._dirty = self._dirty, set()
            paused_dirty, self._paused_dirty = self._paused_dirty, False
            events, self._events = self._events, []
            paused = self._paused
            changed = [(device_id, self._records.get(device_id)) for device_id in dirty]
        seq = self._seq
        texts: dict[int, str | None] = {}
        try:
            if events and self._on_batch is not None:
                self._on_batch(events)
            events = []  # on disk: not written twice when the state lines fail
            lines = []
            for device_id, rec in changed:
                seq += 1
                if rec is None:
                    texts[device_id] = None
                    lines.append(journal.remove_line(seq, device_id))
                else:
                    texts[device_id] = text = record_to_json(rec)
                    lines.append(journal.put_line(seq, device_id, text))
            if paused_dirty:
                seq += 1
                lines.append(journal.paused_line(seq, paused))
            size = self._journal.append(lines) if lines else 0
        except Exception as exc:
            # OSError: disk full, read-only... Anything else is a bug; either way the writer
            # lives on, /health turns 503, waiters get StateWriteError, and the batch is retried.
            self._failed(version, exc, dirty, paused_dirty, events)
            return False
        self._seq = seq
        if texts or paused_dirty:
            self._checkpoint.changed(texts, paused, seq)
        took = time.monotonic() - started
        with self._lock:
            recovered = self._failed_version > self._durable
            self._last_batch = version - self._durable
            self._durable = version
            self._written.notify_all()
        if recovered:
            log.warning("step=state-write file=%s writable again", self._journal.path)
        if self._on_write is not None:
            self._on_write(took, size)
        return True

    def _failed(
        self,
        version: int,
        exc: Exception,
        dirty: set[int],
        paused_dirty: bool,
        events: list[str],
    ) -> None:
        """A batch could not be made durable: put it back and wake its waiters with the error."""
        reason = exc.strerror if isinstance(exc, OSError) else None
        with self._lock:
            self._dirty |= dirty
            self._paused_dirty |= paused_dirty
            self._events[:0] = events
            first = self._failed_version <= self._durable
            self._failed_version = version
            self._last_error = reason or f"{type(exc).__name__}: {exc}"
            self._written.notify_all()
        if self._on_error is not None:
            self._on_error(reason or f"{type(exc).__name__}: {exc}")
        if first:
            log.error(
                "step=state-write file=%s failed: %s",
                self._journal.path,
                reason or exc,
                exc_info=None if isinstance(exc, OSError) else exc,
            )

    def _finish(self) -> None:
        """At close: the last checkpoint, including anything the journal could not take; the
        journal is removed once the state file holds everything."""
        with self._lock:
            dirty = [(device_id, self._records.get(device_id)) for device_id in self._dirty]
            paused = self._paused
        texts: dict[int, str | None] = {}
        complete = True
        for device_id, rec in dirty:
            try:
                texts[device_id] = None if rec is None else record_to_json(rec)
            except ValueError:
                complete = False  # a bug elsewhere (logged when its write failed)
        if not self._checkpoint.close(texts, paused, self._seq, timeout=5.0):
            self._journal.close()
            return
        try:
            if complete:
                self._journal.remove()
            else:
                self._journal.close()
        except OSError as exc:
            log.warning("step=checkpoint cannot remove the journal: %s", exc.strerror)
