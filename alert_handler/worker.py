"""The recovery thread: a scheduler that owns a Condition and a pool of MAX_PARALLEL workers.

The scheduler takes due devices (oldest first) from the store under its lock and hands them to
the pool; each job runs one device's steps in order, talking to LibreNMS and SSH with no lock
held, and persists every decision before the next change is made.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from alert_handler import recovery
from alert_handler.librenms import DeviceNotFound, LibreNMS, LibreNMSError
from alert_handler.metrics import Metrics
from alert_handler.poller import Poller, PollError
from alert_handler.records import DeviceRecord, Phase, merge_alert_fields
from alert_handler.recovery import Action, Decision, Reason, Rules
from alert_handler.state import StateStore, StateWriteError

log = logging.getLogger(__name__)

_MAX_STEPS = 8  # steps one job may run for a device before yielding to others
_IDLE_WAIT = 5.0  # longest sleep of the scheduler, so the heartbeat stays fresh


@dataclass
class _Cycle:
    """Devices found due together; summarised in one log line when the last one is done."""

    started: float
    members: set[int]
    counts: dict[str, int] = field(default_factory=dict)


class _TroubleLog:
    """Logs API/SSH trouble at most once per `period` seconds, with a count of what was held."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._lock = threading.Lock()
        self._last = -1e18
        self._held = 0

    def report(self, device_id: int, action: str, error: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self.period:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        suffix = f" ({held} more failures in the last minute)" if held else ""
        log.warning("device=%s step=%s failed: %s%s", device_id, action, error, suffix)


class Worker:
    """Schedules and runs recovery steps for every tracked device."""

    def __init__(
        self,
        store: StateStore,
        api: LibreNMS,
        poller: Poller,
        rules: Rules,
        *,
        max_parallel: int = 4,
        max_forced_down: int = 0,
        ack_alerts: bool = False,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.api = api
        self.poller = poller
        self.rules = rules
        self.max_parallel = max_parallel
        self.max_forced_down = max_forced_down
        self.ack_alerts = ack_alerts
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._cond = threading.Condition()
        self._inflight: set[int] = set()
        self._stopping = False
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="recovery")
        self._thread: threading.Thread | None = None
        self._cycle: _Cycle | None = None
        self._trouble = _TroubleLog()
        self._storm_warned = -1e18
        self.heartbeat = time.monotonic()
        self.last_cycle: float | None = None
        self.restarts = 0
        self.dismissed: dict[int, float] = {}  # device -> when it was last forgotten

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart) the scheduler thread."""
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)
        self._thread.start()

    def alive(self, stuck_after: float = 120.0) -> bool:
        """Whether the scheduler thread runs and has made progress lately."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return False
        return time.monotonic() - self.heartbeat < stuck_after

    def ensure_running(self) -> bool:
        """Restart the scheduler thread if it died; True if it had to."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return False
        if self._stopping:
            return False
        self.restarts += 1
        self.metrics.thread_restarts.inc()
        log.error("step=recovery-thread died; restarting it (restart %d)", self.restarts)
        self.start()
        return True

    def wake(self) -> None:
        """Tell the scheduler something changed."""
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float) -> bool:
        """Stop scheduling and wait up to `timeout` for running steps; True if all finished."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            finished = not self._inflight
        self._pool.shutdown(wait=False, cancel_futures=True)
        return finished

    def inflight(self) -> set[int]:
        """Devices being worked on now."""
        with self._cond:
            return set(self._inflight)

    # -- scheduling --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self.heartbeat = time.monotonic()
                if self._stopping:
                    return
                timeout = self._schedule()
                self._cond.wait(timeout)

    def _schedule(self) -> float:
        """Under the lock: submit due devices to free workers; returns how long to sleep."""
        free = self.max_parallel - len(self._inflight)
        now = self.clock()
        paused = self.store.paused
        records = self.store.records()
        due: list[tuple[float, int]] = []
        next_at = now + _IDLE_WAIT
        storm_full = self._storm_full(records)
        for device_id, rec in records.items():
            if device_id in self._inflight:
                continue
            if paused and not rec.release_requested:
                continue
            if recovery.is_due(rec, now):
                if storm_full and rec.phase is Phase.NEW and not rec.release_requested:
                    continue
                due.append((rec.next_attempt_at, device_id))
            else:
                next_at = min(next_at, rec.next_attempt_at)
        self.metrics.paused.set(1 if paused else 0)
        if due and self._cycle is None:
            self._cycle = _Cycle(started=now, members={d for _, d in due})
        for _, device_id in heapq.nsmallest(max(free, 0), due):
            self._inflight.add(device_id)
            self._pool.submit(self._job, device_id)
        if len(due) > free:
            return _IDLE_WAIT  # woken when a worker frees up
        return max(0.0, min(next_at - now, _IDLE_WAIT))

    def _storm_full(self, records: dict[int, DeviceRecord]) -> bool:
        if not self.max_forced_down:
            self.metrics.storm_held.set(0)
            return False
        held = sum(1 for r in records.values() if r.phase is Phase.NEW)
        full = recovery.forced_count(records) >= self.max_forced_down
        self.metrics.storm_held.set(held if full else 0)
        now = time.monotonic()
        if full and held and now - self._storm_warned >= 60.0:
            self._storm_warned = now
            log.warning(
                "step=storm-guard %d devices forced down (MAX_FORCED_DOWN=%d): "
                "%d new devices recorded but not forced down",
                recovery.forced_count(records),
                self.max_forced_down,
                held,
            )
        return full

    # -- one device --------------------------------------------------------------------------
    def _job(self, device_id: int) -> None:
        outcome = "idle"
        try:
            outcome = self._run_device(device_id)
        except Exception:
            outcome = "failed"
            log.exception("device=%s step=worker unexpected error", device_id)
        finally:
            with self._cond:
                self._inflight.discard(device_id)
                self._end_cycle_member(device_id, outcome)
                self._cond.notify_all()

    def _run_device(self, device_id: int) -> str:
        outcome = "idle"
        for _ in range(_MAX_STEPS):
            rec = self.store.get(device_id)
            if rec is None:
                return outcome
            if self.store.paused and not rec.release_requested:
                return outcome
            action = recovery.plan(rec, self.clock())
            if action is Action.WAIT:
                return outcome
            decision = self._step(rec, action)
            if not self._apply(rec, decision, action):
                return "failed"
            outcome = _outcome(decision, outcome)
            if decision.forget:
                return outcome
        return outcome

    def _step(self, rec: DeviceRecord, action: Action) -> Decision:
        """Run one action's I/O and turn its result into a Decision."""
        rules = self.rules
        started = time.monotonic()
        step = action.value
        try:
            if action is Action.INSPECT:
                info = self.api.get_device(rec.device_id)
                ports = self.api.device_ports(rec.device_id)
                return recovery.after_inspect(rec, info, ports, self.clock(), rules)
            if action is Action.FORCE_DOWN:
                self.api.set_overwrite_ip(rec.device_id, rules.unsupervised_ip)
                step = "discover"
                self.api.discover(rec.device_id)
                self.metrics.forced_down.inc()
                if self.ack_alerts and not rec.acked:
                    rec = self._ack(rec)
                return recovery.after_force_down(rec, self.clock(), rules)
            if action is Action.VERIFY:
                info = self.api.get_device(rec.device_id)
                return recovery.before_attempt(rec, info, self.clock(), rules)
            if action is Action.CHECK:
                return self._check(rec)
            if rec.phase is Phase.NEW:
                return recovery.after_release(rec)  # nothing was changed yet
            step = "restore"
            self.api.set_overwrite_ip(rec.device_id, rec.original_overwrite_ip)
            step = "discover"
            self.api.discover(rec.device_id)
            return recovery.after_release(rec)
        except DeviceNotFound as exc:
            return recovery.after_failure(rec, action, str(exc), self.clock(), rules, gone=True)
        except (LibreNMSError, PollError) as exc:
            self._trouble.report(rec.device_id, step, str(exc))
            return recovery.after_failure(rec, action, f"{step}: {exc}", self.clock(), rules)
        finally:
            if action is not Action.CHECK:
                self.metrics.step_seconds.labels(step).observe(time.monotonic() - started)

    def _check(self, rec: DeviceRecord) -> Decision:
        """Restore the original, rediscover, poll, read the port."""
        device_id = rec.device_id
        timed: list[tuple[str, float]] = []
        step = "restore"
        mark = time.monotonic()

        def lap(name: str) -> None:
            nonlocal mark, step
            now = time.monotonic()
            timed.append((step, now - mark))
            mark, step = now, name

        try:
            self.api.set_overwrite_ip(device_id, rec.original_overwrite_ip)
            lap("discover")
            self.api.discover(device_id)
            lap("poll")
            result = self.poller.poll(device_id)
            self.metrics.poll_exits.labels(str(result.exit_status)).inc()
            lap("check")
            status = None
            if result.exit_status == 0 and rec.port_id is not None:
                status = self.api.port_status(rec.port_id)
            lap("done")
            log.info(
                "device=%s step=check port=%s status=%s poll_exit=%s",
                device_id,
                self.rules.target_ifname,
                status,
                result.exit_status,
            )
            return recovery.after_check(rec, result.exit_status, status, self.clock(), self.rules)
        finally:
            for name, seconds in timed:
                self.metrics.step_seconds.labels(name).observe(seconds)

    def _ack(self, rec: DeviceRecord) -> DeviceRecord:
        """Acknowledge the device's open alerts of the trigger rules (best effort)."""
        try:
            for alert in self.api.open_alerts():
                if alert.device_id != rec.device_id:
                    continue
                if self.rules.trigger_rules and alert.rule_name not in self.rules.trigger_rules:
                    continue
                self.api.ack_alert(
                    alert.alert_id, "handled by alert-handler: forced down, recovering"
                )
                log.info("device=%s step=ack alert=%s acknowledged", rec.device_id, alert.alert_id)
        except LibreNMSError as exc:
            log.warning("device=%s step=ack failed: %s", rec.device_id, exc)
            return rec
        return replace(rec, acked=True)

    def _apply(self, before: DeviceRecord, decision: Decision, action: Action) -> bool:
        """Persist a decision (merged with alert fields that arrived meanwhile); False if the
        state could not be written, in which case no further change is made."""
        decided = decision.record

        def change(current: DeviceRecord | None) -> DeviceRecord | None:
            if decided is None or current is None:
                return None
            return merge_alert_fields(decided, current)

        _, version = self.store.update(before.device_id, change)
        try:
            self.store.wait_durable(version, timeout=30.0)
        except StateWriteError as exc:
            log.error(
                "device=%s step=persist failed: %s; pausing this device", before.device_id, exc
            )
            return False
        self._log_decision(before, decision, action)
        if decision.forget:
            with self._cond:
                self.dismissed[before.device_id] = self.clock()
        self._count(decision)
        return True

    def _log_decision(self, before: DeviceRecord, decision: Decision, action: Action) -> None:
        """One line: `device=42 step=check port2 is down -> port not up: forcing down again
        (phase restoring->forcing_down, attempt 3)`."""
        rec = decision.record
        after = rec.phase.value if rec is not None else "forgotten"
        attempts = rec.attempts if rec is not None else before.attempts
        detail = f"{decision.detail} " if decision.detail else ""
        where = f"-> {decision.reason.value} (phase {before.phase.value}->{after}"
        where += f", attempt {attempts})"
        level = logging.INFO
        if decision.reason in (Reason.ADOPTED, Reason.FOREIGN_CHANGE, Reason.STEP_FAILED):
            level = logging.WARNING
        if decision.reason in (Reason.NO_TARGET_PORT, Reason.GAVE_UP, Reason.DEVICE_GONE):
            level = logging.ERROR
        log.log(level, "device=%s step=%s %s%s", before.device_id, action.value, detail, where)

    def _count(self, decision: Decision) -> None:
        reason = decision.reason
        m = self.metrics
        if reason is Reason.RECOVERED:
            m.recoveries.inc()
            m.attempts.labels("recovered").inc()
        elif reason in (Reason.STILL_DOWN, Reason.POLL_DEVICE_DOWN, Reason.POLL_FAILED):
            m.attempts.labels("still_down").inc()
        elif reason is Reason.GAVE_UP:
            m.give_ups.inc()
            m.attempts.labels("gave_up").inc()

    def _end_cycle_member(self, device_id: int, outcome: str) -> None:
        cycle = self._cycle
        if cycle is None or device_id not in cycle.members:
            return
        cycle.members.discard(device_id)
        cycle.counts[outcome] = cycle.counts.get(outcome, 0) + 1
        if cycle.members:
            return
        now = self.clock()
        self._cycle = None
        self.last_cycle = now
        self.metrics.last_cycle.set(now)
        c = cycle.counts
        log.info(
            "step=cycle due=%d recovered=%d still_down=%d forced_down=%d failed=%d took=%.1fs",
            sum(c.values()),
            c.get("recovered", 0),
            c.get("still_down", 0),
            c.get("forced_down", 0),
            c.get("failed", 0),
            now - cycle.started,
        )


def _outcome(decision: Decision, previous: str) -> str:
    reason = decision.reason
    if reason is Reason.RECOVERED:
        return "recovered"
    if reason in (Reason.STILL_DOWN, Reason.POLL_DEVICE_DOWN, Reason.POLL_FAILED):
        return "still_down"
    if reason is Reason.STEP_FAILED:
        return "failed"
    if reason is Reason.FORCED_DOWN and previous == "idle":
        return "forced_down"
    return previous
