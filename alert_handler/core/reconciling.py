"""Reconciliation's rules: which devices it takes on, from what LibreNMS shows; pure.

`plan_pass` gets the devices and open alerts as read, what the daemon tracks, when it last let
each device go, and the verdicts (the controls' and LibreNMS's own suppression), and returns what
to take on and what was skipped and why. `recovery/reconcile.py` reads LibreNMS and applies
the plan.

- Adoption: a device on UNSUPERVISED_IP that the daemon does not track is taken on, marked
  `found_unsupervised` (the confirmation gate never holds it: it is changed already). One the
  operator keeps the daemon away from (EXCLUDE, a silence) is taken on to be restored and
  forgotten at once: nothing is ever left on UNSUPERVISED_IP without a record.
- Pick-up: an open alert of the trigger rules that never reached the daemon (LibreNMS never
  re-sends a failed delivery), only if LibreNMS really notified it (`alerted`), its device still
  exists, the daemon did not let the device go since the alert was raised (a recovered,
  dismissed or discarded device is not taken on again by the same alert), the controls do not
  keep the daemon away, and LibreNMS does not leave the device alone itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from alert_handler.core.facts import DeviceInfo, OpenAlert
from alert_handler.core.machine import Rules
from alert_handler.core.seen import suppression
from alert_handler.core.verdict import Verdict, blocks

ADOPT_WHY = "found on UNSUPERVISED_IP, not tracked"


@dataclass(frozen=True)
class TakeOn:
    """A device reconciliation takes on: `adopt` (found on UNSUPERVISED_IP) or an open alert
    (`alert_id`); `release`: restored and forgotten at once (the controls keep the daemon away)."""

    device_id: int
    hostname: str | None
    why: str
    adopt: bool = False
    release: bool = False
    alert_id: int | None = None
    rule: str | None = None


@dataclass(frozen=True)
class Skipped:
    """An open alert not picked up, and why (logged)."""

    device_id: int
    alert_id: int
    why: str


@dataclass(frozen=True)
class PassPlan:
    """What one reconciliation pass does."""

    take: tuple[TakeOn, ...] = ()
    skipped: tuple[Skipped, ...] = ()


Steer = Callable[[int, str | None], Verdict | None]


def adoptions(
    devices: Iterable[DeviceInfo], tracked: Collection[int], rules: Rules, steer: Steer
) -> list[TakeOn]:
    """The devices on UNSUPERVISED_IP the daemon does not track; each is taken on."""
    found: list[TakeOn] = []
    for device in devices:
        if device.overwrite_ip != rules.unsupervised_ip or device.device_id in tracked:
            continue
        verdict = steer(device.device_id, device.hostname)
        if blocks(verdict):
            why = f"{ADOPT_WHY}; {verdict}: restoring its original"
            found.append(TakeOn(device.device_id, device.hostname, why, adopt=True, release=True))
        else:
            found.append(TakeOn(device.device_id, device.hostname, ADOPT_WHY, adopt=True))
    return found


def pickup_skip(
    alert: OpenAlert,
    rules: Rules,
    tracked: Collection[int],
    dismissed: Mapping[int, float],
    by_id: Mapping[int, DeviceInfo],
) -> str | None:
    """Why an open alert is not picked up before any verdict is asked (None: a candidate). The
    first three are silent: they are no news."""
    if not alert.alerted:
        return ""  # LibreNMS held it back (maintenance, mute, delay, parents down)
    if not rules.triggers(alert.rule_name) or alert.device_id in tracked:
        return ""
    let_go = dismissed.get(alert.device_id)
    if let_go is not None and (alert.raised_at is None or alert.raised_at <= let_go):
        # Raised before the daemon let the device go (recovered, dismissed, discarded): the
        # same alert does not take it on again (LIBRENMS_TIMEZONE makes raised_at right).
        return ""
    if alert.device_id not in by_id:
        return ""  # deleted since the alert was raised
    return None


def plan_pass(
    devices: list[DeviceInfo],
    alerts: Iterable[OpenAlert],
    tracked: Collection[int],
    dismissed: Mapping[int, float],
    rules: Rules,
    steer: Steer,
    maintenance: Callable[[int], bool],
) -> PassPlan:
    """One pass's decisions. `maintenance(device_id)` is asked only for an alert that passed
    every other test (it is a LibreNMS read)."""
    take = adoptions(devices, tracked, rules, steer)
    skipped: list[Skipped] = []
    by_id = {device.device_id: device for device in devices}
    taken = set(tracked) | {t.device_id for t in take}
    for alert in alerts:
        if pickup_skip(alert, rules, taken, dismissed, by_id) is not None:
            continue
        row = by_id[alert.device_id]
        verdict = steer(alert.device_id, row.hostname)
        if blocks(verdict):
            skipped.append(Skipped(alert.device_id, alert.alert_id, str(verdict)))
            continue
        own = suppression(row, maintenance(alert.device_id))
        if own is not None:
            skipped.append(Skipped(alert.device_id, alert.alert_id, own.value))
            continue
        why = f"open alert {alert.alert_id} never reached the daemon"
        rule = alert.rule_name
        take.append(TakeOn(alert.device_id, None, why, alert_id=alert.alert_id, rule=rule))
        taken.add(alert.device_id)
    return PassPlan(tuple(take), tuple(skipped))
