"""Reconciliation with LibreNMS, at start and every RECONCILE_INTERVAL_SEC.

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
import threading
from collections.abc import Callable
from dataclasses import dataclass

from alert_handler.core.alerts import plain
from alert_handler.core.facts import LibreNMSError
from alert_handler.core.machine import Rules
from alert_handler.core.records import DeviceRecord
from alert_handler.core.seen import suppression
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventType
from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.components import Components
from alert_handler.store.state import StateStore, StateWriteError

log = logging.getLogger(__name__)

# Why a device must be left alone (EXCLUDE, a silence), or None: `Controls.verdict`.
Steer = Callable[[int, str | None], object | None]


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
    events: Emitter | None = None,
    steer: Steer | None = None,
    components: Components | None = None,
) -> ReconcileResult:
    """One pass; raises LibreNMSError if LibreNMS cannot be asked. A device taken on carries
    the journal's last original of it (restored instead of null if it is on UNSUPERVISED_IP)."""
    adopted: list[int] = []
    picked: list[int] = []

    def add(device_id: int, hostname: str | None, why: str) -> bool:
        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            if current is not None:
                return current
            rec = DeviceRecord(
                device_id=device_id,
                hostname=hostname,
                first_seen=now,
                next_attempt_at=now,
                last_alert=now,
            )
            return rec if events is None else events.known_original(rec)

        def lines(current: DeviceRecord | None, new: DeviceRecord | None) -> list[str]:
            if events is None or current is not None or new is None:
                return []
            return [events.line(EventType.TRACKED, new, detail=f"reconciliation: {why}")]

        before = store.get(device_id)
        rec, version = store.update(device_id, change, lines)
        if before is None and rec is not None:
            store.wait_durable(version, 30.0)
            return True
        return False

    devices = api.list_devices()
    by_id = {device.device_id: device for device in devices}
    for device in devices:
        if device.overwrite_ip == rules.unsupervised_ip and store.get(device.device_id) is None:
            if add(device.device_id, device.hostname, "found on UNSUPERVISED_IP, not tracked"):
                adopted.append(device.device_id)
                rec = store.get(device.device_id)
                if rec is not None and rec.knows_original:
                    shown = "null" if rec.known_original is None else rec.known_original
                    known = f"else the event journal's last ({shown})"
                else:
                    known = "else unknown and restored to null"
                log.warning(
                    "device=%s step=reconcile found on UNSUPERVISED_IP but not tracked: "
                    "adopted; its original: from its LibreNMS component if it has one, %s "
                    "(the inspect step says which)",
                    device.device_id,
                    known,
                )
    if components is not None:
        unsupervised = {d.device_id for d in devices if d.overwrite_ip == rules.unsupervised_ip}
        tracked = lambda device_id: store.get(device_id) is not None  # noqa: E731
        for device_id in components.sweep(tracked, unsupervised):
            log.info("device=%s step=reconcile its leftover component removed", device_id)
    for alert in api.open_alerts():
        if not alert.alerted:
            continue  # LibreNMS held it back (maintenance, mute, delay, parents down)
        if rules.trigger_rules and alert.rule_name not in rules.trigger_rules:
            continue
        if store.get(alert.device_id) is not None:
            continue
        let_go = dismissed.get(alert.device_id)
        if let_go is not None and (alert.raised_at is None or alert.raised_at <= let_go):
            continue  # raised before the daemon let the device go (LIBRENMS_TIMEZONE)
        row = by_id.get(alert.device_id)
        if row is None:
            continue  # deleted since the alert was raised
        kept_away = steer(alert.device_id, row.hostname) if steer is not None else None
        if kept_away is not None:
            log.info(
                "device=%s step=reconcile open alert %s not picked up: %s",
                alert.device_id,
                alert.alert_id,
                kept_away,
            )
            continue
        held = suppression(row, api.under_maintenance(alert.device_id))
        if held is not None:
            log.info(
                "device=%s step=reconcile open alert %s not picked up: %s",
                alert.device_id,
                alert.alert_id,
                held.value,
            )
            continue
        if add(alert.device_id, None, f"open alert {alert.alert_id} never reached the daemon"):
            picked.append(alert.device_id)
            log.warning(
                "device=%s step=reconcile open alert %s (%s) never reached the daemon: tracked",
                alert.device_id,
                alert.alert_id,
                plain(alert.rule_name),
            )
    return ReconcileResult(tuple(adopted), tuple(picked))


FIRST_PASS_DELAY = 2.0  # seconds after start: the listener serves first
_STANDBY_LOOK = 0.5  # seconds between looks whether an HA standby took the lease


class Reconciler:
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
        events: Emitter | None = None,
        steer: Steer | None = None,
        first_delay: float = FIRST_PASS_DELAY,
        components: Components | None = None,
        active: Callable[[], bool] | None = None,
    ) -> None:
        """`active`: whether passes may run now (HA: only while this daemon holds the lease;
        a pass runs as soon as it does)."""
        self._active = active
        self._kick = threading.Event()
        self.api = api
        self.first_delay = first_delay
        self.store = store
        self.rules = rules
        self.interval = interval
        self.clock = clock
        self._dismissed = dismissed
        self._wake = wake
        self._events = events
        self._steer = steer
        self._components = components
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)

    def start(self) -> None:
        """Start the thread (the first pass runs `first_delay` seconds later)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self._kick.set()

    def trigger(self) -> None:
        """Run a pass now (HA: the lease was just taken)."""
        self._kick.set()

    def _run(self) -> None:
        if self._stop.wait(self.first_delay):
            return
        while not self._stop.is_set():
            if self._active is not None and not self._active():
                self._stop.wait(_STANDBY_LOOK)  # a standby: a pass once it holds the lease
                continue
            self._kick.clear()
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
            except Exception:
                log.exception("step=reconcile unexpected error")
            self._kick.wait(self.interval)
