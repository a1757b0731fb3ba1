"""One event journal per state file (issue 18, item 5): two daemons with different STATE_FILEs in
one folder write their own journals and never read each other's last originals; an earlier
version's `events.jsonl` is renamed at start when it can only be this daemon's, and left alone
(with a warning) when another daemon's state lock is in the folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from alert_handler.config.table import parse
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.events.journal import EventJournal, EventMaker, EventType
from alert_handler.events.place import journal_path
from alert_handler.events.reader import read_events
from alert_handler.sim.simulator import Simulator
from tests.conftest import UNSUP, StartDaemon, alert_body, base_env, overwrite, wait_for


def test_two_daemons_in_one_folder_keep_their_own_journals(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Daemons A (a.json) and B (b.json) in one folder each force down a device: A's journal
    holds only A's device, B's only B's, and B, restarted, knows no original of A's device."""
    sim.add_device(11, "cpe-11", overwrite_ip="198.51.100.11", ports={"port2": "down"})
    sim.add_device(22, "cpe-22", overwrite_ip="198.51.100.22", ports={"port2": "down"})
    a = start_daemon(STATE_FILE=str(tmp_path / "a.json"), RECOVERY_INTERVAL_SEC="60")
    b = start_daemon(STATE_FILE=str(tmp_path / "b.json"), RECOVERY_INTERVAL_SEC="60")
    assert a.cfg.events_path() == str(tmp_path / "a.events.jsonl")
    assert b.cfg.events_path() == str(tmp_path / "b.events.jsonl")
    assert a.post(alert_body(11)).status_code == 202
    assert b.post(alert_body(22)).status_code == 202
    wait_for(lambda: overwrite(sim, 11) == UNSUP and overwrite(sim, 22) == UNSUP, what="down")

    def devices(path: str) -> set[int | None]:
        return {e.device_id for e in read_events(Path(path))}

    wait_for(lambda: 11 in devices(a.cfg.events_path()), what="A's journal")
    wait_for(lambda: 22 in devices(b.cfg.events_path()), what="B's journal")
    assert devices(a.cfg.events_path()) == {11}
    assert devices(b.cfg.events_path()) == {22}
    assert not (tmp_path / "events.jsonl").exists()
    # B restarts and reads its journal's last originals: none of A's device.
    assert b.stop() == 0
    b = start_daemon(STATE_FILE=str(tmp_path / "b.json"), RECOVERY_INTERVAL_SEC="60")
    assert b.daemon.events is not None
    assert b.daemon.events.originals.get(11) is None
    assert b.daemon.events.originals.get(22) == ("198.51.100.22",)


def _old_journal(folder: Path) -> list[str]:
    """An earlier version's `events.jsonl` (rotated once, with a webhook position) holding the
    original of device 42."""
    maker = EventMaker(lambda: 1_700_000_000.0)
    rec = DeviceRecord(
        42,
        phase=Phase.DOWN,
        hostname="cpe-42",
        original_recorded=True,
        original_overwrite_ip="198.51.100.42",
        episode="ep_OLD",
    )
    lines = [maker.make(EventType.FORCED_DOWN, rec).to_line() for _ in range(2)]
    journal = EventJournal(folder / "events.jsonl")
    journal.open()
    journal.append_batch(lines)
    journal.close()
    (folder / "events.jsonl.1").write_text(lines[0] + "\n")
    (folder / "events.jsonl.webhook-position").write_text("ev_x\n")
    return lines


def test_an_earlier_events_jsonl_is_read_then_renamed_at_start(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Before the upgraded daemon starts, the commands read the old `events.jsonl`.
    2. At start it is renamed, with its rotated file and webhook position, to
       `device_state.events.jsonl*`, and the log says so; the daemon knows device 42's
       original from it."""
    lines = _old_journal(tmp_path)
    cfg = parse(base_env(sim, tmp_path))
    assert journal_path(cfg) == tmp_path / "events.jsonl"
    d = start_daemon()
    new = tmp_path / "device_state.events.jsonl"
    assert d.cfg.events_path() == str(new)
    assert new.read_text().splitlines() == lines
    assert (tmp_path / "device_state.events.jsonl.1").read_text() == lines[0] + "\n"
    assert (tmp_path / "device_state.events.jsonl.webhook-position").read_text() == "ev_x\n"
    assert sorted(p.name for p in tmp_path.glob("events.jsonl*")) == []
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    old = tmp_path / "events.jsonl"
    assert (
        f"step=events renamed the event journal {old} to {new} (named after STATE_FILE since "
        "this version)"
    ) in said
    assert d.daemon.events is not None
    assert d.daemon.events.originals.get(42) == ("198.51.100.42",)
    assert journal_path(d.cfg) == new


def test_an_earlier_events_jsonl_is_left_when_another_daemon_shares_the_folder(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another daemon's state lock (other.json.lock) is in the folder: the old journal may be
    its, so it is left untouched, this daemon writes its own, and the log says why."""
    lines = _old_journal(tmp_path)
    (tmp_path / "other.json.lock").write_text("")
    d = start_daemon()
    assert (tmp_path / "events.jsonl").read_text().splitlines() == lines
    assert journal_path(d.cfg) == tmp_path / "device_state.events.jsonl"
    assert d.daemon.events is not None and d.daemon.events.originals.get(42) is None
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        x.startswith(f"step=events {tmp_path / 'events.jsonl'} is left as it is: other daemons'")
        and "other.json.lock" in x
        for x in said
    ), said
