"""The state file: the single in-memory copy of the records and its durable, atomic writer.

Changes are applied in memory under the store's lock and get a version number; a writer thread
saves the newest version (temp file, fsync, rename, fsync the directory) and wakes everyone waiting
for a version at or below it. Changes that arrive while a write is under way share the next write:
group commit, so an alert storm costs one fsync per batch instead of one per alert.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alert_handler.records import (
    DeviceRecord,
    Snapshot,
    record_to_json,
    snapshot_from_json,
    snapshot_to_json,
)

log = logging.getLogger(__name__)


class StateWriteError(OSError):
    """The state could not be made durable (disk full, read-only directory, ...)."""


class StateLocked(RuntimeError):
    """Another daemon holds the state file."""


@dataclass(frozen=True)
class LoadResult:
    """What `load_state` found."""

    snapshot: Snapshot
    quarantined_to: Path | None = None
    error: str | None = None


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` durably: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    data = text.encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: Path, now: float) -> LoadResult:
    """Read the state file; a corrupt one is renamed aside and an empty state returned."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LoadResult(Snapshot(devices={}))
    except UnicodeDecodeError as exc:
        return _quarantine(path, now, f"not UTF-8: {exc}")
    try:
        return LoadResult(snapshot_from_json(text, now))
    except (ValueError, TypeError, KeyError) as exc:
        return _quarantine(path, now, str(exc))


def _quarantine(path: Path, now: float, why: str) -> LoadResult:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.rename(path, target)
    return LoadResult(Snapshot(devices={}), quarantined_to=target, error=why)


class StateLock:
    """An advisory flock on `<state file>.lock`, held for the life of the process."""

    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_name(state_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StateLocked naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(
                f"{self.path.with_suffix('')} is in use by another alert-handler (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the kernel also drops it when the process dies)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StateStore:
    """The records in memory plus a group-committing writer thread. Owns its Condition."""

    def __init__(
        self,
        path: Path,
        snapshot: Snapshot,
        *,
        on_write: Callable[[float, int], None] | None = None,
        retry_delay: float = 0.5,
    ) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._records: dict[int, DeviceRecord] = dict(snapshot.devices)
        self._paused = snapshot.paused
        self._fragments: dict[int, str] = {}
        self._version = 0
        self._durable = 0
        self._failed_version = 0
        self._last_error: str | None = None
        self._closing = False
        self._on_write = on_write
        self._retry_delay = retry_delay
        self._thread: threading.Thread | None = None
        if snapshot.migrated_from_legacy:
            self._version = 1  # write the migrated file at once

    # -- reading -----------------------------------------------------------------------------
    def get(self, device_id: int) -> DeviceRecord | None:
        """The current record of a device, or None."""
        with self._cond:
            return self._records.get(device_id)

    def records(self) -> dict[int, DeviceRecord]:
        """A copy of all records (records themselves are immutable)."""
        with self._cond:
            return dict(self._records)

    def count(self) -> int:
        """How many devices are tracked."""
        with self._cond:
            return len(self._records)

    @property
    def paused(self) -> bool:
        """Whether maintenance mode is on."""
        with self._cond:
            return self._paused

    @property
    def healthy(self) -> bool:
        """False while the newest change could not be written."""
        with self._cond:
            return self._failed_version <= self._durable

    @property
    def last_error(self) -> str | None:
        """The last write error, if the last write failed."""
        with self._cond:
            return self._last_error if self._failed_version > self._durable else None

    # -- changing ----------------------------------------------------------------------------
    def put(self, record: DeviceRecord) -> int:
        """Store one record; returns the version to wait for."""
        with self._cond:
            self._records[record.device_id] = record
            self._fragments.pop(record.device_id, None)
            self._version += 1
            self._cond.notify_all()
            return self._version

    def update(
        self, device_id: int, change: Callable[[DeviceRecord | None], DeviceRecord | None]
    ) -> tuple[DeviceRecord | None, int]:
        """Replace one record by `change(current)` (None removes it); returns (new, version)."""
        with self._cond:
            current = self._records.get(device_id)
            new = change(current)
            if new is current:
                return current, 0
            if new is None:
                self._records.pop(device_id, None)
            else:
                self._records[device_id] = new
            self._fragments.pop(device_id, None)
            self._version += 1
            self._cond.notify_all()
            return new, self._version

    def set_paused(self, paused: bool) -> int:
        """Turn maintenance mode on or off; returns the version to wait for."""
        with self._cond:
            self._paused = paused
            self._version += 1
            self._cond.notify_all()
            return self._version

    def wait_durable(self, version: int, timeout: float | None = None) -> None:
        """Block until `version` is on disk; StateWriteError if its write failed or timed out."""
        if version <= 0:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._durable < version:
                if self._failed_version >= version:
                    raise StateWriteError(f"cannot write {self.path}: {self._last_error}")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise StateWriteError(f"cannot write {self.path}: timed out")
                self._cond.wait(remaining)

    def commit(self, version: int, timeout: float | None = None) -> None:
        """Alias of wait_durable, for call sites that read better with it."""
        self.wait_durable(version, timeout)

    # -- the writer --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending and stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything changed so far is on disk."""
        with self._cond:
            version = self._version
        self.wait_durable(version, timeout)

    def _serialize(self) -> tuple[int, str]:
        """Under the lock: the newest version and the file text, reusing cached fragments."""
        fragments: list[tuple[int, str]] = []
        cache = self._fragments
        for device_id in sorted(self._records):
            fragment = cache.get(device_id)
            if fragment is None:
                fragment = record_to_json(self._records[device_id])
                cache[device_id] = fragment
            fragments.append((device_id, fragment))
        return self._version, snapshot_to_json(fragments, self._paused)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._durable >= self._version and not self._closing:
                    self._cond.wait()
                if self._durable >= self._version and self._closing:
                    return
                version, text = self._serialize()
            started = time.monotonic()
            try:
                write_atomic(self.path, text)
            except OSError as exc:
                with self._cond:
                    first = self._failed_version <= self._durable
                    self._failed_version = version
                    self._last_error = exc.strerror or str(exc)
                    self._cond.notify_all()
                    closing = self._closing
                if first:
                    log.error("step=state-write file=%s failed: %s", self.path, exc.strerror)
                if closing:
                    return
                time.sleep(self._retry_delay)
                continue
            took = time.monotonic() - started
            with self._cond:
                recovered = self._failed_version > self._durable
                self._durable = version
                self._cond.notify_all()
            if recovered:
                log.warning("step=state-write file=%s writable again", self.path)
            if self._on_write is not None:
                self._on_write(took, len(text))
