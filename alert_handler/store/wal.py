"""The state's write-ahead journal: one JSON line per change, appended and fdatasync'd before the
change is acknowledged; the state file is its checkpoint.

Lines (`<STATE_FILE>.journal`), each a whole fact with a sequence number:

    {"seq": 12, "put": 42, "record": {...the device's whole record...}}
    {"seq": 13, "remove": 42}
    {"seq": 14, "paused": true}

The checkpoint (the state file) names the last sequence number it includes; start-up loads it
and applies the lines after it, in order. Replay is idempotent: a line at or below the
checkpoint's number is skipped, so a crash between writing a checkpoint and trimming the journal
replays nothing twice. After a checkpoint the journal is rotated: the writer renames it to
`<STATE_FILE>.journal.old` and starts a new one, and the old one is removed once a checkpoint
covering it is on disk.

A line is complete only with its newline: an incomplete last line (a write cut by a crash, never
acknowledged) is ignored and trimmed before the next append; a line that cannot be read in the
middle of the file means the file was damaged, and the file is set aside like a corrupt state
file (see `files.load_state`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alert_handler.core.records import DeviceRecord
from alert_handler.store.codec import record_from_dict

_TAIL_CHUNK = 65536
# The writer's own line shapes, read without parsing the record (a replay of 100,000 lines must
# not json.loads 100,000 records: only each device's last one is built). Anything else goes
# through the JSON parser.
_PUT = re.compile(rb'\{"seq": ([0-9]{1,18}), "put": ([0-9]{1,18}), "record": (\{.*\})\}')
_REMOVE = re.compile(rb'\{"seq": ([0-9]{1,18}), "remove": ([0-9]{1,18})\}')


def append_durably(fd: int, data: bytes, start: int) -> None:
    """Append `data` at the end of an O_APPEND file of `start` bytes and fdatasync it; on any
    failure cut the file back to `start` (no torn line stays) and re-raise."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise


def journal_path(state_path: Path) -> Path:
    """Where the journal of `state_path` lives."""
    return state_path.with_name(state_path.name + ".journal")


def old_journal_path(state_path: Path) -> Path:
    """The rotated journal, until a checkpoint covering it is on disk."""
    return state_path.with_name(state_path.name + ".journal.old")


# -- lines ------------------------------------------------------------------------------------
def put_line(seq: int, device_id: int, record_json: str) -> bytes:
    """The line storing a device's whole record (`codec.record_to_json`)."""
    return b'{"seq": %d, "put": %d, "record": %s}\n' % (seq, device_id, record_json.encode())


def remove_line(seq: int, device_id: int) -> bytes:
    """The line forgetting a device."""
    return b'{"seq": %d, "remove": %d}\n' % (seq, device_id)


def paused_line(seq: int, paused: bool) -> bytes:
    """The line turning maintenance mode on or off."""
    return b'{"seq": %d, "paused": %s}\n' % (seq, b"true" if paused else b"false")


@dataclass(frozen=True)
class Entry:
    """One journal line, parsed: a device's record (`put`), its removal, or the paused flag.
    The record is kept as its JSON text (or object) and built only when it is the device's last
    word."""

    seq: int
    device_id: int | None = None
    record: bytes | dict[str, Any] | None = None  # None with a device_id: removed
    paused: bool | None = None


def parse_line(line: bytes) -> Entry:
    """One complete line; ValueError if it is not a journal line."""
    found = _PUT.fullmatch(line)
    if found is not None:
        seq, device_id, record = found.groups()
        return Entry(_positive(int(seq), "seq"), _positive(int(device_id), "device id"), record)
    found = _REMOVE.fullmatch(line)
    if found is not None:
        seq, device_id = found.groups()
        return Entry(_positive(int(seq), "seq"), _positive(int(device_id), "device id"))
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    seq = obj.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq <= 0:
        raise ValueError("seq must be a positive integer")
    if "put" in obj:
        device_id = _device_id(obj["put"])
        record = obj.get("record")
        if not isinstance(record, dict):
            raise ValueError("record must be an object")
        return Entry(seq, device_id, record)
    if "remove" in obj:
        return Entry(seq, _device_id(obj["remove"]))
    if isinstance(obj.get("paused"), bool):
        return Entry(seq, paused=obj["paused"])
    raise ValueError("neither put, remove nor paused")


def _device_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("device id must be a positive integer")
    return value


def _positive(value: int, name: str) -> int:
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer")
    return value


# -- reading ----------------------------------------------------------------------------------
@dataclass
class JournalRead:
    """What one journal file holds."""

    entries: list[Entry] = field(default_factory=list)
    torn: int = 0  # bytes of an incomplete or unreadable last line, ignored
    corrupt: str | None = None  # why a line in the middle could not be read (then `entries`
    # holds the lines before it)


def read_journal(path: Path) -> JournalRead:
    """Parse a journal file (missing: empty)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalRead()
    result = JournalRead()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    result.torn = len(tail)
    for number, line in enumerate(lines, 1):
        try:
            result.entries.append(parse_line(line))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if number == len(lines) and not tail:
                result.torn = len(line) + 1  # the last line: a cut write, never acknowledged
                break
            result.corrupt = f"line {number}: {exc}"
            break
    return result


def apply(
    devices: dict[int, DeviceRecord],
    paused: bool,
    entries: Sequence[Entry],
    after: int,
    now: float,
) -> tuple[bool, int, int]:
    """Apply the entries numbered above `after`, in order, to `devices` (changed in place).

    Returns (paused, last sequence number applied or `after`, how many applied). Only a device's
    last record is built (a storm journals the same device many times); ValueError if that
    record is not a valid one.
    """
    last_word: dict[int, bytes | dict[str, Any] | None] = {}
    seq, applied = after, 0
    for entry in entries:
        if entry.seq <= seq:
            continue  # already in the checkpoint, or a line written twice
        seq = entry.seq
        applied += 1
        if entry.device_id is not None:
            last_word[entry.device_id] = entry.record
        elif entry.paused is not None:
            paused = entry.paused
    for device_id, raw in last_word.items():
        if raw is None:
            devices.pop(device_id, None)
        else:
            obj = json.loads(raw) if isinstance(raw, bytes) else raw
            devices[device_id] = record_from_dict(device_id, obj, now)
    return paused, seq, applied


def last_seq(path: Path) -> int:
    """The sequence number of the last readable complete line of a journal file (0 if none),
    reading it from the end."""
    if not path.is_file():
        return 0  # none, or something in the way that the writer will fail to open
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        size = _TAIL_CHUNK
        while True:
            start = max(0, end - size)
            lines = os.pread(fd, end - start, start).split(b"\n")[:-1]
            if start > 0:
                lines = lines[1:]  # may be the end of a line that began before the chunk
            for line in reversed(lines):
                with contextlib.suppress(ValueError):
                    return parse_line(line).seq
            if start == 0:
                return 0
            size *= 4
    finally:
        os.close(fd)


# -- writing ----------------------------------------------------------------------------------
def fsync_dir(directory: Path) -> None:
    """Make a rename, creation or removal in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cut_torn_tail(fd: int) -> tuple[int, bytes]:
    """Cut the file after its last newline (a line torn by a crash was never acknowledged) and
    make the cut durable; returns the length kept and the last complete line (without its
    newline). The state journal and the event journal both open their file with it."""
    end = os.lseek(fd, 0, os.SEEK_END)
    tail, pos, keep = b"", end, -1
    while pos > 0:
        start = max(0, pos - _TAIL_CHUNK)
        tail = os.pread(fd, pos - start, start) + tail
        pos = start
        if keep < 0:
            newline = tail.rfind(b"\n")
            if newline < 0:
                continue
            keep = pos + newline + 1
        if tail.rfind(b"\n", 0, keep - pos - 1) >= 0 or pos == 0:
            break  # the last complete line starts within `tail`
    if keep < 0:
        keep = 0
    if keep != end:
        os.ftruncate(fd, keep)
        os.fdatasync(fd)
    previous = tail.rfind(b"\n", 0, max(0, keep - pos - 1))
    return keep, tail[previous + 1 : keep - pos - 1] if keep else b""


class JournalFile:
    """The journal the state writer appends to; owned by that one thread.

    Opened lazily (so a failed open is retried with the next batch); an incomplete last line is
    cut off before the first append, and a failed append is cut off again, so that the file only
    ever holds whole lines.
    """

    def __init__(self, state_path: Path) -> None:
        self.path = journal_path(state_path)
        self.old_path = old_journal_path(state_path)
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> int:
        if self._fd is None:
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size, _ = cut_torn_tail(fd)  # an incomplete last line: never acknowledged
                if created:
                    fsync_dir(self.path.parent)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._size = fd, size
        return self._fd

    def append(self, lines: Sequence[bytes]) -> int:
        """Append whole lines and fdatasync; returns the bytes written. On failure the file is
        cut back to its last whole line and the error raised."""
        fd = self._open()
        data = b"".join(lines)
        try:
            append_durably(fd, data, self._size)
        except BaseException:
            self.close()  # reopened (and its tail checked again) at the next append
            raise
        self._size += len(data)
        return len(data)

    def rotate(self) -> None:
        """Rename the journal to the old one and start a new one (the caller checked that no
        old one is waiting for its checkpoint). The directory is fsynced, so a line appended to
        the new journal is found after a power loss."""
        self.close()
        if self.path.exists():
            if not self.path.is_file():  # something in the way: not ours to move
                raise OSError(errno.EISDIR, f"{self.path} is not a regular file")
            os.rename(self.path, self.old_path)
        self._open()
        fsync_dir(self.path.parent)

    def close(self) -> None:
        """Close the file (the writer is done with it, or it failed)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        """Remove both journals: a checkpoint of everything is on disk (clean shutdown)."""
        self.close()
        for path in (self.path, self.old_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fsync_dir(self.path.parent)
