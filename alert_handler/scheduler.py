"""The recovery thread: a scheduler that owns a Condition and a pool of MAX_PARALLEL workers.

The scheduler takes due devices (oldest first) from the store under its lock and hands them to
the pool; each job runs one device's steps in order, talking to LibreNMS and SSH with no lock
held, and persists every decision before the next change is made.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from alert_handler.core import machine as recovery
from alert_handler.core.facts import DeviceNotFound, LibreNMSError
from alert_handler.core.machine import Action, Decision, Reason, Rules
from alert_handler.core.records import DeviceRecord, Phase, merge_alert_fields
from alert_handler.librenms.client import LibreNMS
from alert_handler.metrics import Metrics
from alert_handler.poll import Poller, PollError
from alert_handler.store.state import StateStore, StateWriteError
from alert_handler.throttle import Throttle

log = logging.getLogger(__name__)

_MAX_STEPS = 8  # steps one job may run for a device before yielding to others
_IDLE_WAIT = 5.0  # longest sleep of the scheduler, so the heartbeat stays fresh
_BACKLOG_TTL = 1.0  # how long due devices found by one pass are started without a new pass
_MIN_PASS_GAP = 0.02  # seconds between two passes over every record...
_PASS_SHARE = 10.0  # ...and at least this many times the last pass's duration
_UNWRITABLE_WAIT = 1.0  # how often the scheduler looks whether the state file is writable again
_DURABLE_TIMEOUT = 30.0
# Actions that change LibreNMS: they run only on a record that is on disk.
_CHANGES = frozenset({Action.FORCE_DOWN, Action.CHECK, Action.RELEASE})


@dataclass
class _Cycle:
    """Devices found due together; summarised in one log line when the last one is done."""

    started: float
    members: set[int]
    counts: dict[str, int] = field(default_factory=dict)


class _TroubleLog:
    """Logs API/SSH trouble at most once per `period` seconds, with a count of what was held."""

    def __init__(self, period: float = 60.0) -> None:
        self._throttle = Throttle(period=period)
        self._lock = threading.Lock()
        self._reported = False  # a failure was logged and no success since

    def report(
        self, device_id: int, action: str, error: str, exc: BaseException | None = None
    ) -> None:
        """One failed step: logged (with `exc`'s traceback) unless one was logged lately."""
        held = self._throttle.take()
        if held is None:
            return
        with self._lock:
            self._reported = True
        suffix = f" ({held} more failures in the last minute)" if held else ""
        log.warning(
            "device=%s step=%s failed: %s%s", device_id, action, error, suffix, exc_info=exc
        )

    def ok(self) -> None:
        """A step succeeded: say so once after failures were logged."""
        if not self._reported:  # unlocked fast path; a stale read only delays the line
            return
        with self._lock:
            if not self._reported:
                return
            self._reported = False
        held = self._throttle.take_held()
        log.warning("step=recovery steps succeed again (%d failures since the last report)", held)


class _Pool:
    """`size` daemon threads running jobs from a queue, started at the first job.

    Not a ThreadPoolExecutor: the interpreter joins its threads at exit, so a step still running
    at the STOP_TIMEOUT_SEC deadline would hold the process. A cut-off step is resumed after
    the restart instead (every step is persisted before the next change is made).
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on a free thread (the caller serialises calls)."""
        if not self._threads:
            for n in range(self.size):
                thread = threading.Thread(target=self._run, name=f"{self.name}-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        self._jobs.put(job)

    def shutdown(self) -> None:
        """Let each thread exit after the jobs queued so far."""
        for _ in self._threads:
            self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a job handles its own errors; this thread must survive anyway
                log.exception("step=worker unexpected error")


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
        step_limit: float = 600.0,
        stuck_after: float = 60.0,
    ) -> None:
        """`step_limit`: longest a step may take (its timeouts allow less) before the recovery
        loop counts as stuck; `stuck_after`: longest time without a scheduling pass."""
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
        self._backlog: collections.deque[int] = collections.deque()  # due, not yet started
        self._backlog_at = 0.0
        self._next_pass = 0.0  # monotonic time before which no new pass is made
        self._stopping = False
        self._pool = _Pool(max_parallel, "recovery")
        self._steps_lock = threading.Lock()  # not _cond: /health must answer if _cond is stuck
        self._step_started: dict[int, float] = {}  # device -> when its current step began
        self.step_limit = step_limit
        self.stuck_after = stuck_after
        self._thread: threading.Thread | None = None
        self._cycle: _Cycle | None = None
        self._trouble = _TroubleLog()
        self._storm_warned = -1e18
        self.heartbeat = time.monotonic()
        self.last_cycle: float | None = None
        self.restarts = 0
        self._started_at = 0.0
        self._restart_delay = 0.5
        self._restart_not_before = 0.0
        self.dismissed: dict[int, float] = {}  # device -> when it was last forgotten

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart) the scheduler thread."""
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)
        self._thread.start()

    def thread_state(self) -> str:
        """The recovery loop's state: alive; dead (the scheduler thread ended); or stuck (no
        scheduling pass for `stuck_after` seconds, or a step running longer than `step_limit`)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return "dead"
        now = time.monotonic()
        if now - self.heartbeat > self.stuck_after:
            return "stuck"
        with self._steps_lock:
            oldest = min(self._step_started.values(), default=now)
        if now - oldest > self.step_limit:
            return "stuck"
        return "alive"

    def alive(self) -> bool:
        """Whether the recovery loop runs and makes progress (what /health and the systemd
        watchdog report)."""
        return self.thread_state() == "alive"

    def ensure_running(self) -> bool:
        """Restart the scheduler thread if it died; True if it had to."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return False
        if self._stopping:
            return False
        now = time.monotonic()
        if now < self._restart_not_before:
            return False
        # A thread that dies at once again is restarted after 1, 2, 4 ... 60 s, not every second;
        # one that ran for a minute starts the back-off afresh.
        self._restart_delay = 1.0 if now - self._started_at > 60.0 else self._restart_delay * 2
        self._restart_delay = min(self._restart_delay, 60.0)
        self._restart_not_before = now + self._restart_delay
        self.restarts += 1
        self.metrics.thread_restarts.inc()
        log.error("step=recovery-thread is dead; restarting it (restart %d)", self.restarts)
        self.start()
        return True

    def wake(self) -> None:
        """Tell the scheduler something changed."""
        if len(self._inflight) >= self.max_parallel:
            return  # unlocked fast path in a storm: the next worker to finish wakes it anyway
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
        self._pool.shutdown()  # queued jobs see _stopping and return at once
        return finished

    def inflight(self) -> set[int]:
        """Devices being worked on now."""
        with self._cond:
            return set(self._inflight)

    # -- scheduling --------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    timeout = self._schedule()
                    self.heartbeat = time.monotonic()  # after the pass: one that raised is none
                    self._cond.wait(timeout)
        except Exception:
            # The thread ends (a bug): logged here so the traceback reaches the log file; the
            # daemon's main loop sees the dead thread and starts a new one (ensure_running).
            log.exception("step=recovery-thread died")

    def _schedule(self) -> float:
        """Under the lock: submit due devices to free workers; returns how long to sleep."""
        if not self.store.healthy:
            return _UNWRITABLE_WAIT  # the state file cannot be written: change nothing
        free = self.max_parallel - len(self._inflight)
        if free <= 0:
            return _IDLE_WAIT  # no worker to give a device to; woken when one frees up
        if self._backlog and time.monotonic() - self._backlog_at < _BACKLOG_TTL:
            # Due devices the last pass could not start: take the next ones without looking at
            # every record again (a pass per freed worker is O(N) each in a storm).
            while self._backlog and free > 0:
                device_id = self._backlog.popleft()
                if device_id not in self._inflight:
                    self._submit(device_id)
                    free -= 1
            if free <= 0:
                return _IDLE_WAIT
        started = time.monotonic()
        if started < self._next_pass:
            return self._next_pass - started  # one pass for a burst of wakes, not one per wake
        now = self.clock()
        paused = self.store.paused
        records = self.store.records()
        due: list[tuple[float, int]] = []
        new: list[tuple[float, int]] = []  # due NEW devices: the storm guard may hold them
        next_at = now + _IDLE_WAIT
        for device_id, rec in records.items():
            if device_id in self._inflight:
                continue
            if paused and not rec.release_requested:
                continue
            if recovery.is_due(rec, now):
                guarded = rec.phase is Phase.NEW and not rec.release_requested
                (new if guarded else due).append((rec.next_attempt_at, device_id))
            else:
                next_at = min(next_at, rec.next_attempt_at)
        self.metrics.paused.set(1 if paused else 0)
        allowed = self._storm_allowed(records)
        if allowed is not None and len(new) > allowed:
            self._storm_hold(len(new) - allowed)
            new = heapq.nsmallest(allowed, new)
        elif self.max_forced_down:
            self.metrics.storm_held.set(0)
        due += new
        if due and self._cycle is None:
            self._cycle = _Cycle(started=now, members=set())
        due.sort()
        for _, device_id in due[:free]:
            self._submit(device_id)
        self._backlog = collections.deque(device_id for _, device_id in due[free:])
        self._backlog_at = time.monotonic()
        # A pass costs O(tracked devices): with workers idle (paused, storm guard) and alerts
        # arriving, passes take at most about 1/_PASS_SHARE of this thread's time.
        self._next_pass = self._backlog_at + max(
            _MIN_PASS_GAP, _PASS_SHARE * (self._backlog_at - started)
        )
        if len(due) > free:
            return _IDLE_WAIT  # woken when a worker frees up
        return max(0.0, min(next_at - now, _IDLE_WAIT))

    def _submit(self, device_id: int) -> None:
        """Under the lock: hand one device to the pool."""
        self._inflight.add(device_id)
        if self._cycle is not None:
            self._cycle.members.add(device_id)
        self._pool.submit(functools.partial(self._job, device_id))

    def _storm_allowed(self, records: dict[int, DeviceRecord]) -> int | None:
        """How many NEW devices may start now under MAX_FORCED_DOWN (None: no limit). Those
        being inspected count as forced down already, so parallel workers cannot overshoot."""
        if not self.max_forced_down:
            return None
        inspecting = sum(
            1 for d in self._inflight if d in records and records[d].phase is Phase.NEW
        )
        return max(0, self.max_forced_down - recovery.forced_count(records) - inspecting)

    def _storm_hold(self, held: int) -> None:
        self.metrics.storm_held.set(held)
        now = time.monotonic()
        if now - self._storm_warned >= 60.0:
            self._storm_warned = now
            log.warning(
                "step=storm-guard MAX_FORCED_DOWN=%d reached: %d new devices recorded but not "
                "forced down (this line repeats at most once a minute)",
                self.max_forced_down,
                held,
            )

    # -- one device --------------------------------------------------------------------------
    def _job(self, device_id: int) -> None:
        outcome = "idle"
        try:
            outcome = self._run_device(device_id)
        except Exception:
            outcome = "failed"
            log.exception("device=%s step=worker unexpected error", device_id)
        finally:
            with self._steps_lock:
                self._step_started.pop(device_id, None)
            with self._cond:
                self._inflight.discard(device_id)
                self._end_cycle_member(device_id, outcome)
                self._cond.notify_all()

    def _run_device(self, device_id: int) -> str:
        outcome = "idle"
        fresh = False  # this job's last step read or wrote the device's overwrite_ip
        for _ in range(_MAX_STEPS):
            if self._stopping:
                return outcome  # shutting down: the next step runs after the restart
            rec = self.store.get(device_id)
            if rec is None:
                return outcome
            if self.store.paused and not rec.release_requested:
                return outcome
            action = recovery.plan(rec, self.clock())
            if action is Action.WAIT:
                return outcome
            if action in _CHANGES and not self._durable():
                return "failed"
            with self._steps_lock:
                self._step_started[device_id] = time.monotonic()
            decision = self._step(rec, action, fresh=fresh)
            if not self._apply(rec, decision, action):
                return "failed"
            fresh = decision.reason is not Reason.STEP_FAILED
            if fresh:
                self._trouble.ok()
            outcome = _outcome(decision, outcome)
            if decision.forget:
                return outcome
        return outcome

    def _durable(self) -> bool:
        """Whether every change made in memory is on disk. A step that changes LibreNMS acts
        only on a durable record: were it not, a crash could lose what the step relies on (the
        original above all), e.g. after a decision whose write failed or timed out."""
        try:
            self.store.flush(_DURABLE_TIMEOUT)
        except StateWriteError:
            return False
        return True

    def _step(self, rec: DeviceRecord, action: Action, *, fresh: bool = True) -> Decision:
        """Run one action's I/O and turn its result into a Decision. Unless `fresh` (the
        previous step of this job read or wrote the device), a step that writes overwrite_ip
        reads it first and leaves the device alone if someone else changed it."""
        rules = self.rules
        started = time.monotonic()
        step = action.value

        def lap(next_step: str) -> None:
            nonlocal step, started
            now = time.monotonic()
            self.metrics.step_seconds.labels(step).observe(now - started)
            step, started = next_step, now

        try:
            if action in (Action.FORCE_DOWN, Action.CHECK) and not fresh:
                # Resuming after a restart or a failed step: LibreNMS may have changed meanwhile.
                step = "verify"
                info = self.api.get_device(rec.device_id)
                if info.overwrite_ip not in (rules.unsupervised_ip, rec.original_overwrite_ip):
                    detail = f"overwrite_ip is now {info.overwrite_ip!r}"
                    return Decision(None, Reason.FOREIGN_CHANGE, detail)
                lap(action.value if action is Action.FORCE_DOWN else "restore")
            if action is Action.INSPECT:
                info = self.api.get_device(rec.device_id)
                ports = self.api.device_ports(rec.device_id)
                return recovery.after_inspect(rec, info, ports, self.clock(), rules)
            if action is Action.FORCE_DOWN:
                self.api.set_overwrite_ip(rec.device_id, rules.unsupervised_ip)
                lap("discover")
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
            original = rec.original_overwrite_ip
            if rec.phase is Phase.NEW:
                # Nothing was changed yet, unless the device came forced down already (the old
                # script's file, a reconcile adoption): its original is unknown, restore null.
                step = "verify"
                info = self.api.get_device(rec.device_id)
                if info.overwrite_ip != rules.unsupervised_ip:
                    return recovery.after_release(rec)
                log.warning(
                    "device=%s step=release on UNSUPERVISED_IP with no known original: "
                    "restoring null (the hostname)",
                    rec.device_id,
                )
                original = None
            lap("restore")
            self.api.set_overwrite_ip(rec.device_id, original)
            lap("discover")
            self.api.discover(rec.device_id)
            return recovery.after_release(rec)
        except DeviceNotFound as exc:
            return recovery.after_failure(rec, action, str(exc), self.clock(), rules, gone=True)
        except (LibreNMSError, PollError) as exc:
            self._trouble.report(rec.device_id, step, str(exc))
            return recovery.after_failure(rec, action, f"{step}: {exc}", self.clock(), rules)
        except Exception as exc:
            # A bug, or an answer LibreNMS should never give: a failed step like any other, so
            # the device is retried later (a failed check forces it down at once), not looped.
            error = f"unexpected {type(exc).__name__}: {exc}"
            self._trouble.report(rec.device_id, step, error, exc)
            return recovery.after_failure(rec, action, f"{step}: {error}", self.clock(), rules)
        finally:
            if action is not Action.CHECK and step != Action.RELEASE.value:
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
            try:
                result = self.poller.poll(device_id)
            except PollError:
                self.metrics.poll_exits.labels("error").inc()
                raise
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
        self.metrics.count(before, decision)
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
        if decision.reason is Reason.STEP_FAILED:
            level = logging.DEBUG  # _TroubleLog says so, at most once a minute
        if decision.reason in (Reason.ADOPTED, Reason.FOREIGN_CHANGE):
            level = logging.WARNING
        if decision.reason in (Reason.NO_TARGET_PORT, Reason.GAVE_UP, Reason.DEVICE_GONE):
            level = logging.ERROR
        log.log(level, "device=%s step=%s %s%s", before.device_id, action.value, detail, where)

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
            "step=cycle due=%d recovered=%d still_down=%d forced_down=%d failed=%d gave_up=%d "
            "took=%.1fs",
            sum(c.values()),
            c.get("recovered", 0),
            c.get("still_down", 0),
            c.get("forced_down", 0),
            c.get("failed", 0),
            c.get("gave_up", 0),
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
    if reason is Reason.GAVE_UP:
        return "gave_up"
    if reason is Reason.FORCED_DOWN and previous == "idle":
        return "forced_down"
    return previous
