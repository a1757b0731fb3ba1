"""The state file on disk: durable atomic replacement, reading (a corrupt file is set aside),
and the lock that keeps a second daemon away and tells the commands where it listens."""

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


class CorruptState(ValueError):
    """The state file exists but cannot be understood."""


def read_state(path: Path, now: float) -> Snapshot:
    """The state file's snapshot (empty when there is none); CorruptState if it cannot be
    understood, OSError if it cannot be read. Never changes the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Snapshot(devices={})
    except UnicodeDecodeError as exc:
        raise CorruptState(f"not UTF-8: {exc}") from None
    try:
        return snapshot_from_json(text, now)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptState(str(exc)) from None


def load_state(path: Path, now: float) -> LoadResult:
    """Read the state file; a corrupt one is renamed aside and an empty state returned."""
    try:
        return LoadResult(read_state(path, now))
    except CorruptState as exc:
        target = quarantine_name(path, now)
        os.rename(path, target)
        return LoadResult(Snapshot(devices={}), quarantined_to=target, error=str(exc))


def quarantine_name(path: Path, now: float) -> Path:
    """Where a corrupt state file read at `now` is moved: `<name>.corrupt-<UTC time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return target


@dataclass(frozen=True)
class LockHolder:
    """What `<state file>.lock` says about the daemon holding it."""

    pid: int
    url: str | None  # where it listens, e.g. "http://0.0.0.0:5000"; None before it has bound


def read_lock(state_path: Path) -> LockHolder | None:
    """The holder named in the lock file, when that process is alive; None otherwise.

    Only lines ending in a newline count: the file grows from "<pid>\n" to
    "<pid>\n<url>\n" in one write, so a half-written line is never taken for an address.
    """
    path = state_path.with_name(state_path.name + ".lock")
    try:
        raw = path.read_bytes()[:4096].decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None
    lines = raw.split("\n")[:-1]  # the part after the last newline is incomplete
    if not lines or not lines[0].isdigit():
        return None
    pid = int(lines[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a daemon killed with -9 leaves its lines behind
    except PermissionError:
        pass  # alive, as another user
    url = lines[1] if len(lines) > 1 and lines[1].startswith(("http://", "https://")) else None
    return LockHolder(pid, url)


class StateLock:
    """An advisory flock on `<state file>.lock`, held for the life of the process.

    The file says who holds it: the pid on the first line, and once the daemon listens, its
    address on the second (`announce`), which the commands use to find it.
    """

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

    def announce(self, url: str) -> None:
        """Add the listening address (`http://host:port`) as the lock file's second line.

        One pwrite from offset 0 of the pid line (unchanged) and the address: a reader sees
        either the pid alone or both lines whole, never a torn address (see `read_lock`).
        """
        if self._fd is None:
            raise RuntimeError("the state lock is not held")
        data = f"{os.getpid()}\n{url}\n".encode("ascii")
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        """Drop the lock (the kernel also drops it when the process dies)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # a stopped daemon leaves no address behind
            os.close(self._fd)
            self._fd = None
