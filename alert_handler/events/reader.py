"""Reading the event journal: every file oldest first, and a `Follower` that reads new lines as
they are appended, across rotations. An unterminated last line (being written, or torn by a
crash) is never returned; a line that is not an event is skipped."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from alert_handler.events.journal import Event, parse_line


def journal_files(path: Path) -> list[Path]:
    """The journal's files, oldest first: events.jsonl.N ... events.jsonl.1, events.jsonl."""
    olds: list[tuple[int, Path]] = []
    prefix = path.name + "."
    with contextlib.suppress(FileNotFoundError):
        for entry in path.parent.iterdir():
            suffix = entry.name[len(prefix) :]
            if entry.name.startswith(prefix) and suffix.isdigit():
                olds.append((int(suffix), entry))
    files = [p for _, p in sorted(olds, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    for line in stream:
        if line.endswith(b"\n"):
            yield line


def read_events(path: Path) -> Iterator[Event]:
    """Every event of the journal, oldest first."""
    for file in journal_files(path):
        try:
            stream = file.open("rb")
        except FileNotFoundError:
            continue  # rotated away meanwhile
        with stream:
            for line in _lines(stream):
                event = parse_line(line)
                if event is not None:
                    yield event


class Follower:
    """Reads the journal's events in file order from a position, then follows new ones.

    It holds the file it reads open: when the journal rotates, it drains that file (no line is
    added to a file after it is renamed) and goes on with the next newer one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stream: BinaryIO | None = None
        self._ino: int | None = None

    def close(self) -> None:
        """Close the file being read."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _open(self, file: Path) -> bool:
        self.close()
        try:
            stream = file.open("rb")
        except FileNotFoundError:
            return False
        self._stream, self._ino = stream, os.fstat(stream.fileno()).st_ino
        return True

    def start_at_end(self) -> None:
        """Follow only events appended from now on."""
        if self._open(self.path) and self._stream is not None:
            self._skip_complete_lines()

    def start_after(self, event_id: str | None) -> tuple[bool, int]:
        """Position after the event `event_id` (None: before the oldest event). Returns whether
        it was found, and how many events follow it; not found, it starts at the oldest."""
        files = journal_files(self.path)
        found = event_id is None
        after = 0
        position: tuple[Path, int] | None = (files[0], 0) if files and found else None
        for file in files:
            try:
                stream = file.open("rb")
            except FileNotFoundError:
                continue
            with stream:
                offset = 0
                for line in _lines(stream):
                    offset += len(line)
                    if found:
                        after += parse_line(line) is not None
                    elif event_id is not None and event_id.encode() in line:
                        event = parse_line(line)
                        if event is not None and event.id == event_id:
                            found, after, position = True, 0, (file, offset)
        if not found:
            position = (files[0], 0) if files else None
            after = sum(1 for _ in read_events(self.path))
        if position is not None and self._open(position[0]) and self._stream is not None:
            self._stream.seek(position[1])
        return found, after

    def _skip_complete_lines(self) -> None:
        assert self._stream is not None
        while True:
            mark = self._stream.tell()
            line = self._stream.readline()
            if not line.endswith(b"\n"):
                self._stream.seek(mark)
                return

    def read(self, limit: int = 100) -> list[tuple[Event, bytes]]:
        """Up to `limit` events not read yet, each with its line (without the newline)."""
        out: list[tuple[Event, bytes]] = []
        while len(out) < limit:
            if self._stream is None:
                files = journal_files(self.path)
                if not files or not self._open(files[0]):
                    return out
            assert self._stream is not None
            mark = self._stream.tell()
            line = self._stream.readline()
            if line.endswith(b"\n"):
                event = parse_line(line)
                if event is not None:
                    out.append((event, line[:-1]))
                continue
            self._stream.seek(mark)  # nothing, or a line still being written
            if not self._advance():
                return out
        return out

    def _advance(self) -> bool:
        """At the end of the file being read: move to the next newer file if the journal has
        rotated past it (after draining it); False when there is nothing newer."""
        try:
            live = os.stat(self.path).st_ino
        except FileNotFoundError:
            return False
        if live == self._ino:
            return False
        assert self._stream is not None
        mark = self._stream.tell()
        if self._stream.readline().endswith(b"\n"):  # written before the rotation: read it
            self._stream.seek(mark)
            return True
        files = journal_files(self.path)
        inodes = []
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                inodes.append((os.stat(file).st_ino, file))
        mine = [i for i, (ino, _) in enumerate(inodes) if ino == self._ino]
        following = inodes[mine[0] + 1 :] if mine else inodes  # gone: it was the oldest
        return any(self._open(file) for _, file in following)  # the first that still exists
