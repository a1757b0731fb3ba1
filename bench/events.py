"""What the event journal costs (issue 13): its write cost per event, alone and inside the state
store's group commit.

1. The journal alone: `EventJournal.append_batch` of 1, 8 and 64 lines (each batch written and
   fdatasync'd), per batch and per event; and building one event's line (id, time, JSON).
2. The group commit, as an alert storm drives it without HTTP: C threads each change one new
   device and wait until it is durable, N changes in all; the StateStore without events, then
   with a `tracked` event per change (journal appended and fdatasync'd in the same batch).
   Runs alternate; medians of changes/s and of ms per batch are compared.

Usage: .venv/bin/python bench/events.py [--changes 2000] [--clients 16] [--runs 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_handler.core.records import DeviceRecord
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventJournal, EventType
from alert_handler.store.codec import Snapshot
from alert_handler.store.state import StateStore


def journal_alone(folder: Path, events: int, batch: int) -> tuple[float, float]:
    """(µs per batch, µs per event) of appending `events` lines in batches of `batch`."""
    emitter = Emitter(time.time)
    lines = [
        emitter.line(EventType.TRACKED, DeviceRecord(i, hostname=f"cpe-{i}")) for i in range(events)
    ]
    journal = EventJournal(folder / f"alone-{batch}.jsonl", max_bytes=1 << 40)
    journal.open()
    took = []
    for start in range(0, events, batch):
        began = time.perf_counter()
        journal.append_batch(lines[start : start + batch])
        took.append(time.perf_counter() - began)
    journal.close()
    per_batch = statistics.median(took) * 1e6
    return per_batch, per_batch / batch


def line_cost(events: int) -> float:
    """µs to build one event's journal line."""
    emitter = Emitter(time.time)
    rec = DeviceRecord(7, hostname="cpe-7", original_recorded=True, episode="ep_X")
    began = time.perf_counter()
    for _ in range(events):
        emitter.line(EventType.FORCED_DOWN, rec, detail="overwrite_ip 127.0.0.50")
    return (time.perf_counter() - began) / events * 1e6


def storm(folder: Path, changes: int, clients: int, with_events: bool) -> tuple[float, float, int]:
    """(changes/s, ms per write batch, batches) of `changes` durable changes from `clients`."""
    journal = EventJournal(folder / "storm.jsonl", max_bytes=1 << 40) if with_events else None
    if journal is not None:
        journal.open()
    writes: list[float] = []
    store = StateStore(
        folder / "state.json",
        Snapshot(devices={}),
        on_batch=journal.append_batch if journal else None,
        on_write=lambda took, _size: writes.append(took),
    )
    store.start()
    emitter = Emitter(time.time)
    batches = [0]
    if journal is not None:
        journal.listen(lambda _events: batches.__setitem__(0, batches[0] + 1))
    ids = iter(range(1, changes + 1))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                device_id = next(ids, None)
            if device_id is None:
                return
            rec = DeviceRecord(device_id, hostname=f"cpe-{device_id}")
            lines = [emitter.line(EventType.TRACKED, rec)] if with_events else []

            def change(_cur: DeviceRecord | None, new: DeviceRecord = rec) -> DeviceRecord:
                return new

            _, version = store.update(device_id, change, lines)
            store.wait_durable(version, 30)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    store.close()
    if journal is not None:
        journal.close()
    for path in folder.glob("storm.jsonl*"):
        path.unlink()
    (folder / "state.json").unlink()
    return changes / took, 1000 * statistics.median(writes) if writes else 0.0, len(writes)


def main() -> int:
    """Run both parts and print RESULT lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.changes, args.runs = 100, 1
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        folder = Path(tmp)
        print(f"RESULT building one event line: {line_cost(args.changes):.1f} us")
        for batch in (1, 8, 64):
            per_batch, per_event = journal_alone(folder, max(args.changes // 4, batch * 4), batch)
            print(
                f"RESULT journal append of {batch} line(s), fdatasync'd: {per_batch:.0f} us "
                f"per batch, {per_event:.1f} us per event"
            )
        plain: list[tuple[float, float, int]] = []
        events: list[tuple[float, float, int]] = []
        for _ in range(args.runs):
            plain.append(storm(folder, args.changes, args.clients, False))
            events.append(storm(folder, args.changes, args.clients, True))
        for name, runs in (("without events", plain), ("with events", events)):
            rate = statistics.median(r[0] for r in runs)
            write = statistics.median(r[1] for r in runs)
            per = statistics.median(args.changes / r[2] for r in runs if r[2])
            print(
                f"RESULT group commit {name}: {rate:.0f} changes/s, state write {write:.2f} ms, "
                f"{per:.1f} changes per batch ({args.clients} clients, {args.runs} runs)"
            )
        ratio = statistics.median(e[0] / p[0] for p, e in zip(plain, events, strict=True))
        print(f"RESULT with/without events throughput: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
