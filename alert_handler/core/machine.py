"""The per-device state machine; pure: takes records, facts and `now`, returns Decisions.

Cycle of a device (each arrow is persisted before the next LibreNMS change is made):

    alert -> NEW --inspect--> FORCING_DOWN --PATCH unsupervised, discover--> DOWN
    DOWN --interval, verify--> RESTORING --PATCH original, discover, poll, check-->
        port up: forgotten;  otherwise: FORCING_DOWN (again)
    release / give-up -> RELEASING --PATCH original--> forgotten

`steps.py` runs the I/O between the calls; nothing here touches a clock, a socket or a file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from alert_handler.core.decision import Action as Action
from alert_handler.core.decision import Decision as Decision
from alert_handler.core.decision import LeaveAlone as LeaveAlone
from alert_handler.core.decision import Reason as Reason
from alert_handler.core.decision import Rules as Rules
from alert_handler.core.decision import leave_alone_of
from alert_handler.core.facts import DeviceInfo, PortInfo
from alert_handler.core.records import FORCED_PHASES, DeviceRecord, Phase
from alert_handler.core.times import span


# -- scheduling -------------------------------------------------------------------------------
def is_due(rec: DeviceRecord, now: float) -> bool:
    """Whether the worker should take the device now (a held device waits for a person)."""
    if rec.release_requested:
        return True
    if rec.held:
        return False
    if now >= rec.next_attempt_at:
        return True
    if rec.phase is Phase.DOWN and rec.recheck_at is not None:
        last = rec.attempt_started_at or rec.forced_down_at or 0.0
        return rec.recheck_at > last
    return False


def plan(rec: DeviceRecord, now: float) -> Action:
    """The next action for a device, WAIT when nothing is due."""
    if not is_due(rec, now):
        return Action.WAIT
    if rec.release_requested or rec.phase is Phase.RELEASING:
        return Action.RELEASE
    return {
        Phase.NEW: Action.INSPECT,
        Phase.FORCING_DOWN: Action.FORCE_DOWN,
        Phase.DOWN: Action.VERIFY,
        Phase.RESTORING: Action.CHECK,
    }[rec.phase]


def runs_while_paused(rec: DeviceRecord, action: Action) -> bool:
    """Whether `action` may run while paused. Pause stops new work (inspecting a new device,
    forcing it down the first time, starting an attempt) but never leaves a restored device
    unchecked or unforced: a check under way, forcing down again after a check, and releases
    go on."""
    if rec.release_requested or action in (Action.RELEASE, Action.CHECK):
        return True
    return action is Action.FORCE_DOWN and rec.attempts > 0


def forced_count(records: dict[int, DeviceRecord]) -> int:
    """Devices that are, or are about to be, on UNSUPERVISED_IP (for MAX_FORCED_DOWN)."""
    return sum(1 for r in records.values() if r.phase in FORCED_PHASES)


def storm_room(
    records: dict[int, DeviceRecord], inflight: set[int], max_forced_down: int
) -> int | None:
    """How many NEW devices may start now under MAX_FORCED_DOWN (None: no limit). Those being
    inspected count as forced down already, so parallel workers cannot overshoot."""
    if not max_forced_down:
        return None
    inspecting = sum(1 for d in inflight if d in records and records[d].phase is Phase.NEW)
    return max(0, max_forced_down - forced_count(records) - inspecting)


# -- results of the worker's steps ------------------------------------------------------------
def find_port(ports: list[PortInfo], ifname: str, hint: int | None = None) -> PortInfo | None:
    """The device's current port named exactly `ifname`, found again after every poll: LibreNMS
    marks a vanished port deleted=1 and gives a returning one a new port_id, so a deleted row
    counts as missing and the remembered port_id (`hint`) only breaks a tie between names."""
    # Exact ifName: the API's search is a substring match (port20, Port2-backup).
    named = [p for p in ports if p.if_name == ifname and not p.deleted]
    for port in named:
        if port.port_id == hint:
            return port
    return named[0] if named else None


def after_inspect(
    rec: DeviceRecord,
    info: DeviceInfo,
    ports: list[PortInfo],
    now: float,
    rules: Rules,
    *,
    leave_alone: Reason | LeaveAlone | None = None,
) -> Decision:
    """Record the original once, find the port, and decide whether to force the device down.
    A device to `leave_alone` (why: `seen.leave_alone`) is never forced down, and one found on
    UNSUPERVISED_IP all the same is restored; a "not yet" keeps a device that is not forced down
    waiting (one on UNSUPERVISED_IP is handled as usual: restoring is always allowed)."""
    hostname = rec.hostname or info.hostname
    port = find_port(ports, rules.target_ifname, rec.port_id)
    on_unsupervised = info.overwrite_ip == rules.unsupervised_ip
    alone = leave_alone_of(leave_alone)
    seen = replace(rec.with_original(info.overwrite_ip), hostname=hostname)
    if alone is not None and alone.waits:
        if not on_unsupervised:
            later = replace(rec, hostname=hostname, next_attempt_at=now + rules.interval)
            return Decision(later, Reason.NOT_YET, alone.detail)
        alone = None
    if alone is not None and not on_unsupervised:
        return Decision(None, alone.reason, alone.detail or "not forced down", final=seen)
    if on_unsupervised:
        # Already pointed away (state lost, a crash, or the old script): the original is unknown
        # unless the event journal remembers the last one (a late PATCH of a killed daemon).
        adopted = not rec.original_recorded
        if rec.knows_original:
            new = replace(rec.with_original(rec.known_original), hostname=hostname)
        else:
            new = replace(rec.with_original(None, adopted=True), hostname=hostname)
        if port is None or alone is not None:
            why = f"{alone.detail}: " if alone is not None and alone.detail else ""
            return Decision(
                replace(new, phase=Phase.RELEASING, next_attempt_at=now),
                alone.reason if alone is not None else Reason.NO_TARGET_PORT,
                f"{why}on UNSUPERVISED_IP: restoring it",
            )
        new = replace(
            new,
            phase=Phase.DOWN,
            port_id=port.port_id,
            poller_group=info.poller_group,
            forced_down_at=rec.forced_down_at or now,
            next_attempt_at=now + rules.interval,
            last_error=None,
        )
        if not adopted:
            return Decision(new, Reason.ALREADY_DOWN)
        if rec.knows_original:
            return Decision(new, Reason.ADOPTED_KNOWN, f"original {shown(rec.known_original)}")
        return Decision(new, Reason.ADOPTED)
    if port is None:
        detail = f"no port named {rules.target_ifname}"
        return Decision(None, Reason.NO_TARGET_PORT, detail, final=seen)
    if port.oper_status == "up":
        detail = f"{rules.target_ifname} is up"
        return Decision(None, Reason.STALE_PORT_UP, detail, final=seen)
    new = replace(
        rec.with_original(info.overwrite_ip),
        hostname=hostname,
        phase=Phase.FORCING_DOWN,
        port_id=port.port_id,
        poller_group=info.poller_group,
        next_attempt_at=now,
        last_error=None,
    )
    original = new.original_overwrite_ip
    return Decision(
        new,
        Reason.FORCE_DOWN,
        f"{rules.target_ifname} is {port.oper_status}, original overwrite_ip {shown(original)}",
    )


def before_force_down(
    rec: DeviceRecord, now: float, rules: Rules, leave_alone: LeaveAlone | None
) -> Decision | None:
    """Asked before every PATCH to UNSUPERVISED_IP: None to go ahead. A device to leave alone
    now is restored to its original and forgotten (a release: it may be on UNSUPERVISED_IP
    already if a crash cut the step short); a "not yet" delays a first force-down only."""
    if leave_alone is None:
        return None
    if leave_alone.waits:
        if rec.forced_down_at is not None or rec.attempts:
            return None  # in an episode already: going on is no new force-down
        later = replace(rec, next_attempt_at=now + rules.interval)
        return Decision(later, Reason.NOT_YET, leave_alone.detail)
    new = replace(rec, phase=Phase.RELEASING, next_attempt_at=now)
    why = f"{leave_alone.detail}: " if leave_alone.detail else ""
    return Decision(new, leave_alone.reason, f"{why}not forced down, restoring its original")


def after_force_down(rec: DeviceRecord, now: float, rules: Rules) -> Decision:
    """The device points at UNSUPERVISED_IP; the next attempt is one interval after the last
    one began (so the schedule does not drift), but never sooner than half an interval from
    now: a force-down that came late (a retry, a resume, a restart) stays down long enough for
    LibreNMS to see it down."""
    start = rec.attempt_started_at if rec.attempt_started_at is not None else now
    new = replace(
        rec,
        phase=Phase.DOWN,
        forced_down_at=rec.forced_down_at or now,
        last_forced_at=now,
        next_attempt_at=max(start + rules.interval, now + rules.interval / 2),
    )
    return Decision(new, Reason.FORCED_DOWN, _written(rules, rules.unsupervised_ip))


def foreign_change(rec: DeviceRecord, info: DeviceInfo, rules: Rules) -> Decision | None:
    """Let the device go if someone else changed its overwrite_ip (neither UNSUPERVISED_IP nor
    the recorded original); None if it is as we left it."""
    if info.overwrite_ip in (rules.unsupervised_ip, rec.original_overwrite_ip):
        return None
    return Decision(None, Reason.FOREIGN_CHANGE, f"overwrite_ip is now {shown(info.overwrite_ip)}")


def before_attempt(
    rec: DeviceRecord,
    info: DeviceInfo,
    now: float,
    rules: Rules,
    *,
    leave_alone: Reason | LeaveAlone | None = None,
) -> Decision:
    """Check nobody else changed the device, then move to RESTORING (counting the attempt), with
    its poller group as read now (devices move). A device to `leave_alone` now (LibreNMS
    suppresses it: people are working on it; or EXCLUDE, a silence) is restored to its
    original and forgotten; a "not yet" does not stop an attempt (it restores)."""
    changed = foreign_change(rec, info, rules)
    if changed is not None:
        return changed
    hostname = rec.hostname or info.hostname
    alone = leave_alone_of(leave_alone)
    if alone is not None and not alone.waits:
        new = replace(rec, phase=Phase.RELEASING, next_attempt_at=now, hostname=hostname)
        why = f"{alone.detail}: " if alone.detail else ""
        return Decision(new, alone.reason, f"{why}restoring its original")
    new = replace(
        rec,
        phase=Phase.RESTORING,
        attempts=rec.attempts + 1,
        attempt_started_at=now,
        next_attempt_at=now,  # the check follows at once
        hostname=hostname,
        poller_group=info.poller_group,
    )
    return Decision(new, Reason.ATTEMPT)


def after_check(
    rec: DeviceRecord,
    poll_exit: int,
    oper_status: str | None,
    now: float,
    rules: Rules,
    *,
    port_id: int | None = None,
    config_error: str | None = None,
) -> Decision:
    """The device was restored and polled: forget it if its port is up, else force it down.
    The detail says what was written and, on recovery, how long it took. `port_id` is the port
    found again after the poll (`find_port`): kept as the next hint; a poll that showed a
    `config_error` (the wrong user) failed like any other."""
    restored = _written(rules, rec.original_overwrite_ip, restore=True)
    moved = ""
    if port_id is not None and port_id != rec.port_id:
        moved = f" (found again as port_id {port_id}, was {rec.port_id})"
        rec = replace(rec, port_id=port_id)
    if poll_exit == 0 and oper_status == "up":
        took = _story(rec, now)
        return Decision(
            None,
            Reason.RECOVERED,
            f"{restored}, {rules.target_ifname} is up{moved}: recovered {took}",
        )
    if poll_exit == 6:
        reason, error = Reason.POLL_DEVICE_DOWN, "poll: device down (exit 6)"
    elif poll_exit != 0:
        reason, error = Reason.POLL_FAILED, f"poll exited {poll_exit}"
        error += f": configuration error: {config_error}" if config_error else ""
    else:
        reason, error = Reason.STILL_DOWN, f"{rules.target_ifname} is {oper_status or 'missing'}"
    if rules.max_attempts and rec.attempts >= rules.max_attempts:
        return Decision(None, Reason.GAVE_UP, f"{restored}, {error}: gave up {_story(rec, now)}")
    new = replace(rec, phase=Phase.FORCING_DOWN, next_attempt_at=now, last_error=error)
    return Decision(new, reason, f"{restored}, {error}{moved}")


def shown(value: str | None) -> str:
    """An overwrite_ip as the log and the state file show it: the address, or null."""
    return "null" if value is None else value


def _written(rules: Rules, value: str | None, *, restore: bool = False) -> str:
    """What a PATCH of overwrite_ip did (or, in DRY_RUN, would have done)."""
    if rules.dry_run:
        return f"DRY_RUN would {'restore' if restore else 'set'} overwrite_ip {shown(value)}"
    return f"{'restored' if restore else 'set'} overwrite_ip {shown(value)}"


def _story(rec: DeviceRecord, now: float) -> str:
    """`after 12m30s forced down and 3 attempts`: how long the device was kept down."""
    since = rec.forced_down_at if rec.forced_down_at is not None else rec.first_seen
    count = f"{rec.attempts} attempt{'' if rec.attempts == 1 else 's'}"
    return f"after {span(now - since)} forced down and {count}"


@dataclass(frozen=True)
class ReleasePlan:
    """What releasing a device writes: `restore` False means nothing (it was never changed)."""

    restore: bool
    value: str | None
    unknown_original: bool = False  # on UNSUPERVISED_IP with no known original: null
    dry_run: bool = False


def plan_release(rec: DeviceRecord, info: DeviceInfo | None, rules: Rules) -> ReleasePlan:
    """A NEW record was never changed by us, unless it came forced down already (the old
    script's file, a reconcile adoption): `info` (read for NEW records only) tells; its original
    is then the journal's last known one, else unknown and null (the hostname) is restored.
    Others restore their original."""
    dry = rules.dry_run
    if rec.phase is not Phase.NEW:
        return ReleasePlan(restore=True, value=rec.original_overwrite_ip, dry_run=dry)
    if info is None or info.overwrite_ip != rules.unsupervised_ip:
        return ReleasePlan(restore=False, value=rec.original_overwrite_ip, dry_run=dry)
    if rec.knows_original:
        return ReleasePlan(restore=True, value=rec.known_original, dry_run=dry)
    return ReleasePlan(restore=True, value=None, unknown_original=True, dry_run=dry)


def after_release(rec: DeviceRecord, plan: ReleasePlan | None = None) -> Decision:
    """The original is back (or was never changed): forget the device."""
    if plan is not None and not plan.restore:
        return Decision(None, Reason.RELEASED, "nothing was changed")
    value = rec.original_overwrite_ip if plan is None else plan.value
    dry = plan is not None and plan.dry_run
    detail = _written(Rules(dry_run=dry), value, restore=True)
    if plan is not None and plan.unknown_original:
        detail += " (it was on UNSUPERVISED_IP with no known original)"
    return Decision(None, Reason.RELEASED, detail)


def after_failure(
    rec: DeviceRecord, action: Action, error: str, now: float, rules: Rules, *, gone: bool = False
) -> Decision:
    """A step failed. The device is never left restored-and-unchecked: a failed check forces it
    down again at once; anything else is retried one interval later."""
    if gone:
        return Decision(None, Reason.DEVICE_GONE, error)
    later = now + rules.interval
    if action is Action.CHECK:
        new = replace(rec, phase=Phase.FORCING_DOWN, next_attempt_at=now, last_error=error)
    else:
        new = replace(rec, next_attempt_at=later, last_error=error)
    return Decision(new, Reason.STEP_FAILED, error)
