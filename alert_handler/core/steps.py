"""The step runner: one function per action, running that action's calls through narrow ports
(LibreNMS, the poll, the clock) and returning a `StepReport` whose Decision says what to store.

`run_device` is one job of the scheduler: the steps due for a device, in order, each decision
persisted (through the `JobHost`) before the next change to LibreNMS. Every domain decision is
taken in `machine`; this module only sequences calls, names the sub-step that failed and times
each one. No I/O of its own: the ports do it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from alert_handler.core import machine, seen
from alert_handler.core.facts import (
    DeviceInfo,
    DeviceNotFound,
    LibreNMSError,
    PollError,
    PollResult,
)
from alert_handler.core.machine import Action, Decision, Reason, Rules
from alert_handler.core.outcomes import Outcome, job_outcome
from alert_handler.core.ports import Clock as Clock
from alert_handler.core.ports import ComponentPort as ComponentPort
from alert_handler.core.ports import LibreNMSPort as LibreNMSPort
from alert_handler.core.ports import PollPort as PollPort
from alert_handler.core.ports import Ports as Ports
from alert_handler.core.ports import SteerPort as SteerPort
from alert_handler.core.records import DeviceRecord, Phase

MAX_STEPS = 8  # steps one job may run for a device before yielding to others
# Actions that change LibreNMS: they run only on a record that is on disk.
CHANGES = frozenset({Action.FORCE_DOWN, Action.CHECK, Action.RELEASE})
ACK_NOTE = "handled by alert-handler: forced down, recovering"
UNMUTE_NOTE = "alert-handler let the device go: alerting as usual again"


@dataclass(frozen=True)
class CheckFacts:
    """What a check saw: the poll's exit status, the port's ifOperStatus (None: not read or no
    such port) and the port_id it was found under (None: not found)."""

    poll_exit: int
    oper_status: str | None
    port_id: int | None = None


@dataclass
class StepReport:
    """One step's result: the decision, and what the scheduler logs and counts about it."""

    action: Action
    decision: Decision
    laps: list[tuple[str, float]] = field(default_factory=list)  # (sub-step, seconds)
    failed_step: str | None = None  # the sub-step that raised
    error: str | None = None  # why it failed (safe to log)
    unexpected: BaseException | None = None  # a bug: logged with its traceback
    poll_exit: str | None = None  # "0", "6", ... or "error": the poll ran (or failed)
    check: CheckFacts | None = None
    forced_down: bool = False  # a PATCH to UNSUPERVISED_IP was made
    acked: tuple[int, ...] = ()  # alert ids acknowledged
    ack_error: str | None = None
    unmuted: tuple[int, ...] = ()  # alert ids unmuted (the device was let go)
    unmute_error: str | None = None
    config_error: str | None = None  # the poll showed the daemon is set up wrong (and the fix)
    answers: bool = False  # UNSUPERVISED_IP seems to answer (`seen.answers_while_down`)
    component_error: str | None = None  # the component of a device let go is still there


class _Laps:
    """Times sub-steps and remembers which one is running (for the error's step name)."""

    def __init__(self, clock: Clock, first: str) -> None:
        self._clock = clock
        self.step = first
        self._mark = clock.monotonic()
        self.done: list[tuple[str, float]] = []

    def next(self, step: str) -> None:
        """The current sub-step ended; `step` begins."""
        self.close()
        self.step = step

    def close(self) -> None:
        """The current sub-step ended."""
        now = self._clock.monotonic()
        self.done.append((self.step, now - self._mark))
        self._mark = now


def run_step(
    rec: DeviceRecord, action: Action, ports: Ports, rules: Rules, *, fresh: bool = True
) -> StepReport:
    """Run one action's calls and turn their results into a Decision. Unless `fresh` (the
    previous step of this job read or wrote the device), a step that writes overwrite_ip reads
    the device first and lets it go if someone else changed it. Never raises (but for
    BaseException): a failure is a STEP_FAILED (or DEVICE_GONE) decision naming the sub-step."""
    report = StepReport(action=action, decision=Decision(rec, Reason.STEP_FAILED))
    first = "verify" if action in (Action.FORCE_DOWN, Action.CHECK) and not fresh else None
    if first is None and action is Action.RELEASE and rec.phase is not Phase.NEW:
        first = "restore"  # a release reads the device only for a NEW record
    laps = _Laps(ports.clock, first or _FIRST_STEP[action])
    comps = ports.components
    try:
        if first == "verify":
            info = ports.api.get_device(rec.device_id)
            changed = machine.foreign_change(rec, info, rules)
            if changed is None and action is Action.FORCE_DOWN:
                # A retried or resumed force-down asks LibreNMS's own suppression again too: it
                # may have begun since the step that decided it.
                maintenance = ports.api.under_maintenance(rec.device_id)
                alone = seen.leave_alone(info, maintenance, ports.verdict(rec, info.hostname))
                changed = machine.before_force_down(rec, ports.clock.time(), rules, alone)
            if changed is not None:
                report.decision = changed
                _unmute(rec, ports, laps, report)
                report.component_error = drop_component(rec, action, changed, comps, laps.next)
                return report
            laps.next(_FIRST_STEP[action])
        report.decision = _RUNNERS[action](rec, ports, rules, laps, report)
        _unmute(rec, ports, laps, report)
        report.component_error = drop_component(rec, action, report.decision, comps, laps.next)
    except DeviceNotFound as exc:
        report.decision = machine.after_failure(
            rec, action, str(exc), ports.clock.time(), rules, gone=True
        )
        # LibreNMS makes a component for any id, the id of a device deleted meanwhile too.
        report.component_error = drop_component(rec, action, report.decision, comps, laps.next)
    except (LibreNMSError, PollError) as exc:
        _failed(report, rec, action, laps.step, str(exc), ports, rules)
    except Exception as exc:
        # A bug, or an answer LibreNMS should never give: a failed step like any other, so the
        # device is retried later (a failed check forces it down at once), not looped.
        _failed(
            report, rec, action, laps.step, f"unexpected {type(exc).__name__}: {exc}", ports, rules
        )
        report.unexpected = exc
    finally:
        laps.close()
        report.laps = laps.done
    return report


def _failed(
    report: StepReport,
    rec: DeviceRecord,
    action: Action,
    step: str,
    error: str,
    ports: Ports,
    rules: Rules,
) -> None:
    report.failed_step = step
    report.error = error
    report.decision = machine.after_failure(
        rec, action, f"{step}: {error}", ports.clock.time(), rules
    )


_Runner = Callable[[DeviceRecord, Ports, Rules, _Laps, StepReport], Decision]


def _inspect(rec: DeviceRecord, ports: Ports, rules: Rules, laps: _Laps, _: StepReport) -> Decision:
    info = ports.api.get_device(rec.device_id)
    maintenance = ports.api.under_maintenance(rec.device_id)
    hold = seen.leave_alone(info, maintenance, ports.verdict(rec, info.hostname))
    device_ports = ports.api.device_ports(rec.device_id)
    held = held_original(rec, info, ports.components, rules.unsupervised_ip, laps.next)
    return machine.after_inspect(
        rec, info, device_ports, ports.clock.time(), rules, leave_alone=hold, held=held
    )


def _force_down(
    rec: DeviceRecord, ports: Ports, rules: Rules, laps: _Laps, report: StepReport
) -> Decision:
    kept = machine.before_force_down(
        rec, ports.clock.time(), rules, seen.steered(ports.verdict(rec))
    )
    if kept is not None:
        return kept
    if ports.components is not None:  # the original into LibreNMS first: no component, no PATCH
        laps.step = "component"
        ports.components.keep(rec, ports.clock.time())
        laps.next("force_down")
    ports.api.set_overwrite_ip(rec.device_id, rules.unsupervised_ip)
    report.forced_down = True
    laps.next("discover")
    ports.api.discover(rec.device_id)
    if rules.ack_alerts and not rec.acked:
        laps.next("ack")
        rec = _ack(rec, ports, rules, report)
    return machine.after_force_down(rec, ports.clock.time(), rules)


def _ack(rec: DeviceRecord, ports: Ports, rules: Rules, report: StepReport) -> DeviceRecord:
    """Acknowledge the device's open alerts of the trigger rules; best effort: a failure is
    reported, not a failed step."""
    acked: list[int] = []
    try:
        for alert in ports.api.open_alerts():
            if alert.device_id != rec.device_id:
                continue
            if not rules.triggers(alert.rule_name):
                continue
            # Recorded before the call: an ack that reached LibreNMS but whose answer was lost
            # must still be unmuted later (unmuting checks it is still acknowledged).
            acked.append(alert.alert_id)
            ports.api.ack_alert(alert.alert_id, ACK_NOTE)
    except LibreNMSError as exc:
        report.acked, report.ack_error = tuple(acked[:-1]), str(exc)
        return replace(rec, acked_ids=_merged(rec.acked_ids, acked))  # acked: tried again
    report.acked = tuple(acked)
    return replace(rec, acked=True, acked_ids=_merged(rec.acked_ids, acked))


def _merged(old: tuple[int, ...], new: list[int]) -> tuple[int, ...]:
    return old + tuple(i for i in new if i not in old)


def _unmute(rec: DeviceRecord, ports: Ports, laps: _Laps, report: StepReport) -> None:
    """Unmute what the daemon acknowledged when it lets the device go (`seen.to_unmute`); best
    effort, like the ack: a failure is reported, not a failed step."""
    candidates = seen.to_unmute(rec, report.decision)
    if not candidates:
        return
    laps.next("unmute")
    done: list[int] = []
    try:
        # Only alerts still acknowledged: unmuting sets state 1 whatever the state was, and an
        # alert that has recovered since must stay closed.
        still = {a.alert_id for a in ports.api.acknowledged_alerts()}
        for alert_id in (i for i in candidates if i in still):
            ports.api.unmute_alert(alert_id, UNMUTE_NOTE)
            done.append(alert_id)
    except LibreNMSError as exc:
        report.unmute_error = str(exc)
    report.unmuted = tuple(done)


def _verify(
    rec: DeviceRecord, ports: Ports, rules: Rules, laps: _Laps, report: StepReport
) -> Decision:
    info = ports.api.get_device(rec.device_id)
    report.answers = seen.answers_while_down(rec, info, rules.unsupervised_ip)
    maintenance = ports.api.under_maintenance(rec.device_id)
    hold = seen.leave_alone(info, maintenance, ports.verdict(rec, info.hostname))
    return machine.before_attempt(rec, info, ports.clock.time(), rules, leave_alone=hold)


def _check(
    rec: DeviceRecord, ports: Ports, rules: Rules, laps: _Laps, report: StepReport
) -> Decision:
    """Restore the original, rediscover, poll, find the port again and read it."""
    ports.api.set_overwrite_ip(rec.device_id, rec.original_overwrite_ip)
    laps.next("discover")
    ports.api.discover(rec.device_id)
    laps.next("poll")
    result, status, port_id = _poll_and_read(rec, ports, rules, laps, report)
    if status not in (None, "up") and rules.check_repoll > 0:
        # The agent may have answered from a cache older than the port's change (net-snmp keeps
        # its ifTable 3 s): read once more past that age before forcing a CPE down again.
        laps.next("repoll")
        ports.sleep(rules.check_repoll)
        result, status, port_id = _poll_and_read(rec, ports, rules, laps, report)
    report.check = CheckFacts(result.exit_status, status, port_id)
    return machine.after_check(
        rec,
        result.exit_status,
        status,
        ports.clock.time(),
        rules,
        port_id=port_id,
        config_error=result.config_error,
    )


def _poll_and_read(
    rec: DeviceRecord, ports: Ports, rules: Rules, laps: _Laps, report: StepReport
) -> tuple[PollResult, str | None, int | None]:
    """Poll the device, then read the target port's ifOperStatus and port_id (None, None when
    the poll did not succeed or the port is not found)."""
    try:
        result = ports.poller.poll(rec.device_id, rec.poller_group)
    except PollError:
        report.poll_exit = "error"
        raise
    report.poll_exit = str(result.exit_status)
    report.config_error = result.config_error
    laps.next("check")
    if result.exit_status != 0:
        return result, None, None
    # The device's current ports, not GET /ports/{id}: that row may be deleted and stale.
    listing = ports.api.device_ports(rec.device_id)
    found = machine.find_port(listing, rules.target_ifname, rec.port_id)
    if found is None:
        return result, None, None
    return result, found.oper_status, found.port_id


def _release(rec: DeviceRecord, ports: Ports, rules: Rules, laps: _Laps, _: StepReport) -> Decision:
    info = held = None
    if rec.phase is Phase.NEW:
        info = ports.api.get_device(rec.device_id)
        held = held_original(rec, info, ports.components, rules.unsupervised_ip, laps.next)
    plan = machine.plan_release(rec, info, rules, held=held)
    if plan.restore:
        if info is not None:
            laps.next("restore")
        ports.api.set_overwrite_ip(rec.device_id, plan.value)
        laps.next("discover")
        ports.api.discover(rec.device_id)
    return machine.after_release(rec, plan)


_RUNNERS: dict[Action, _Runner] = {
    Action.INSPECT: _inspect,
    Action.FORCE_DOWN: _force_down,
    Action.VERIFY: _verify,
    Action.CHECK: _check,
    Action.RELEASE: _release,
}
_FIRST_STEP = {
    Action.INSPECT: "inspect",
    Action.FORCE_DOWN: "force_down",
    Action.VERIFY: "verify",
    Action.CHECK: "restore",
    Action.RELEASE: "verify",
}


class JobHost(Protocol):
    """The scheduler's side of one job: the stored records and where decisions go."""

    def get(self, device_id: int) -> DeviceRecord | None:
        """The current record (None: not tracked)."""
        ...

    def paused(self) -> bool:
        """Whether maintenance mode is on."""
        ...

    def stopping(self) -> bool:
        """Whether the daemon is shutting down (the next step runs after the restart)."""
        ...

    def durable(self) -> bool:
        """Whether every change made in memory is on disk (waits for it)."""
        ...

    def starting(self, device_id: int, action: Action) -> None:
        """A step is about to run (for stuck detection)."""
        ...

    def persist(self, before: DeviceRecord, report: StepReport) -> bool:
        """Store the decision durably (merged with alert fields that arrived meanwhile), log and
        count it; False if it could not be written."""
        ...


def run_device(device_id: int, host: JobHost, ports: Ports, rules: Rules) -> Outcome:
    """Run the device's due steps in order, each persisted before the next, up to MAX_STEPS.

    A step that changes LibreNMS runs only on a durable record: were it not, a crash could lose
    what the step relies on (the original above all). Paused, only what must not be left half
    done runs (`machine.runs_while_paused`)."""
    outcome = Outcome.IDLE
    fresh = False  # this job's last step read or wrote the device's overwrite_ip
    for _ in range(MAX_STEPS):
        if host.stopping():
            return outcome
        rec = host.get(device_id)
        if rec is None:
            return outcome
        action = machine.plan(rec, ports.clock.time())
        if action is Action.WAIT:
            return outcome
        if host.paused() and not machine.runs_while_paused(rec, action):
            return outcome
        if action in CHANGES and not host.durable():
            return Outcome.FAILED
        host.starting(device_id, action)
        report = run_step(rec, action, ports, rules, fresh=fresh)
        if not host.persist(rec, report):
            return Outcome.FAILED
        decision = report.decision
        fresh = decision.reason is not Reason.STEP_FAILED
        outcome = job_outcome(decision.reason, outcome)
        if decision.forget:
            return outcome
    return outcome


# -- the original kept in LibreNMS (librenms/components.py) --------------------------------------
def held_original(
    rec: DeviceRecord,
    info: DeviceInfo,
    components: ComponentPort | None,
    unsupervised_ip: str,
    mark: Callable[[str], None],
) -> tuple[str | None] | None:
    """The original LibreNMS holds for a device found on UNSUPERVISED_IP with no original of
    ours (adoption, `release` of an untracked device): it wins over the event journal's.
    `mark` names the sub-step before the read."""
    if components is None or rec.original_recorded or info.overwrite_ip != unsupervised_ip:
        return None
    mark("component")
    return components.held(rec.device_id)


def drop_component(
    rec: DeviceRecord,
    action: Action,
    decision: Decision,
    components: ComponentPort | None,
    mark: Callable[[str], None],
) -> str | None:
    """The device was let go (after its restore, if any): its component goes. Why it could not
    be removed, or None; never a failed step (`Components.sweep` tries again)."""
    if components is None or not decision.forget:
        return None
    if rec.phase is Phase.NEW and action is not Action.RELEASE:
        return None  # inspected and left alone: nothing was written
    mark("component")
    return components.drop(rec.device_id)
