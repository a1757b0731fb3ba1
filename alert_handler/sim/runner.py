"""LibreNMS's own loop as the simulator plays it: every device polled on an interval (the
dispatcher), its alert rules run after each poll (`AlertRules::run`), then the alert runner
(`RunAlerts::runAlerts`) sending alerts and recovery notices through the API transport.

The notification rules are those of a rule's own settings (LibreNMS before 26.4, and the
operation segments that replaced them keep the same meaning), read in RunAlerts.php:
- delay: no notification until the alert has been active this long (recoveries are not delayed);
- interval: at most one notification per interval;
- count (max alerts): how many times an active alert is notified; -1 without limit;
- recovery: whether a recovery notice is sent; only for an alert that was notified
  (`alerted` != 0), so an alert that recovered within its delay is never heard of.
`alerted` takes the state notified before the transport is called (a failed delivery is never
retried, as in LibreNMS); ignored, disabled and muted devices are not notified; acknowledged
alerts are skipped. `AlertRules` is pure over the tables (the caller holds the simulator's lock
and passes the time); `AlertRunner` is the thread. It is opt-in: `alert-handler simulator` starts
one (`--poll-interval`), the tests' in-process simulator has none unless a test makes one. While
it runs, every `lnms device:poll` (the daemon's own polls, POST /_sim/poll) also ends with the
rules, as in LibreNMS; it polls through `Simulator.poll`, the one poll function of the simulator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from alert_handler.sim.tables import Database

if TYPE_CHECKING:
    from alert_handler.sim.simulator import Simulator

log = logging.getLogger(__name__)

CLEAR, ACTIVE, ACKNOWLEDGED, WORSE, BETTER, CHANGED = range(6)
_ACTIVE_STATES = (ACTIVE, WORSE, BETTER, CHANGED)
DEFAULT_POLL_INTERVAL = 5.0  # the simulator's; LibreNMS polls every 300 s
# The body of the API transport: LIBRENMS.md's template (with the alert_id ack takes).
BODY_TEMPLATE = (
    '{"device_id": {{ $device_id }}, "host": "{{ $hostname }}", "ip": "{{ $ip }}", '
    '"state": {{ $state }}, "rule": {{ $name|json_encode }}, "alert_id": {{ $alert_id }}, '
    '"uid": "{{ $uid }}"}'
)


@dataclass(frozen=True)
class RuleExtra:
    """A rule's notification settings (`alert_rules.extra`), in seconds."""

    delay: float = 0.0
    interval: float = 0.0
    count: int = 1  # max alerts; -1: no limit
    recovery: bool = True


Matcher = Callable[[Database, dict[str, Any]], bool]


@dataclass(frozen=True)
class Rule:
    """An alert rule: its id, its name (the `name` of the alert) and what it matches."""

    rule_id: int
    name: str
    matches: Matcher
    extra: RuleExtra = RuleExtra()


def port_down(ifname: str) -> Matcher:
    """`macros.port_down` on the port named exactly `ifname`: down, not admin down, not deleted."""

    def matches(db: Database, row: dict[str, Any]) -> bool:
        return any(
            p.ifName == ifname and p.ifOperStatus == "down" and p.ifAdminStatus != "down"
            for p in db.device_ports(row["device_id"])
        )

    return matches


def device_down(reason: str) -> Matcher:
    """`macros.device_down` for one status_reason ("icmp" or "snmp")."""

    def matches(db: Database, row: dict[str, Any]) -> bool:
        return not row["status"] and row["status_reason"] == reason

    return matches


def default_rules(extra: RuleExtra = RuleExtra(), ifname: str = "port2") -> tuple[Rule, ...]:
    """The rules the demo's LibreNMS has: the port rule and LibreNMS's two device-down rules."""
    return (
        Rule(1, "Port2 down", port_down(ifname), extra),
        Rule(2, "Device Down! Due to no ICMP response.", device_down("icmp"), extra),
        Rule(3, "SNMP not responding on Device", device_down("snmp"), extra),
    )


@dataclass
class _Log:
    """The `alert_log` row of an alert's current state: when it was logged and its details."""

    time_logged: float
    count: int = 0
    interval_at: float | None = None


@dataclass(frozen=True)
class Notice:
    """A notification the alert runner issues."""

    alert_id: int
    device_id: int
    rule: str
    state: int


class AlertRules:
    """The rules and the alert_log details LibreNMS keeps; every method runs under the
    simulator's lock on its tables, at the time `now` (epoch seconds)."""

    def __init__(self, rules: tuple[Rule, ...], tolerance: float = 0.0) -> None:
        """`tolerance`: LibreNMS's alert.tolerance_window (seconds of slack on delay/interval)."""
        self.rules = rules
        self.tolerance = tolerance
        self._logs: dict[int, _Log] = {}

    def register(self, db: Database) -> None:
        """Make the rules known to the tables (the alerts' `name`)."""
        for rule in self.rules:
            db.rules[rule.rule_id] = rule.name

    def run_device(self, db: Database, device_id: int, now: float) -> None:
        """AlertRules::run after a poll of the device."""
        row = db.devices.get(device_id)
        if row is None or db.maintenance.get(device_id) == "skip":
            return
        if row["disable_notify"]:
            for alert in db.alerts.values():
                if alert["device_id"] == device_id:
                    alert.update(state=CLEAR, alerted=0, open=0)
            return
        self.register(db)
        for rule in self.rules:
            self._process(db, row, rule, now)

    def _process(self, db: Database, row: dict[str, Any], rule: Rule, now: float) -> None:
        device_id = row["device_id"]
        mine = [a for a in db.alerts.values() if a["device_id"] == device_id]
        alert = max(
            (a for a in mine if a["rule_id"] == rule.rule_id), key=lambda a: a["id"], default=None
        )
        state = None if alert is None else alert["state"]
        stamp = datetime.fromtimestamp(now, timezone.utc)
        if rule.matches(db, row):
            if state == ACKNOWLEDGED or state in _ACTIVE_STATES:
                return  # SKIP / NOCHG
            changes: dict[str, Any] = {"state": ACTIVE, "open": 1, "alerted": 0}
        else:
            if state == CLEAR:
                return  # NOCHG
            changes = {"state": CLEAR, "open": 1, "note": ""}
        changes["timestamp"] = stamp
        if alert is None:
            alert = {
                "id": db.new_alert_id(),
                "device_id": device_id,
                "rule_id": rule.rule_id,
                "alerted": 0,
                "note": "",
                "info": "[]",
            }
            db.alerts[alert["id"]] = alert
        alert.update(changes)
        self._logs[alert["id"]] = _Log(now)  # a new alert_log row for the new state

    def run_alerts(self, db: Database, now: float) -> list[Notice]:
        """RunAlerts::runAlerts: the notifications due now; `alerted` and `open` updated."""
        out: list[Notice] = []
        extras = {rule.rule_id: rule.extra for rule in self.rules}
        names = {rule.rule_id: rule.name for rule in self.rules}
        for alert in sorted(db.alerts.values(), key=lambda a: a["id"]):
            extra = extras.get(alert["rule_id"])
            row = db.devices.get(alert["device_id"])
            if extra is None or row is None or alert["state"] == ACKNOWLEDGED or not alert["open"]:
                continue
            notice = self._due(db, alert, row, extra, now)
            if notice:
                out.append(
                    Notice(alert["id"], alert["device_id"], names[alert["rule_id"]], alert["state"])
                )
        return out

    def _due(
        self,
        db: Database,
        alert: dict[str, Any],
        row: dict[str, Any],
        extra: RuleExtra,
        now: float,
    ) -> bool:
        """One alert through runAlerts ("the new way"): whether it is notified now."""
        entry = self._logs.setdefault(alert["id"], _Log(now))
        state = alert["state"]
        active = state in _ACTIVE_STATES
        slack = self.tolerance
        quiet = alert["alerted"] == state  # noiss: already notified in this state
        keep_open = False  # noacc
        if extra.delay and state != CLEAR and now - entry.time_logged + slack < extra.delay:
            return False
        if extra.interval:
            if entry.interval_at is not None and now - entry.interval_at + slack < extra.interval:
                return False
            entry.interval_at = now
        if active and extra.count:
            before, entry.count = entry.count, entry.count + 1
            if extra.count == -1 or before < extra.count:
                keep_open = extra.count == -1 or entry.count < extra.count
                quiet = False
        if row["ignore"] or row["disabled"]:
            quiet, keep_open = True, False
        behaviour = db.maintenance.get(alert["device_id"])
        if behaviour == "mute":
            quiet = True
        if behaviour == "skip":
            quiet, keep_open = True, True
        if state == CLEAR and not extra.recovery:
            quiet = True
        if not keep_open and state == CLEAR:
            alert["open"] = 0
        if quiet:
            return False
        alert["alerted"] = state
        return True


@dataclass(frozen=True)
class Transport:
    """The API transport of the rules: where and how LibreNMS posts."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body_template: str = BODY_TEMPLATE
    method: str = "POST"


class AlertRunner:
    """Polls every device of the simulator every `interval` seconds on a poller of its group
    (the dispatcher skips disabled devices), runs the rules after each poll, then sends what
    the alert runner issues through `transport` (None: nothing is sent)."""

    def __init__(
        self,
        sim: Simulator,
        transport: Transport | None,
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        rules: tuple[Rule, ...] | None = None,
        tolerance: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sim = sim
        self.transport = transport
        self.interval = interval
        self.rules = AlertRules(rules or default_rules(), tolerance)
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent_lock = threading.Lock()
        self._sent: list[tuple[Notice, int]] = []  # each notice and the HTTP status (0: failed)
        self.rounds = 0

    @property
    def sent(self) -> list[tuple[Notice, int]]:
        """A copy of what was sent: each notice with its HTTP status (0: not delivered)."""
        with self._sent_lock:
            return list(self._sent)

    def _pollers(self) -> list[tuple[int, str]]:
        """(device_id, the poller that polls it) for every device the dispatcher polls."""
        out = []
        with self.sim.tables() as db:
            for device_id, row in sorted(db.devices.items()):
                if row["disabled"]:
                    continue
                poller = next(
                    (name for name, groups in db.pollers.items() if row["poller_group"] in groups),
                    None,
                )
                if poller is not None:
                    out.append((device_id, poller))
        return out

    def run_once(self) -> list[tuple[Notice, int]]:
        """One round: poll every device, run its rules, send the notifications due."""
        for device_id, poller in self._pollers():
            self.sim.poll(device_id, poller)
            self.after_poll(device_id)
        with self.sim.tables() as db:
            notices = self.rules.run_alerts(db, self.clock())
        results = [(n, self._send(n)) for n in notices]
        with self._sent_lock:
            self._sent += results
            self.rounds += 1
        return results

    def _send(self, notice: Notice) -> int:
        what = "recovery" if notice.state == CLEAR else "alert"
        if self.transport is None:
            return 0
        try:
            status = int(
                self.sim.send_alert(
                    self.transport.url,
                    notice.device_id,
                    state=notice.state,
                    rule=notice.rule,
                    headers=self.transport.headers,
                    body_template=self.transport.body_template,
                    method=self.transport.method,
                )
            )
        except OSError as exc:  # LibreNMS writes it to the event log and never retries
            log.warning(
                "simulator: could not issue %s for rule %r of device %d: %s",
                what,
                notice.rule,
                notice.device_id,
                exc,
            )
            return 0
        log.info(
            "simulator: issued %s for rule %r of device %d: HTTP %d",
            what,
            notice.rule,
            notice.device_id,
            status,
        )
        return status

    def after_poll(self, device_id: int) -> None:
        """The rules of a device that `lnms device:poll` polled (the daemon's own polls): as in
        LibreNMS, every poll ends with them; the next round notifies."""
        with self.sim.tables() as db:
            self.rules.run_device(db, device_id, self.clock())

    def start(self) -> None:
        """Run rounds in a thread, the first now, then every `interval` seconds; the rules
        also run after every `lnms device:poll`."""
        if self._thread is not None:
            raise RuntimeError("alert runner already started")
        self.sim.after_poll = self.after_poll
        self._thread = threading.Thread(target=self._run, name="librenms-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a round under way finishes first)."""
        self._stop.set()
        if self.sim.after_poll == self.after_poll:
            self.sim.after_poll = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a simulator bug: say so, keep polling
                log.exception("simulator: poll round failed")
            self._stop.wait(self.interval)
