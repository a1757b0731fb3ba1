"""The core: the per-device state machine (pure), then a property test that drives the real step
runner (`core.steps.run_device`) against in-memory models of LibreNMS, the poll and the store,
with failures and crashes at every step."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from alert_handler.core.alerts import Alert
from alert_handler.core.facts import (
    DeviceInfo,
    PortInfo,
)
from alert_handler.core.intake import on_alert, release_untracked, request_release, track
from alert_handler.core.machine import (
    Action,
    Decision,
    Reason,
    Rules,
    after_check,
    after_failure,
    after_force_down,
    after_inspect,
    after_release,
    before_attempt,
    find_port,
    forced_count,
    is_due,
    plan,
)
from alert_handler.core.outcomes import Outcome
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.seen import SUPPRESSED, suppression
from alert_handler.core.steps import Ports, StepReport, run_device
from alert_handler.events.emit import Emitter
from alert_handler.librenms.client import LibreNMS
from alert_handler.ops.health import Health
from alert_handler.ops.metrics import Metrics
from alert_handler.poll import Poller, PollResult
from alert_handler.recovery.scheduler import Scheduler
from alert_handler.steering.controls import Controls
from alert_handler.store.codec import Snapshot
from alert_handler.store.files import load_state
from alert_handler.store.state import StateStore
from tests.model_world import AlertRow, Crash, Device, DictHost, MemoryLibreNMS

UNSUP = "127.0.0.50"
NOW = 1_700_000_000.0
RULES = Rules(unsupervised_ip=UNSUP, target_ifname="port2", interval=60.0)
DEVICE_DOWN = "Device Down! Due to no ICMP response."


def info(overwrite_ip: str | None, device_id: int = 42, hostname: str = "cpe-42") -> DeviceInfo:
    """A device row as the API client returns it."""
    return DeviceInfo(device_id, hostname, overwrite_ip, overwrite_ip or "192.0.2.42", True)


def port2(status: str = "down", port_id: int = 2) -> PortInfo:
    """The target port."""
    return PortInfo(port_id, "port2", status)


def tracked(**fields: Any) -> DeviceRecord:
    """A record of device 42 that has been around for a while."""
    base: dict[str, Any] = {
        "device_id": 42,
        "phase": Phase.DOWN,
        "hostname": "cpe-42",
        "original_recorded": True,
        "original_overwrite_ip": "192.0.2.9",
        "port_id": 2,
        "attempts": 2,
        "first_seen": NOW - 1000,
        "next_attempt_at": NOW + 30,
        "attempt_started_at": NOW - 30,
        "forced_down_at": NOW - 900,
        "alerts": 5,
        "last_alert": NOW - 100,
        "last_rule": "Port2 down",
        "last_ip": "192.0.2.9",
    }
    base.update(fields)
    return DeviceRecord(**base)


def changed_fields(before: DeviceRecord, after: DeviceRecord) -> set[str]:
    """Names of the fields that differ."""
    return {
        f.name
        for f in dataclasses.fields(DeviceRecord)
        if getattr(before, f.name) != getattr(after, f.name)
    }


def outcome(decision: Decision) -> tuple[DeviceRecord | None, Reason, bool]:
    """A decision without its free-text detail."""
    return decision.record, decision.reason, decision.new


def kept(decision: Decision) -> DeviceRecord:
    """The record a decision keeps (fails the test if it forgets the device)."""
    assert decision.record is not None, decision
    return decision.record


# -- on_alert ------------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [1, 3, 4, 5])
def test_alert_for_a_new_device(state: int) -> None:
    alert = Alert(42, state=state, host="cpe-42", ip="192.0.2.1", rule="Port2 down")
    decision = on_alert(None, alert, NOW, RULES)
    assert outcome(decision) == (
        DeviceRecord(
            device_id=42,
            phase=Phase.NEW,
            hostname="cpe-42",
            first_seen=NOW,
            next_attempt_at=NOW,
            last_alert=NOW,
            last_rule="Port2 down",
            last_ip="192.0.2.1",
        ),
        Reason.NEW_DEVICE,
        True,
    )
    assert plan(kept(decision), NOW) is Action.INSPECT


@pytest.mark.parametrize("phase", list(Phase))
def test_repeat_alert_changes_only_the_counters(phase: Phase) -> None:
    before = tracked(phase=phase)
    decision = on_alert(before, Alert(42, state=1), NOW, RULES)
    assert decision.reason is Reason.REPEAT and not decision.new
    after = kept(decision)
    assert changed_fields(before, after) == {"alerts", "last_alert"}
    assert (after.alerts, after.last_alert) == (6, NOW)


def test_self_inflicted_device_down_alert_is_a_repeat() -> None:
    # After a forced-down device is polled, LibreNMS raises "Device Down" with ip=UNSUPERVISED_IP.
    for original in (None, "192.0.2.9"):
        before = tracked(original_overwrite_ip=original)
        alert = Alert(42, state=1, host="cpe-42", ip=UNSUP, rule=DEVICE_DOWN)
        decision = on_alert(before, alert, NOW, RULES)
        assert decision.reason is Reason.REPEAT
        after = kept(decision)
        assert changed_fields(before, after) == {"alerts", "last_alert", "last_rule", "last_ip"}
        assert after.original_overwrite_ip == original and after.original_recorded
        assert after.last_ip == UNSUP


def test_acknowledged_notifications_are_ignored() -> None:
    before = tracked()
    assert on_alert(before, Alert(42, state=2), NOW, RULES).record is before
    assert on_alert(before, Alert(42, state=2), NOW, RULES).reason is Reason.IGNORED_ACK
    assert outcome(on_alert(None, Alert(42, state=2), NOW, RULES)) == (
        None,
        Reason.IGNORED_ACK,
        False,
    )


def test_recovery_of_an_untracked_device_is_ignored() -> None:
    decision = on_alert(None, Alert(42, state=0), NOW, RULES)
    assert outcome(decision) == (None, Reason.IGNORED_UNTRACKED_RECOVERY, False)


def test_recovery_notice_makes_a_down_device_due_at_once() -> None:
    before = tracked(next_attempt_at=NOW + 50, attempt_started_at=NOW - 10)
    assert not is_due(before, NOW)
    assert plan(before, NOW) is Action.WAIT
    decision = on_alert(before, Alert(42, state=0), NOW, RULES)
    assert decision.reason is Reason.RECHECK
    after = kept(decision)
    assert changed_fields(before, after) == {"alerts", "last_alert", "recheck_at"}
    assert after.recheck_at == NOW
    assert after.next_attempt_at == NOW + 50
    assert is_due(after, NOW)
    assert plan(after, NOW) is Action.VERIFY


def test_only_a_trigger_rules_recovery_notice_makes_it_due() -> None:
    """With TRIGGER_RULES set, the self-inflicted "Device Down" clearing after each check is a
    repeat, not a reason to check again at once."""
    rules = replace(RULES, trigger_rules=("Port2 down",))
    before = tracked(next_attempt_at=NOW + 50, attempt_started_at=NOW - 10)
    other = on_alert(before, Alert(42, state=0, rule=DEVICE_DOWN), NOW, rules)
    assert other.reason is Reason.REPEAT and not is_due(kept(other), NOW)
    own = on_alert(before, Alert(42, state=0, rule="Port2 down"), NOW, rules)
    assert own.reason is Reason.RECHECK and is_due(kept(own), NOW)


def test_first_forced_down_uses_forced_down_at_for_recheck() -> None:
    before = tracked(attempt_started_at=None, forced_down_at=NOW - 5, next_attempt_at=NOW + 55)
    assert is_due(kept(on_alert(before, Alert(42, state=0), NOW, RULES)), NOW)


def test_a_recovery_notice_older_than_the_last_attempt_does_not_make_it_due() -> None:
    rec = tracked(recheck_at=NOW - 20, attempt_started_at=NOW - 10, next_attempt_at=NOW + 50)
    assert not is_due(rec, NOW)
    # Only DOWN devices are rechecked early: the others are already scheduled.
    for phase in (Phase.NEW, Phase.FORCING_DOWN, Phase.RESTORING, Phase.RELEASING):
        assert not is_due(replace(rec, phase=phase, recheck_at=NOW), NOW)


def test_trigger_rules_filter_new_devices_only() -> None:
    rules = replace(RULES, trigger_rules=("Port2 down",))
    for rule_name in ("Other rule", None, DEVICE_DOWN):
        decision = on_alert(None, Alert(42, rule=rule_name), NOW, rules)
        assert outcome(decision) == (None, Reason.IGNORED_RULE, False)
    assert on_alert(None, Alert(42, rule="Port2 down"), NOW, rules).new
    # A tracked device's alerts count whatever the rule.
    before = tracked()
    decision = on_alert(before, Alert(42, rule=DEVICE_DOWN), NOW, rules)
    assert decision.reason is Reason.REPEAT
    assert kept(decision).alerts == before.alerts + 1


def test_track_by_hand() -> None:
    decision = track(None, 42, NOW)
    assert decision.new and decision.reason is Reason.TRACK_BY_HAND
    assert kept(decision) == DeviceRecord(42, first_seen=NOW, next_attempt_at=NOW, last_alert=NOW)
    before = tracked()
    assert outcome(track(before, 42, NOW)) == (before, Reason.REPEAT, False)


def test_request_release() -> None:
    before = tracked(next_attempt_at=NOW + 500)
    after = kept(request_release(before, NOW))
    assert changed_fields(before, after) == {"release_requested", "next_attempt_at"}
    assert plan(after, NOW) is Action.RELEASE


# -- after_inspect ------------------------------------------------------------------------------
def new_record(**fields: Any) -> DeviceRecord:
    """What an alert creates for device 42."""
    return replace(kept(on_alert(None, Alert(42), NOW - 1, RULES)), **fields)


@pytest.mark.parametrize("original", [None, "192.0.2.9", "2001:db8::9"])
def test_inspect_records_the_original(original: str | None) -> None:
    decision = after_inspect(new_record(), info(original), [port2("down")], NOW, RULES)
    assert decision.reason is Reason.FORCE_DOWN
    after = kept(decision)
    assert after.phase is Phase.FORCING_DOWN
    assert after.original_recorded and after.original_overwrite_ip == original
    assert not after.adopted
    assert (after.port_id, after.next_attempt_at, after.hostname) == (2, NOW, "cpe-42")
    assert plan(after, NOW) is Action.FORCE_DOWN


@pytest.mark.parametrize("first", [None, "192.0.2.9"])
def test_a_recorded_original_is_never_replaced(first: str | None) -> None:
    once = kept(after_inspect(new_record(), info(first), [port2()], NOW, RULES))
    again = kept(
        after_inspect(replace(once, phase=Phase.NEW), info("10.9.9.9"), [port2()], NOW, RULES)
    )
    assert again.original_overwrite_ip == first
    assert again.original_recorded and not again.adopted
    # Nor by adoption: a device seen on UNSUPERVISED_IP keeps the original it had.
    later = after_inspect(replace(once, phase=Phase.NEW), info(UNSUP), [port2()], NOW, RULES)
    assert later.reason is Reason.ALREADY_DOWN
    assert kept(later).original_overwrite_ip == first and not kept(later).adopted


def test_inspect_picks_only_the_exact_port_name() -> None:
    decoys = [
        PortInfo(20, "port20", "up"),
        PortInfo(21, "Port2-backup", "up"),
        PortInfo(22, "port2 ", "up"),
        PortInfo(23, "PORT2", "up"),
        PortInfo(24, "xport2", "up"),
    ]
    decision = after_inspect(new_record(), info(None), [*decoys, port2("down", 2)], NOW, RULES)
    assert decision.reason is Reason.FORCE_DOWN
    assert kept(decision).port_id == 2
    flipped = [replace(p, oper_status="down") for p in decoys]
    decision = after_inspect(new_record(), info(None), [*flipped, port2("up", 2)], NOW, RULES)
    assert decision.forget and decision.reason is Reason.STALE_PORT_UP


def test_inspect_honours_target_ifname() -> None:
    rules = replace(RULES, target_ifname="ether2")
    ports = [port2("down", 2), PortInfo(9, "ether2", "lowerLayerDown")]
    assert kept(after_inspect(new_record(), info(None), ports, NOW, rules)).port_id == 9


def test_the_port_is_found_again_by_name_not_by_id() -> None:
    """LibreNMS marks a vanished port deleted=1 (its status stale) and gives the returning
    interface a new port_id: the current row named exactly TARGET_IFNAME is the port; the
    remembered port_id only breaks a tie between two rows of that name."""
    stale = PortInfo(2, "port2", "up", deleted=True)
    fresh = PortInfo(77, "port2", "down")
    assert find_port([stale, fresh], "port2", hint=2) == fresh
    assert find_port([stale], "port2", hint=2) is None  # deleted counts as missing
    twin = PortInfo(78, "port2", "up")
    assert find_port([fresh, twin], "port2", hint=78) == twin
    assert find_port([fresh, twin], "port2", hint=None) == fresh
    assert find_port([PortInfo(3, "port20", "up")], "port2", hint=3) is None


def test_a_check_keeps_the_port_id_it_found_the_port_under() -> None:
    before = tracked(phase=Phase.RESTORING, port_id=2, attempts=1)
    decision = after_check(before, 0, "down", NOW, RULES, port_id=77)
    assert kept(decision).port_id == 77
    assert "found again as port_id 77, was 2" in decision.detail
    recovered = after_check(before, 0, "up", NOW, RULES, port_id=77)
    assert recovered.reason is Reason.RECOVERED and "port_id 77" in recovered.detail


@pytest.mark.parametrize("held", sorted(SUPPRESSED))
def test_a_device_librenms_leaves_alone_is_never_forced_down(held: Reason) -> None:
    """Maintenance, disabled, ignored: let go at inspect with nothing changed; one found on
    UNSUPERVISED_IP all the same is restored (to null: its original is unknown)."""
    decision = after_inspect(new_record(), info(None), [port2()], NOW, RULES, leave_alone=held)
    assert outcome(decision) == (None, held, False)
    decision = after_inspect(new_record(), info(UNSUP), [port2()], NOW, RULES, leave_alone=held)
    after = kept(decision)
    assert decision.reason is held and after.phase is Phase.RELEASING
    assert after.original_recorded and after.original_overwrite_ip is None
    assert plan(after, NOW) is Action.RELEASE


@pytest.mark.parametrize("held", sorted(SUPPRESSED))
def test_a_forced_down_device_librenms_now_leaves_alone_is_restored(held: Reason) -> None:
    before = tracked()
    decision = before_attempt(before, info(UNSUP), NOW, RULES, leave_alone=held)
    after = kept(decision)
    assert decision.reason is held and after.phase is Phase.RELEASING
    assert after.attempts == before.attempts  # no attempt: nothing is polled
    assert plan(after, NOW) is Action.RELEASE
    assert after_release(after).reason is Reason.RELEASED


def test_which_suppression() -> None:
    plain = info(None)
    assert suppression(plain, False) is None
    assert suppression(plain, True) is Reason.SUPPRESSED_MAINTENANCE
    assert suppression(replace(plain, disabled=True), False) is Reason.SUPPRESSED_DISABLED
    assert suppression(replace(plain, ignore=True), False) is Reason.SUPPRESSED_IGNORED


def test_an_attempt_reads_the_poller_group_each_time() -> None:
    """Devices move between poller groups: the one read at verify is the one polled from."""
    after = kept(
        before_attempt(tracked(poller_group=1), replace(info(UNSUP), poller_group=3), NOW, RULES)
    )
    assert after.poller_group == 3
    inspected = after_inspect(
        new_record(), replace(info(None), poller_group=2), [port2()], NOW, RULES
    )
    assert kept(inspected).poller_group == 2


def test_no_target_port_forgets() -> None:
    ports = [PortInfo(20, "port20", "down"), PortInfo(21, "Port2-backup", "down")]
    for listing in (ports, []):
        decision = after_inspect(new_record(), info("192.0.2.9"), listing, NOW, RULES)
        assert decision.forget and decision.reason is Reason.NO_TARGET_PORT


@pytest.mark.parametrize("status", ["down", "lowerLayerDown", "dormant", "unknown", None])
def test_port_not_up_forces_down(status: str | None) -> None:
    ports = [PortInfo(2, "port2", status)]
    assert after_inspect(new_record(), info(None), ports, NOW, RULES).reason is Reason.FORCE_DOWN


def test_port_up_is_a_stale_alert() -> None:
    decision = after_inspect(new_record(), info("192.0.2.9"), [port2("up")], NOW, RULES)
    assert decision.forget and decision.reason is Reason.STALE_PORT_UP


@pytest.mark.parametrize("status", ["down", "up"])
def test_untracked_device_on_unsupervised_ip_is_adopted(status: str) -> None:
    # Even with its port up: the device must be restored, so it is never let go as it is.
    before = new_record(hostname=None)
    decision = after_inspect(before, info(UNSUP), [port2(status)], NOW, RULES)
    assert decision.reason is Reason.ADOPTED
    after = kept(decision)
    assert after.phase is Phase.DOWN
    assert after.original_recorded and after.original_overwrite_ip is None and after.adopted
    assert (after.port_id, after.forced_down_at) == (2, NOW)
    assert after.next_attempt_at == NOW + RULES.interval
    assert after.hostname == "cpe-42"


def test_on_unsupervised_ip_without_the_port_is_released_not_forgotten() -> None:
    for ports in ([], [PortInfo(20, "port20", "down")]):
        decision = after_inspect(new_record(), info(UNSUP), ports, NOW, RULES)
        assert decision.reason is Reason.NO_TARGET_PORT
        after = kept(decision)
        assert after.phase is Phase.RELEASING
        assert after.original_recorded and after.original_overwrite_ip is None and after.adopted
        assert plan(after, NOW) is Action.RELEASE


# -- force down, verify, check -------------------------------------------------------------------
def test_after_force_down_first_time() -> None:
    before = tracked(phase=Phase.FORCING_DOWN, attempt_started_at=None, forced_down_at=None)
    after = kept(after_force_down(before, NOW, RULES))
    assert after.phase is Phase.DOWN
    assert (after.forced_down_at, after.next_attempt_at) == (NOW, NOW + 60)
    assert changed_fields(before, after) == {
        "phase",
        "forced_down_at",
        "last_forced_at",  # the latest force-down, for "UNSUPERVISED_IP seems to answer"
        "next_attempt_at",
    }
    assert after.last_forced_at == NOW


def test_after_force_down_schedules_from_the_attempt_start() -> None:
    before = tracked(phase=Phase.FORCING_DOWN, attempt_started_at=NOW - 10)
    decision = after_force_down(before, NOW, RULES)
    assert decision.reason is Reason.FORCED_DOWN
    after = kept(decision)
    assert (after.phase, after.next_attempt_at) == (Phase.DOWN, NOW + 50)
    assert after.forced_down_at == NOW - 900  # the first time is kept


@pytest.mark.parametrize(
    ("original", "foreign"),
    [("192.0.2.9", "203.0.113.7"), ("192.0.2.9", None), (None, "192.0.2.9")],
)
def test_before_attempt_leaves_a_foreign_change_alone(
    original: str | None, foreign: str | None
) -> None:
    decision = before_attempt(tracked(original_overwrite_ip=original), info(foreign), NOW, RULES)
    assert decision.forget and decision.reason is Reason.FOREIGN_CHANGE


@pytest.mark.parametrize("current", [UNSUP, "192.0.2.9"])
def test_before_attempt_moves_to_restoring(current: str) -> None:
    before = tracked(hostname=None)
    decision = before_attempt(before, info(current), NOW, RULES)
    assert decision.reason is Reason.ATTEMPT
    after = kept(decision)
    assert (after.phase, after.attempts, after.attempt_started_at) == (Phase.RESTORING, 3, NOW)
    assert after.hostname == "cpe-42"
    assert plan(after, NOW) is Action.CHECK


def test_before_attempt_with_a_null_original() -> None:
    before = tracked(original_overwrite_ip=None, adopted=True)
    for current in (UNSUP, None):
        assert before_attempt(before, info(current), NOW, RULES).reason is Reason.ATTEMPT


def test_check_port_up_recovers() -> None:
    decision = after_check(tracked(phase=Phase.RESTORING), 0, "up", NOW, RULES)
    assert decision.forget and decision.reason is Reason.RECOVERED


@pytest.mark.parametrize(
    ("exit_status", "status", "reason"),
    [
        (0, "down", Reason.STILL_DOWN),
        (0, None, Reason.STILL_DOWN),
        (0, "lowerLayerDown", Reason.STILL_DOWN),
        (6, None, Reason.POLL_DEVICE_DOWN),
        (6, "up", Reason.POLL_DEVICE_DOWN),
        (1, None, Reason.POLL_FAILED),
        (1, "up", Reason.POLL_FAILED),
        (255, None, Reason.POLL_FAILED),
    ],
)
def test_check_not_up_forces_down_again(
    exit_status: int, status: str | None, reason: Reason
) -> None:
    before = tracked(phase=Phase.RESTORING, attempts=1000)  # MAX_ATTEMPTS=0: never give up
    decision = after_check(before, exit_status, status, NOW, RULES)
    assert decision.reason is reason
    after = kept(decision)
    assert (after.phase, after.next_attempt_at) == (Phase.FORCING_DOWN, NOW)
    assert after.last_error
    assert changed_fields(before, after) == {"phase", "next_attempt_at", "last_error"}
    assert plan(after, NOW) is Action.FORCE_DOWN


def test_check_gives_up_after_max_attempts() -> None:
    rules = replace(RULES, max_attempts=3)
    assert after_check(tracked(phase=Phase.RESTORING, attempts=2), 0, "down", NOW, rules).record
    for exit_status in (0, 6, 1):
        decision = after_check(
            tracked(phase=Phase.RESTORING, attempts=3), exit_status, "down", NOW, rules
        )
        assert decision.forget and decision.reason is Reason.GAVE_UP
    assert after_check(tracked(attempts=3), 0, "up", NOW, rules).reason is Reason.RECOVERED


# -- failures, release ---------------------------------------------------------------------------
def test_failed_check_forces_down_at_once() -> None:
    before = tracked(phase=Phase.RESTORING)
    decision = after_failure(before, Action.CHECK, "poll: timed out", NOW, RULES)
    assert decision.reason is Reason.STEP_FAILED
    after = kept(decision)
    assert (after.phase, after.next_attempt_at, after.last_error) == (
        Phase.FORCING_DOWN,
        NOW,
        "poll: timed out",
    )


@pytest.mark.parametrize(
    ("phase", "action"),
    [
        (Phase.NEW, Action.INSPECT),
        (Phase.FORCING_DOWN, Action.FORCE_DOWN),
        (Phase.DOWN, Action.VERIFY),
        (Phase.RELEASING, Action.RELEASE),
        (Phase.DOWN, Action.RELEASE),
    ],
)
def test_other_failures_keep_the_phase_and_retry_later(phase: Phase, action: Action) -> None:
    before = tracked(phase=phase)
    after = kept(after_failure(before, action, "HTTP 500", NOW, RULES))
    assert changed_fields(before, after) == {"next_attempt_at", "last_error"}
    assert (after.next_attempt_at, after.last_error) == (NOW + 60, "HTTP 500")


@pytest.mark.parametrize("action", [a for a in Action if a is not Action.WAIT])
def test_a_gone_device_is_forgotten(action: Action) -> None:
    decision = after_failure(tracked(), action, "device 42 not found", NOW, RULES, gone=True)
    assert decision.forget and decision.reason is Reason.DEVICE_GONE


def test_after_release_forgets() -> None:
    decision = after_release(tracked())
    assert decision.forget and decision.reason is Reason.RELEASED


@pytest.mark.parametrize(
    ("phase", "action"),
    [
        (Phase.NEW, Action.INSPECT),
        (Phase.FORCING_DOWN, Action.FORCE_DOWN),
        (Phase.DOWN, Action.VERIFY),
        (Phase.RESTORING, Action.CHECK),
        (Phase.RELEASING, Action.RELEASE),
    ],
)
def test_plan(phase: Phase, action: Action) -> None:
    rec = tracked(phase=phase, next_attempt_at=NOW)
    assert plan(rec, NOW) is action
    assert plan(rec, NOW + 1) is action
    assert plan(rec, NOW - 1) is Action.WAIT
    assert plan(replace(rec, release_requested=True), NOW - 1) is Action.RELEASE


def test_forced_count() -> None:
    records = {n: tracked(device_id=n, phase=phase) for n, phase in enumerate(Phase)}
    assert forced_count(records) == 3  # forcing_down, down, restoring
    assert forced_count({}) == 0


# -- the job's premise, checked on the real Scheduler -------------------------------------------
def scripted(overwrite: dict[int, str | None]) -> MemoryLibreNMS:
    """LibreNMS with these devices (their overwrite_ip), each with port2 down; `patches`
    lists every PATCH that reached it."""
    return MemoryLibreNMS(
        {d: Device(d, overwrite_ip=value, hostname=f"cpe-{d}") for d, value in overwrite.items()}
    )


class NoPoller:
    """A poller the tests below never reach."""

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        raise AssertionError("not expected to poll")


def make_worker(store: StateStore, api: MemoryLibreNMS) -> Scheduler:
    """A Scheduler that is never started: the test calls its per-device job directly (no
    exclusion, no silence, no confirmation gate)."""
    clock = lambda: NOW  # noqa: E731
    folder = store.path.parent
    controls = Controls((), folder / "silences.json", clock, groups_file=folder / "groups.json")
    return Scheduler(
        store,
        cast(LibreNMS, api),
        cast(Poller, NoPoller()),
        RULES,
        gate=controls.gate,
        metrics=Metrics(),
        health=Health(clock),
        events=Emitter(clock),
        steer=controls,
        clock=clock,
    )


def test_worker_changes_nothing_while_its_decision_is_not_durable(tmp_path: Path) -> None:
    """1. The state cannot be written (its journal cannot be opened).
    2. The worker inspects a NEW device and decides FORCING_DOWN (original 192.0.2.9); the
       decision cannot be persisted.
    3. The scheduler runs the device's job again (it is due at once): no PATCH may be made
       while that decision is not on disk, or a crash now would lose the original.
    4. The disk comes back: the next job forces the device down, the original on disk."""
    path = tmp_path / "state.json"
    journal = tmp_path / "state.json.journal"
    journal.mkdir()  # a directory in the journal's place: opening it fails, even for root
    written = threading.Event()
    store = StateStore(
        path,
        Snapshot(devices={42: new_record()}),
        on_write=lambda seconds, size: written.set(),
        retry_delay=0.01,
    )
    store.start()
    try:
        api = scripted({42: "192.0.2.9"})
        worker = make_worker(store, api)
        assert worker._run_device(42) is Outcome.FAILED
        assert worker._run_device(42) is Outcome.FAILED
        assert api.patches == []

        journal.rmdir()
        assert written.wait(60.0)
        worker._run_device(42)
        assert api.patches == [(42, UNSUP)]
        store.flush(5.0)
        on_disk = load_state(path, NOW).snapshot.devices[42]
        assert on_disk.phase is Phase.DOWN
        assert on_disk.original_overwrite_ip == "192.0.2.9"
    finally:
        store.close(5.0)


@pytest.mark.parametrize(("current", "patches"), [(UNSUP, [(42, None)]), ("192.0.2.9", [])])
def test_release_of_a_new_device_looks_before_forgetting(
    tmp_path: Path, current: str, patches: list[tuple[int, str | None]]
) -> None:
    """A NEW record (here migrated from the old script's file) may already be on
    UNSUPERVISED_IP: its release restores null rather than leaving it there untracked; one that
    is not is forgotten untouched."""
    path = tmp_path / "state.json"
    path.write_text('{"42": {"hostname": "cpe-42", "ip": "127.0.0.50", "port_id": 2}}')
    store = StateStore(path, load_state(path, NOW).snapshot)
    store.start()
    try:
        _, version = store.update(
            42, lambda cur: None if cur is None else request_release(cur, NOW).record
        )
        store.wait_durable(version, 5.0)
        api = scripted({42: current})
        make_worker(store, api)._run_device(42)
        assert api.patches == patches
        assert store.get(42) is None
    finally:
        store.close(5.0)


# -- property: random histories against a model of LibreNMS ------------------------------------
DEVICES = (1, 2, 3)
# Where a device's overwrite_ip is before the daemon ever sees it: UNSUP stands for a device the
# old script (or a daemon whose state was lost) left forced down, whose true original is unknown.
START_VALUES = (None, "192.0.2.1", "192.0.2.2", "2001:db8::3", UNSUP)
FAULTS = ("ok",) * 12 + ("fail", "fail_applied", "crash", "crash_applied")
POLLS = ("ok",) * 6 + ("exit6", "exit1", "error", "crash")
WEBHOOK_DURING_STEP = ("none",) * 9 + ("alert", "alert", "recovery", "release")


class ModelClock:
    """Every call to LibreNMS or SSH takes a second of both clocks."""

    def __init__(self, now: Callable[[], float], ticks: Callable[[], int]) -> None:
        self._now = now
        self._ticks = ticks

    def time(self) -> float:
        return self._now()

    def monotonic(self) -> float:
        return float(self._ticks())


class RecoveryMachine(RuleBasedStateMachine):
    """Random histories of alerts, releases, pauses, port changes, failures and crashes, run by
    the real step runner (`run_device`). The store is a dict: the scheduler and the webhook wait
    until each change is durable before going on, so what a crash keeps is exactly what was
    last put here; `durable()` and `persist()` fail now and then, as a full disk makes them."""

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.cfg = RULES
        self.store: dict[int, DeviceRecord] = {}
        self.data: Any = None
        self.faults_on = True
        self.paused_flag = False
        self.api = MemoryLibreNMS(fault=self._fault, on_patch=self._patch_sent)
        self.ports = Ports(
            api=self.api,
            poller=self.api,
            clock=ModelClock(self._clock, lambda: self.api.ticks),
        )
        self.expected: dict[int, str | None] = {}  # what a restore must write
        self.initially_unsup: set[int] = set()
        self.changed: set[int] = set()  # devices whose overwrite_ip we have written
        self.ever_tracked: set[int] = set()
        self.wrong_restores: list[tuple[int, str | None]] = []
        self.host = _Host(self)
        self.store = self.host.records

    # -- plumbing ----------------------------------------------------------------------------
    def _fault(self, call: str) -> str:
        if not self.faults_on or self.data is None:
            return "ok"
        choices = POLLS if call == "poll" else FAULTS
        return cast(str, self.data.draw(st.sampled_from(choices), label=call))

    def _patch_sent(self, device_id: int, value: str | None) -> None:
        # (b): every restore writes exactly the recorded original, which is the true one (or
        # null for a device that was on UNSUPERVISED_IP before the daemon first saw it).
        # Recorded, not asserted here: the step runner takes any exception for a failed step.
        if value != UNSUP and value != self.expected[device_id]:
            self.wrong_restores.append((device_id, value))
        if not self.api.device(device_id).gone:
            self.changed.add(device_id)

    def _put(self, device_id: int, record: DeviceRecord | None) -> None:
        if record is None:
            self.store.pop(device_id, None)
            return
        if device_id not in self.store:
            self.ever_tracked.add(device_id)
        self.store[device_id] = record

    def _clock(self) -> float:
        return self.now + self.api.ticks  # each call to LibreNMS or SSH takes a second

    # -- the JobHost's checks (see _Host) ------------------------------------------------------
    def check_start(self, device_id: int, action: Action) -> None:
        rec = self.store[device_id]
        if action is not Action.INSPECT:
            assert rec.original_recorded or rec.phase is Phase.NEW, rec
        if self.paused_flag and not rec.release_requested:
            # Pause stops new work; what runs is finishing what was started.
            assert action not in (Action.INSPECT, Action.VERIFY), (action, rec)

    def check_persist(self, before: DeviceRecord, report: StepReport) -> None:
        reason = report.decision.reason
        if reason is Reason.RECOVERED:
            # Recovered means the real port2 is up: never a deleted row's stale status.
            assert self.api.device(before.device_id).port2 == "up", (before, report)
        if reason in (Reason.FORCE_DOWN, Reason.ATTEMPT):
            # Nothing new is started on a device LibreNMS itself leaves alone.
            assert self.api.device(before.device_id).suppressed is None, (before, report)
        if report.decision.forget and reason not in (Reason.RECOVERED, Reason.DEVICE_GONE):
            # Let go for any reason but recovery: what we acknowledged is unmuted (best effort:
            # unless the unmute itself failed, and it is reported then).
            if report.unmute_error is None:
                for alert_id in before.acked_ids:
                    assert self.api.alerts[alert_id].state != 2, (before, report)
        self._webhook_meanwhile(before.device_id)

    # -- the world ---------------------------------------------------------------------------
    @initialize(
        start=st.lists(st.sampled_from(START_VALUES), min_size=3, max_size=3),
        ports=st.lists(
            st.sampled_from(["down", "down", "down", "up", None]), min_size=3, max_size=3
        ),
        max_attempts=st.sampled_from([0, 1, 3]),
        trigger=st.booleans(),
        ack=st.booleans(),
    )
    def setup(
        self,
        start: list[str | None],
        ports: list[str | None],
        max_attempts: int,
        trigger: bool,
        ack: bool,
    ) -> None:
        self.cfg = replace(
            RULES,
            max_attempts=max_attempts,
            trigger_rules=("Port2 down",) if trigger else (),
            ack_alerts=ack,
        )
        for device_id, value, port in zip(DEVICES, start, ports, strict=True):
            self.api.devices[device_id] = Device(
                device_id, overwrite_ip=value, hostname=f"cpe-{device_id}", port2=port
            )
            self.api.alerts[device_id * 10] = AlertRow(device_id * 10, device_id, "Port2 down")
            self.expected[device_id] = None if value == UNSUP else value
            if value == UNSUP:
                self.initially_unsup.add(device_id)

    @rule(
        device=st.sampled_from(DEVICES),
        state=st.integers(0, 5),
        rule_name=st.sampled_from(["Port2 down", DEVICE_DOWN, None]),
        ip=st.sampled_from([None, UNSUP, "192.0.2.1"]),
        data=st.data(),
    )
    def alert(
        self, device: int, state: int, rule_name: str | None, ip: str | None, data: Any
    ) -> None:
        self._alert(device, state, rule_name, ip)
        self._work(data)

    @rule(device=st.sampled_from(DEVICES), dice=st.integers(0, 2), data=st.data())
    def release(self, device: int, dice: int, data: Any) -> None:
        if dice == 0:  # less often than the other events
            self._release(device)
        self._work(data)

    @rule(paused=st.booleans(), data=st.data())
    def pause(self, paused: bool, data: Any) -> None:
        """Maintenance mode on or off (`alert-handler pause` / `resume`)."""
        self.paused_flag = paused
        self._work(data)

    @rule(device=st.sampled_from(DEVICES), data=st.data())
    def flip_port(self, device: int, data: Any) -> None:
        dev = self.api.device(device)
        if dev.port2 is not None:
            dev.port2 = "up" if dev.port2 == "down" else "down"
        self._work(data)

    @rule(
        device=st.sampled_from(DEVICES),
        held=st.sampled_from([None, None, "maintenance", "disabled", "ignore"]),
        data=st.data(),
    )
    def suppress(self, device: int, held: str | None, data: Any) -> None:
        """Someone puts the device under maintenance, disables or ignores it, or undoes that."""
        if held is None:
            self.api.device(device).suppressed = None
        else:
            self.api.device(device).suppressed = held
        self._work(data)

    @rule(device=st.sampled_from(DEVICES), data=st.data())
    def recreate_port(self, device: int, data: Any) -> None:
        """port2 vanishes and comes back with a new ifIndex: a new port_id, the old row deleted."""
        if self.api.device(device).port2 is not None:
            self.api.device(device).port_gen += 1
        self._work(data)

    @rule(seconds=st.sampled_from([61.0, 1.0, 30.0, 600.0]), data=st.data())
    def tick(self, seconds: float, data: Any) -> None:
        self.now += seconds
        self._work(data)

    @rule(device=st.sampled_from(DEVICES), dice=st.integers(0, 19), data=st.data())
    def delete_device(self, device: int, dice: int, data: Any) -> None:
        """Someone deletes the device from LibreNMS (rarely)."""
        if dice == 0:
            self.api.device(device).gone = True
        self._work(data)

    def _alert(self, device: int, state: int, rule_name: str | None, ip: str | None) -> None:
        """A webhook notification (App.receive)."""
        current = self.store.get(device)
        alert = Alert(device, state, ip=ip, rule=rule_name)
        decision = on_alert(current, alert, self._clock(), self.cfg)
        if current is not None:
            assert decision.record is not None  # an alert never drops a tracked device
            assert current.original_overwrite_ip == decision.record.original_overwrite_ip
        self._put(device, decision.record)

    def _release(self, device: int) -> None:
        """POST /devices/<id>/release (App.release): an untracked device is recorded too."""
        current = self.store.get(device)
        if current is None:
            self._put(device, release_untracked(device, self._clock()).record)
        else:
            self._put(device, request_release(current, self._clock()).record)

    def _work(self, data: Any) -> None:
        """The recovery thread runs every due device (Scheduler._schedule, then the real
        run_device); it runs after every event, as the daemon's does."""
        self.data = data
        try:
            for device_id in DEVICES:
                run_device(device_id, self.host, self.ports, self.cfg)
        except Crash:
            pass  # the daemon restarts from what was persisted: self.store as it is
        finally:
            self.data = None

    def _webhook_meanwhile(self, device_id: int) -> None:
        """An alert or a release request lands while the worker talks to LibreNMS."""
        if not self.faults_on or self.data is None:
            return
        event = self.data.draw(st.sampled_from(WEBHOOK_DURING_STEP), label="meanwhile")
        if event == "alert":
            self._alert(device_id, 1, DEVICE_DOWN, UNSUP)
        elif event == "recovery":
            self._alert(device_id, 0, DEVICE_DOWN, "192.0.2.200")
        elif event == "release":
            self._release(device_id)

    # -- invariants --------------------------------------------------------------------------
    def _present(self) -> list[int]:
        return [d for d in DEVICES if not self.api.device(d).gone]

    @invariant()
    def never_left_on_unsupervised_ip(self) -> None:
        """(a) No device is on UNSUPERVISED_IP untracked, unless it was there before the daemon
        ever tracked it."""
        for d in self._present():
            if self.api.device(d).overwrite_ip == UNSUP and d not in self.store:
                assert d in self.initially_unsup, d
                assert d not in self.ever_tracked, d

    @invariant()
    def every_restore_writes_the_original(self) -> None:
        """(b) Every restore wrote exactly the true original (null for adopted devices)."""
        assert not self.wrong_restores, self.wrong_restores

    @invariant()
    def originals_are_the_true_ones(self) -> None:
        """(b) A recorded original is the true one (null for adopted devices)."""
        for d, rec in self.store.items():
            if rec.original_recorded:
                assert rec.original_overwrite_ip == self.expected[d], (d, rec)
            if rec.adopted:
                assert d in self.initially_unsup, (d, rec)
            if rec.phase is not Phase.NEW:
                assert rec.original_recorded, rec

    @invariant()
    def forgotten_devices_hold_their_original(self) -> None:
        """(c) A device we wrote to and then forgot holds its original."""
        for d in self._present():
            if d in self.changed and d not in self.store:
                assert self.api.device(d).overwrite_ip == self.expected[d], d

    @invariant()
    def down_means_on_unsupervised_ip(self) -> None:
        for d, rec in self.store.items():
            if (
                rec.phase is Phase.DOWN
                and not rec.release_requested
                and not self.api.device(d).gone
            ):
                assert self.api.device(d).overwrite_ip == UNSUP, (d, rec)

    def teardown(self) -> None:
        """Liveness: once every port is up and LibreNMS behaves, every device is let go and
        every device we touched holds its original."""
        self.faults_on = False
        self.paused_flag = False
        for d in DEVICES:
            if self.api.device(d).port2 is not None:
                self.api.device(d).port2 = "up"
        for _ in range(10):
            self.now += self.cfg.interval + 1
            for d in DEVICES:
                run_device(d, self.host, self.ports, self.cfg)
        assert not self.store, self.store
        self.forgotten_devices_hold_their_original()
        self.never_left_on_unsupervised_ip()


class _Host(DictHost):
    """The machine's store as the step runner sees it: `durable` and `persist` fail now and
    then, as a full disk makes them; every start and decision is checked first."""

    def __init__(self, machine: RecoveryMachine) -> None:
        super().__init__(merge=True)
        self.machine = machine

    def paused(self) -> bool:
        return self.machine.paused_flag

    def durable(self) -> bool:
        return self.machine._fault("durable") not in ("fail", "fail_applied")

    def starting(self, device_id: int, action: Action) -> None:
        self.machine.check_start(device_id, action)
        super().starting(device_id, action)

    def persist(self, before: DeviceRecord, report: StepReport) -> bool:
        self.machine.check_persist(before, report)
        super().persist(before, report)
        return self.machine._fault("persist") not in ("fail", "fail_applied")


def test_recovery_never_loses_an_original() -> None:
    run_state_machine_as_test(
        RecoveryMachine,
        settings=settings(max_examples=200, stateful_step_count=40, deadline=None),
    )
