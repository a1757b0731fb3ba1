"""The state's write-ahead journal (issue 15): lines, replay after the checkpoint, the files a
crash can leave at each point of a checkpoint, torn and damaged lines, the clean close, and the
hook that writes a second file (the event journal) in the same group commit. Real files under
tmp_path, a real StateStore."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.store import wal as journal
from alert_handler.store.codec import Snapshot, record_to_json, snapshot_to_json
from alert_handler.store.files import load_state, read_state
from alert_handler.store.state import CHECKPOINT_DELAY, StateStore, StateWriteError
from tests.conftest import checkpoint_seq, wait_for

NOW = 1_700_000_000.0
WAIT = 10.0


def rec(device_id: int, **kw: object) -> DeviceRecord:
    """A record with fixed times (so equality holds after a round trip)."""
    base: dict[str, object] = {
        "device_id": device_id,
        "hostname": f"cpe-{device_id}",
        "first_seen": NOW,
        "next_attempt_at": NOW + 60,
        "last_alert": NOW,
    }
    base.update(kw)
    return DeviceRecord(**base)  # type: ignore[arg-type]


def put(seq: int, record: DeviceRecord) -> bytes:
    """The journal line storing `record`."""
    return journal.put_line(seq, record.device_id, record_to_json(record))


def checkpoint(path: Path, records: list[DeviceRecord], seq: int, paused: bool = False) -> None:
    """A state file as the checkpoint thread writes it."""
    fragments = [
        (r.device_id, record_to_json(r)) for r in sorted(records, key=lambda r: r.device_id)
    ]
    path.write_text(snapshot_to_json(fragments, paused, seq))


@pytest.fixture
def stores() -> Iterator[list[StateStore]]:
    """Started stores, closed at the end of the test."""
    made: list[StateStore] = []
    yield made
    for store in made:
        store.close(WAIT)


def started(path: Path, stores: list[StateStore], **kw: object) -> StateStore:
    """A store on what `load_state` finds at `path`, started."""
    store = StateStore(path, load_state(path, NOW).snapshot, retry_delay=0.01, **kw)  # type: ignore[arg-type]
    store.start()
    stores.append(store)
    return store


# -- lines ------------------------------------------------------------------------------------
def test_lines_are_json_and_parse_back() -> None:
    line = put(7, rec(42, phase=Phase.DOWN))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["record"]["phase"] == "down"
    text = record_to_json(rec(42, phase=Phase.DOWN)).encode()
    assert journal.parse_line(line[:-1]) == journal.Entry(7, 42, text)  # built only if needed
    spaced = b'{"seq":7,"put":42,"record":' + text + b"}"  # not the writer's shape: parsed
    assert journal.parse_line(spaced) == journal.Entry(7, 42, json.loads(text))
    assert journal.parse_line(journal.remove_line(8, 42)) == journal.Entry(8, 42)
    assert journal.parse_line(journal.paused_line(9, True)) == journal.Entry(9, paused=True)


@pytest.mark.parametrize(
    "text",
    [
        b"junk",
        b"[]",
        b'{"put": 1, "record": {}}',
        b'{"seq": 0, "put": 1, "record": {}}',
        b'{"seq": true, "remove": 1}',
        b'{"seq": 1, "put": 0, "record": {}}',
        b'{"seq": 1, "put": 1, "record": 5}',
        b'{"seq": 0, "put": 1, "record": {}}',
        b'{"seq": 1, "remove": 0}',
        b'{"seq": 1, "put": 1, "record": {"phase": "do',
        b'{"seq": 1, "paused": "yes"}',
        b'{"seq": 1}',
        b"\xff\xfe",
    ],
)
def test_bad_lines_raise_value_error(text: bytes) -> None:
    with pytest.raises(ValueError):
        journal.parse_line(text)


# -- replay -----------------------------------------------------------------------------------
def test_replay_applies_only_the_lines_after_the_checkpoint(tmp_path: Path) -> None:
    """The checkpoint says seq 2: lines 1 and 2 (already in it) are skipped, even where they
    disagree with it; 3 removes device 1, 4 changes device 2, 5 pauses."""
    path = tmp_path / "state.json"
    checkpoint(path, [rec(1), rec(2, attempts=2)], seq=2)
    lines = [
        put(1, rec(1, attempts=9)),
        put(2, rec(2, attempts=9)),
        journal.remove_line(3, 1),
        put(4, rec(2, attempts=3)),
        journal.paused_line(5, True),
    ]
    journal.journal_path(path).write_bytes(b"".join(lines))
    result = load_state(path, NOW)
    assert result.snapshot == Snapshot(devices={2: rec(2, attempts=3)}, paused=True)
    assert result.snapshot.seq == 5 and result.replayed == 3
    assert read_state(path, NOW) == result.snapshot


@pytest.mark.parametrize(
    "point",
    [
        "before the rotation",
        "rotated, checkpoint not written",
        "checkpoint written, old journal not removed",
        "old journal removed",
    ],
)
def test_every_point_of_a_checkpoint_loads_the_same_state(tmp_path: Path, point: str) -> None:
    """A kill at each point of a checkpoint at seq 4 (devices 1-4 put one by one, then 5 and 6
    acknowledged after the rotation) leaves files that load to the same six devices."""
    path = tmp_path / "state.json"
    current, old = journal.journal_path(path), journal.old_journal_path(path)
    first = b"".join(put(i, rec(i)) for i in range(1, 5))
    later = b"".join(put(i, rec(i)) for i in (5, 6))
    checkpoint(path, [], seq=0)
    if point == "before the rotation":
        current.write_bytes(first + later)
    else:
        old.write_bytes(first)
        current.write_bytes(later)
    if point in ("checkpoint written, old journal not removed", "old journal removed"):
        checkpoint(path, [rec(i) for i in range(1, 5)], seq=4)
    if point == "old journal removed":
        old.unlink()
    assert load_state(path, NOW).snapshot.devices == {i: rec(i) for i in range(1, 7)}


def test_a_restart_goes_on_after_the_last_line(tmp_path: Path, stores: list[StateStore]) -> None:
    """1. A daemon's files after a kill: checkpoint at seq 2, journal lines up to 5.
    2. A new store on them appends seq 6 and up, so a second kill and restart loads every change
       (nothing numbered at or below what is already on disk)."""
    path = tmp_path / "state.json"
    checkpoint(path, [rec(1), rec(2)], seq=2)
    lines = [put(seq, rec(seq)) for seq in range(1, 6)]
    journal.journal_path(path).write_bytes(b"".join(lines))
    store = started(path, stores, checkpoint_delay=3600.0)
    assert store.records().keys() == {1, 2, 3, 4, 5}
    store.wait_durable(store.put(rec(6)), WAIT)
    seqs = [e.seq for e in journal.read_journal(journal.journal_path(path)).entries]
    assert seqs[-1] == 6
    assert load_state(path, NOW).snapshot.devices == {i: rec(i) for i in range(1, 7)}


def test_checkpoints_follow_within_a_second_and_rotate_the_journal(
    tmp_path: Path, stores: list[StateStore]
) -> None:
    """1. Changes are durable in the journal at once; the state file follows within about
       CHECKPOINT_DELAY, without waiting for a close.
    2. The journal is rotated at each checkpoint: it holds only what came after the last one."""
    path = tmp_path / "state.json"
    store = started(path, stores)
    for device_id in range(1, 4):
        store.wait_durable(store.put(rec(device_id)), WAIT)
    assert read_state(path, NOW).devices.keys() == {1, 2, 3}
    wait_for(lambda: checkpoint_seq(path) == 3, WAIT, "the checkpoint")
    assert json.loads(path.read_text())["seq"] == 3
    store.wait_durable(store.put(rec(4)), WAIT)
    wait_for(lambda: not journal.old_journal_path(path).exists(), WAIT, "the old journal gone")
    entries = journal.read_journal(journal.journal_path(path)).entries
    assert [e.seq for e in entries] in ([4], [])  # [] once 4 is in a checkpoint too
    wait_for(lambda: checkpoint_seq(path) == 4, WAIT, "the second checkpoint")
    assert load_state(path, NOW).snapshot.devices == {i: rec(i) for i in range(1, 5)}
    assert CHECKPOINT_DELAY <= 1.0


def test_close_leaves_the_state_file_alone(tmp_path: Path) -> None:
    """A clean close writes the last checkpoint and removes the journal: an operator finds one
    complete file, the way earlier versions left it."""
    path = tmp_path / "state.json"
    store = StateStore(path, Snapshot(devices={}), checkpoint_delay=3600.0)
    store.start()
    store.put(rec(1))
    store.set_paused(True)
    store.close(WAIT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    data = json.loads(path.read_text())
    assert data["paused"] is True and list(data["devices"]) == ["1"] and data["seq"] == 2


# -- torn and damaged lines -------------------------------------------------------------------
def test_torn_last_line_is_ignored_logged_and_trimmed(
    tmp_path: Path, stores: list[StateStore], caplog: pytest.LogCaptureFixture
) -> None:
    """1. A kill in the middle of an append leaves part of a line at the end: it is ignored (its
       write was never acknowledged) and logged, nothing is set aside.
    2. The restarted store cuts it off before appending, so the next load finds no damage."""
    path = tmp_path / "state.json"
    current = journal.journal_path(path)
    current.write_bytes(put(1, rec(1)) + put(2, rec(2))[:40])
    journal.old_journal_path(path).write_bytes(b"")  # so the start's checkpoint does not rotate
    with caplog.at_level(logging.WARNING):
        store = started(path, stores, checkpoint_delay=3600.0)
    assert "incomplete last line ignored (40 bytes" in caplog.text
    assert store.records() == {1: rec(1)}
    store.wait_durable(store.put(rec(3)), WAIT)
    read = journal.read_journal(current)
    assert read.corrupt is None and read.torn == 0
    assert [e.seq for e in read.entries] == [1, 2]
    assert read_state(path, NOW).devices == {1: rec(1), 3: rec(3)}
    assert not list(tmp_path.glob("*.corrupt-*"))
    assert load_state(path, NOW).snapshot.devices == {1: rec(1), 3: rec(3)}


def test_unreadable_last_line_counts_as_torn(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    journal.journal_path(path).write_bytes(put(1, rec(1)) + b"\0\0\0\0\n")
    result = load_state(path, NOW)
    assert result.snapshot.devices == {1: rec(1)} and result.journal_quarantined_to == ()


def test_damaged_middle_line_sets_the_journal_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A line in the middle cannot be read (the disk or a hand edit damaged it): the lines before
    it are applied, the file is renamed aside like a corrupt state file and the error logged;
    `read_state` (status without a daemon) refuses rather than guesses."""
    path = tmp_path / "state.json"
    current = journal.journal_path(path)
    content = put(1, rec(1)) + b'{"seq": 2, "put": \n' + put(3, rec(3))
    current.write_bytes(content)
    with pytest.raises(ValueError, match="line 2"):
        read_state(path, NOW)
    with caplog.at_level(logging.ERROR):
        result = load_state(path, NOW)
    assert result.snapshot.devices == {1: rec(1)}
    (aside,) = result.journal_quarantined_to
    assert aside.name.startswith("state.json.journal.corrupt-") and aside.read_bytes() == content
    assert not current.exists()
    assert "is damaged at line 2" in caplog.text


def test_corrupt_checkpoint_still_replays_its_journal(tmp_path: Path) -> None:
    """The state file is corrupt (set aside as before) but the journal's records are applied:
    each carries a device's original, which an empty start would lose."""
    path = tmp_path / "state.json"
    path.write_text("{not json")
    journal.journal_path(path).write_bytes(put(5, rec(1, original_recorded=True)))
    result = load_state(path, NOW)
    assert result.quarantined_to is not None
    assert result.snapshot.devices == {1: rec(1, original_recorded=True)}


# -- the hook for a second file ---------------------------------------------------------------
def test_event_lines_are_written_before_the_waiters_wake(
    tmp_path: Path, stores: list[StateStore]
) -> None:
    """1. Event lines given with changes (or computed from the record before and after) reach
       `on_batch` in order, in the same group commit, before wait_durable returns.
    2. While `on_batch` fails, waiters get StateWriteError and nothing is lost or doubled: the
       lines are written once when it works again."""
    path = tmp_path / "state.json"
    written: list[str] = []
    failing = threading.Event()

    def on_batch(lines: list[str]) -> None:
        if failing.is_set():
            raise OSError(28, "No space left on device")
        written.extend(lines)

    store = started(path, stores, on_batch=on_batch)
    store.wait_durable(store.put(rec(1), events=["tracked 1\n"]), WAIT)
    assert written == ["tracked 1\n"]
    _, version = store.update(
        1,
        lambda cur: rec(1, attempts=1),
        lambda before, after: [
            f"attempts {before and before.attempts}->{after and after.attempts}\n"
        ],
    )
    store.wait_durable(version, WAIT)
    store.wait_durable(store.add_events(["storm guard\n"]), WAIT)
    assert written[1:] == ["attempts 0->1\n", "storm guard\n"]
    failing.set()
    version = store.set_paused(True, events=["paused\n"])
    with pytest.raises(StateWriteError):
        store.wait_durable(version, WAIT)
    failing.clear()
    wait_for(lambda: store.healthy, WAIT, "the retry")
    store.wait_durable(version, WAIT)
    assert written[3:] == ["paused\n"]
    assert load_state(path, NOW).snapshot.paused


def test_journal_is_private_under_a_permissive_umask(tmp_path: Path) -> None:
    """Under umask 000 the journal (device ids, original addresses) is created 0600, like the
    state file."""
    path = tmp_path / "state.json"
    old = os.umask(0)
    try:
        store = StateStore(path, Snapshot(devices={}), checkpoint_delay=3600.0)
        store.start()
        try:
            store.wait_durable(store.put(rec(1)), WAIT)
            assert stat.S_IMODE(journal.journal_path(path).stat().st_mode) == 0o600
        finally:
            store.close(WAIT)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_bad_record_as_a_devices_last_word_sets_the_journal_aside(tmp_path: Path) -> None:
    """Only each device's last record is built at replay: one that is not a record (a damaged
    line of the writer's shape) sets the journal aside, and the checkpoint alone is loaded."""
    path = tmp_path / "state.json"
    checkpoint(path, [rec(1)], seq=1)
    bad = b'{"seq": 3, "put": 2, "record": {"phase": "bogus"}}\n'
    journal.journal_path(path).write_bytes(put(2, rec(2)) + bad)
    result = load_state(path, NOW)
    assert result.snapshot.devices == {1: rec(1)}
    assert [p.name.split(".corrupt-")[0] for p in result.journal_quarantined_to] == [
        "state.json.journal"
    ]


def test_reading_while_the_daemon_rotates_and_checkpoints(
    tmp_path: Path, stores: list[StateStore]
) -> None:
    """A reader (status without the daemon's API, a test, a benchmark) races the writer: changes
    acknowledged one after another while checkpoints and rotations come every few milliseconds.
    Every read holds every change acknowledged before it began (a read that met a rotation or a
    new state file is repeated)."""
    path = tmp_path / "state.json"
    store = started(path, stores, checkpoint_delay=0.005)
    acked: list[int] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for device_id in range(1, 400):
                store.wait_durable(store.put(rec(device_id)), WAIT)
                acked.append(device_id)
        except StateWriteError:
            pass  # the store was closed: the test failed already
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads < 5:
        known = set(acked)
        assert known <= read_state(path, NOW).devices.keys()
        reads += 1
    thread.join(WAIT)
    assert checkpoint_seq(path) > 0


@pytest.mark.parametrize("chunk", [3, 5, 65536])
@pytest.mark.parametrize(
    ("data", "kept", "last"),
    [
        (b"", 0, b""),
        (b"abc", 0, b""),
        (b"a\n", 2, b"a"),
        (b"a\nbc", 2, b"a"),
        (b"one\ntwo\n", 8, b"two"),
        (b"one\ntwo\nthr", 8, b"two"),
        (b"x" * 20 + b"\n" + b"y" * 30 + b"\nz", 52, b"y" * 30),
        (b"\n\n", 2, b""),
    ],
)
def test_a_torn_tail_is_cut_and_the_last_line_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, data: bytes, kept: int, last: bytes
) -> None:
    """The one tail repair both journals open their file with, whatever the read chunk size."""
    monkeypatch.setattr(journal, "_TAIL_CHUNK", chunk)
    path = tmp_path / "lines"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        assert journal.cut_torn_tail(fd) == (kept, last)
    finally:
        os.close(fd)
    assert path.read_bytes() == data[:kept]
