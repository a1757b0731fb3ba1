"""What becomes of a step's report: persisted (merged with alert fields that arrived while the
step talked to LibreNMS), logged as the operator reads it, and counted in the metrics."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from alert_handler.core import steps
from alert_handler.core.alerts import counted
from alert_handler.core.machine import Action, Decision, Rules
from alert_handler.core.outcomes import meaning
from alert_handler.core.records import DeviceRecord, merge_alert_fields
from alert_handler.events.emit import Emitter
from alert_handler.ops.health import POLLER, Health
from alert_handler.ops.metrics import STEPS, Metrics
from alert_handler.ops.throttle import Throttle
from alert_handler.ops.unsupervised import ADVICE
from alert_handler.store.state import STEP_WAIT, StateStore, StateWriteError

log = logging.getLogger(
    "alert_handler.recovery.scheduler"
)  # one logger for the recovery loop's lines


class _TroubleLog:
    """Logs API/SSH trouble at most once per `period` seconds per device and failing sub-step,
    with a count of what was held, so every device's failures show in its history while a
    LibreNMS outage does not flood the log."""

    _MAX_KEYS = 10_000  # throttles kept; the oldest half is dropped past this

    def __init__(self, period: float = 60.0) -> None:
        self._period = period
        self._throttles: dict[tuple[int, str], Throttle] = {}
        self._lock = threading.Lock()
        self._reported = False  # a failure was logged and no success since
        self._since_report = 0  # failures since the last "succeed again" line

    def report(
        self, device_id: int, step: str, error: str, exc: BaseException | None = None
    ) -> None:
        """One failed step: logged (with `exc`'s traceback) unless the same device and step
        failed and were logged lately."""
        with self._lock:
            self._since_report += 1
            throttle = self._throttles.get((device_id, step))
            if throttle is None:
                if len(self._throttles) >= self._MAX_KEYS:
                    for key in list(self._throttles)[: self._MAX_KEYS // 2]:
                        del self._throttles[key]
                throttle = self._throttles[(device_id, step)] = Throttle(period=self._period)
        held = throttle.take()
        if held is None:
            return
        with self._lock:
            self._reported = True
        suffix = f" ({held} more failures of this step in the last minute)" if held else ""
        log.warning("device=%s step=%s failed: %s%s", device_id, step, error, suffix, exc_info=exc)

    def ok(self) -> None:
        """A step succeeded: say so once after failures were logged."""
        if not self._reported:  # unlocked fast path; a stale read only delays the line
            return
        with self._lock:
            if not self._reported:
                return
            self._reported = False
            failures, self._since_report = self._since_report, 0
            self._throttles.clear()
        log.warning(
            "step=recovery steps succeed again (%s since then)", counted(failures, "failure")
        )


class Recorder:
    """Persists, logs and counts the step runner's reports; thread-safe."""

    def __init__(
        self,
        store: StateStore,
        rules: Rules,
        metrics: Metrics,
        health: Health,
        events: Emitter,
    ) -> None:
        self.store = store
        self.rules = rules
        self.metrics = metrics
        self.health = health
        self.events = events
        self._trouble = _TroubleLog()
        self._answering: set[int] = set()  # devices whose UNSUPERVISED_IP answer was logged

    def persist(self, before: DeviceRecord, report: steps.StepReport) -> bool:
        """Persist a decision (merged with alert fields that arrived meanwhile) with its events,
        then log and count it; False if the state could not be written (no further change is
        made)."""
        decision = report.decision
        decided = decision.record
        decided = self.events.opened(decided)
        decision = replace(decision, record=decided)
        lines = self.events.step_lines(before, report.action, decision)

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            if decided is None or current is None:
                return None
            return merge_alert_fields(decided, current)

        self._observe(report)
        _, version = self.store.update(before.device_id, change, lines)
        try:
            self.store.wait_durable(version, timeout=STEP_WAIT)
        except StateWriteError as exc:
            log.error(
                "device=%s step=persist failed: %s; pausing this device", before.device_id, exc
            )
            return False
        self._log_report(before, report)
        self.metrics.count(report.action, decision)
        return True

    def _observe(self, report: steps.StepReport) -> None:
        for name, seconds in report.laps:
            if name in STEPS:
                self.metrics.step_seconds.labels(name).observe(seconds)
        if report.poll_exit is not None:
            self.metrics.poll_exits.labels(report.poll_exit).inc()
            # A poll that ran, whatever its exit status, reached the poller host.
            if report.poll_exit == "error":
                self.health.record_failure(POLLER, report.error or "the poll failed")
            elif report.config_error is not None:
                # lnms refused to run as this user: no retry fixes it (degraded until a
                # poll runs as the right user).
                why = f"poll: configuration error: {report.config_error}"
                self.health.record_failure(POLLER, why, config_error=True, what="poll")
            else:
                self.health.record_success(POLLER, "poll")
        if report.forced_down and not self.rules.dry_run:  # DRY_RUN forces nothing down
            self.metrics.forced_down.inc()
        if report.failed_step is not None:
            step = report.failed_step if report.failed_step in STEPS else "other"
            self.metrics.step_failures.labels(step).inc()

    def _log_report(self, before: DeviceRecord, report: steps.StepReport) -> None:
        device_id = before.device_id
        if report.error is not None:
            self._trouble.report(
                device_id,
                report.failed_step or report.action.value,
                report.error,
                report.unexpected,
            )
        else:
            self._trouble.ok()
        for alert_id in report.acked:
            log.info("device=%s step=ack alert=%s acknowledged", device_id, alert_id)
        if report.ack_error is not None:
            log.warning("device=%s step=ack failed: %s", device_id, report.ack_error)
        for alert_id in report.unmuted:
            log.info(
                "device=%s step=unmute alert=%s unmuted: LibreNMS alerts again", device_id, alert_id
            )
        if report.unmute_error is not None:
            log.warning(
                "device=%s step=unmute failed: %s (the alert stays acknowledged)",
                device_id,
                report.unmute_error,
            )
        if report.component_error is not None:
            log.warning(
                "device=%s step=component not removed: %s (retried at the next reconciliation)",
                device_id,
                report.component_error,
            )
        if report.answers and device_id not in self._answering:
            self._answering.add(device_id)  # once per device: it says the same every interval
            log.warning(
                "device=%s step=verify UNSUPERVISED_IP %s seems to answer: LibreNMS polled the "
                "device after it was forced down and found it up, so forcing it down does not "
                "bring it down; %s",
                device_id,
                self.rules.unsupervised_ip,
                ADVICE,
            )
        if report.config_error is not None:
            log.error(
                "device=%s step=check configuration error: %s; forced down again",
                device_id,
                report.config_error,
            )
        if report.check is not None:
            status = report.check.oper_status
            log.info(
                "device=%s step=check port=%s status=%s poll_exit=%s",
                device_id,
                self.rules.target_ifname,
                "null" if status is None else status,
                report.check.poll_exit,
            )
        self._log_decision(before, report.decision, report.action)

    def _log_decision(self, before: DeviceRecord, decision: Decision, action: Action) -> None:
        """One line: `device=42 step=check port2 is down -> port not up: forcing down again
        (phase restoring->forcing_down, attempt 3)`."""
        rec = decision.record
        after = rec.phase.value if rec is not None else "forgotten"
        attempts = rec.attempts if rec is not None else before.attempts
        detail = f"{decision.detail} " if decision.detail else ""
        where = f"-> {decision.reason.value} (phase {before.phase.value}->{after}"
        where += f", attempt {attempts})"
        # From the one table (STEP_FAILED is DEBUG: _TroubleLog says it at most once a minute).
        level = meaning(decision.reason).log_level(decision.forget)
        log.log(level, "device=%s step=%s %s%s", before.device_id, action.value, detail, where)
