"""Issue 18: one verdict ("may the daemon touch this device?") on every path into a device.

The core's tests run the step runner, intake and reconciliation's rules over in-memory ports;
the daemon's tests run it in-process against the simulator; one runs it as a subprocess."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from alert_handler.core import intake
from alert_handler.core import verdict as controls
from alert_handler.core.alerts import Alert
from alert_handler.core.facts import DeviceInfo, OpenAlert
from alert_handler.core.machine import Action, LeaveAlone, Reason, before_force_down
from alert_handler.core.reconciling import plan_pass
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.steps import Ports, run_step
from alert_handler.core.verdict import (
    NOT_YET,
    ConfirmGate,
    GateState,
    Selector,
    Silence,
    Verdict,
    gate_pass,
    verdict,
)
from alert_handler.sim.simulator import Simulator
from tests.conftest import (
    AUTH,
    UNSUP,
    DaemonProcess,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    overwrite,
    wait_for,
)
from tests.model_world import MemoryLibreNMS
from tests.test_steps import NOW, RULES, FakeClock, FakePoller, one_device, record

EXCLUDED_42 = Verdict(controls.EXCLUDED, "EXCLUDE 42")


class Steer:
    """The controls' verdict as the step runner asks it: one answer for every device."""

    def __init__(self, answer: Verdict | None) -> None:
        self.answer = answer
        self.asked: list[int] = []

    def verdict(self, device_id: int, hostname: str | None) -> Verdict | None:
        self.asked.append(device_id)
        return self.answer


def ports(api: MemoryLibreNMS, steer: Verdict | None) -> Ports:
    return Ports(api=api, poller=FakePoller(), clock=FakeClock(), steer=Steer(steer))


# -- the step runner asks the verdict at inspect, each attempt and each force-down ---------------
def test_inspect_of_an_excluded_device_changes_nothing_and_forgets_it() -> None:
    api = one_device(overwrite="192.0.2.9", port="down")
    new = DeviceRecord(device_id=42, next_attempt_at=NOW)
    report = run_step(new, Action.INSPECT, ports(api, EXCLUDED_42), RULES)
    assert report.decision.forget and report.decision.reason is Reason.EXCLUDED
    assert "EXCLUDE 42" in report.decision.detail
    assert "patch" not in api.calls
    final = report.decision.final  # the original was read: the ending event knows it
    assert final is not None and final.original_recorded
    assert final.original_overwrite_ip == "192.0.2.9"


def test_inspect_of_an_excluded_device_on_unsupervised_ip_restores_it() -> None:
    api = one_device(overwrite=UNSUP, port="down")
    new = DeviceRecord(device_id=42, next_attempt_at=NOW, found_unsupervised=True)
    report = run_step(new, Action.INSPECT, ports(api, EXCLUDED_42), RULES)
    rec = report.decision.record
    assert rec is not None and rec.phase is Phase.RELEASING
    assert report.decision.reason is Reason.EXCLUDED


def test_a_force_down_asks_first_and_an_excluded_device_is_restored_instead() -> None:
    api = one_device(overwrite="192.0.2.9")
    rec = record(phase=Phase.FORCING_DOWN, attempts=0, forced_down_at=None)
    report = run_step(rec, Action.FORCE_DOWN, ports(api, EXCLUDED_42), RULES, fresh=True)
    assert "patch" not in api.calls and not report.forced_down
    assert report.decision.record is not None
    assert report.decision.record.phase is Phase.RELEASING
    # Forced down again after a check: the same.
    report = run_step(
        record(phase=Phase.FORCING_DOWN), Action.FORCE_DOWN, ports(api, EXCLUDED_42), RULES
    )
    assert "patch" not in api.calls and report.decision.reason is Reason.EXCLUDED


def test_an_attempt_of_a_device_excluded_since_restores_it() -> None:
    api = one_device(overwrite=UNSUP)
    report = run_step(record(phase=Phase.DOWN), Action.VERIFY, ports(api, EXCLUDED_42), RULES)
    rec = report.decision.record
    assert rec is not None and rec.phase is Phase.RELEASING
    assert report.decision.reason is Reason.EXCLUDED


def test_groups_not_read_yet_hold_back_only_a_first_force_down() -> None:
    wait = LeaveAlone(Reason.NOT_YET, controls.GROUPS_UNREAD)
    first = record(phase=Phase.FORCING_DOWN, attempts=0, forced_down_at=None)
    later = before_force_down(first, NOW, RULES, wait)
    assert later is not None and later.reason is Reason.NOT_YET
    assert later.record is not None and later.record.next_attempt_at > NOW
    assert before_force_down(record(phase=Phase.FORCING_DOWN), NOW, RULES, wait) is None
    api = one_device(overwrite="192.0.2.9", port="down")
    report = run_step(
        DeviceRecord(device_id=42, next_attempt_at=NOW),
        Action.INSPECT,
        ports(api, Verdict(NOT_YET, controls.GROUPS_UNREAD)),
        RULES,
    )
    assert report.decision.reason is Reason.NOT_YET and not report.decision.forget


# -- intake: alerts and track -------------------------------------------------------------------
def test_track_of_an_excluded_device_changes_nothing() -> None:
    decision = intake.track(None, 42, NOW, EXCLUDED_42)
    assert decision.record is None and decision.reason is Reason.EXCLUDED
    assert decision.detail == "excluded: EXCLUDE 42" and not decision.new
    tracked = DeviceRecord(device_id=42)
    assert intake.track(tracked, 42, NOW, EXCLUDED_42).record is tracked
    assert intake.track(None, 42, NOW, Verdict(NOT_YET, "x")).new  # a "not yet" tracks
    seen = intake.track(None, 43, NOW, found_unsupervised=True).record
    assert seen is not None and seen.found_unsupervised  # the gate never holds it


def test_an_alert_for_a_tracked_device_excluded_since_lets_it_go() -> None:
    alert = Alert(device_id=42, state=1, host="cpe-42", ip=None, rule="Port2 down")
    assert intake.on_alert(None, alert, NOW, RULES, EXCLUDED_42).reason is Reason.EXCLUDED
    decision = intake.on_alert(record(phase=Phase.DOWN), alert, NOW, RULES, EXCLUDED_42)
    assert decision.reason is Reason.LET_GO
    assert decision.record is not None and decision.record.release_requested


def test_an_alert_whose_ip_is_unsupervised_ip_is_never_held() -> None:
    alert = Alert(device_id=42, state=1, host="cpe-42", ip=UNSUP, rule="Port2 down")
    rec = intake.on_alert(None, alert, NOW, RULES).record
    assert rec is not None and rec.found_unsupervised


def test_exclusion_groups_never_read_fail_closed() -> None:
    vip = (Selector(group="VIP"), Selector(device_id=7))
    found = verdict(5, "cpe-5", frozenset(), vip, (), NOW, groups_known=False)
    assert found is not None and found.waits and "not read yet" in str(found)
    found = verdict(7, "cpe-7", frozenset(), vip, (), NOW, groups_known=False)
    assert found is not None and found.kind == controls.EXCLUDED  # ids still answer "no"
    assert verdict(5, "cpe-5", frozenset(), vip, (), NOW) is None


# -- the confirmation gate ----------------------------------------------------------------------
def test_the_gate_never_holds_a_device_found_on_unsupervised_ip() -> None:
    records = {
        d: DeviceRecord(device_id=d, found_unsupervised=d <= 3, next_attempt_at=NOW)
        for d in range(1, 6)
    }
    new = [(NOW, d) for d in records]
    result = gate_pass(GateState(), 1, 300.0, new, records, NOW)
    assert sorted(result.passed) == [1, 2, 3, 4] and result.held == (5,)
    assert result.over and result.state.holding
    again = gate_pass(result.state, 1, 300.0, [(NOW, 6)], {6: DeviceRecord(6)}, NOW + 1)
    assert again.held == (6,) and not again.over  # holding: every new one waits for a person
    gate = ConfirmGate(above=1, window=300.0)
    assert gate.allow(2, NOW) == 1 and gate.holding


def test_discard_releases_and_hold_skips_a_confirmed_device() -> None:
    held = DeviceRecord(device_id=9, held=True)
    decision = controls.discard(held, NOW)
    assert decision.record is not None and decision.record.release_requested
    assert not decision.record.held and decision.reason is Reason.DISCARDED
    confirmed = replace(held, held=False, confirmed=True)
    assert controls.hold(confirmed).record is confirmed


# -- reconciliation's rules ---------------------------------------------------------------------
def _device(device_id: int, ip: str | None, **more: object) -> DeviceInfo:
    return replace(DeviceInfo(device_id, f"cpe-{device_id}", ip, None, True), **more)  # type: ignore[arg-type]


def test_reconciliation_adopts_restores_excluded_and_skips_with_reasons() -> None:
    devices = [
        _device(1, UNSUP),
        _device(2, UNSUP),
        _device(3, None),
        _device(4, None, disabled=True),
        _device(5, None),
        _device(6, None),
    ]
    alerts = [
        OpenAlert(11, 3, "Port2 down", 1, None, raised_at=NOW - 10),
        OpenAlert(12, 4, "Port2 down", 1, None, raised_at=NOW - 10),
        OpenAlert(13, 5, "Port2 down", 1, None, raised_at=NOW - 10),
        OpenAlert(14, 6, "Port2 down", 1, None, raised_at=NOW - 10),
        OpenAlert(15, 6, "Other rule", 1, None, raised_at=NOW - 10),
    ]
    rules = replace(RULES, trigger_rules=("Port2 down",))

    def steer(device_id: int, hostname: str | None) -> Verdict | None:
        return EXCLUDED_42 if device_id in (2, 5) else None

    plan = plan_pass(
        devices, alerts, set(), {6: NOW - 5}, rules, steer, maintenance=lambda _d: False
    )
    taken = {t.device_id: t for t in plan.take}
    assert sorted(taken) == [1, 2, 3]
    assert taken[1].adopt and not taken[1].release
    assert taken[2].adopt and taken[2].release  # excluded, on UNSUPERVISED_IP: restored
    assert taken[3].alert_id == 11 and not taken[3].adopt
    why = {s.device_id: s.why for s in plan.skipped}
    assert why == {4: Reason.SUPPRESSED_DISABLED.value, 5: "excluded: EXCLUDE 42"}


# -- the daemon ---------------------------------------------------------------------------------
def test_an_excluded_device_is_never_forced_down_by_track_adoption_or_a_step(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. EXCLUDE=501: `track 501` is refused 409 with the reason; nothing is tracked.
    2. 502 sits on UNSUPERVISED_IP (the old script): it is excluded too, so reconciliation
       restores its original (null: unknown) and forgets it.
    3. 503 is silenced while its force-down is due: never PATCHed to UNSUPERVISED_IP."""
    sim.add_device(501, "cpe-501", overwrite_ip="198.51.100.1", ports={"port2": "down"})
    sim.add_device(502, "cpe-502", overwrite_ip=UNSUP, ports={"port2": "down"})
    d = start_daemon(EXCLUDE="501,502", RECONCILE_INTERVAL_SEC="0.2")
    import requests

    reply = requests.post(d.url + "/devices/501/track", headers=AUTH, timeout=10)
    assert reply.status_code == 409, reply.text
    assert reply.json()["reason"] == "excluded: EXCLUDE 501"
    assert "nothing changed" in reply.json()["error"]
    wait_for(lambda: overwrite(sim, 502) is None, what="502 restored")
    wait_for(lambda: d.daemon.store.get(502) is None, what="502 forgotten")
    assert d.daemon.store.get(501) is None and sim.patches(501) == []
    assert [data for _, data in sim.patches(502)] == [None]


def test_upgrade_many_devices_on_unsupervised_ip_are_adopted_and_recovered(
    sim: Simulator, tmp_path: Path
) -> None:
    """The upgrade path, the daemon as a subprocess: 12 devices left on UNSUPERVISED_IP by the
    old script, CONFIRM_ABOVE=1: all are adopted, none is held, all recover with no operator
    action (their ports are up: restored to null, the original being unknown)."""
    ids = range(601, 613)
    for device_id in ids:
        sim.add_device(device_id, f"cpe-{device_id}", overwrite_ip=UNSUP, ports={"port2": "up"})
    port = free_port()
    env = base_env(
        sim,
        tmp_path,
        LISTEN_PORT=str(port),
        CONFIRM_ABOVE="1",
        RECONCILE_INTERVAL_SEC="1",
        RECOVERY_INTERVAL_SEC="1",
    )
    daemon = DaemonProcess(tmp_path, env, port)
    try:
        wait_for(
            lambda: all(overwrite(sim, i) is None for i in ids), what="all restored", timeout=60
        )
        wait_for(lambda: d_status(daemon) == [], what="all forgotten", timeout=60)
        assert daemon.terminate() == 0
        log = (tmp_path / "alert_handler.log").read_text()
        assert log.count("step=reconcile found on UNSUPERVISED_IP") == 12
        assert "step=confirm" not in log  # nothing was held
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    assert all([data for _, data in sim.patches(i)] == [None] for i in ids)


def test_cli_track_of_an_excluded_device_says_why_and_changes_nothing(
    sim: Simulator, tmp_path: Path
) -> None:
    """The daemon as a subprocess with EXCLUDE=501: `alert-handler track 501` exits 1 saying
    why; LibreNMS sees no PATCH and the daemon tracks nothing."""
    import subprocess

    sim.add_device(501, "cpe-501", overwrite_ip="198.51.100.1", ports={"port2": "down"})
    port = free_port()
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), EXCLUDE="501")
    daemon = DaemonProcess(tmp_path, env, port)
    try:
        done = subprocess.run(
            [*installed_cli(), "track", "501"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1, done
        assert "excluded: EXCLUDE 501" in done.stderr and "nothing changed" in done.stderr
        assert d_status(daemon) == []
        assert sim.patches(501) == []
        reply = daemon.post(alert_body(501))
        assert reply.status_code == 200 and reply.json()["status"] == "ignored"
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    assert sim.patches(501) == []


def d_status(daemon: DaemonProcess) -> list[object]:
    import requests

    reply = requests.get(daemon.url + "/devices", headers=AUTH, timeout=10)
    devices: list[object] = reply.json()["devices"]
    return devices


_ = Silence  # silences share the verdict with EXCLUDE (tests/test_steering.py)


def test_a_discarded_device_stays_discarded_for_the_alert_it_came_from(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """Bug 7: three open alerts never reached the daemon; CONFIRM_ABOVE=1: reconciliation picks
    them up, one is forced down, two are held. `discard`: they are forgotten untouched, and the
    next passes, and a restarted daemon's, do not take them on again on the same open alerts."""
    ids = (801, 802, 803)
    for device_id in ids:
        sim.add_device(
            device_id, f"cpe-{device_id}", overwrite_ip="198.51.100.8", ports={"port2": "down"}
        )
        sim.add_alert(device_id)
    d = start_daemon(CONFIRM_ABOVE="1", RECONCILE_INTERVAL_SEC="0.2")

    def held() -> list[int]:
        return sorted(i for i, rec in d.daemon.store.records().items() if rec.held)

    wait_for(lambda: len(held()) == 2, what="two held")
    discarded = held()
    import requests

    reply = requests.post(d.url + "/discard", headers=AUTH, timeout=10)
    assert reply.json() == {"status": "discarded", "devices": discarded}
    wait_for(lambda: all(d.daemon.store.get(i) is None for i in discarded), what="forgotten")
    passes = d.daemon.reconciler.passes
    wait_for(lambda: d.daemon.reconciler.passes >= passes + 3, what="three more passes")
    assert all(d.daemon.store.get(i) is None and sim.patches(i) == [] for i in discarded)
    assert d.stop() == 0
    d = start_daemon(CONFIRM_ABOVE="1", RECONCILE_INTERVAL_SEC="0.2")
    wait_for(lambda: d.daemon.reconciler.passes >= 3, what="three passes after the restart")
    assert all(d.daemon.store.get(i) is None and sim.patches(i) == [] for i in discarded)


# -- EXCLUDE=group:NAME fails closed (bug 8) -----------------------------------------------------
def test_group_members_are_kept_on_disk_and_unknown_groups_fail_closed(tmp_path: Path) -> None:
    from alert_handler.steering.controls import Controls, groups_path

    path = groups_path(tmp_path / "state.json")
    exclusions = (Selector(group="VIP"),)

    def fresh() -> Controls:
        return Controls(exclusions, tmp_path / "silences.json", lambda: NOW, groups_file=path)

    first = fresh()
    found = first.verdict(5, "cpe-5")
    assert found is not None and found.waits and not first.groups_known
    first.set_groups({"VIP": {5}})
    assert first.verdict(6, "cpe-6") is None
    again = fresh()  # a restart while LibreNMS cannot be asked: the last members read count
    assert again.groups_known and again.verdict(6, "cpe-6") is None
    found = again.verdict(5, "cpe-5")
    assert found is not None and found.kind == controls.EXCLUDED
    path.write_text("not json")
    assert not fresh().groups_known  # unreadable: fails closed until the next read


def test_no_first_force_down_before_the_exclusion_groups_are_read(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. EXCLUDE=group:VIP and LibreNMS answers 500 for the group: 901 (not a member) and 902
       (a member) alert; both are tracked, neither is forced down ("not read yet").
    2. The group is read: 901 is forced down, 902 is let go untouched."""
    caplog.set_level(logging.INFO, logger="alert_handler.recovery.scheduler")
    sim.set_group("VIP", {902})
    for device_id in (901, 902):
        sim.add_device(
            device_id, f"cpe-{device_id}", overwrite_ip="198.51.100.9", ports={"port2": "down"}
        )
    sim.inject("GET", r"^/devicegroups/", status=500, times=10_000)
    d = start_daemon(EXCLUDE="group:VIP", EXCLUDE_REFRESH_SEC="0.2")
    for device_id in (901, 902):
        assert d.post(alert_body(device_id)).status_code == 202
    wait_for(
        lambda: (
            "device=901 step=inspect exclusion groups not read yet" in caplog.text
            and "device=902 step=inspect exclusion groups not read yet" in caplog.text
        ),
        what="both inspected and kept waiting",
    )
    assert sim.patches(901) == [] and sim.patches(902) == []
    sim.clear_faults()
    wait_for(lambda: overwrite(sim, 901) == UNSUP, what="901 forced down once the group is read")
    wait_for(lambda: d.daemon.store.get(902) is None, what="902 let go")
    assert sim.patches(902) == []


# -- one lock around the gate's state (bug 4) ----------------------------------------------------
class _PausingStore:
    """The store's calls Admission makes, over a dict; a hold (an update from the scheduler's
    thread) can be paused half-way so that a request thread's confirm runs in between."""

    def __init__(self, records: dict[int, DeviceRecord]) -> None:
        import threading

        self._records = dict(records)
        self.in_hold = threading.Event()
        self.go_on = threading.Event()
        self.confirm_looked = threading.Event()
        self.hold_thread: object = None

    def records(self) -> dict[int, DeviceRecord]:
        import threading

        if threading.current_thread() is not self.hold_thread:
            self.confirm_looked.set()
        return dict(self._records)

    def update(self, device_id: int, change: object, events: object = ()) -> tuple[object, int]:
        import threading

        if threading.current_thread() is self.hold_thread:
            self.in_hold.set()
            self.go_on.wait(10)
        new = change(self._records.get(device_id))  # type: ignore[operator]
        if callable(events):
            events(None, new)
        if new is None:
            self._records.pop(device_id, None)
        else:
            self._records[device_id] = new
        return new, 1

    def add_events(self, lines: object) -> int:
        return 1


def test_a_confirm_during_a_scheduling_pass_is_never_lost() -> None:
    """CONFIRM_ABOVE=1, two new devices: the scheduler's pass lets one through and is about to
    hold the other when a person confirms. The confirm waits for the pass (one lock), then
    confirms the held device: nothing stays held, the gate does not hold."""
    import threading

    from alert_handler.events.emit import Emitter
    from alert_handler.ops.metrics import Metrics
    from alert_handler.recovery.admission import Admission

    records = {d: DeviceRecord(device_id=d, next_attempt_at=NOW) for d in (1, 2)}
    store = _PausingStore(records)
    gate = ConfirmGate(above=1, window=300.0)
    admission = Admission(store, Metrics(), gate, Emitter(lambda: NOW))  # type: ignore[arg-type]
    passing = threading.Thread(
        target=admission.admit, args=(records, [(NOW, 1), (NOW, 2)], set(), NOW, 0)
    )
    store.hold_thread = passing
    passing.start()
    assert store.in_hold.wait(10)
    confirming = threading.Thread(
        target=admission.decide_held,
        args=(lambda rec: controls.confirm(rec, NOW),),
    )
    confirming.start()
    store.confirm_looked.wait(0.5)  # without the lock, the confirm looks now (and finds none)
    store.go_on.set()
    passing.join(10)
    confirming.join(10)
    assert not any(rec.held for rec in store.records().values())
    assert store.records()[2].confirmed and not gate.holding


def test_holding_since_before_does_not_claim_the_limit_was_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bug 2: restarted with CONFIRM_ABOVE raised to 50 and devices still held, the log does
    not say "more than CONFIRM_ABOVE=50 new devices": it says the gate holds until a person
    decides, with the current limit."""
    from alert_handler.events.emit import Emitter
    from alert_handler.ops.metrics import Metrics
    from alert_handler.recovery.admission import Admission

    caplog.set_level(logging.WARNING, logger="alert_handler.recovery.scheduler")
    records = {d: DeviceRecord(device_id=d, held=d < 3, next_attempt_at=NOW) for d in (1, 2, 3)}
    store = _PausingStore(records)
    gate = ConfirmGate(above=50, window=300.0)
    gate.holding = True  # as daemon.build sets it when held devices are on disk
    admission = Admission(store, Metrics(), gate, Emitter(lambda: NOW))  # type: ignore[arg-type]
    admission.admit(records, [(NOW, 3)], set(), NOW, 2)
    assert "more than CONFIRM_ABOVE" not in caplog.text
    text = "holds every new device until a person decides (CONFIRM_ABOVE=50): 3 devices held"
    assert text in caplog.text
