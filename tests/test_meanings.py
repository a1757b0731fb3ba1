"""Issue 18: the one table of what each Reason means, and episodes that always close."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from alert_handler.core import verdict as controls
from alert_handler.core.alerts import Alert
from alert_handler.core.event_types import EPISODE_ENDS, EventType
from alert_handler.core.facts import DeviceInfo, PortInfo
from alert_handler.core.intake import on_alert
from alert_handler.core.machine import Action, Decision, LeaveAlone, Reason, after_inspect
from alert_handler.core.outcomes import MEANINGS, meaning
from alert_handler.core.records import DeviceRecord
from alert_handler.core.seen import to_unmute
from alert_handler.events.decisions import intake_events, step_events
from alert_handler.events.journal import EventMaker
from alert_handler.sim.simulator import Simulator
from tests.conftest import StartDaemon, alert_body, overwrite, wait_for
from tests.test_steps import NOW, RULES, UNSUP

NEW = DeviceRecord(device_id=42, hostname="cpe-42", next_attempt_at=NOW)


def test_every_reason_has_a_meaning_and_every_ending_closes() -> None:
    assert set(MEANINGS) == set(Reason)
    for reason, meant in MEANINGS.items():
        assert meant.ended is None or meant.ended in EPISODE_ENDS, reason
        assert meant.kept is None or meant.kept not in EPISODE_ENDS, reason
    assert meaning(Reason.STEP_FAILED).log_level(forget=False) == logging.DEBUG
    assert meaning(Reason.SUPPRESSED_DISABLED).log_level(forget=False) == logging.WARNING
    assert meaning(Reason.SUPPRESSED_DISABLED).log_level(forget=True) == logging.INFO


def _inspect(leave_alone: LeaveAlone | None, port: str = "down") -> Decision:
    info = DeviceInfo(42, "cpe-42", "198.51.100.42", None, True)
    return after_inspect(
        NEW, info, [PortInfo(2, "port2", port)], NOW, RULES, leave_alone=leave_alone
    )


@pytest.mark.parametrize(
    "leave_alone",
    [
        LeaveAlone(Reason.SUPPRESSED_MAINTENANCE),
        LeaveAlone(Reason.SUPPRESSED_DISABLED),
        LeaveAlone(Reason.SUPPRESSED_IGNORED),
        LeaveAlone(Reason.EXCLUDED, "excluded: EXCLUDE 42"),
    ],
)
def test_a_device_left_alone_at_inspect_closes_its_episode(leave_alone: LeaveAlone) -> None:
    """Bug 3: forgotten at inspect for LibreNMS's suppression (or EXCLUDE): `dismissed`, with
    the original it read."""
    decision = _inspect(leave_alone)
    assert decision.forget
    drafts = step_events(NEW, Action.INSPECT, decision)
    assert [d.kind for d in drafts] == [EventType.DISMISSED]
    event = EventMaker(lambda: NOW).make(drafts[0].kind, drafts[0].record)
    assert event.original_known and event.original_overwrite_ip == "198.51.100.42"


def test_a_stale_alert_records_the_original_it_read() -> None:
    """Bug 7: dismissed because the port was up, the original read is known."""
    decision = _inspect(None, port="up")
    assert decision.reason is Reason.STALE_PORT_UP
    drafts = step_events(NEW, Action.INSPECT, decision)
    event = EventMaker(lambda: NOW).make(drafts[0].kind, drafts[0].record)
    assert event.type == "dismissed" and event.original_known
    assert event.original_overwrite_ip == "198.51.100.42"


def test_a_held_device_whose_port_came_back_closes_its_episode() -> None:
    held = DeviceRecord(device_id=42, held=True)
    recovery = Alert(device_id=42, state=0, host="cpe-42", ip=None, rule="Port2 down")
    decision = on_alert(held, recovery, NOW, RULES)
    assert decision.reason is Reason.HELD_RECOVERED
    assert [d.kind for d in intake_events(held, decision)] == [EventType.DISMISSED]
    tracked = on_alert(None, Alert(42, 1, "cpe-42", UNSUP, "Port2 down"), NOW, RULES)
    assert [d.kind for d in intake_events(None, tracked)] == [EventType.TRACKED]


def test_discard_and_let_go_close_through_the_release() -> None:
    """A discarded or excluded device is released: the release's `released` closes it."""
    for decision in (controls.discard(NEW, NOW), controls.let_go(NEW, NOW, "excluded: x")):
        assert not decision.forget and step_events(NEW, Action.INSPECT, decision) == []
        assert decision.record is not None and decision.record.release_requested


def test_acks_are_taken_back_unless_it_recovered_or_is_gone() -> None:
    acked = DeviceRecord(device_id=42, acked_ids=(7,))
    assert to_unmute(acked, Decision(None, Reason.GAVE_UP)) == (7,)
    assert to_unmute(acked, Decision(None, Reason.SUPPRESSED_DISABLED)) == (7,)
    assert to_unmute(acked, Decision(None, Reason.RECOVERED)) == ()
    assert to_unmute(acked, Decision(None, Reason.DEVICE_GONE)) == ()
    assert to_unmute(acked, Decision(acked, Reason.GAVE_UP)) == ()


def test_every_tracked_device_closes_exactly_once_in_the_journal(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The daemon in-process: a stale alert (port up), a device under maintenance in LibreNMS
    (bug 3: it used to get `tracked` and nothing else), one without the port, and one that is
    forced down and recovers: each gets one `tracked` and exactly one closing event."""
    sim.add_device(1001, "cpe-1001", ports={"port2": "up"})
    sim.add_device(1002, "cpe-1002", ports={"port2": "down"})
    sim.set_maintenance(1002)
    sim.add_device(1003, "cpe-1003", ports={"eth0": "down"})
    sim.add_device(1004, "cpe-1004", overwrite_ip="198.51.100.4", ports={"port2": "down"})
    d = start_daemon()
    for device_id in (1001, 1002, 1003, 1004):
        assert d.post(alert_body(device_id)).status_code == 202
    wait_for(lambda: overwrite(sim, 1004) == UNSUP, what="1004 forced down")
    sim.set_link(1004, "port2", "up")
    wait_for(lambda: not d.daemon.store.records(), what="all let go")
    assert d.stop() == 0
    journal = tmp_path / "device_state.events.jsonl"  # named after its STATE_FILE
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    ends = {t.value for t in EPISODE_ENDS}
    for device_id, closing in (
        (1001, "dismissed"),
        (1002, "dismissed"),
        (1003, "dismissed"),
        (1004, "recovered"),
    ):
        mine = [e["type"] for e in events if e["device_id"] == device_id]
        assert mine.count("tracked") == 1, (device_id, mine)
        assert [t for t in mine if t in ends] == [closing], (device_id, mine)
