"""Reconciliation with LibreNMS, at start and every RECONCILE_INTERVAL_SEC: reads the devices
and open alerts and applies the core's rules (`core.reconciling.plan_pass`).

- A device on UNSUPERVISED_IP that the state does not track is adopted: it gets back the
  original its LibreNMS component holds, else the last one the event journal knows, else (its
  original unknown) null; the inspect step reads the component and its log line says which.
- Components whose removal failed when the daemon let their device go are removed now
  (`Components.sweep`), unless the device is tracked again or back on UNSUPERVISED_IP.
- Open alerts of the trigger rules that never reached the daemon are picked up: LibreNMS never
  re-sends a failed webhook. Only alerts LibreNMS really notified (`alerted`), of devices it does
  not suppress itself (maintenance, disabled, ignored): its own silence is respected. Alerts
  older than the moment the daemon last let the device go are skipped, so a recovered device is
  not picked up again by its own stale alert.
A tracked device whose overwrite_ip someone else changed is handled by the worker's verify step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from alert_handler.core.alerts import plain
from alert_handler.core.facts import LibreNMSError
from alert_handler.core.intake import new_record
from alert_handler.core.machine import Rules, shown
from alert_handler.core.reconciling import TakeOn, plan_pass
from alert_handler.core.records import DeviceRecord
from alert_handler.core.verdict import Verdict
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventType
from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.components import Components
from alert_handler.ops.periodic import Periodic
from alert_handler.store.state import STEP_WAIT, StateStore, StateWriteError

log = logging.getLogger(__name__)

# The controls' verdict on a device (EXCLUDE, a silence): `Controls.verdict`.
Steer = Callable[[int, str | None], Verdict | None]


@dataclass(frozen=True)
class ReconcileResult:
    """What one pass found."""

    adopted: tuple[int, ...] = ()
    picked_up: tuple[int, ...] = ()


def reconcile_once(
    api: LibreNMS,
    store: StateStore,
    rules: Rules,
    now: float,
    dismissed: dict[int, float],
    events: Emitter,
    steer: Steer,
    components: Components | None = None,
) -> ReconcileResult:
    """One pass; raises LibreNMSError if LibreNMS cannot be asked. A device taken on carries
    the journal's last original of it (restored instead of null if it is on UNSUPERVISED_IP)."""
    devices = api.list_devices()
    tracked = set(store.records())
    plan = plan_pass(
        devices,
        api.open_alerts(),
        tracked,
        dismissed,
        rules,
        steer,
        api.under_maintenance,
    )
    for skipped in plan.skipped:
        log.info(
            "device=%s step=reconcile open alert %s not picked up: %s",
            skipped.device_id,
            skipped.alert_id,
            skipped.why,
        )
    adopted: list[int] = []
    picked: list[int] = []
    for take in plan.take:
        rec = _take_on(store, take, now, events)
        if rec is None:
            continue
        if take.adopt:
            adopted.append(take.device_id)
            _log_adopted(take, rec)
        else:
            picked.append(take.device_id)
            log.warning(
                "device=%s step=reconcile open alert %s (%s) never reached the daemon: tracked",
                take.device_id,
                take.alert_id,
                plain(take.rule),
            )
    if components is not None:
        unsupervised = {d.device_id for d in devices if d.overwrite_ip == rules.unsupervised_ip}
        for device_id in components.sweep(lambda i: store.get(i) is not None, unsupervised):
            log.info("device=%s step=reconcile its leftover component removed", device_id)
    return ReconcileResult(tuple(adopted), tuple(picked))


def _take_on(store: StateStore, take: TakeOn, now: float, events: Emitter) -> DeviceRecord | None:
    """Track the device (unless something tracked it meanwhile), durably; its record or None."""

    def change(current: DeviceRecord | None) -> DeviceRecord | None:
        if current is not None:
            return current
        rec = new_record(
            take.device_id,
            now,
            hostname=take.hostname,
            release=take.release,
            found_unsupervised=take.adopt,
        )
        return events.known_original(rec)

    def lines(current: DeviceRecord | None, new: DeviceRecord | None) -> list[str]:
        if current is not None or new is None:
            return []
        return [events.line(EventType.TRACKED, new, detail=f"reconciliation: {take.why}")]

    before = store.get(take.device_id)
    rec, version = store.update(take.device_id, change, lines)
    if before is not None or rec is None:
        return None
    store.wait_durable(version, STEP_WAIT)
    return rec


def _log_adopted(take: TakeOn, rec: DeviceRecord) -> None:
    if take.release:
        known = "its original will be restored at once, and it is forgotten"
    elif rec.knows_original:
        known = (
            "its original: from its LibreNMS component if it has one, else the event journal's "
            f"last ({shown(rec.known_original)}) (the inspect step says which)"
        )
    else:
        known = (
            "its original: from its LibreNMS component if it has one, else unknown and restored "
            "to null (the inspect step says which)"
        )
    log.warning(
        "device=%s step=reconcile found on UNSUPERVISED_IP but not tracked: adopted; %s%s",
        take.device_id,
        known,
        f" ({take.why})" if take.release else "",
    )


FIRST_PASS_DELAY = 2.0  # seconds after start: the listener serves first


class Reconciler(Periodic):
    """Runs `reconcile_once` `first_delay` seconds after start, then every `interval` seconds,
    in its own thread. The first pass reads every device and open alert from LibreNMS (tens of
    thousands of rows, much CPU to parse): a daemon restarted in an alert storm answers the
    alerts first."""

    def __init__(
        self,
        api: LibreNMS,
        store: StateStore,
        rules: Rules,
        interval: float,
        clock: Callable[[], float],
        dismissed: Callable[[], dict[int, float]],
        wake: Callable[[], None],
        events: Emitter,
        steer: Steer,
        first_delay: float = FIRST_PASS_DELAY,
        components: Components | None = None,
        active: Callable[[], bool] | None = None,
    ) -> None:
        """`active`: whether passes may run now (HA: only while this daemon holds the lease;
        a pass runs as soon as it does)."""
        super().__init__("reconcile", self._pass, interval, first_delay, active=active)
        self.api = api
        self.store = store
        self.rules = rules
        self.clock = clock
        self._dismissed = dismissed
        self._wake = wake
        self._events = events
        self._steer = steer

        self._components = components

    def _pass(self) -> None:
        try:
            if not self.store.paused:
                result = reconcile_once(
                    self.api,
                    self.store,
                    self.rules,
                    self.clock(),
                    self._dismissed(),
                    self._events,
                    self._steer,
                    self._components,
                )
                if result.adopted or result.picked_up:
                    self._wake()
        except (LibreNMSError, StateWriteError) as exc:
            log.warning("step=reconcile failed: %s", exc)  # tried again next interval
