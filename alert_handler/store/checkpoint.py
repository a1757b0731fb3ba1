"""The state file as the journal's checkpoint, written in the background.

The state writer hands each durable batch's records (already serialised for the journal) to the
`Checkpointer`; at most `delay` seconds after the first change it has not written yet, the writer
rotates the journal and lets the checkpointer's thread write the whole state file atomically
(temp file, fsync, rename, fsync the directory). Once that is on disk the rotated journal is
removed. The file's text is cached in blocks of device ids, so a checkpoint re-joins only the
blocks that changed: against 10,000 devices it costs the write of the file, not a
re-serialisation of every record.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from alert_handler.store.codec import Snapshot, record_to_json, snapshot_head
from alert_handler.store.files import write_atomic
from alert_handler.store.wal import journal_path, old_journal_path

log = logging.getLogger(__name__)

_BLOCK = 64  # device ids per cached block of the state file's text


class Checkpointer:
    """Writes the state file from the journal's changes; owns its lock and its thread.

    The writer thread calls `changed` after each durable batch, `wait_time` to know when to look
    again, and `start_job` (which may rotate the journal) when a checkpoint is due; `close` writes
    the last one. The text cache belongs to the checkpoint thread (to the caller of `close` after
    the thread ended).
    """

    def __init__(self, path: Path, snapshot: Snapshot, *, delay: float, wake: Callable[[], None]):
        self.path = path
        self.delay = delay
        self._wake = wake
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: dict[int, str | None] = {}  # device -> record JSON (None: removed)
        self._paused = snapshot.paused
        self._seq = snapshot.seq
        journals = [p for p in (journal_path(path), old_journal_path(path)) if p.exists()]
        # Replayed lines, or a migrated file: fold them into a checkpoint at once.
        fold = bool(journals) or snapshot.migrated_from_legacy
        self._stale_since: float | None = time.monotonic() - delay if fold else None
        self._go = False
        self._busy = False
        self._closing = False
        self._old_pending = old_journal_path(path).exists()
        self._failing = False
        self._rotate_failing = False
        self._thread: threading.Thread | None = None
        # The text cache (checkpoint thread only).
        self._loaded = dict(snapshot.devices)
        self._lines: dict[int, bytes] = {}  # device -> b'"<id>": {...}'
        self._members: dict[int, set[int]] = {}  # block -> its device ids
        self._blocks: dict[int, bytes] = {}  # block -> its lines joined
        self._stale_blocks: set[int] = set()

    # -- the writer thread's side ------------------------------------------------------------
    def changed(self, texts: Mapping[int, str | None], paused: bool, seq: int) -> None:
        """A batch is durable in the journal up to `seq`: remember it for the next checkpoint."""
        with self._lock:
            self._pending.update(texts)
            self._paused = paused
            self._seq = seq
            if self._stale_since is None:
                self._stale_since = time.monotonic()

    def wait_time(self, now: float) -> float | None:
        """Seconds until a checkpoint is due (None: nothing to write, or one being written)."""
        with self._lock:
            if self._stale_since is None or self._go or self._busy:
                return None
            return self._stale_since + self.delay - now

    def start_job(self, now: float, rotate: Callable[[], None]) -> None:
        """If a checkpoint is due: rotate the journal (unless the last rotated one still waits
        for its checkpoint) and let the thread write the state file up to the current batch."""
        with self._lock:
            due = self._stale_since is not None and now >= self._stale_since + self.delay
            if not due or self._go or self._busy or self._closing:
                return
            if not self._old_pending:
                try:
                    rotate()  # everything up to self._seq is in the old journal now
                    self._old_pending = True
                    self._rotate_failing = False
                except OSError as exc:  # the checkpoint is still worth writing
                    if not self._rotate_failing:
                        log.warning("step=checkpoint cannot rotate the journal: %s", exc.strerror)
                    self._rotate_failing = True
            self._stale_since = None
            self._go = True
            self._cond.notify_all()

    # -- the checkpoint thread ---------------------------------------------------------------
    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="state-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # a bad record shows again at the first checkpoint
            self._merge({})  # serialise the loaded records now, not when the first one is due
        while True:
            with self._lock:
                while not self._go and not self._closing:
                    self._cond.wait()
                if not self._go:
                    return
                self._go = False
                self._busy = True
                job = self._take()
            written = self._write(*job)
            with self._lock:
                self._busy = False
                if not written and self._stale_since is None:
                    self._stale_since = time.monotonic()  # try again after the delay
                self._cond.notify_all()
            self._wake()

    def _take(self) -> tuple[dict[int, str | None], bool, int, bool]:
        """Under the lock: the pending changes, the flag, the sequence number, and whether the
        rotated journal is covered by this checkpoint."""
        pending, self._pending = self._pending, {}
        return pending, self._paused, self._seq, self._old_pending

    def _write(self, pending: dict[int, str | None], paused: bool, seq: int, drop: bool) -> bool:
        """Write the state file; on success remove the rotated journal when `drop`."""
        try:
            self._merge(pending)
            write_atomic(self.path, self._text(paused, seq))
        except Exception as exc:  # OSError: disk full...; anything else is a bug
            if not self._failing:
                log.error(
                    "step=checkpoint file=%s failed (every change is in the journal): %s",
                    self.path,
                    exc.strerror if isinstance(exc, OSError) else exc,
                    exc_info=None if isinstance(exc, OSError) else exc,
                )
            self._failing = True
            return False
        if drop:
            with contextlib.suppress(FileNotFoundError):
                old_journal_path(self.path).unlink()
            with self._lock:
                self._old_pending = False
        if self._failing:
            log.warning("step=checkpoint file=%s writable again", self.path)
        self._failing = False
        return True

    def close(
        self, texts: Mapping[int, str | None], paused: bool, seq: int, timeout: float
    ) -> bool:
        """Writer thread, at shutdown: wait for the thread, then write the last checkpoint with
        `texts` (changes that never reached the journal) as well; True if it is on disk."""
        with self._lock:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False  # stuck in a write: the journal keeps everything
        with self._lock:
            pending, _, _, drop = self._take()
        pending.update(texts)
        return self._write(pending, paused, seq, drop)

    # -- the text ----------------------------------------------------------------------------
    def _merge(self, pending: Mapping[int, str | None]) -> None:
        """Bring the cached lines up to date: the loaded records first (once), then `pending`."""
        if self._loaded:
            for device_id, rec in sorted(self._loaded.items()):
                self._put(device_id, record_to_json(rec))
            self._loaded = {}
        for device_id, text in pending.items():
            self._put(device_id, text)

    def _put(self, device_id: int, text: str | None) -> None:
        block = device_id // _BLOCK
        self._stale_blocks.add(block)
        members = self._members.setdefault(block, set())
        if text is None:
            self._lines.pop(device_id, None)
            members.discard(device_id)
        else:
            self._lines[device_id] = f'"{device_id}": {text}'.encode()
            members.add(device_id)

    def _text(self, paused: bool, seq: int) -> list[bytes]:
        """The file's bytes in pieces (`codec.snapshot_to_json`'s layout, one device a line),
        re-joining only the blocks that changed."""
        for block in self._stale_blocks:
            members = self._members.get(block)
            if members:
                self._blocks[block] = b",\n".join([self._lines[i] for i in sorted(members)])
            else:
                self._members.pop(block, None)
                self._blocks.pop(block, None)
        self._stale_blocks = set()
        head = snapshot_head(paused, seq).encode()
        if not self._blocks:
            return [head, b"}}\n"]
        parts = [head]
        for block in sorted(self._blocks):
            parts += (b",\n", self._blocks[block])
        parts[1] = b"\n"
        parts.append(b"\n}}\n")
        return parts
