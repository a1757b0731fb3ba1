"""The recovery thread: a scheduler that owns a Condition and a pool of MAX_PARALLEL workers.

The scheduler takes due devices (oldest first) from the store under its lock and hands them to
the pool, holds new devices back under MAX_FORCED_DOWN, reports its liveness, and summarises each
cycle. Each job is the core's `steps.run_device`: the scheduler decides nothing about LibreNMS;
it persists, logs and counts what the step runner reports (it is the runner's `JobHost`).
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from alert_handler.core import machine, steps
from alert_handler.core.machine import Action, Rules
from alert_handler.core.outcomes import CYCLE_OUTCOMES, Outcome
from alert_handler.core.ports import ComponentPort
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.verdict import ConfirmGate
from alert_handler.events.emit import Emitter
from alert_handler.ops.health import Health
from alert_handler.ops.metrics import Metrics
from alert_handler.recovery.admission import Admission
from alert_handler.recovery.pool import Pool
from alert_handler.recovery.recorder import Recorder
from alert_handler.recovery.yielding import AckYield
from alert_handler.store.state import STEP_WAIT, StateStore, StateWriteError

log = logging.getLogger(__name__)

_IDLE_WAIT = 5.0  # longest sleep of the scheduler, so the heartbeat stays fresh
_BACKLOG_TTL = 1.0  # how long due devices found by one pass are started without a new pass
_MIN_PASS_GAP = 0.02  # seconds between two passes over every record...
_PASS_SHARE = 10.0  # ...and at least this many times the last pass's duration
_UNWRITABLE_WAIT = 1.0  # how often the scheduler looks whether the state file is writable again


class Liveness(str, Enum):
    """The recovery loop's state, as /health and the systemd watchdog see it."""

    ALIVE = "alive"
    DEAD = "dead"  # the scheduler thread ended
    STUCK = "stuck"  # no scheduling pass lately, or a step running far too long


class _SystemClock:
    """The step runner's clock: `wall` for records, time.monotonic for durations."""

    def __init__(self, wall: Callable[[], float]) -> None:
        self.time = wall

    def monotonic(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()


@dataclass
class _Cycle:
    """Devices found due together; summarised in one log line when the last one is done."""

    started: float
    members: set[int]
    counts: dict[Outcome, int] = field(default_factory=dict)
    failing: list[int] = field(default_factory=list)  # devices whose step failed, named


class Scheduler:
    """Schedules recovery jobs for every tracked device and runs them on a pool."""

    def __init__(
        self,
        store: StateStore,
        api: steps.LibreNMSPort,
        poller: steps.PollPort,
        rules: Rules,
        *,
        gate: ConfirmGate,
        metrics: Metrics,
        health: Health,
        events: Emitter,
        steer: steps.SteerPort,
        max_parallel: int = 4,
        max_forced_down: int = 0,
        clock: Callable[[], float] = time.time,
        step_limit: float = 600.0,
        stuck_after: float = 60.0,
        active: Callable[[], bool] | None = None,
    ) -> None:
        """`step_limit`: longest a step may take (its timeouts allow less) before the recovery
        loop counts as stuck; `stuck_after`: longest time without a scheduling pass; `steer`:
        the controls' verdict, asked by every step before it touches a device. `active`:
        whether jobs may start now (HA: only while this daemon holds the lease)."""
        self._active = active
        self.store = store
        self.steer = steer
        self.api = api
        self.poller = poller
        self.rules = rules
        # The originals kept in LibreNMS (librenms/components.py); None: on this host only.
        self.components: ComponentPort | None = None
        self.max_parallel = max_parallel
        self.metrics = metrics
        self.admission = Admission(store, metrics, gate, events, max_forced_down)
        self.clock = clock
        self._clock = _SystemClock(clock)
        self._cond = threading.Condition()
        self._inflight: set[int] = set()
        self._backlog: collections.deque[int] = collections.deque()  # due, not yet started
        self._backlog_at = 0.0
        self._next_pass = 0.0  # monotonic time before which no new pass is made
        self._stopping = False
        self._pool = Pool(max_parallel, "recovery")
        self._steps_lock = threading.Lock()  # not _cond: /health must answer if _cond is stuck
        self._step_started: dict[int, float] = {}  # device -> when its current step began
        self.step_limit = step_limit
        self.stuck_after = stuck_after
        self._thread: threading.Thread | None = None
        self._cycle: _Cycle | None = None
        self._recorder = Recorder(store, rules, self.metrics, health, events)
        self.heartbeat = time.monotonic()
        self.last_cycle: float | None = None
        self.restarts = 0
        self._started_at = 0.0
        self._restart_delay = 0.5
        self._restart_not_before = 0.0
        self.dismissed: dict[int, float] = {}  # device -> when it was last forgotten
        self.acks = AckYield()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart) the scheduler thread."""
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="recovery", daemon=True)
        self._thread.start()

    def thread_state(self) -> Liveness:
        """The recovery loop's state: alive; dead (the scheduler thread ended); or stuck (no
        scheduling pass for `stuck_after` seconds, or a step running longer than `step_limit`)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return Liveness.DEAD
        now = time.monotonic()
        if now - self.heartbeat > self.stuck_after:
            return Liveness.STUCK
        with self._steps_lock:
            oldest = min(self._step_started.values(), default=now)
        if now - oldest > self.step_limit:
            return Liveness.STUCK
        return Liveness.ALIVE

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

    def alert_arrived(self) -> None:
        """An alert is being acknowledged: new recovery jobs wait until alerts are quiet."""
        self.acks.alert_arrived(time.monotonic())

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

    def shift_times(self, seconds: float) -> None:
        """The wall clock stepped: move the times this scheduler keeps by `seconds`."""
        with self._cond:
            self.dismissed = {d: at + seconds for d, at in self.dismissed.items()}
            if self.last_cycle is not None:
                self.last_cycle += seconds
            if self._cycle is not None:
                self._cycle.started += seconds

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
        if self._active is not None and not self._active():
            return _UNWRITABLE_WAIT  # an HA standby: the lease holder changes LibreNMS
        free = self.max_parallel - len(self._inflight)
        if free <= 0:
            return _IDLE_WAIT  # no worker to give a device to; woken when one frees up
        hold = self.acks.hold(time.monotonic())
        if hold > 0:
            return min(hold, _IDLE_WAIT)  # recovery yields to acks while alerts arrive
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
        held = 0
        for device_id, rec in records.items():
            held += rec.held
            if device_id in self._inflight:
                continue
            if not machine.is_due(rec, now):
                next_at = min(next_at, rec.next_attempt_at)
                continue
            if paused and not machine.runs_while_paused(rec, machine.plan(rec, now)):
                continue
            guarded = rec.phase is Phase.NEW and not rec.release_requested
            (new if guarded else due).append((rec.next_attempt_at, device_id))
        self.metrics.paused.set(1 if paused else 0)
        due += self.admission.admit(records, new, self._inflight, now, held)
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

    # -- one device --------------------------------------------------------------------------
    def _job(self, device_id: int) -> None:
        outcome = Outcome.IDLE
        try:
            outcome = self._run_device(device_id)
        except Exception:
            outcome = Outcome.FAILED
            log.exception("device=%s step=worker unexpected error", device_id)
        finally:
            with self._steps_lock:
                self._step_started.pop(device_id, None)
            with self._cond:
                self._inflight.discard(device_id)
                self._end_cycle_member(device_id, outcome)
                self._cond.notify_all()

    def _run_device(self, device_id: int) -> Outcome:
        """One job: the device's due steps, run by the core's step runner."""
        ports = steps.Ports(
            self.api,
            self.poller,
            self._clock,
            steer=self.steer,
            components=self.components,
            sleep=time.sleep,  # the wait before a check's re-poll (CHECK_REPOLL_SEC)
        )
        return steps.run_device(device_id, self, ports, self.rules)

    # -- JobHost: the step runner's view of the store --------------------------------------
    def get(self, device_id: int) -> DeviceRecord | None:
        """The current record."""
        return self.store.get(device_id)

    def paused(self) -> bool:
        """Whether maintenance mode is on."""
        return self.store.paused

    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stopping

    def durable(self) -> bool:
        """Whether every change made in memory is on disk (waits up to 30 s for it)."""
        try:
            self.store.flush(STEP_WAIT)
        except StateWriteError:
            return False
        return True

    def starting(self, device_id: int, action: Action) -> None:
        """Note when the step began, for stuck detection."""
        with self._steps_lock:
            self._step_started[device_id] = time.monotonic()

    def persist(self, before: DeviceRecord, report: steps.StepReport) -> bool:
        """Persist, log and count what the step runner decided (see `jobs.Recorder`)."""
        if not self._recorder.persist(before, report):
            return False
        if report.decision.forget:
            with self._cond:
                self.dismissed[before.device_id] = self.clock()
        return True

    def _end_cycle_member(self, device_id: int, outcome: Outcome) -> None:
        cycle = self._cycle
        if cycle is None or device_id not in cycle.members:
            return
        cycle.members.discard(device_id)
        cycle.counts[outcome] = cycle.counts.get(outcome, 0) + 1
        if outcome is Outcome.FAILED:
            cycle.failing.append(device_id)
        if cycle.members:
            return
        now = self.clock()
        self._cycle = None
        self.last_cycle = now
        self.metrics.last_cycle.set(now)
        counts = " ".join(f"{o.value}={cycle.counts.get(o, 0)}" for o in CYCLE_OUTCOMES)
        due = sum(cycle.counts.values())
        log.info(
            "step=cycle due=%d %s took=%.1fs%s", due, counts, now - cycle.started, _named(cycle)
        )


def _named(cycle: _Cycle, most: int = 20) -> str:
    """ " failed_devices=101,102" (the first `most`, then "+N more"): the per-device failure
    lines are throttled, the cycle line still names every device that failed."""
    if not cycle.failing:
        return ""
    ids = sorted(cycle.failing)
    more = f",+{len(ids) - most} more" if len(ids) > most else ""
    return " failed_devices=" + ",".join(str(d) for d in ids[:most]) + more
