"""Reconciliation with LibreNMS, at start and every RECONCILE_INTERVAL_SEC: reads the devices
and open alerts and applies the core's rules (`core.reconciling.plan_pass`): adoption of devices
left on UNSUPERVISED_IP, pick-up of open alerts that never reached the daemon. A tracked device
whose overwrite_ip someone else changed is handled by the worker's verify step.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from alert_handler.core.alerts import plain
from alert_handler.core.controls import Verdict
from alert_handler.core.facts import LibreNMSError
from alert_handler.core.intake import new_record
from alert_handler.core.machine import Rules, shown
from alert_handler.core.reconciling import TakeOn, plan_pass
from alert_handler.core.records import DeviceRecord
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventType
from alert_handler.librenms.client import LibreNMS
from alert_handler.store.state import StateStore, StateWriteError

log = logging.getLogger(__name__)

# The controls' verdict on a device (EXCLUDE, a silence): `Controls.verdict`.
Steer = Callable[[int, str | None], Verdict | None]


def _nobody(_device_id: int, _hostname: str | None) -> Verdict | None:
    return None


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
        steer or _nobody,
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
    return ReconcileResult(tuple(adopted), tuple(picked))


def _take_on(
    store: StateStore, take: TakeOn, now: float, events: Emitter | None
) -> DeviceRecord | None:
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
        return rec if events is None else events.known_original(rec)

    def lines(current: DeviceRecord | None, new: DeviceRecord | None) -> list[str]:
        if events is None or current is not None or new is None:
            return []
        return [events.line(EventType.TRACKED, new, detail=f"reconciliation: {take.why}")]

    before = store.get(take.device_id)
    rec, version = store.update(take.device_id, change, lines)
    if before is not None or rec is None:
        return None
    store.wait_durable(version, 30.0)
    return rec


def _log_adopted(take: TakeOn, rec: DeviceRecord) -> None:
    if take.release:
        known = "its original will be restored at once, and it is forgotten"
    elif rec.knows_original:
        known = f"the journal's last original ({shown(rec.known_original)}) will be restored"
    else:
        known = "its original overwrite_ip is unknown and will be restored to null"
    log.warning(
        "device=%s step=reconcile found on UNSUPERVISED_IP but not tracked: adopted; %s%s",
        take.device_id,
        known,
        f" ({take.why})" if take.release else "",
    )


FIRST_PASS_DELAY = 2.0  # seconds after start: the listener serves first


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
    ) -> None:
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
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconcile", daemon=True)
        self.passes = 0  # passes ended (successful or not): tests wait on it

    def start(self) -> None:
        """Start the thread (the first pass runs `first_delay` seconds later)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    def _run(self) -> None:
        if self._stop.wait(self.first_delay):
            return
        while not self._stop.is_set():
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
                    )
                    if result.adopted or result.picked_up:
                        self._wake()
            except (LibreNMSError, StateWriteError) as exc:
                log.warning("step=reconcile failed: %s", exc)  # tried again next interval
            except Exception:
                log.exception("step=reconcile unexpected error")
            self.passes += 1
            self._stop.wait(self.interval)
