"""What the HTTP endpoints do, apart from HTTP: each method returns (status, JSON-able body).

The request thread only validates, changes the in-memory state, waits until that change is on
disk, and wakes the recovery thread. It never calls LibreNMS or SSH.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from alert_handler.core import intake
from alert_handler.core.alerts import (
    Alert,
    BadPayload,
    excerpt,
    json_object,
    log_safe,
    parse_alert,
    parse_device_id,
)
from alert_handler.core.machine import Decision, Reason, Rules, forced_count
from alert_handler.core.outcomes import IGNORED, meaning
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import iso
from alert_handler.events.emit import Emitter
from alert_handler.events.journal import EventType
from alert_handler.events.page import PageData, render_page
from alert_handler.http import routes
from alert_handler.http.views import device_row
from alert_handler.ops.health import Health, Level
from alert_handler.ops.metrics import Metrics
from alert_handler.ops.throttle import Throttle
from alert_handler.recovery.scheduler import Scheduler
from alert_handler.steering.controls import Controls, silence_row
from alert_handler.steering.endpoints import Reply, Steering
from alert_handler.store.state import ACK_WAIT, StateStore, StateWriteError

log = logging.getLogger(__name__)


def _safe(text: str | None) -> str:
    """A payload value made safe for one log line (control characters escaped)."""
    if text is None:
        return "-"
    return log_safe(text, 120)


@dataclass
class App:
    """The daemon's endpoints, bound to its store and scheduler; the steering endpoints are
    `steering`'s."""

    store: StateStore
    scheduler: Scheduler
    rules: Rules
    metrics: Metrics
    health_model: Health
    controls: Controls
    events: Emitter
    auth_enabled: bool = True
    dry_run: bool = False
    clock: Callable[[], float] = time.time
    _persist_trouble: Throttle = field(default_factory=Throttle, repr=False)
    ha: Callable[[], dict[str, Any]] | None = None  # the HA lease's status (HA_REDIS_URL)
    steering: Steering = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.steering = Steering(
            self.store,
            self.scheduler.admission,
            self.controls,
            self.clock,
            self._operator,
            self._commit,
            self.scheduler.wake,
        )
        self.metrics.paused.set(1 if self.store.paused else 0)
        self.metrics.declare_endpoints(routes.endpoint_labels())

    # -- webhook -----------------------------------------------------------------------------
    def receive(self, body: bytes, query: str, client: str) -> Reply:
        """POST /alert."""
        try:
            alert = parse_alert(body, query)
        except BadPayload as exc:
            self.metrics.alerts.labels("rejected").inc()
            # The excerpt lets `line 1 column 94` be found in the transport's body template.
            log.warning(
                "step=webhook client=%s rejected (400): %s; body: %s",
                client,
                exc,
                excerpt(body, exc.position),
            )
            return 400, {"error": str(exc)}
        self.scheduler.alert_arrived()  # recovery yields to acks while alerts arrive
        steer = self.controls.verdict(alert.device_id, alert.host)
        holder: list[Decision] = []

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            decision = intake.on_alert(current, alert, self.clock(), self.rules, steer)
            holder.append(decision)
            return self._known(decision)

        detail = f"alert: {_safe(alert.rule)} (client {client})"
        _, version = self.store.update(alert.device_id, change, self._tracked(holder, detail))
        decision = holder[0]
        try:
            self.store.wait_durable(version, ACK_WAIT)
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
        if decision.reason in (Reason.NEW_DEVICE, Reason.RECHECK, Reason.LET_GO):
            self.scheduler.wake()
        reply = meaning(decision.reason).reply or IGNORED
        self.metrics.alerts.labels(reply.counted).inc()
        answer: dict[str, Any] = {"status": reply.status, "device_id": alert.device_id}
        if reply.status == "ignored":
            answer["reason"] = decision.detail or decision.reason.value
        else:
            answer["new"] = decision.new
        return reply.code, answer

    # -- events ------------------------------------------------------------------------------
    def _known(self, decision: Decision) -> DeviceRecord | None:
        """The decided record; a new one carries the journal's last original of its device."""
        rec = decision.record
        if decision.new and rec is not None:
            return self.events.known_original(rec)
        return rec

    def _tracked(
        self, holder: list[Decision], detail: str
    ) -> Callable[[DeviceRecord | None, DeviceRecord | None], list[str]]:
        """The events of a change (run under the store's lock): `tracked` for a new device,
        the closing event of one it forgets (`outcomes.MEANINGS`)."""

        def lines(current: DeviceRecord | None, new: DeviceRecord | None) -> list[str]:
            if not holder:
                return []
            # The record as stored (with the journal's last original), not as decided.
            decision = holder[0] if new is None else replace(holder[0], record=new)
            return self.events.intake_lines(current, decision, detail)

        return lines

    def _operator(self, what: str, client: str, device_id: int | None = None) -> list[str]:
        line = self.events.line(EventType.OPERATOR, device_id=device_id, detail=what, client=client)
        return [line]

    def _log_alert(self, alert: Alert, decision: Decision, client: str) -> None:
        log.info(
            "device=%s step=webhook state=%s rule=%s host=%s ip=%s client=%s -> %s",
            alert.device_id,
            alert.state,
            _safe(alert.rule),
            _safe(alert.host),
            _safe(alert.ip),
            client,
            decision.reason.value + (f" ({decision.detail})" if decision.detail else ""),
        )

    # -- operator endpoints ------------------------------------------------------------------
    def health(self) -> Reply:
        """GET /health: `ok`; `degraded` (200) when LibreNMS or the poller keep failing or are
        misconfigured; `critical` (503) when the recovery loop is dead or stuck or the state
        cannot be written. With each dependency's failures in a row and last success."""
        report = self.health_model.check()
        loop = self.scheduler.thread_state()
        writable = self.store.healthy
        body: dict[str, Any] = {
            "status": report.level.value,
            "reasons": list(report.reasons),
            "tracked": self.store.count(),
            "recovery_thread": loop.value,
            "state_file": "ok" if writable else "unwritable",
            "last_cycle": iso(self.scheduler.last_cycle),
            "paused": self.store.paused,
            "dry_run": self.dry_run,
            "auth": "enabled" if self.auth_enabled else "disabled",
            "thread_restarts": self.scheduler.restarts,
            "dependencies": report.dependencies,
        }
        if self.ha is not None:
            body["ha"] = self.ha()
        return (503 if report.level is Level.CRITICAL else 200), body

    def status_page(self) -> str:
        """GET /: the read-only status page (HTML)."""
        records = self.store.records()
        now = self.clock()
        data = PageData(
            now=now,
            health=self.health()[1],
            devices=list(records.values()),
            episodes=self.events.book.recent(),
            paused=self.store.paused,
            storm_engaged=self.scheduler.admission.storm_engaged,
            max_forced_down=self.scheduler.admission.max_forced_down,
            forced_down=forced_count(records),
            down_series=self.events.timeline.series(now) if self.events is not None else (),
            silences=[silence_row(x) for x in self.controls.silences()] if self.controls else (),
        )
        return render_page(data)

    def devices(self) -> Reply:
        """GET /devices: the tracked devices."""
        rows = [device_row(rec) for _, rec in sorted(self.store.records().items())]
        return 200, {
            "status": "ok",
            "paused": self.store.paused,
            "devices": rows,
            "storm_engaged": self.scheduler.admission.storm_engaged,
            "silences": [silence_row(s) for s in self.controls.silences()],
            "held": sum(1 for row in rows if row["held"]),
        }

    def release(self, raw_id: str, client: str = "-") -> Reply:
        """POST /devices/<id>/release: restore the original now and forget the device. An
        untracked one is recorded as NEW asking for release (see machine.release_untracked),
        with the journal's last original of the device when there is one."""
        device_id = parse_device_id(raw_id)
        holder: list[Decision] = []

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            if current is None:
                decision = intake.release_untracked(device_id, self.clock())
            else:
                decision = intake.request_release(current, self.clock())
            holder.append(decision)
            return self._known(decision)

        def lines(_current: DeviceRecord | None, _new: DeviceRecord | None) -> list[str]:
            return self._operator("release", client, device_id)

        rec, version = self.store.update(device_id, change, lines)
        assert rec is not None  # both decisions keep a record
        tracked = not holder[0].new
        log.info(
            "device=%s step=release requested by the operator (client %s)%s",
            device_id,
            client,
            "" if tracked else " (not tracked: restored only if on UNSUPERVISED_IP)",
        )
        body = {
            "status": "releasing",
            "device_id": device_id,
            "tracked": tracked,
            "original_recorded": rec.original_recorded,
            "first_seen": iso(rec.first_seen),
            "original_overwrite_ip": rec.original_overwrite_ip,
            "journal_original": rec.knows_original,  # an untracked device's, from the journal
        }
        return self._commit(version, body)

    def track(self, raw_id: str, client: str = "-", body: bytes = b"") -> Reply:
        """POST /devices/<id>/track {"overwrite_ip"?}: handle a device as if an alert had
        arrived. An excluded or silenced device is refused, 409 with the reason, and nothing
        changes (`alert-handler track` prints it and exits 1). `overwrite_ip`: what the caller
        read in LibreNMS just before (the CLI does); UNSUPERVISED_IP there means the device is
        changed already, so the confirmation gate never holds it."""
        device_id = parse_device_id(raw_id)
        seen = json_object(body).get("overwrite_ip")
        if seen is not None and not isinstance(seen, str):
            raise BadPayload("overwrite_ip must be text or null")
        found_unsupervised = seen is not None and seen == self.rules.unsupervised_ip
        current = self.store.get(device_id)
        steer = self.controls.verdict(device_id, current.hostname if current else None)
        holder: list[Decision] = []

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            decision = intake.track(
                current, device_id, self.clock(), steer, found_unsupervised=found_unsupervised
            )
            holder.append(decision)
            return self._known(decision)

        tracked = self._tracked(holder, f"tracked by hand (client {client})")

        def lines(current: DeviceRecord | None, new: DeviceRecord | None) -> list[str]:
            return self._operator("track", client, device_id) + tracked(current, new)

        refused = intake.track(self.store.get(device_id), device_id, self.clock(), steer)
        if meaning(refused.reason).refuses:
            log.info(
                "device=%s step=track by hand (client %s) -> %s (%s): nothing changed",
                device_id,
                client,
                refused.reason.value,
                refused.detail,
            )
            return 409, {
                "error": f"device {device_id} is left alone: {refused.detail}; nothing changed",
                "device_id": device_id,
                "reason": refused.detail,
            }
        _, version = self.store.update(device_id, change, lines)
        new = holder[0].new
        reply = {"status": "tracked", "device_id": device_id, "paused": self.store.paused}
        status, reply = self._commit(version, reply)
        if status == 200 and new:
            log.info("device=%s step=track tracked by hand", device_id)
            return 202, {**reply, "new": True}
        return status, {**reply, "new": False}

    def set_paused(self, paused: bool, client: str = "-") -> Reply:
        """POST /pause and /resume: maintenance mode, persisted."""
        kind = EventType.PAUSED if paused else EventType.RESUMED
        lines = [self.events.line(kind, detail=f"by the operator at {client}", client=client)]
        version = self.store.set_paused(paused, lines)
        reply = self._commit(version, {"status": "ok", "paused": paused})
        self.metrics.paused.set(1 if self.store.paused else 0)
        if reply[0] == 200:
            log.warning(
                "step=maintenance %s", "paused: no device will be changed" if paused else "resumed"
            )
        return reply

    def _commit(self, version: int, body: dict[str, Any]) -> Reply:
        try:
            self.store.wait_durable(version, ACK_WAIT)
        except StateWriteError:
            return 503, {"error": "state file cannot be written"}
        self.scheduler.wake()
        return 200, body
