"""What an alert or an operator's request does to a device's record (the webhook's side of the
state machine); pure. The recovery side is in `machine`.

The controls' verdict (`core.verdict.verdict`: EXCLUDE, a silence) is an input here as it is
in the step runner: an excluded or silenced device is never taken on, and a tracked one that
became so is let go (restored and forgotten)."""

from __future__ import annotations

from dataclasses import replace

from alert_handler.core.alerts import STATE_ACKNOWLEDGED, STATE_RECOVERED, Alert
from alert_handler.core.machine import Decision, Reason, Rules
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.verdict import Verdict, blocks, let_go


def new_record(
    device_id: int,
    now: float,
    *,
    hostname: str | None = None,
    rule: str | None = None,
    ip: str | None = None,
    alerts: int = 1,
    release: bool = False,
    found_unsupervised: bool = False,
) -> DeviceRecord:
    """A device the daemon starts to track (an alert, `track`, reconciliation, a release of an
    untracked device): the one place a new record is built. Due at once, nothing changed."""
    return DeviceRecord(
        device_id=device_id,
        hostname=hostname,
        first_seen=now,
        next_attempt_at=now,
        last_alert=now,
        last_rule=rule,
        last_ip=ip,
        alerts=alerts,
        release_requested=release,
        found_unsupervised=found_unsupervised,
    )


# -- alerts -----------------------------------------------------------------------------------
def on_alert(
    rec: DeviceRecord | None,
    alert: Alert,
    now: float,
    rules: Rules,
    steer: Verdict | None = None,
) -> Decision:
    """What a webhook notification does to a device's record, given the controls' verdict on
    the device (`steer`): excluded or silenced, it is not taken on (EXCLUDED), or let go if
    tracked (LET_GO)."""
    if alert.state == STATE_ACKNOWLEDGED:
        return Decision(rec, Reason.IGNORED_ACK)
    if blocks(steer):
        if rec is None:
            return Decision(None, Reason.EXCLUDED, str(steer))
        return let_go(rec, now, str(steer))
    if alert.state == STATE_RECOVERED:
        if rec is None:
            return Decision(None, Reason.IGNORED_UNTRACKED_RECOVERY)
        trigger = rules.triggers(alert.rule)
        if rec.held and rec.phase is Phase.NEW and trigger:
            return Decision(None, Reason.HELD_RECOVERED)  # nothing was changed: just forget it
        if not trigger:
            # e.g. the self-inflicted "Device Down" clearing after each check: only the
            # trigger rule's own recovery says the port may be back.
            return Decision(_seen(rec, alert, now), Reason.REPEAT)
        return Decision(_seen(rec, alert, now, recheck=True), Reason.RECHECK)
    if rec is not None:
        return Decision(_seen(rec, alert, now), Reason.REPEAT)
    if not rules.triggers(alert.rule):
        return Decision(None, Reason.IGNORED_RULE)
    record = new_record(
        alert.device_id,
        now,
        hostname=alert.host,
        rule=alert.rule,
        ip=alert.ip,
        # LibreNMS polled it at UNSUPERVISED_IP: it is forced down already (the old script).
        found_unsupervised=alert.ip is not None and alert.ip == rules.unsupervised_ip,
    )
    return Decision(record, Reason.NEW_DEVICE, new=True)


def _seen(rec: DeviceRecord, alert: Alert, now: float, *, recheck: bool = False) -> DeviceRecord:
    return replace(
        rec,
        alerts=rec.alerts + 1,
        last_alert=now,
        last_rule=alert.rule or rec.last_rule,
        last_ip=alert.ip or rec.last_ip,
        hostname=rec.hostname or alert.host,
        recheck_at=now if recheck else rec.recheck_at,
    )


def track(
    rec: DeviceRecord | None,
    device_id: int,
    now: float,
    steer: Verdict | None = None,
    *,
    found_unsupervised: bool = False,
) -> Decision:
    """Start handling a device by hand (`alert-handler track`), as an alert would; an excluded
    or silenced device is refused (EXCLUDED, nothing changed). `found_unsupervised`: the caller
    saw it on UNSUPERVISED_IP already (the CLI reads LibreNMS first), so the confirmation gate
    never holds it, as for an alert whose `ip` says so."""
    if blocks(steer):
        return Decision(rec, Reason.EXCLUDED, str(steer))
    if rec is not None:
        return Decision(rec, Reason.REPEAT)
    record = new_record(device_id, now, found_unsupervised=found_unsupervised)
    return Decision(record, Reason.TRACK_BY_HAND, new=True)


def request_release(rec: DeviceRecord, now: float) -> Decision:
    """Ask for the original to be restored now and the device forgotten."""
    return Decision(replace(rec, release_requested=True, next_attempt_at=now), Reason.RELEASE)


def release_untracked(device_id: int, now: float) -> Decision:
    """`release` of a device that is not tracked: a NEW record asking for release, so that
    `plan_release` restores null only if LibreNMS shows it on UNSUPERVISED_IP (a crash, the old
    script or a hand edit left it there), and otherwise forgets it untouched."""
    record = new_record(device_id, now, alerts=0, release=True)
    return Decision(record, Reason.RELEASE, new=True)
