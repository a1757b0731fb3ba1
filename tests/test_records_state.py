"""records (JSON form of the state, pure) and state (the file: atomic writes, quarantine, the store,
the lock), the latter on real files under tmp_path."""

from __future__ import annotations

import json
import os
import resource
import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_handler.core.records import DeviceRecord, Phase, merge_alert_fields
from alert_handler.core.times import from_iso, iso
from alert_handler.store.codec import (
    Snapshot,
    _iso,
    record_from_dict,
    record_to_dict,
    record_to_json,
    snapshot_from_json,
    snapshot_to_json,
)
from alert_handler.store.files import (
    StateLock,
    StateLocked,
    load_state,
    write_atomic,
)
from alert_handler.store.state import StateStore, StateWriteError
from alert_handler.store.wal import read_journal
from tests.conftest import checkpoint_seq, wait_for

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
WAIT = 60.0  # generous timeout for anything that waits on the writer thread

# Millisecond-precision instants between 2001 and 2096: what `iso` keeps exactly.
TIMES = st.integers(min_value=1_000_000_000_000, max_value=4_000_000_000_000).map(
    lambda ms: ms / 1000
)
OPT_TIMES = st.none() | TIMES
OPT_TEXT = st.none() | st.text(max_size=30)
IPS = st.none() | st.sampled_from(["192.0.2.9", "127.0.0.50", "2001:db8::1", "10.0.0.1"])
COUNTS = st.integers(min_value=0, max_value=2**40)


@st.composite
def records(draw: st.DrawFn, device_id: int | None = None) -> DeviceRecord:
    """Any DeviceRecord the daemon can hold."""
    return DeviceRecord(
        device_id=device_id or draw(st.integers(min_value=1, max_value=2**31 - 1)),
        phase=draw(st.sampled_from(Phase)),
        hostname=draw(OPT_TEXT),
        original_recorded=draw(st.booleans()),
        original_overwrite_ip=draw(IPS),
        adopted=draw(st.booleans()),
        port_id=draw(st.none() | COUNTS),
        poller_group=draw(COUNTS),
        attempts=draw(COUNTS),
        first_seen=draw(TIMES),
        next_attempt_at=draw(TIMES),
        attempt_started_at=draw(OPT_TIMES),
        forced_down_at=draw(OPT_TIMES),
        last_forced_at=draw(OPT_TIMES),
        last_error=draw(OPT_TEXT),
        acked=draw(st.booleans()),
        acked_ids=tuple(draw(st.lists(COUNTS, max_size=3))),
        alerts=draw(COUNTS),
        last_alert=draw(TIMES),
        last_rule=draw(OPT_TEXT),
        last_ip=draw(IPS),
        recheck_at=draw(OPT_TIMES),
        release_requested=draw(st.booleans()),
    )


def rec(device_id: int, **fields: Any) -> DeviceRecord:
    """A plausible record with realistic times."""
    base: dict[str, Any] = {"first_seen": NOW, "next_attempt_at": NOW, "last_alert": NOW}
    base.update(fields)
    return DeviceRecord(device_id=device_id, **base)


# -- records: pure -------------------------------------------------------------------------------
@settings(max_examples=250, deadline=None)
@given(records())
def test_record_round_trip(record: DeviceRecord) -> None:
    assert record_from_dict(record.device_id, record_to_dict(record), NOW + 1) == record
    stored = json.loads(record_to_json(record))
    assert stored == record_to_dict(record)
    assert record_from_dict(record.device_id, stored, NOW + 1) == record


def test_record_round_trip_keeps_a_null_original() -> None:
    record = rec(42, phase=Phase.DOWN, original_recorded=True, original_overwrite_ip=None)
    stored = json.loads(record_to_json(record))
    assert stored["original_overwrite_ip"] is None
    assert stored["original_recorded"] is True
    back = record_from_dict(42, stored, NOW)
    assert back.original_recorded and back.original_overwrite_ip is None


def test_record_from_a_minimal_object_fills_defaults_with_now() -> None:
    assert record_from_dict(42, {}, NOW) == rec(42)


def test_iso() -> None:
    assert iso(None) is None
    assert iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso(NOW) == "2023-11-14T22:13:20.000Z"
    assert iso(NOW + 0.1239) == "2023-11-14T22:13:20.123Z"


def test_from_iso() -> None:
    assert from_iso(None) is None
    assert from_iso("2023-11-14T22:13:20.123Z") == NOW + 0.123
    assert from_iso("2023-11-14T22:13:20") == NOW  # naive means UTC
    assert from_iso("2023-11-14 23:13:20+01:00") == NOW
    assert from_iso(5) == 5.0
    assert from_iso(5.5) == 5.5


@pytest.mark.parametrize("junk", ["junk", "", "2023-13-01T00:00:00Z", True, [1], {"t": 1}])
def test_from_iso_rejects_junk(junk: Any) -> None:
    with pytest.raises(ValueError):
        from_iso(junk)


@settings(max_examples=200, deadline=None)
@given(TIMES)
def test_iso_round_trip(ts: float) -> None:
    assert from_iso(iso(ts)) == ts


def test_merge_alert_fields_takes_the_webhooks_fields_from_current() -> None:
    decided = rec(42, phase=Phase.DOWN, attempts=3, alerts=1, hostname=None)
    current = rec(
        42,
        alerts=9,
        last_alert=NOW + 5,
        last_rule="r",
        last_ip="127.0.0.50",
        recheck_at=NOW + 4,
        release_requested=True,
        hostname="cpe",
    )
    merged = merge_alert_fields(decided, current)
    assert merged == rec(
        42,
        phase=Phase.DOWN,
        attempts=3,
        alerts=9,
        last_alert=NOW + 5,
        last_rule="r",
        last_ip="127.0.0.50",
        recheck_at=NOW + 4,
        release_requested=True,
        hostname="cpe",
    )


def test_snapshot_to_json_one_device_per_line() -> None:
    devices = {7: rec(7, hostname="a"), 42: rec(42, phase=Phase.DOWN, port_id=3)}
    fragments = [(d, record_to_json(r)) for d, r in sorted(devices.items())]
    text = snapshot_to_json(fragments, paused=True)
    data = json.loads(text)
    assert data == {
        "version": 1,
        "paused": True,
        "devices": {"7": record_to_dict(devices[7]), "42": record_to_dict(devices[42])},
    }
    lines = text.splitlines()
    assert len(lines) == 2 + len(devices)
    for line, (device_id, record) in zip(lines[1:-1], sorted(devices.items()), strict=True):
        key, _, value = line.partition(": ")
        assert key == f'"{device_id}"'
        assert json.loads(value.rstrip(",")) == record_to_dict(record)
    assert snapshot_from_json(text, NOW) == Snapshot(devices=devices, paused=True)


def test_snapshot_to_json_without_devices() -> None:
    text = snapshot_to_json([], paused=False)
    assert json.loads(text) == {"version": 1, "paused": False, "devices": {}}
    assert snapshot_from_json(text, NOW) == Snapshot(devices={})


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=5, unique_by=lambda r: r.device_id), st.booleans())
def test_snapshot_round_trip(recs: list[DeviceRecord], paused: bool) -> None:
    devices = {r.device_id: r for r in recs}
    fragments = [(d, record_to_json(r)) for d, r in sorted(devices.items())]
    back = snapshot_from_json(snapshot_to_json(fragments, paused), NOW)
    assert back == Snapshot(devices=devices, paused=paused)


@pytest.mark.parametrize("text", ["", "   \n", "\n\n"])
def test_empty_text_is_an_empty_snapshot(text: str) -> None:
    assert snapshot_from_json(text, NOW) == Snapshot(devices={})


def test_legacy_flat_file_migrates() -> None:
    text = json.dumps(
        {
            "42": {
                "hostname": "cpe-42",
                "ip": "127.0.0.50",
                "port_id": 7,
                "added_at": "2023-11-14T22:13:20",
            },
            "43": {"hostname": "cpe-43", "ip": "192.0.2.43", "port_id": "8", "added_at": "junk"},
        }
    )
    snap = snapshot_from_json(text, NOW + 100)
    assert snap.migrated_from_legacy
    assert not snap.paused
    assert snap.devices[42] == DeviceRecord(
        device_id=42,
        phase=Phase.NEW,
        hostname="cpe-42",
        original_recorded=False,  # the alert's ip is never taken for the original
        original_overwrite_ip=None,
        port_id=7,
        first_seen=NOW,
        next_attempt_at=NOW + 100,
        last_alert=NOW,
        last_ip="127.0.0.50",
        found_unsupervised=True,  # the old script handled it: never held (issue 18)
    )
    r43 = snap.devices[43]
    assert (r43.port_id, r43.first_seen, r43.last_ip) == (8, NOW + 100, "192.0.2.43")
    assert not r43.original_recorded and r43.original_overwrite_ip is None


CORRUPT = [
    "not json",
    "{",
    "[]",
    "42",
    '"text"',
    '{"version": 2, "devices": {}}',
    '{"version": 1, "devices": []}',
    '{"version": 1, "paused": false}',
    '{"version": 1, "devices": {"abc": {}}}',
    '{"version": 1, "devices": {"0": {}}}',
    '{"version": 1, "devices": {"-4": {}}}',
    '{"version": 1, "devices": {"42": 5}}',
    '{"version": 1, "devices": {"42": {"phase": "bogus"}}}',
    '{"version": 1, "devices": {"42": {"phase": []}}}',
    '{"version": 1, "devices": {"42": {"attempts": "x"}}}',
    '{"version": 1, "devices": {"42": {"attempts": true}}}',
    '{"version": 1, "devices": {"42": {"port_id": 1.5}}}',
    '{"version": 1, "devices": {"42": {"hostname": 5}}}',
    '{"version": 1, "devices": {"42": {"original_overwrite_ip": ["x"]}}}',
    '{"version": 1, "devices": {"42": {"first_seen": "junk"}}}',
    '{"version": 1, "devices": {"42": {"next_attempt_at": [1]}}}',
    '{"42": "cpe"}',
    '{"42": {"hostname": 5}}',
    '{"cpe": {"hostname": "x"}}',
    '{"\\u0664\\u0662": {"hostname": "x"}}',
]


@pytest.mark.parametrize("text", CORRUPT)
def test_corrupt_inputs_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        snapshot_from_json(text, NOW)


UNREPRESENTABLE_TIMES = ["NaN", "Infinity", "1e20", "-1e20", "1" + "0" * 400]


@pytest.mark.parametrize("value", UNREPRESENTABLE_TIMES, ids=lambda v: v[:10])
def test_unrepresentable_times_are_corrupt(value: str) -> None:
    text = '{"version": 1, "devices": {"42": {"first_seen": ' + value + "}}}"
    with pytest.raises(ValueError):
        snapshot_from_json(text, NOW)


# -- the file ------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_atomic(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, "first\n")
    assert path.read_text() == "first\n"
    assert mode(path) == 0o600
    path.chmod(0o644)
    write_atomic(path, "second ✓\n")
    assert path.read_text(encoding="utf-8") == "second ✓\n"
    assert mode(path) == 0o600  # a replaced file, not a rewritten one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_write_atomic_failure_leaves_no_temp_file_and_keeps_the_target(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        write_atomic(path, "text")
    assert path.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_load_missing_file(tmp_path: Path) -> None:
    result = load_state(tmp_path / "state.json", NOW)
    assert result.snapshot == Snapshot(devices={})
    assert result.quarantined_to is None and result.error is None


def test_load_good_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    record = rec(42, phase=Phase.DOWN, original_recorded=True)
    path.write_text(snapshot_to_json([(42, record_to_json(record))], paused=True))
    result = load_state(path, NOW)
    assert result.snapshot == Snapshot(devices={42: record}, paused=True)
    assert result.quarantined_to is None


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 9, "devices": {}}', b"\xff\xfe"])
def test_load_corrupt_file_quarantines_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    result = load_state(path, NOW)
    assert result.snapshot == Snapshot(devices={})
    assert result.quarantined_to == tmp_path / "state.json.corrupt-20231114T221320"
    assert result.error
    assert not path.exists()
    assert result.quarantined_to.read_bytes() == content
    # A second corrupt file in the same second does not overwrite the first.
    path.write_bytes(b"[]")
    again = load_state(path, NOW)
    assert again.quarantined_to == tmp_path / "state.json.corrupt-20231114T221320-1"
    assert again.quarantined_to.read_bytes() == b"[]"
    assert result.quarantined_to.read_bytes() == content


def test_load_file_with_a_huge_time_quarantines_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    huge = "1" + "0" * 400
    path.write_text('{"version": 1, "devices": {"42": {"first_seen": ' + huge + "}}}")
    result = load_state(path, NOW)
    assert result.quarantined_to is not None


class Store:
    """A started StateStore that is always closed, plus a log of its writes."""

    def __init__(
        self,
        path: Path,
        snapshot: Snapshot | None = None,
        on_write: Callable[[float, int], None] | None = None,
    ) -> None:
        self.writes: list[int] = []
        self.written = threading.Event()
        self._hook = on_write

        def hook(seconds: float, size: int) -> None:
            self.writes.append(size)
            self.written.set()
            if self._hook is not None:
                self._hook(seconds, size)

        self.store = StateStore(
            path, snapshot or Snapshot(devices={}), on_write=hook, retry_delay=0.01
        )
        self.store.start()


@pytest.fixture
def make_store() -> Any:
    """Build started stores; close them all at the end of the test."""
    stores: list[Store] = []

    def make(
        path: Path,
        snapshot: Snapshot | None = None,
        on_write: Callable[[float, int], None] | None = None,
    ) -> Store:
        made = Store(path, snapshot, on_write)
        stores.append(made)
        return made

    yield make
    for made in stores:
        made.store.close(WAIT)


def on_disk(path: Path) -> Snapshot:
    """What a fresh start would load from `path`."""
    result = load_state(path, NOW)
    assert result.quarantined_to is None
    return result.snapshot


def test_store_put_update_wait_close(tmp_path: Path, make_store: Any) -> None:
    path = tmp_path / "state.json"
    store: StateStore = make_store(path).store
    store.wait_durable(store.put(rec(42)), WAIT)
    assert on_disk(path).devices == {42: rec(42)}

    new, version = store.update(42, lambda cur: None if cur is None else rec(42, alerts=2))
    assert new == rec(42, alerts=2)
    store.wait_durable(version, WAIT)
    store.wait_durable(store.put(rec(7, phase=Phase.DOWN)), WAIT)
    # No change: nothing to wait for.
    same, zero = store.update(7, lambda cur: cur)
    assert same == rec(7, phase=Phase.DOWN) and zero == 0
    store.wait_durable(zero)
    _, removed = store.update(42, lambda cur: None)
    store.wait_durable(store.set_paused(True), WAIT)
    assert removed > 0
    store.close(WAIT)
    assert on_disk(path) == Snapshot(devices={7: rec(7, phase=Phase.DOWN)}, paused=True)
    assert store.records() == {7: rec(7, phase=Phase.DOWN)}
    assert store.count() == 1 and store.paused and store.healthy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert mode(path) == 0o600


def test_close_writes_what_is_pending(tmp_path: Path, make_store: Any) -> None:
    path = tmp_path / "state.json"
    store: StateStore = make_store(path).store
    for device_id in range(1, 51):
        store.put(rec(device_id))
    store.close(WAIT)
    assert sorted(on_disk(path).devices) == list(range(1, 51))


def test_legacy_snapshot_is_rewritten_at_start(tmp_path: Path, make_store: Any) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"42": {"hostname": "cpe-42", "ip": "127.0.0.50", "port_id": 7}}')
    snap = load_state(path, NOW).snapshot
    assert snap.migrated_from_legacy
    make_store(path, snap)
    # Written by the checkpoint thread at start, without waiting for a change.
    wait_for(lambda: '"version": 1' in path.read_text(), WAIT, "the migrated file")
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["devices"]["42"]["phase"] == "new"
    assert data["devices"]["42"]["original_recorded"] is False


def test_group_commit(tmp_path: Path, make_store: Any) -> None:
    """1. A first append is held up inside its commit (as a slow disk would), by the thread
       that leads it.
    2. 200 threads each put a record and wait until it is durable: none can append meanwhile.
    3. The first append is let go: the 200 changes go out together in the next one or two, not
       one append per change."""
    path = tmp_path / "state.json"
    busy = threading.Event()
    release = threading.Event()

    def slow_disk(seconds: float, size: int) -> None:
        if not busy.is_set():
            busy.set()
            release.wait(WAIT)

    made: Store = make_store(path, on_write=slow_disk)
    store = made.store
    first = threading.Thread(target=lambda: store.wait_durable(store.put(rec(1)), WAIT))
    first.start()
    assert busy.wait(WAIT)

    put_done = threading.Semaphore(0)
    errors: list[BaseException] = []

    def client(device_id: int) -> None:
        try:
            version = store.put(rec(device_id))
            put_done.release()
            store.wait_durable(version, WAIT)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(2, 202)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert put_done.acquire(timeout=WAIT)
    release.set()
    for thread in [first, *threads]:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert sorted(on_disk(path).devices) == list(range(1, 202))
    assert len(made.writes) <= 3  # far fewer than the 201 changes


def test_full_disk_fails_loudly_and_recovers_by_itself(tmp_path: Path, make_store: Any) -> None:
    """1. The disk fills up (RLIMIT_FSIZE lowered on this process: a write past the journal's
       size fails with EFBIG, as on a full disk; as root a full filesystem cannot be had):
       waiters get StateWriteError, `healthy` is False, and the journal holds whole lines only.
    2. Space returns: the writer retries on its own, `healthy` turns True, the change is on
       disk."""
    path = tmp_path / "state.json"
    made: Store = make_store(path)
    store = made.store
    store.wait_durable(store.put(rec(1)), WAIT)
    assert made.written.wait(WAIT)  # the hook runs just after the append is marked durable
    made.written.clear()
    journal = tmp_path / "state.json.journal"
    size = journal.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for part of a line
    try:
        version = store.put(rec(42))
        with pytest.raises(StateWriteError) as info:
            store.wait_durable(version, WAIT)
        assert not store.healthy
        assert store.last_error
        assert not made.written.is_set()
        assert journal.stat().st_size == size  # the part that fitted was cut off again
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(path) in str(info.value)
    assert made.written.wait(WAIT)
    assert store.healthy
    assert store.last_error is None
    store.wait_durable(version, WAIT)
    assert on_disk(path).devices == {1: rec(1), 42: rec(42)}


def test_unwritable_checkpoint_keeps_acknowledging_and_catches_up(
    tmp_path: Path, make_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """1. The state file cannot be replaced (a directory is in its way, which stops even root):
       changes are still acknowledged (they are in the journal), `healthy` stays True, and a
       restart would load every one of them.
    2. The obstacle goes away: the next checkpoint writes them all, the rotated journal goes."""
    path = tmp_path / "state.json"
    store: StateStore = make_store(path).store
    store.wait_durable(store.put(rec(1)), WAIT)
    wait_for(lambda: checkpoint_seq(path) >= 1, WAIT, "the first checkpoint")
    path.unlink()
    path.mkdir()
    for device_id in range(2, 6):
        store.wait_durable(store.put(rec(device_id)), WAIT)
    assert store.healthy
    wait_for(
        lambda: (
            "step=checkpoint" in caplog.text
            and "failed (every change is in the journal)" in caplog.text
        ),
        WAIT,
        "a checkpoint to fail",
    )

    journaled = [
        entry.device_id
        for name in ("state.json.journal.old", "state.json.journal")
        for entry in read_journal(tmp_path / name).entries
    ]
    assert journaled == [2, 3, 4, 5]
    path.rmdir()
    wait_for(lambda: checkpoint_seq(path) == 5, WAIT, "the checkpoint after the obstacle went")
    assert on_disk(path).devices == {i: rec(i) for i in range(1, 6)}
    assert not (tmp_path / "state.json.journal.old").exists()


def test_a_record_that_cannot_be_serialised_does_not_kill_the_writer(
    tmp_path: Path, make_store: Any
) -> None:
    """1. A record whose time iso() cannot write (a bug elsewhere) makes the write fail:
       waiters get StateWriteError and `healthy` is False, but the writer thread lives on.
    2. The record is replaced by a good one: the writer catches up by itself."""
    path = tmp_path / "state.json"
    made: Store = make_store(path)
    store = made.store
    store.wait_durable(store.put(rec(1)), WAIT)
    version = store.put(replace(rec(2), next_attempt_at=float("nan")))
    with pytest.raises(StateWriteError):
        store.wait_durable(version, WAIT)
    assert not store.healthy
    version = store.put(rec(2))
    store.wait_durable(version, WAIT)
    assert store.healthy
    assert on_disk(path).devices == {1: rec(1), 2: rec(2)}


def test_state_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    first = StateLock(path)
    first.acquire()
    try:
        assert first.path == tmp_path / "state.json.lock"
        assert mode(first.path) == 0o600
        second = StateLock(path)
        with pytest.raises(StateLocked) as info:
            second.acquire()
        assert f"pid {os.getpid()}" in str(info.value)
        assert "state.json" in str(info.value)
    finally:
        first.release()
    second.acquire()
    second.release()
    second.release()  # releasing twice is harmless


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=0.0, max_value=253402300799.0),
        TIMES,
        st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999995),
        st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.0005),
    )
)
def test_the_writers_cached_time_format_is_iso(ts: float) -> None:
    """The state writer formats each second's date once (codec._iso): the text is exactly
    `times.iso`'s, rounding at a second's edge included."""
    assert _iso(ts) == iso(ts)
    assert _iso(ts) == iso(ts)  # from the cache this time
