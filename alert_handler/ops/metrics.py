"""Prometheus metrics, one registry per daemon (so tests can run several in one process).

Names follow the Prometheus conventions (counters end in `_total`, durations are histograms in
seconds). Label values come from small fixed sets, never a device id, and the known ones are
exported at 0 from the start, so a Grafana panel or an alert rule sees a series before the first
event instead of "no data".
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from alert_handler import __version__
from alert_handler.core.event_types import EventType
from alert_handler.core.machine import Action, Decision
from alert_handler.core.outcomes import ATTEMPT_OUTCOMES as _OUTCOMES
from alert_handler.core.outcomes import Outcome, attempt_outcome
from alert_handler.core.records import DeviceRecord, Phase

ALERT_RESULTS = (
    "accepted",
    "repeat",
    "ignored",
    "rejected",  # not an alert (400)
    "too_large",  # 413
    "unauthorized",  # missing or wrong webhook token
    "forbidden",  # client not in ALLOWED_CLIENTS
    "unavailable",  # the state file could not be written (503)
)
OPERATOR_RESULTS = ("ok", "rejected", "unauthorized", "forbidden", "unavailable", "error")
ATTEMPT_OUTCOMES = tuple(o.value for o in _OUTCOMES)
STEPS = (
    "inspect",
    "force_down",
    "verify",
    "restore",
    "discover",
    "poll",
    "check",
    "ack",
    "unmute",
    "component",
)
POLL_STATUSES = ("0", "1", "6", "error")


class _PhaseCollector(Collector):
    """Devices tracked by phase, read from the store at scrape time."""

    def __init__(self, records: Callable[[], dict[int, DeviceRecord]]) -> None:
        self._records = records

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "alert_handler_devices_tracked", "Devices tracked, by phase", labels=["phase"]
        )
        counts = dict.fromkeys(Phase, 0)
        for record in self._records().values():
            counts[record.phase] += 1
        for phase, count in counts.items():
            family.add_metric([phase.value], count)
        return [family]


class Metrics:
    """Every metric the daemon exports."""

    def __init__(self) -> None:
        # No `_created` series: they double the series count and no dashboard uses them. The
        # switch is process-wide, which is fine: the daemon is the only exporter in its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        # The standard process_* (CPU, memory, open files, start time) and python_info series.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        build = Gauge(
            "alert_handler_build_info", "Always 1; the running version", ["version"], registry=r
        )
        build.labels(__version__).set(1)
        self.alerts = Counter(
            "alert_handler_alerts_received",
            "Webhook requests, by result (repeat includes recovery notices)",
            ["result"],
            registry=r,
        )
        self.operator_requests = Counter(
            "alert_handler_operator_requests",
            "Requests to every endpoint but the alert deliveries (POST /alert and /), by "
            "endpoint and result",
            ["endpoint", "result"],
            registry=r,
        )
        self.attempts = Counter(
            "alert_handler_recovery_attempts",
            "Recovery attempts (restore, discover, poll, check), by outcome",
            ["outcome"],
            registry=r,
        )
        self.recoveries = Counter(
            "alert_handler_recoveries", "Devices whose port came back up", registry=r
        )
        self.ha_role = Gauge(
            "alert_handler_ha_role",
            "With HA_REDIS_URL: 1 for this daemon's role (holder or standby), 0 for the other",
            ["role"],
            registry=r,
        )
        self.ha_transitions = Counter(
            "alert_handler_ha_lease_transitions",
            "With HA_REDIS_URL: the HA lease acquired, lost or released",
            ["transition"],
            registry=r,
        )
        self.fenced_writes = Counter(
            "alert_handler_fenced_writes",
            "Writes to LibreNMS (and polls) refused because the HA lease was not surely held",
            registry=r,
        )
        self.give_ups = Counter(
            "alert_handler_give_ups", "Devices given up after MAX_ATTEMPTS", registry=r
        )
        self.forced_down = Counter(
            "alert_handler_forced_down", "Times a device was forced down", registry=r
        )
        self.step_seconds = Histogram(
            "alert_handler_step_duration_seconds",
            "Duration of each recovery step",
            ["step"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.api_requests = Counter(
            "alert_handler_librenms_requests",
            "LibreNMS API requests, by endpoint and HTTP status (error: no answer)",
            ["endpoint", "status"],
            registry=r,
        )
        self.poll_exits = Counter(
            "alert_handler_polls",
            "Poll commands run, by exit status (error: could not run or timed out)",
            ["exit_status"],
            registry=r,
        )
        self.poller_polls = Counter(
            "alert_handler_poller_polls",
            "Poll commands run, by poller (POLLER_GROUP_HOSTS targets and the default) and exit"
            " status",
            ["poller", "exit_status"],
            registry=r,
        )
        self.step_failures = Counter(
            "alert_handler_step_failures",
            "Recovery steps that failed (LibreNMS or SSH trouble, a bug), by the failing step",
            ["step"],
            registry=r,
        )
        self.thread_restarts = Counter(
            "alert_handler_recovery_thread_restarts", "Recovery thread restarts", registry=r
        )
        self.state_write_seconds = Histogram(
            "alert_handler_state_write_duration_seconds",
            "Duration of one durable state commit (journal append and fdatasync)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.last_cycle = Gauge(
            "alert_handler_last_cycle_timestamp_seconds",
            "Unix time the last recovery cycle completed (0: none yet)",
            registry=r,
        )
        self.paused = Gauge("alert_handler_paused", "1 while in maintenance mode", registry=r)
        self.storm_held = Gauge(
            "alert_handler_storm_held_devices",
            "New devices recorded but not forced down because of MAX_FORCED_DOWN",
            registry=r,
        )
        self.held = Gauge(
            "alert_handler_held_devices",
            "New devices held by the confirmation gate (CONFIRM_ABOVE), waiting for a person",
            registry=r,
        )
        self.dry_run = Gauge("alert_handler_dry_run", "1 when DRY_RUN is on", registry=r)
        self.librenms_up = Gauge(
            "alert_handler_librenms_up",
            "1 while LibreNMS answers (0: calls failed 3 times in a row, or the token is refused)",
            registry=r,
        )
        self.librenms_up.set(1)
        self.events = Counter(
            "alert_handler_events", "Events written to the journal, by type", ["type"], registry=r
        )
        self.deliveries = Counter(
            "alert_handler_event_deliveries",
            "Event deliveries, by target (webhook, or a notification service) and result",
            ["target", "result"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "alert_handler_event_outbox_depth",
            "Events not yet delivered to EVENT_WEBHOOK_URL",
            registry=r,
        )
        self.connections = Gauge(
            "alert_handler_http_connections",
            "Connections to the listener open right now (reading, answered, lingering); "
            "MAX_CONNECTIONS is the limit",
            registry=r,
        )
        self.outbox_age = Gauge(
            "alert_handler_event_outbox_oldest_age_seconds",
            "Age of the oldest event not yet delivered to EVENT_WEBHOOK_URL (0: none)",
            registry=r,
        )
        for kind in EventType:
            self.events.labels(kind.value)
        for result in ALERT_RESULTS:
            self.alerts.labels(result)
        for outcome in ATTEMPT_OUTCOMES:
            self.attempts.labels(outcome)
        for step in STEPS:
            self.step_seconds.labels(step)
            self.step_failures.labels(step)
        self.step_failures.labels("other")
        for status in POLL_STATUSES:
            self.poll_exits.labels(status)

    def watch_records(self, records: Callable[[], dict[int, DeviceRecord]]) -> None:
        """Export devices-by-phase from `records` at scrape time."""
        self.registry.register(_PhaseCollector(records))

    def watch_librenms(self, up: Callable[[], bool]) -> None:
        """Export `up()` (the health model's view of LibreNMS) at scrape time."""
        self.librenms_up.set_function(lambda: 1.0 if up() else 0.0)

    def observe_api(self, endpoint: str, status: str, seconds: float) -> None:
        """Hook for the LibreNMS client."""
        self.api_requests.labels(endpoint, status).inc()

    def declare_endpoints(self, endpoints: tuple[str, ...]) -> None:
        """Export every operator endpoint's counters at 0 (the labels of http/routes.py)."""
        for endpoint in endpoints:
            for result in OPERATOR_RESULTS:
                self.operator_requests.labels(endpoint, result)

    def operator_request(self, endpoint: str, status: int) -> None:
        """Count one answer of an operator endpoint by its HTTP status."""
        if 200 <= status < 400:
            result = "ok"
        elif status in (401, 403):
            result = "unauthorized" if status == 401 else "forbidden"
        elif status < 500:
            result = "rejected"
        else:
            result = "unavailable" if status == 503 else "error"
        self.operator_requests.labels(endpoint, result).inc()

    def known_pollers(self, labels: list[str]) -> None:
        """Export every poller's series at 0 from the start (labels come from the config)."""
        for label in labels:
            for status in (*POLL_STATUSES, "other"):
                self.poller_polls.labels(label, status)

    def observe_poll(self, poller: str, status: str) -> None:
        """Hook for the poller: one poll run on `poller` ended with `status`."""
        self.poller_polls.labels(poller, status if status in POLL_STATUSES else "other").inc()

    def observe_state_write(self, seconds: float) -> None:
        """Hook for the state store."""
        self.state_write_seconds.observe(seconds)

    def count(self, action: Action, decision: Decision) -> None:
        """Count a persisted decision of the step runner: attempts, recoveries, give-ups."""
        outcome = attempt_outcome(decision.reason, action)
        if outcome is None:
            return
        self.attempts.labels(outcome.value).inc()
        if outcome is Outcome.RECOVERED:
            self.recoveries.inc()
        elif outcome is Outcome.GAVE_UP:
            self.give_ups.inc()

    def render(self) -> bytes:
        """The text exposition."""
        return generate_latest(self.registry)
