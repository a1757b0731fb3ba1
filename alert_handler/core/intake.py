"""What an alert or an operator's request does to a device's record (the webhook's side of the
state machine); pure. The recovery side is in `machine`."""

from __future__ import annotations

from dataclasses import replace

from alert_handler.core.alerts import STATE_ACKNOWLEDGED, STATE_RECOVERED, Alert
from alert_handler.core.machine import Decision, Reason, Rules
from alert_handler.core.records import DeviceRecord, Phase


# -- alerts -----------------------------------------------------------------------------------
def on_alert(rec: DeviceRecord | None, alert: Alert, now: float, rules: Rules) -> Decision:
    """What a webhook notification does to a device's record."""
    if alert.state == STATE_ACKNOWLEDGED:
        return Decision(rec, Reason.IGNORED_ACK)
    if alert.state == STATE_RECOVERED:
        if rec is None:
            return Decision(None, Reason.IGNORED_UNTRACKED_RECOVERY)
        trigger = not rules.trigger_rules or alert.rule in rules.trigger_rules
        if rec.held and rec.phase is Phase.NEW and trigger:
            return Decision(None, Reason.HELD_RECOVERED)  # nothing was changed: just forget it
        if not trigger:
            # e.g. the self-inflicted "Device Down" clearing after each check: only the
            # trigger rule's own recovery says the port may be back.
            return Decision(_seen(rec, alert, now), Reason.REPEAT)
        return Decision(_seen(rec, alert, now, recheck=True), Reason.RECHECK)
    if rec is not None:
        return Decision(_seen(rec, alert, now), Reason.REPEAT)
    if rules.trigger_rules and alert.rule not in rules.trigger_rules:
        return Decision(None, Reason.IGNORED_RULE)
    record = DeviceRecord(
        device_id=alert.device_id,
        hostname=alert.host,
        first_seen=now,
        next_attempt_at=now,
        last_alert=now,
        last_rule=alert.rule,
        last_ip=alert.ip,
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


def track(rec: DeviceRecord | None, device_id: int, now: float) -> Decision:
    """Start handling a device by hand (`alert-handler track`), as an alert would."""
    if rec is not None:
        return Decision(rec, Reason.REPEAT)
    record = DeviceRecord(device_id=device_id, first_seen=now, next_attempt_at=now, last_alert=now)
    return Decision(record, Reason.TRACK_BY_HAND, new=True)


def request_release(rec: DeviceRecord, now: float) -> Decision:
    """Ask for the original to be restored now and the device forgotten."""
    return Decision(replace(rec, release_requested=True, next_attempt_at=now), Reason.RELEASE)


def release_untracked(device_id: int, now: float) -> Decision:
    """`release` of a device that is not tracked: a NEW record asking for release, so that
    `plan_release` restores null only if LibreNMS shows it on UNSUPERVISED_IP (a crash, the old
    script or a hand edit left it there), and otherwise forgets it untouched."""
    record = DeviceRecord(
        device_id=device_id, first_seen=now, next_attempt_at=now, alerts=0, release_requested=True
    )
    return Decision(record, Reason.RELEASE, new=True)
