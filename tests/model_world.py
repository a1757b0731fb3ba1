"""The one in-memory LibreNMS and the one JobHost of the in-process tests.

`MemoryLibreNMS` is LibreNMS as the daemon's ports see it (devices, ports, open alerts, device
groups) and the poller: a dict of devices, no socket. Every call is recorded in `calls` and
asks `fault(call)` how it goes, so a test can make a call fail before or after it reached the
database, or kill the daemon in the middle of it:

- "ok": answered;
- "fail": HTTP 500, nothing applied; "fail_applied": applied, the answer lost (HTTP 500);
- "crash" / "crash_applied": the daemon dies (`Crash`) before / after the change was applied.

For a poll, "exit6" and "exit1" are answers, "error" a PollError. A test that only wants one
call to fail names it in `fail` with the exception to raise. Every PATCH of overwrite_ip goes to
`on_patch(device_id, value)` before it is applied (a test checks it there, without raising: the
step runner would take an exception for a failed step).

`DictHost` is the scheduler's side of a job (`steps.JobHost`) over a dict of records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alert_handler.core.facts import (
    DeviceInfo,
    DeviceNotFound,
    LibreNMSError,
    OpenAlert,
    PollError,
    PollResult,
    PortInfo,
)
from alert_handler.core.machine import Action
from alert_handler.core.records import DeviceRecord, merge_alert_fields
from alert_handler.core.steps import StepReport

UNSUP = "127.0.0.50"
TRIGGER = "Port2 down"
DEVICE_DOWN = "Devices up/down"
SUPPRESSIONS = ("maintenance", "disabled", "ignore")


class Crash(BaseException):
    """The daemon died in the middle of a call: nothing after this point happens."""


@dataclass
class Device:
    """One device row, its port2 and what LibreNMS itself does with it."""

    device_id: int
    overwrite_ip: str | None = None
    hostname: str | None = None
    port2: str | None = "down"  # ifOperStatus of port2; None: the device has no port2
    port_gen: int = 0  # times port2 vanished and came back (a new port_id each time)
    suppressed: str | None = None  # maintenance, disabled or ignore
    groups: set[str] = field(default_factory=set)
    gone: bool = False  # deleted from LibreNMS
    poller_group: int = 0
    status: bool = True
    port2_id: int | None = None  # port2's first port_id (default: device_id * 100 + 2)

    def port_id_of(self, gen: int) -> int:
        """port2's port_id after it came back `gen` times."""
        first = self.device_id * 100 + 2 if self.port2_id is None else self.port2_id
        return first + 1000 * gen

    @property
    def port_id(self) -> int:
        """port2's current port_id."""
        return self.port_id_of(self.port_gen)


@dataclass
class AlertRow:
    """One row of LibreNMS's alerts table: state 1 open, 2 acknowledged, 0 recovered."""

    alert_id: int
    device_id: int
    rule_name: str | None
    state: int = 1
    alerted: bool = True  # LibreNMS notified it (not held back by its own suppression)
    raised_at: float | None = None


def _always_ok(call: str) -> str:
    return "ok"


class MemoryLibreNMS:
    """LibreNMS (the API the daemon calls) and the poller, in memory."""

    def __init__(
        self,
        devices: dict[int, Device] | None = None,
        *,
        fault: Callable[[str], str] = _always_ok,
        on_patch: Callable[[int, str | None], None] | None = None,
    ) -> None:
        self.devices: dict[int, Device] = dict(devices or {})
        self.alerts: dict[int, AlertRow] = {}
        self.fault = fault
        self.on_patch = on_patch
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []
        self.patches: list[tuple[int, str | None]] = []  # PATCHes that reached the database
        self.ticks = 0  # calls made: tests let each one take a second
        # Device components (what librenms/components.py keeps each original in): id ->
        # (device_id, type, attributes as strings), as LibreNMS's four component routes use them.
        self.components: dict[int, tuple[int, str, dict[str, str]]] = {}
        self._next_component = 1
        self.dry_run = False

    # -- plumbing ----------------------------------------------------------------------------
    def device(self, device_id: int) -> Device:
        """The device row (created on first use, as in a test that names one device)."""
        return self.devices.setdefault(device_id, Device(device_id, hostname=f"cpe-{device_id}"))

    def _io(
        self,
        call: str,
        device_id: int | None = None,
        *,
        gone_is_404: bool = False,
        apply: Callable[[], None] | None = None,
    ) -> None:
        self.calls.append(call)
        self.ticks += 1
        if call in self.fail:
            raise self.fail[call]
        result = self.fault(call)
        if result == "crash":
            raise Crash
        if gone_is_404 and device_id is not None and self.device(device_id).gone:
            raise DeviceNotFound(f"device {device_id} not found", status=404)
        if apply is not None and result in ("ok", "fail_applied", "crash_applied"):
            apply()
        if result == "crash_applied":
            raise Crash
        if result in ("fail", "fail_applied"):
            raise LibreNMSError(f"{call}: HTTP 500 Server Error", status=500, retryable=True)

    def _info(self, dev: Device) -> DeviceInfo:
        return DeviceInfo(
            dev.device_id,
            dev.hostname,
            dev.overwrite_ip,
            None,
            dev.status,
            poller_group=dev.poller_group,
            disabled=dev.suppressed == "disabled",
            ignore=dev.suppressed == "ignore",
        )

    # -- device components: LibreNMS's four routes, as `component_api` calls them -------------
    def _call(
        self, method: str, path: str, endpoint: str, *, body: Any = None, params: Any = None
    ) -> tuple[int, dict[str, Any]]:
        """GET/POST/PUT/DELETE /devices/{id}/components[/...], the traps included: no
        `components` key when there are none, PUT replaces the attribute set (null stored as
        ""), a DELETE of a missing id fails."""
        parts = path.strip("/").split("/")
        device_id = int(parts[1])
        if method == "GET":
            self._io("components", device_id)
            kind = (params or {}).get("type")
            rows = {
                cid: {**attrs, "type": k, "label": "", "status": 0, "ignore": 0, "disabled": 0}
                for cid, (dev, k, attrs) in self.components.items()
                if dev == device_id and (kind is None or k == kind)
            }
            return 200, ({"status": "ok", "components": rows} if rows else {"status": "ok"})
        if method == "POST":
            made: list[int] = []

            def add() -> None:
                made.append(self._next_component)
                self.components[self._next_component] = (device_id, parts[3], {})
                self._next_component += 1

            self._io("component_add", device_id, apply=add)
            return 200, {"status": "ok", "components": {made[0]: {"label": None}}}
        if method == "PUT":
            ((key, fields),) = dict(body).items()

            def edit() -> None:
                dev, kind, _ = self.components[int(key)]
                attrs = {k: "" if v is None else str(v) for k, v in fields.items()}
                self.components[int(key)] = (dev, kind, attrs)

            self._io("component_edit", device_id, apply=edit)
            return 200, {"status": "ok"}
        component_id = int(parts[3])
        if component_id not in self.components:
            self._io("component_delete", device_id)
            raise LibreNMSError("DELETE component: HTTP 500 Server Error", status=500)

        def delete() -> None:
            del self.components[component_id]

        self._io("component_delete", device_id, apply=delete)
        return 200, {"status": "ok"}

    # -- the LibreNMS port -------------------------------------------------------------------
    def get_device(self, device_id: int) -> DeviceInfo:
        self._io("get_device", device_id, gone_is_404=True)
        return self._info(self.device(device_id))

    def under_maintenance(self, device_id: int) -> bool:
        self._io("maintenance", device_id, gone_is_404=True)
        return self.device(device_id).suppressed == "maintenance"

    def device_ports(self, device_id: int) -> list[PortInfo]:
        self._io("ports", device_id)
        dev = self.device(device_id)
        if dev.gone:
            return []  # LibreNMS answers 404 "No ports found"
        base = device_id * 100
        # Names the API's substring search also finds, both up: only port2 itself counts.
        ports = [PortInfo(base + 20, "port20", "up"), PortInfo(base + 21, "Port2-backup", "up")]
        if dev.port2 is not None:
            # Rows of the interfaces that vanished: deleted=1, their ifOperStatus stale (and
            # "up", the misleading case). A client must not trust them.
            ports += [
                PortInfo(dev.port_id_of(old), "port2", "up", deleted=True)
                for old in range(dev.port_gen)
            ]
            ports.append(PortInfo(dev.port_id, "port2", dev.port2))
        return ports

    def set_overwrite_ip(self, device_id: int, value: str | None) -> None:
        if self.on_patch is not None:
            self.on_patch(device_id, value)

        def apply() -> None:
            self.device(device_id).overwrite_ip = value
            self.patches.append((device_id, value))

        self._io("patch", device_id, gone_is_404=True, apply=apply)

    def discover(self, device_id: int) -> None:
        self._io("discover", device_id)  # 200 even for an unknown device

    def _alerts(self, call: str, state: int) -> list[OpenAlert]:
        self._io(call)
        return [
            OpenAlert(a.alert_id, a.device_id, a.rule_name, a.state, None, a.alerted, a.raised_at)
            for a in sorted(self.alerts.values(), key=lambda a: a.alert_id)
            if a.state == state and not self.device(a.device_id).gone
        ]

    def open_alerts(self) -> list[OpenAlert]:
        return self._alerts("alerts", 1)

    def acknowledged_alerts(self) -> list[OpenAlert]:
        return self._alerts("acked_alerts", 2)

    def _set_alert(self, call: str, alert_id: int, state: int) -> None:
        def apply() -> None:
            row = self.alerts.get(alert_id)
            if row is not None and row.state != 0:
                row.state = state

        self._io(call, apply=apply)  # 200 even for no such alert

    def ack_alert(self, alert_id: int, note: str) -> None:
        self._set_alert("ack", alert_id, 2)

    def unmute_alert(self, alert_id: int, note: str) -> None:
        self._set_alert("unmute", alert_id, 1)

    def list_devices(self) -> list[DeviceInfo]:
        self._io("list_devices")
        return [self._info(d) for _, d in sorted(self.devices.items()) if not d.gone]

    def group_members(self, name: str) -> set[int] | None:
        self._io("group_members")
        known = {g for d in self.devices.values() for g in d.groups}
        if name not in known:
            return None
        return {d.device_id for d in self.devices.values() if name in d.groups and not d.gone}

    def close(self) -> None:
        """Nothing to close (the daemon closes its client at shutdown)."""

    # -- the poller --------------------------------------------------------------------------
    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        self.calls.append("poll")
        self.ticks += 1
        if "poll" in self.fail:
            raise self.fail["poll"]
        result = self.fault("poll")
        if result == "crash":
            raise Crash
        if result == "error":
            raise PollError("ssh: connection refused")
        dev = self.device(device_id)
        exit_status = 0
        if dev.gone or result == "exit1":
            exit_status = 1
        elif result == "exit6" or dev.overwrite_ip == UNSUP:
            exit_status = 6  # nothing answers on UNSUPERVISED_IP
        return PollResult(device_id, exit_status, (), 1.0)

    def labels(self) -> list[str]:
        """The poller hosts, as `metrics.known_pollers` wants them."""
        return []

    # -- what LibreNMS does by itself --------------------------------------------------------
    def raise_alert(self, device_id: int, rule: str, now: float) -> AlertRow:
        """LibreNMS raises (or keeps) the rule's alert for the device; it notifies it unless it
        leaves the device alone itself."""
        for row in self.alerts.values():
            if row.device_id == device_id and row.rule_name == rule and row.state != 0:
                return row
        alert_id = max(self.alerts, default=0) + 1
        row = AlertRow(
            alert_id,
            device_id,
            rule,
            alerted=self.device(device_id).suppressed is None,
            raised_at=now,
        )
        self.alerts[alert_id] = row
        return row

    def recover_alert(self, device_id: int, rule: str) -> AlertRow | None:
        """The rule's open alert of the device clears (state 0); None if there was none."""
        for row in self.alerts.values():
            if row.device_id == device_id and row.rule_name == rule and row.state != 0:
                row.state = 0
                return row
        return None


class DictHost:
    """A JobHost over a dict of records: every decision is stored at once (`persist` can be
    made to fail with `persist_ok`, `durable` with `durable_ok`, or a subclass decides); `ran`
    lists the actions run.
    `pause_after`: maintenance mode turns on once a step of that action is persisted."""

    def __init__(
        self, *records: DeviceRecord, pause_after: Action | None = None, merge: bool = False
    ) -> None:
        self.records: dict[int, DeviceRecord] = {rec.device_id: rec for rec in records}
        self.pause_after = pause_after
        self.is_paused = False
        self.ran: list[Action] = []
        self.durable_ok = True
        self.persist_ok = True
        self.merge = merge  # keep the alert fields the store has now (the scheduler's merge)
        self.before_persist: Callable[[DeviceRecord, StepReport], None] | None = None

    def get(self, device_id: int) -> DeviceRecord | None:
        return self.records.get(device_id)

    def paused(self) -> bool:
        return self.is_paused

    def stopping(self) -> bool:
        return False

    def durable(self) -> bool:
        return self.durable_ok

    def starting(self, device_id: int, action: Action) -> None:
        self.ran.append(action)

    def persist(self, before: DeviceRecord, report: StepReport) -> bool:
        if self.before_persist is not None:
            self.before_persist(before, report)
        decided = report.decision.record
        current = self.records.get(before.device_id)
        if decided is None or (self.merge and current is None):
            self.records.pop(before.device_id, None)
        else:
            if self.merge and current is not None:
                decided = merge_alert_fields(decided, current)
            self.records[before.device_id] = decided
        if report.action is self.pause_after:
            self.is_paused = True
        return self.persist_ok
