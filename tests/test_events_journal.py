"""The event journal: lines, rotation, torn tails, readers that follow it across rotations, the
events each decision produces, and the daemon journaling a device's whole episode in the same
group commit as its state."""

from __future__ import annotations

import json
import os
from pathlib import Path

from alert_handler.core.machine import Action, Decision, Reason
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.decisions import step_events, with_episode
from alert_handler.events.emit import Emitter
from alert_handler.events.ids import IdSource
from alert_handler.events.journal import Event, EventJournal, EventMaker, EventType, parse_line
from alert_handler.events.reader import Follower, journal_files, read_events
from alert_handler.sim.simulator import Simulator
from alert_handler.store.codec import Snapshot
from alert_handler.store.files import read_state
from alert_handler.store.state import StateStore
from tests.conftest import UNSUP, StartDaemon, alert_body, overwrite, wait_for


def lines_of(n: int, start: int = 0) -> list[str]:
    maker = EventMaker(lambda: 1_700_000_000.0)
    return [
        maker.make(EventType.TRACKED, device_id=i, detail=f"n{i}").to_line()
        for i in range(start, start + n)
    ]


# -- ids and lines --------------------------------------------------------------------------------
def test_ids_are_unique_and_increase_even_when_seeded_ahead() -> None:
    """1. Ids made one after another sort in the order they were made.
    2. Seeded with an id from the future (a clock stepped back since), new ids still sort after."""
    ids = IdSource("evt")
    made = [ids.new() for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(i.startswith("evt_") and len(i) == 30 for i in made)
    ahead = "evt_" + "Z" * 26
    fresh = IdSource("evt")
    fresh.seen("evt_7" + "Z" * 25)
    assert fresh.new() > "evt_7" + "Z" * 25
    assert ahead > fresh.new()


def test_an_event_line_round_trips_and_has_every_field() -> None:
    """A record's event carries device, hostname, episode, attempt, original and time down."""
    rec = DeviceRecord(
        7,
        phase=Phase.DOWN,
        hostname="cpe-7",
        original_recorded=True,
        original_overwrite_ip="198.51.100.7",
        attempts=2,
        forced_down_at=1_700_000_000.0,
        episode="ep_X",
    )
    event = EventMaker(lambda: 1_700_000_090.5).make(EventType.RECOVERED, rec, detail="up")
    obj = json.loads(event.to_line())
    assert obj["time"] == "2023-11-14T22:14:50.500Z"
    assert obj["type"] == "recovered" and obj["device_id"] == 7 and obj["hostname"] == "cpe-7"
    assert obj["episode"] == "ep_X" and obj["attempt"] == 2
    assert obj["original_overwrite_ip"] == "198.51.100.7" and obj["original_known"] is True
    assert obj["down_seconds"] == 90.5
    assert parse_line(event.to_line()) == event
    assert parse_line(b'{"id": 1}') is None and parse_line(b"{torn") is None


# -- the writer -----------------------------------------------------------------------------------
def test_batches_append_in_order_and_rotate_by_size(tmp_path: Path) -> None:
    """1. Batches are appended in order, one line per event, durable on return.
    2. Past EVENTS_MAX_BYTES the file rotates: .1 is the newest old file, at most `keep` kept.
    3. The readers see every event still kept, oldest first, with no gap and no repeat."""
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path, max_bytes=2000, keep=3)
    journal.open()
    written = []
    for n in range(30):
        batch = lines_of(3, start=3 * n)
        journal.append_batch(batch)
        written += batch
    journal.close()
    files = journal_files(path)
    assert [f.name for f in files] == [
        "events.jsonl.3",
        "events.jsonl.2",
        "events.jsonl.1",
        "events.jsonl",
    ]
    assert all(f.stat().st_size <= 2000 for f in files)
    read = [e.to_line() for e in read_events(path)]
    assert read == written[len(written) - len(read) :]  # the newest, in order
    assert len(read) < len(written)  # the oldest files were dropped
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_torn_last_line_is_skipped_by_readers_and_cut_by_the_writer(tmp_path: Path) -> None:
    """1. A crash left half a line at the end (no newline): readers skip it.
    2. The next daemon opens the journal: the torn tail is cut, the last whole event's id
       returned (new ids sort after it), and new lines follow whole lines only."""
    path = tmp_path / "events.jsonl"
    first = lines_of(3)
    path.write_text("".join(line + "\n" for line in first) + first[0][:25])
    assert [e.to_line() for e in read_events(path)] == first
    journal = EventJournal(path)
    last_id = journal.open()
    assert last_id == json.loads(first[-1])["id"]
    more = lines_of(2, start=10)
    journal.append_batch(more)
    journal.close()
    assert path.read_text() == "".join(line + "\n" for line in first + more)


def test_a_journal_of_one_torn_line_is_emptied(tmp_path: Path) -> None:
    """A file holding nothing but a torn line opens empty."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id":"evt_')
    journal = EventJournal(path)
    assert journal.open() is None
    journal.close()
    assert path.read_bytes() == b""


def test_a_failed_append_leaves_nothing_behind(tmp_path: Path) -> None:
    """1. The journal's file cannot be written (its descriptor is made read-only): the append
    raises and the file is as before, so a retry cannot leave a duplicate or a torn line."""
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path)
    journal.open()
    journal.append_batch(lines_of(2))
    before = path.read_bytes()
    fd = journal._fd
    assert fd is not None
    readonly = os.open(path, os.O_RDONLY)
    os.dup2(readonly, fd)  # the journal's descriptor now refuses writes (EBADF)
    os.close(readonly)
    try:
        journal.append_batch(lines_of(2, start=5))
    except OSError:
        pass
    else:
        raise AssertionError("the append should have failed")
    assert path.read_bytes() == before
    journal.close()


def test_listeners_get_each_durable_batch(tmp_path: Path) -> None:
    """Listeners are called with the parsed events after the batch is on disk."""
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path)
    seen: list[list[Event]] = []

    def listener(events: list[Event]) -> None:
        assert len(path.read_text().splitlines()) >= len(events)
        seen.append(events)

    journal.listen(listener)
    journal.append_batch(lines_of(4))
    journal.close()
    assert [len(batch) for batch in seen] == [4]
    assert [e.device_id for e in seen[0]] == [0, 1, 2, 3]


# -- following ------------------------------------------------------------------------------------
def test_a_follower_reads_across_rotations_without_gap_or_repeat(tmp_path: Path) -> None:
    """1. A follower starts after a given event id and reads new events as they come.
    2. The journal rotates several times between two reads: every event is read once, in
       order, including those written to a file after the follower reached its end."""
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path, max_bytes=1500, keep=5)
    journal.open()
    start = lines_of(3)
    journal.append_batch(start)
    follower = Follower(path)
    found, after = follower.start_after(json.loads(start[0])["id"])
    assert found and after == 2
    got = [line.decode() for _, line in follower.read(100)]
    assert got == start[1:]
    expected = []
    for n in range(12):
        batch = lines_of(2, start=100 + 2 * n)
        journal.append_batch(batch)
        expected += batch
        if n % 5 == 0:
            got += [line.decode() for _, line in follower.read(3)]
    while True:
        more = follower.read(7)
        if not more:
            break
        got += [line.decode() for _, line in more]
    journal.close()
    follower.close()
    assert got == start[1:] + expected


def test_a_follower_positioned_on_an_unknown_id_starts_at_the_oldest(tmp_path: Path) -> None:
    """An id no file holds any more (rotated away) restarts at the oldest event kept."""
    path = tmp_path / "events.jsonl"
    journal = EventJournal(path)
    lines = lines_of(3)
    journal.append_batch(lines)
    journal.close()
    follower = Follower(path)
    assert follower.start_after("evt_00000000000000000000000000") == (False, 3)
    assert [line.decode() for _, line in follower.read()] == lines
    follower.close()


# -- events from decisions ------------------------------------------------------------------------
def rec(**kw: object) -> DeviceRecord:
    base = DeviceRecord(42, hostname="cpe-42", original_recorded=True, episode="ep_1")
    return DeviceRecord(**{**base.__dict__, **kw})


def kinds(before: DeviceRecord, action: Action, decision: Decision) -> list[str]:
    return [d.kind.value for d in step_events(before, action, decision)]


def test_each_step_decision_maps_to_its_events() -> None:
    """The pure map: first force-down, attempts, still down (also a failed check), recovered,
    gave up, released, adopted, foreign change, device gone, dismissed; and nothing for a
    forced-down-again, an inspection that forces down, a failed non-check step."""
    new = DeviceRecord(42, episode=None)
    down = rec(phase=Phase.DOWN, forced_down_at=1.0)
    forcing = rec(phase=Phase.FORCING_DOWN)
    assert kinds(new, Action.INSPECT, Decision(forcing, Reason.FORCE_DOWN)) == []
    assert kinds(forcing, Action.FORCE_DOWN, Decision(down, Reason.FORCED_DOWN)) == ["forced_down"]
    again = rec(phase=Phase.FORCING_DOWN, forced_down_at=1.0, attempts=1)
    assert kinds(again, Action.FORCE_DOWN, Decision(down, Reason.FORCED_DOWN)) == []
    restoring = rec(phase=Phase.RESTORING, forced_down_at=1.0, attempts=1)
    assert kinds(down, Action.VERIFY, Decision(restoring, Reason.ATTEMPT)) == ["attempt"]
    assert kinds(restoring, Action.CHECK, Decision(again, Reason.STILL_DOWN)) == ["still_down"]
    assert kinds(restoring, Action.CHECK, Decision(again, Reason.POLL_FAILED)) == ["still_down"]
    assert kinds(restoring, Action.CHECK, Decision(again, Reason.STEP_FAILED, "x")) == [
        "still_down"
    ]
    assert kinds(down, Action.VERIFY, Decision(down, Reason.STEP_FAILED, "x")) == []
    assert kinds(restoring, Action.CHECK, Decision(None, Reason.RECOVERED)) == ["recovered"]
    assert kinds(restoring, Action.CHECK, Decision(None, Reason.GAVE_UP)) == ["gave_up"]
    assert kinds(down, Action.RELEASE, Decision(None, Reason.RELEASED)) == ["released"]
    assert kinds(new, Action.INSPECT, Decision(down, Reason.ADOPTED)) == ["adopted"]
    assert kinds(new, Action.INSPECT, Decision(down, Reason.ADOPTED_KNOWN)) == ["adopted"]
    assert kinds(down, Action.VERIFY, Decision(None, Reason.FOREIGN_CHANGE)) == ["foreign_change"]
    assert kinds(down, Action.VERIFY, Decision(None, Reason.DEVICE_GONE)) == ["device_gone"]
    assert kinds(new, Action.INSPECT, Decision(None, Reason.STALE_PORT_UP)) == ["dismissed"]
    assert kinds(new, Action.INSPECT, Decision(None, Reason.NO_TARGET_PORT)) == ["dismissed"]


def test_an_episode_opens_when_a_record_leaves_new_and_is_kept() -> None:
    """with_episode: NEW records get none; the first record out of NEW gets one; it stays."""
    ids = iter(["ep_A", "ep_B"])
    assert with_episode(DeviceRecord(1), lambda: next(ids)) == DeviceRecord(1)
    opened = with_episode(DeviceRecord(1, phase=Phase.FORCING_DOWN), lambda: next(ids))
    assert opened is not None and opened.episode == "ep_A"
    assert with_episode(opened, lambda: next(ids)) is opened
    assert with_episode(None, lambda: next(ids)) is None


# -- the store's group commit ---------------------------------------------------------------------
def test_events_are_durable_with_the_change_they_describe(tmp_path: Path) -> None:
    """1. A change with events: when its version is durable, the state (its journal) and the
       event journal both hold it.
    2. Events with no state change (storm guard, health) are journaled without a state line.
    3. A callable gives the events of exactly the change stored, under the store's lock."""
    journal = EventJournal(tmp_path / "events.jsonl")
    writes: list[int] = []
    store = StateStore(
        tmp_path / "state.json",
        Snapshot(devices={}),
        on_batch=journal.append_batch,
        on_write=lambda _took, size: writes.append(size) if size else None,
    )
    store.start()
    emitter = Emitter(lambda: 1_700_000_000.0)
    new = DeviceRecord(5, hostname="cpe-5")
    _, version = store.update(5, lambda _cur: new, [emitter.line(EventType.TRACKED, new)])
    store.wait_durable(version, 5)
    assert 5 in read_state(tmp_path / "state.json", 1_700_000_000.0).devices
    assert [e.type for e in read_events(journal.path)] == ["tracked"]
    state_writes = len(writes)
    store.wait_durable(store.add_events([emitter.line(EventType.STORM_ENGAGED)]), 5)
    assert len(writes) == state_writes
    seen: list[tuple[DeviceRecord | None, DeviceRecord | None]] = []

    def lines(cur: DeviceRecord | None, after: DeviceRecord | None) -> list[str]:
        seen.append((cur, after))
        return [emitter.line(EventType.OPERATOR, after, detail="x")]

    _, version = store.update(5, lambda cur: None, lines)
    store.wait_durable(version, 5)
    store.close()
    journal.close()
    assert seen == [(new, None)]
    assert [e.type for e in read_events(journal.path)] == ["tracked", "storm_engaged", "operator"]


# -- the daemon -----------------------------------------------------------------------------------
def journal_of(d: object) -> list[Event]:
    cfg = d.cfg  # type: ignore[attr-defined]
    return list(read_events(Path(cfg.events_path())))


def test_a_whole_episode_is_journaled(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. An alert: by the time the 202 arrives, `tracked` is in the journal.
    2. The device is forced down (forced_down: the original, an episode id), an attempt finds
       the port down (attempt 1, still_down), the port comes up and the next attempt recovers.
    3. Every event of the episode carries its id; recovered says how long it was down; the
       journal's default place is next to the state file."""
    sim.add_device(42, "cpe-42", overwrite_ip="198.51.100.42", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.5")
    state = Path(d.cfg.state_file)
    assert d.cfg.events_path() == str(state.with_name(f"{state.stem}.events.jsonl"))
    assert d.post(alert_body(42)).status_code == 202
    assert [e.type for e in journal_of(d)][:1] == ["tracked"]
    wait_for(lambda: overwrite(sim, 42) == UNSUP, what="forced down")
    wait_for(lambda: "still_down" in [e.type for e in journal_of(d)], what="an attempt")
    sim.set_link(42, "port2", "up")
    wait_for(lambda: journal_of(d)[-1].type == "recovered", what="recovery")
    events = journal_of(d)
    types = [e.type for e in events]
    assert types[:4] == ["tracked", "forced_down", "attempt", "still_down"]
    assert types[-2:] == ["attempt", "recovered"]
    episode = events[1].episode
    assert episode is not None and episode.startswith("ep_")
    assert {e.episode for e in events[1:]} == {episode}
    assert events[0].episode is None and events[0].hostname == "cpe-42"
    forced = events[1]
    assert forced.original_overwrite_ip == "198.51.100.42" and forced.original_known
    recovered = events[-1]
    assert recovered.attempt == types.count("attempt")
    assert recovered.down_seconds is not None and recovered.down_seconds > 0
    assert [e.id for e in events] == sorted(e.id for e in events)
    wait_for(
        lambda: (
            'alert_handler_events_total{type="recovered"} 1.0' in d.daemon.metrics.render().decode()
        ),
        what="the event counted",
    )


def test_operator_actions_are_journaled_with_the_client(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. pause, resume, track and release through the API: each is journaled with the client.
    2. The released device's end is journaled as `released`."""
    import requests

    from tests.conftest import AUTH

    sim.add_device(9, "cpe-9", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="30")
    for path in ("/pause", "/resume", "/devices/9/track"):
        assert requests.post(d.url + path, headers=AUTH, timeout=5).status_code < 300
    wait_for(lambda: overwrite(sim, 9) == UNSUP, what="forced down")
    assert requests.post(d.url + "/devices/9/release", headers=AUTH, timeout=5).status_code == 200
    wait_for(lambda: journal_of(d)[-1].type == "released", what="released")
    events = journal_of(d)
    types = [e.type for e in events]
    assert types[:5] == ["paused", "resumed", "operator", "tracked", "forced_down"]
    assert types[-2:] == ["operator", "released"]
    assert {e.client for e in events if e.type in ("paused", "resumed", "operator")} == {
        "127.0.0.1"
    }
    assert [e.detail for e in events if e.type == "operator"] == ["track", "release"]
