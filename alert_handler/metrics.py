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
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
    "unauthorized",  # missing or wrong webhook token (any endpoint)
    "forbidden",  # client not in ALLOWED_CLIENTS (any endpoint)
    "unavailable",  # the state file could not be written (503)
)
ATTEMPT_OUTCOMES = tuple(o.value for o in _OUTCOMES)
STEPS = ("inspect", "force_down", "verify", "restore", "discover", "poll", "check", "ack")
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
        self.alerts = Counter(
            "alert_handler_alerts_received",
            "Webhook requests, by result (repeat includes recovery notices)",
            ["result"],
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
        self.dry_run = Gauge("alert_handler_dry_run", "1 when DRY_RUN is on", registry=r)
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

    def observe_api(self, endpoint: str, status: str, seconds: float) -> None:
        """Hook for the LibreNMS client."""
        self.api_requests.labels(endpoint, status).inc()

    def observe_state_write(self, seconds: float, size: int) -> None:
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
