"""core.steps: the step runner and one job, against in-memory ports (no sockets, no threads)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from alert_handler.core.facts import (
    DeviceNotFound,
    LibreNMSError,
    PollError,
    PollResult,
    PortInfo,
)
from alert_handler.core.machine import Action, Reason, Rules
from alert_handler.core.outcomes import Outcome, attempt_outcome, job_outcome
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.steps import Ports, run_device, run_step
from tests.model_world import AlertRow, Device, DictHost, MemoryLibreNMS

UNSUP = "127.0.0.50"
NOW = 1_700_000_000.0
RULES = Rules(unsupervised_ip=UNSUP, target_ifname="port2", interval=60.0)


class FakeClock:
    """Wall time stands still unless moved; the monotonic clock ticks 0.5 s per reading."""

    def __init__(self) -> None:
        self.now = NOW
        self.ticks = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        self.ticks += 0.5
        return self.ticks


def one_device(overwrite: str | None = UNSUP, port: str = "down") -> MemoryLibreNMS:
    """LibreNMS with device 42 (port2 is port_id 2) and two open alerts: 7 of device 42's
    trigger rule, 8 of another device and rule."""
    api = MemoryLibreNMS(
        {42: Device(42, overwrite_ip=overwrite, hostname="cpe-42", port2=port, port2_id=2)}
    )
    api.alerts = {7: AlertRow(7, 42, "Port2 down"), 8: AlertRow(8, 43, "x")}
    return api


class FakePoller:
    def __init__(self, exit_status: int = 0, error: str | None = None) -> None:
        self.exit_status = exit_status
        self.error = error

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        if self.error is not None:
            raise PollError(self.error)
        return PollResult(device_id, self.exit_status, (), 1.0)


def record(**fields: object) -> DeviceRecord:
    base = DeviceRecord(
        device_id=42,
        phase=Phase.RESTORING,
        original_recorded=True,
        original_overwrite_ip="192.0.2.9",
        port_id=2,
        attempts=1,
        next_attempt_at=NOW,
        attempt_started_at=NOW,
        forced_down_at=NOW - 60,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def ports(api: MemoryLibreNMS, poller: FakePoller | None = None) -> Ports:
    return Ports(api=api, poller=poller or FakePoller(), clock=FakeClock())


@pytest.mark.parametrize(
    ("fail", "step", "error"),
    [
        ("patch", "restore", "restore: HTTP 500"),
        ("discover", "discover", "discover: HTTP 500"),
        ("ports", "check", "check: HTTP 500"),
    ],
)
def test_a_failure_inside_a_check_names_its_own_step(fail: str, step: str, error: str) -> None:
    """Each sub-step of a check (restore, discover, poll, port read) is named in the failure, in
    `last_error`, and the device is forced down again at once."""
    api = one_device()
    api.fail[fail] = LibreNMSError("HTTP 500", status=500)
    report = run_step(record(), Action.CHECK, ports(api), RULES)
    assert report.failed_step == step
    assert report.decision.reason is Reason.STEP_FAILED
    rec = report.decision.record
    assert rec is not None and rec.phase is Phase.FORCING_DOWN and rec.last_error == error


def test_a_poll_timeout_is_a_failed_poll_step() -> None:
    report = run_step(
        record(), Action.CHECK, ports(one_device(), FakePoller(error="timed out")), RULES
    )
    assert report.failed_step == "poll" and report.poll_exit == "error"
    rec = report.decision.record
    assert rec is not None and rec.last_error == "poll: timed out"


def test_a_check_times_each_sub_step_and_reports_what_it_saw() -> None:
    api = one_device(port="up")
    report = run_step(record(), Action.CHECK, ports(api), RULES)
    assert [name for name, _ in report.laps] == ["restore", "discover", "poll", "check"]
    assert all(seconds == 0.5 for _, seconds in report.laps)
    assert report.poll_exit == "0" and report.check is not None
    assert report.check.oper_status == "up"
    assert report.decision.reason is Reason.RECOVERED and api.device(42).overwrite_ip == "192.0.2.9"


def test_a_check_finds_the_port_again_after_the_poll() -> None:
    """The port is read from the device's current ports after the poll, not by the stored
    port_id: the interface came back as a new row (port_id 77); the old row is deleted."""

    class Recreated(MemoryLibreNMS):
        def device_ports(self, device_id: int) -> list[PortInfo]:
            self._io("ports", device_id)
            port2 = self.device(42).port2
            return [PortInfo(2, "port2", "down", deleted=True), PortInfo(77, "port2", port2)]

    api = Recreated(one_device(port="down").devices)
    report = run_step(record(), Action.CHECK, ports(api), RULES)
    assert api.calls == ["patch", "discover", "ports"]
    assert report.check is not None and report.check.port_id == 77
    rec = report.decision.record
    assert rec is not None and rec.port_id == 77 and report.decision.reason is Reason.STILL_DOWN
    api.device(42).port2 = "up"
    assert run_step(record(), Action.CHECK, ports(api), RULES).decision.reason is Reason.RECOVERED


def test_a_resumed_write_reads_the_device_first_and_leaves_a_foreign_change_alone() -> None:
    api = one_device(overwrite="198.51.100.1")
    report = run_step(record(), Action.CHECK, ports(api), RULES, fresh=False)
    assert report.decision.reason is Reason.FOREIGN_CHANGE and report.decision.forget
    assert report.decision.detail == "overwrite_ip is now 198.51.100.1"
    assert api.calls == ["get_device"]


def test_an_unexpected_exception_is_a_failed_step_with_its_traceback() -> None:
    api = one_device()
    api.fail["ports"] = KeyError("ifOperStatus")
    report = run_step(record(), Action.CHECK, ports(api), RULES)
    assert isinstance(report.unexpected, KeyError)
    assert report.error == "unexpected KeyError: 'ifOperStatus'"


def test_a_deleted_device_is_forgotten() -> None:
    api = one_device()
    api.fail["get_device"] = DeviceNotFound("device 42 not found", status=404)
    report = run_step(record(phase=Phase.DOWN), Action.VERIFY, ports(api), RULES)
    assert report.decision.reason is Reason.DEVICE_GONE and report.decision.forget


def test_force_down_acks_the_devices_trigger_alerts_best_effort() -> None:
    api = one_device(overwrite="192.0.2.9")
    rules = replace(RULES, ack_alerts=True, trigger_rules=("Port2 down",))
    rec = record(phase=Phase.FORCING_DOWN)
    report = run_step(rec, Action.FORCE_DOWN, ports(api), rules)
    assert report.acked == (7,) and api.alerts[7].state == 2 and report.forced_down
    assert report.decision.record is not None and report.decision.record.acked
    api = one_device(overwrite="192.0.2.9")
    api.fail["alerts"] = LibreNMSError("HTTP 403", status=403)
    report = run_step(rec, Action.FORCE_DOWN, ports(api), rules)
    assert report.ack_error == "HTTP 403" and report.decision.reason is Reason.FORCED_DOWN
    assert report.decision.record is not None and not report.decision.record.acked


def test_a_late_force_down_stays_down_at_least_half_an_interval() -> None:
    """Bug: after a failed force-down retried later (or a resume, a restart), the next attempt
    was already in the past, so the device was restored milliseconds after being forced down."""
    clock = FakeClock()
    clock.now = NOW + 500  # the attempt began 500 s ago, the interval is 60 s
    rec = record(phase=Phase.FORCING_DOWN)
    report = run_step(
        rec, Action.FORCE_DOWN, Ports(one_device("192.0.2.9"), FakePoller(), clock), RULES
    )
    new = report.decision.record
    assert new is not None and new.next_attempt_at == NOW + 500 + 30
    on_time = run_step(rec, Action.FORCE_DOWN, ports(one_device("192.0.2.9")), RULES)
    assert on_time.decision.record is not None
    assert on_time.decision.record.next_attempt_at == NOW + 60  # no drift when on time


@pytest.mark.parametrize(
    ("current", "calls"),
    [(UNSUP, ["get_device", "patch", "discover"]), ("192.0.2.9", ["get_device"])],
)
def test_release_of_a_new_record_looks_first(current: str, calls: list[str]) -> None:
    api = one_device(overwrite=current)
    rec = DeviceRecord(device_id=42, release_requested=True)
    report = run_step(rec, Action.RELEASE, ports(api), RULES)
    assert api.calls == calls and report.decision.reason is Reason.RELEASED
    if current == UNSUP:
        assert api.device(42).overwrite_ip is None
        assert report.decision.detail.endswith("(it was on UNSUPERVISED_IP with no known original)")
        assert [name for name, _ in report.laps] == ["verify", "restore", "discover"]


@pytest.mark.parametrize(("still_acked", "unmuted"), [([7], (7,)), ([], ())])
def test_letting_go_unmutes_only_what_is_still_acknowledged(
    still_acked: list[int], unmuted: tuple[int, ...]
) -> None:
    """Unmuting sets state 1 whatever the state was: an alert that recovered meanwhile (it is
    no longer acknowledged) must not be reopened."""
    api = one_device(overwrite=UNSUP)
    for alert_id in still_acked:
        api.alerts[alert_id].state = 2
    rec = record(phase=Phase.RELEASING, acked=True, acked_ids=(7,))
    report = run_step(rec, Action.RELEASE, ports(api), RULES)
    assert report.decision.reason is Reason.RELEASED and report.unmuted == unmuted
    assert ("unmute" in api.calls) == bool(unmuted)
    assert [name for name, _ in report.laps][-1] == "unmute"


def test_a_recovery_keeps_the_acks_and_a_failed_unmute_is_reported() -> None:
    api = one_device(port="up")
    api.alerts[7].state = 2
    rec = record(acked=True, acked_ids=(7,))
    report = run_step(rec, Action.CHECK, ports(api), RULES)
    assert report.decision.reason is Reason.RECOVERED and "acked_alerts" not in api.calls
    api = one_device(overwrite="198.51.100.1")
    api.alerts[7].state = 2
    api.fail["unmute"] = LibreNMSError("HTTP 403", status=403)
    report = run_step(record(acked_ids=(7,)), Action.CHECK, ports(api), RULES, fresh=False)
    assert report.decision.reason is Reason.FOREIGN_CHANGE and report.unmute_error == "HTTP 403"


def test_pause_during_a_check_still_forces_the_device_down_again() -> None:
    """Bug: paused while a poll ran, the device was left restored with its port down."""
    api = one_device(overwrite=UNSUP, port="down")
    host = DictHost(record(phase=Phase.DOWN, next_attempt_at=NOW), pause_after=Action.VERIFY)
    outcome = run_device(42, host, ports(api), RULES)
    assert host.ran == [Action.VERIFY, Action.CHECK, Action.FORCE_DOWN]
    assert api.device(42).overwrite_ip == UNSUP and host.records[42].phase is Phase.DOWN
    assert outcome is Outcome.STILL_DOWN


def test_pause_stops_new_work() -> None:
    host = DictHost(DeviceRecord(device_id=42, next_attempt_at=NOW))
    host.is_paused = True
    assert run_device(42, host, ports(one_device()), RULES) is Outcome.IDLE
    assert host.ran == []


def test_nothing_changes_in_librenms_while_the_record_is_not_durable() -> None:
    api = one_device(overwrite="192.0.2.9")
    host = DictHost(DeviceRecord(device_id=42, next_attempt_at=NOW))
    host.durable_ok = False
    assert run_device(42, host, ports(api), RULES) is Outcome.FAILED
    assert host.ran == [Action.INSPECT] and "patch" not in api.calls


def test_one_job_takes_a_new_device_to_down() -> None:
    api = one_device(overwrite=None)
    host = DictHost(DeviceRecord(device_id=42, next_attempt_at=NOW))
    assert run_device(42, host, ports(api), RULES) is Outcome.FORCED_DOWN
    assert host.ran == [Action.INSPECT, Action.FORCE_DOWN] and api.device(42).overwrite_ip == UNSUP
    rec = host.records[42]
    assert rec.phase is Phase.DOWN and rec.original_recorded and rec.original_overwrite_ip is None


def test_one_outcome_map() -> None:
    """Logs, metrics and the cycle summary read one map: a failed poll is poll_failed in all."""
    assert attempt_outcome(Reason.POLL_FAILED, Action.CHECK) is Outcome.POLL_FAILED
    assert job_outcome(Reason.POLL_FAILED, Outcome.IDLE) is Outcome.POLL_FAILED
    assert attempt_outcome(Reason.POLL_DEVICE_DOWN, Action.CHECK) is Outcome.STILL_DOWN
    assert attempt_outcome(Reason.STEP_FAILED, Action.VERIFY) is Outcome.FAILED
    assert attempt_outcome(Reason.STEP_FAILED, Action.INSPECT) is None
    assert job_outcome(Reason.FORCED_DOWN, Outcome.STILL_DOWN) is Outcome.STILL_DOWN


def test_a_check_that_reads_the_port_down_polls_and_reads_once_more_after_the_wait() -> None:
    """An agent may answer from a cache older than the port's change (net-snmp: 3 s): with
    check_repoll set, a port read not up is polled and read again after that wait, and the
    second read decides (tests/test_lab.py shows it against a real agent)."""

    class Stale(MemoryLibreNMS):
        def device_ports(self, device_id: int) -> list[PortInfo]:
            listing = super().device_ports(device_id)
            self.device(device_id).port2 = "up"  # the next read is fresh
            return listing

    waits: list[float] = []
    api = Stale(one_device(port="down").devices)
    rules = replace(RULES, check_repoll=4.0)
    report = run_step(record(), Action.CHECK, replace(ports(api), sleep=waits.append), rules)
    assert waits == [4.0]
    assert api.calls == ["patch", "discover", "ports", "ports"]
    assert [name for name, _ in report.laps] == [
        "restore",
        "discover",
        "poll",
        "check",
        "repoll",
        "check",
    ]
    assert report.check is not None and report.check.oper_status == "up"
    assert report.decision.reason is Reason.RECOVERED


def test_a_port_still_down_after_the_repoll_is_forced_down_and_zero_decides_at_once() -> None:
    waits: list[float] = []
    api = one_device(port="down")
    rules = replace(RULES, check_repoll=4.0)
    report = run_step(record(), Action.CHECK, replace(ports(api), sleep=waits.append), rules)
    assert waits == [4.0] and api.calls.count("ports") == 2
    assert report.decision.reason is Reason.STILL_DOWN
    api = one_device(port="down")
    report = run_step(record(), Action.CHECK, replace(ports(api), sleep=waits.append), RULES)
    assert waits == [4.0] and api.calls.count("ports") == 1  # RULES: check_repoll 0
    assert report.decision.reason is Reason.STILL_DOWN
    api = one_device(port="up")
    report = run_step(record(), Action.CHECK, replace(ports(api), sleep=waits.append), rules)
    assert waits == [4.0] and report.decision.reason is Reason.RECOVERED  # up: no wait


def test_a_retried_force_down_asks_librenms_suppression_again() -> None:
    """A force-down retried or resumed (not fresh: its PATCH failed or a crash cut it) reads the
    device again: one put under maintenance meanwhile is not PATCHed to UNSUPERVISED_IP but
    restored and let go (found by the whole-daemon model test)."""
    api = one_device(overwrite="192.0.2.9")
    api.device(42).suppressed = "maintenance"
    rec = record(phase=Phase.FORCING_DOWN, attempts=0, forced_down_at=None)
    report = run_step(rec, Action.FORCE_DOWN, ports(api), RULES, fresh=False)
    assert "patch" not in api.calls and not report.forced_down
    decided = report.decision.record
    assert decided is not None and decided.phase is Phase.RELEASING
    assert report.decision.reason is Reason.SUPPRESSED_MAINTENANCE
