"""The state file on disk: durable atomic replacement, reading the checkpoint and replaying its
journal (a corrupt file is set aside), and the lock that keeps a second daemon away and tells the
commands where it listens."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alert_handler.store import wal as journal
from alert_handler.store.codec import Snapshot, snapshot_from_json

log = logging.getLogger(__name__)

_IOV_MAX = 1024  # buffers per writev call (Linux's IOV_MAX)


class StateLocked(RuntimeError):
    """Another daemon holds the state file."""


@dataclass(frozen=True)
class LoadResult:
    """What `load_state` found."""

    snapshot: Snapshot
    quarantined_to: Path | None = None
    error: str | None = None
    replayed: int = 0  # journal lines applied after the checkpoint
    journal_quarantined_to: tuple[Path, ...] = ()


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
    journal.fsync_dir(path.parent)


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
    """The state file or its journal exists but cannot be understood."""


def load_state(path: Path, now: float) -> LoadResult:
    """Read the checkpoint and replay its journal after it: the state as it was acknowledged.

    A corrupt checkpoint is renamed aside (its journal is still replayed onto the empty state:
    those records carry originals worth keeping); a journal whose middle cannot be read is
    renamed aside after the lines before the damage are applied. An incomplete last line is
    ignored (the write it belonged to was never acknowledged). Each is logged.
    """
    result = _load_checkpoint(path, now)
    snap = result.snapshot
    devices = dict(snap.devices)
    entries: list[journal.Entry] = []
    aside: list[Path] = []
    sources = (journal.old_journal_path(path), journal.journal_path(path))
    for source in sources:
        if aside:  # after a damaged file: its lines cannot follow the damage
            if source.exists():
                aside.append(_set_aside(source, now))
            continue
        read = journal.read_journal(source)
        entries += read.entries
        if read.torn:
            log.warning(
                "step=load journal %s: incomplete last line ignored (%d bytes, never acknowledged)",
                source,
                read.torn,
            )
        if read.corrupt is not None:
            aside.append(_set_aside(source, now))
            log.error(
                "step=load journal %s is damaged at %s: the lines before it are applied, the "
                "file is moved to %s",
                source,
                read.corrupt,
                aside[-1],
            )
    try:
        paused, seq, replayed = journal.apply(devices, snap.paused, entries, snap.seq, now)
    except ValueError as exc:
        aside += [_set_aside(source, now) for source in sources if source.exists()]
        log.error("step=load the journal of %s holds a bad record (%s): moved aside", path, exc)
        devices, paused, seq, replayed = dict(snap.devices), snap.paused, snap.seq, 0
    if replayed:
        log.info("step=load %d journal lines replayed after the state file's checkpoint", replayed)
    loaded = Snapshot(devices, paused, snap.migrated_from_legacy, seq)
    return LoadResult(loaded, result.quarantined_to, result.error, replayed, tuple(aside))


def read_state(path: Path, now: float) -> Snapshot:
    """The state as a restart would load it (checkpoint plus journal), changing nothing on
    disk: for `status` and `check`, and for tests and benchmarks. CorruptState if a file is
    corrupt, OSError if one cannot be read.

    A running daemon may rotate the journal or replace the state file while it is read: the
    files' identities (inode numbers) are compared before and after, and the read is repeated
    until they held still. Appends alone do not matter: a prefix of the journal is the state at
    an earlier moment.
    """
    sources = (path, journal.old_journal_path(path), journal.journal_path(path))
    for _ in range(50):
        before = [_inode(p) for p in sources]
        snap = _read_once(path, now)
        if [_inode(p) for p in sources] == before:
            return snap
        time.sleep(0.01)
    raise CorruptState(f"{path} and its journal kept changing while read")


def _read_once(path: Path, now: float) -> Snapshot:
    try:
        snap = snapshot_from_json(path.read_text(encoding="utf-8"), now)
    except FileNotFoundError:
        snap = Snapshot(devices={})
    except UnicodeDecodeError as exc:
        raise CorruptState(f"not UTF-8: {exc}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptState(str(exc)) from None
    devices = dict(snap.devices)
    entries: list[journal.Entry] = []
    for source in (journal.old_journal_path(path), journal.journal_path(path)):
        read = journal.read_journal(source)
        if read.corrupt is not None:
            raise CorruptState(f"journal {source} is damaged at {read.corrupt}")
        entries += read.entries
    try:
        paused, seq, _ = journal.apply(devices, snap.paused, entries, snap.seq, now)
    except ValueError as exc:
        raise CorruptState(f"the journal holds a bad record: {exc}") from None
    return Snapshot(devices, paused, snap.migrated_from_legacy, seq)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def _load_checkpoint(path: Path, now: float) -> LoadResult:
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
    return LoadResult(Snapshot(devices={}), quarantined_to=_set_aside(path, now), error=why)


def quarantine_name(path: Path, now: float) -> Path:
    """Where a corrupt file read at `now` is moved: `<name>.corrupt-<UTC time>` (never over an
    earlier one)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    return target


def _set_aside(path: Path, now: float) -> Path:
    """Rename a corrupt file to its `quarantine_name`."""
    target = quarantine_name(path, now)
    os.rename(path, target)
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


def _holder_text(raw: bytes) -> str:
    """The lock file's lines as one line of a message: "pid 21312, at http://..."."""
    lines = [line.strip() for line in raw.decode("ascii", "replace").splitlines()]
    pid = lines[0] if lines and lines[0].isdigit() else "unknown"
    url = lines[1] if len(lines) > 1 and lines[1].startswith(("http://", "https://")) else None
    return f"pid {pid}" + (f", listening at {url}" if url and url.isprintable() else "")


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
            holder = _holder_text(os.read(fd, 4096))
            os.close(fd)
            raise StateLocked(
                f"{self.path.with_suffix('')} is in use by another alert-handler ({holder})"
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
