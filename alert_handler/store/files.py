"""The state file on disk: durable atomic replacement, reading (a corrupt file is set aside),
and the lock that keeps a second daemon away."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alert_handler.store.codec import Snapshot, snapshot_from_json

_IOV_MAX = 1024  # buffers per writev call (Linux's IOV_MAX)


class StateLocked(RuntimeError):
    """Another daemon holds the state file."""


@dataclass(frozen=True)
class LoadResult:
    """What `load_state` found."""

    snapshot: Snapshot
    quarantined_to: Path | None = None
    error: str | None = None


def write_atomic(path: Path, text: str | bytes | Sequence[bytes]) -> None:
    """Replace `path` with `text` (or the concatenation of byte strings) durably: temp file,
    fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(text, str):
        parts: Sequence[bytes] = [text.encode("utf-8")]
    elif isinstance(text, bytes):
        parts = [text]
    else:
        parts = text
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            _write_all(fd, parts)
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


def _write_all(fd: int, parts: Sequence[bytes]) -> None:
    """Write every part with writev (no joined copy of a large file), resuming short writes."""
    views = [memoryview(p) for p in parts if p]
    first = 0
    while first < len(views):
        written = os.writev(fd, views[first : first + _IOV_MAX])
        while written:
            size = len(views[first])
            if written < size:
                views[first] = views[first][written:]
                break
            written -= size
            first += 1


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
