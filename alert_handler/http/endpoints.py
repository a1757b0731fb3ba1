"""What the HTTP endpoints do, apart from HTTP: each method returns (status, JSON-able body).

The request thread only validates, changes the in-memory state, waits until that change is on
disk, and wakes the recovery thread. It never calls LibreNMS or SSH.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alert_handler.core import machine as recovery
from alert_handler.core.alerts import Alert, BadPayload, log_safe, parse_alert, parse_device_id
from alert_handler.core.machine import Decision, Reason, Rules
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import iso
from alert_handler.http.views import device_row
from alert_handler.metrics import Metrics
from alert_handler.scheduler import Liveness, Scheduler
from alert_handler.store.state import StateStore, StateWriteError
from alert_handler.throttle import Throttle

log = logging.getLogger(__name__)

Reply = tuple[int, dict[str, Any]]
_DURABLE_TIMEOUT = 5.0  # well inside LibreNMS's 30 s transport timeout


def _safe(text: str | None) -> str:
    """A payload value made safe for one log line (control characters escaped)."""
    if text is None:
        return "-"
    return log_safe(text, 120)


@dataclass
class App:
    """The daemon's endpoints, bound to its store and scheduler."""

    store: StateStore
    scheduler: Scheduler
    rules: Rules
    metrics: Metrics
    auth_enabled: bool = True
    dry_run: bool = False
    clock: Callable[[], float] = time.time
    _persist_trouble: Throttle = field(default_factory=Throttle, repr=False)

    def __post_init__(self) -> None:
        self.metrics.paused.set(1 if self.store.paused else 0)

    # -- webhook -----------------------------------------------------------------------------
    def receive(self, body: bytes, query: str, client: str) -> Reply:
        """POST /alert."""
        try:
            alert = parse_alert(body, query)
        except BadPayload as exc:
            self.metrics.alerts.labels("rejected").inc()
            log.warning("step=webhook client=%s rejected: %s", client, exc)
            return 400, {"error": str(exc)}
        self.scheduler.alert_arrived()  # recovery yields to acks while alerts arrive
        holder: list[Decision] = []

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            decision = recovery.on_alert(current, alert, self.clock(), self.rules)
            holder.append(decision)
            return decision.record

        _, version = self.store.update(alert.device_id, change)
        decision = holder[0]
        try:
            self.store.wait_durable(version, _DURABLE_TIMEOUT)
        except StateWriteError as exc:
            self.metrics.alerts.labels("unavailable").inc()
            held = self._persist_trouble.take()
            if held is not None:  # a full disk during a storm would otherwise log every alert
                more = f" ({held} more in the last minute)" if held else ""
                log.error(
                    "device=%s step=webhook cannot persist alert: %s%s", alert.device_id, exc, more
                )
            return 503, {"error": "state file cannot be written: the alert is not on disk yet"}
        self._log_alert(alert, decision, client)
        if decision.new and self.store.paused:
            log.warning(
                "device=%s step=webhook paused: recorded, not handled until `alert-handler resume`",
                alert.device_id,
            )
        if decision.reason in (Reason.NEW_DEVICE, Reason.RECHECK):
            self.scheduler.wake()
        if decision.new:
            self.metrics.alerts.labels("accepted").inc()
            return 202, {"status": "accepted", "device_id": alert.device_id, "new": True}
        if decision.reason is Reason.REPEAT or decision.reason is Reason.RECHECK:
            self.metrics.alerts.labels("repeat").inc()
            return 200, {
                "status": "repeat" if decision.reason is Reason.REPEAT else "recheck",
                "device_id": alert.device_id,
                "new": False,
            }
        self.metrics.alerts.labels("ignored").inc()
        return 200, {
            "status": "ignored",
            "device_id": alert.device_id,
            "reason": decision.reason.value,
        }

    def _log_alert(self, alert: Alert, decision: Decision, client: str) -> None:
        log.info(
            "device=%s step=webhook state=%s rule=%s host=%s ip=%s client=%s -> %s",
            alert.device_id,
            alert.state,
            _safe(alert.rule),
            _safe(alert.host),
            _safe(alert.ip),
            client,
            decision.reason.value,
        )

    # -- operator endpoints ------------------------------------------------------------------
    def health(self) -> Reply:
        """GET /health: 503 when the recovery loop is dead or stuck or the state cannot be
        written."""
        loop = self.scheduler.thread_state()
        alive = loop is Liveness.ALIVE
        writable = self.store.healthy
        body: dict[str, Any] = {
            "status": "ok" if alive and writable else "error",
            "tracked": self.store.count(),
            "recovery_thread": loop.value,
            "state_file": "ok" if writable else "unwritable",
            "last_cycle": iso(self.scheduler.last_cycle),
            "paused": self.store.paused,
            "dry_run": self.dry_run,
            "auth": "enabled" if self.auth_enabled else "disabled",
            "thread_restarts": self.scheduler.restarts,
        }
        return (200 if alive and writable else 503), body

    def devices(self) -> Reply:
        """GET /devices: the tracked devices."""
        rows = [device_row(rec) for _, rec in sorted(self.store.records().items())]
        return 200, {"status": "ok", "paused": self.store.paused, "devices": rows}

    def release(self, raw_id: str) -> Reply:
        """POST /devices/<id>/release: restore the original now and forget the device."""
        device_id = parse_device_id(raw_id)
        rec, version = self.store.update(
            device_id,
            lambda cur: None if cur is None else recovery.request_release(cur, self.clock()).record,
        )
        if rec is None:
            return 404, {"error": f"device {device_id} is not tracked"}
        log.info("device=%s step=release requested by the operator", device_id)
        body = {
            "status": "releasing",
            "device_id": device_id,
            "original_recorded": rec.original_recorded,
            "first_seen": iso(rec.first_seen),
            "original_overwrite_ip": rec.original_overwrite_ip,
        }
        return self._commit(version, body)

    def track(self, raw_id: str) -> Reply:
        """POST /devices/<id>/track: handle a device as if an alert had arrived."""
        device_id = parse_device_id(raw_id)
        holder: list[Decision] = []

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            decision = recovery.track(current, device_id, self.clock())
            holder.append(decision)
            return decision.record

        _, version = self.store.update(device_id, change)
        new = holder[0].new
        body = {"status": "tracked", "device_id": device_id, "paused": self.store.paused}
        status, body = self._commit(version, body)
        if status == 200 and new:
            log.info("device=%s step=track tracked by hand", device_id)
            return 202, {**body, "new": True}
        return status, {**body, "new": False}

    def set_paused(self, paused: bool) -> Reply:
        """POST /pause and /resume: maintenance mode, persisted."""
        version = self.store.set_paused(paused)
        reply = self._commit(version, {"status": "ok", "paused": paused})
        self.metrics.paused.set(1 if self.store.paused else 0)
        if reply[0] == 200:
            log.warning(
                "step=maintenance %s", "paused: no device will be changed" if paused else "resumed"
            )
        return reply

    def _commit(self, version: int, body: dict[str, Any]) -> Reply:
        try:
            self.store.wait_durable(version, _DURABLE_TIMEOUT)
        except StateWriteError:
            return 503, {"error": "state file cannot be written"}
        self.scheduler.wake()
        return 200, body
