"""Recovery yields to acks (issue 15): while alerts arrive, no new recovery job starts; jobs wait
until alerts are quiet, at most a bounded time."""

from __future__ import annotations

import time

from alert_handler.recovery.scheduler import Scheduler
from alert_handler.recovery.yielding import LONGEST, QUIET, AckYield
from alert_handler.sim.simulator import Simulator
from tests.conftest import UNSUP, StartDaemon, alert_body, overwrite, wait_for


def test_jobs_wait_for_quiet_and_at_most_the_longest_hold() -> None:
    """1. No alert yet: nothing is held.
    2. An alert at t=10: a new job waits until t=10+QUIET; another alert at t=10.2 moves it.
    3. Alerts every 0.1 s from t=20: jobs are held, but never past t=20+LONGEST, when one pass
       is let through and the hold starts afresh."""
    acks = AckYield()
    assert acks.hold(5.0) == 0.0
    acks.alert_arrived(10.0)
    assert acks.hold(10.0) == QUIET
    acks.alert_arrived(10.2)
    assert abs(acks.hold(10.3) - (QUIET - 0.1)) < 1e-9
    assert acks.hold(10.2 + QUIET) == 0.0
    t = 20.0
    acks.alert_arrived(t)
    first = acks.hold(t)
    assert first > 0
    passes = []
    while t < 20.0 + 2 * LONGEST + 0.5:
        acks.alert_arrived(t)
        if acks.hold(t) == 0.0:
            passes.append(round(t - 20.0, 1))
        t += 0.1
    assert passes == [LONGEST, 2 * LONGEST]


def a_pass_began_after_now(scheduler: Scheduler) -> None:
    """Until the scheduler has made a whole scheduling pass that began after this call (a pass
    ends by stamping `heartbeat`; the first one seen may have begun before the call)."""
    for _ in range(2):
        mark = time.monotonic()

        def passed(mark: float = mark) -> bool:
            scheduler.wake()  # a pass now, rather than at the end of the scheduler's sleep
            return scheduler.heartbeat > mark

        wait_for(passed, what="a scheduling pass")


def test_a_device_is_handled_once_alerts_are_quiet(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. Alerts never go quiet (the hold is an hour): an acknowledged device is recorded, but
       a scheduling pass after it starts no recovery job: LibreNMS is not asked about it.
    2. Alerts go quiet: the scheduler starts the job and the device is forced down.
    3. With alerts arriving forever but a hold of at most 0.3 s, a device is still handled."""
    sim.add_device(1, "cpe-1", ports={"port2": "down"})
    sim.add_device(2, "cpe-2", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="60")
    scheduler = d.daemon.scheduler
    scheduler.acks = AckYield(quiet=3600.0, longest=3600.0)
    assert d.post(alert_body(1)).status_code == 202
    a_pass_began_after_now(scheduler)  # a pass after the ack, with device 1 due: held
    assert 1 not in scheduler.inflight()
    assert not any(r.path == "/devices/1" for r in sim.requests)
    scheduler.acks.last_alert = -1e18
    scheduler.wake()
    wait_for(lambda: overwrite(sim, 1) == UNSUP, what="device 1 forced down once quiet")
    scheduler.acks = AckYield(quiet=3600.0, longest=0.3)
    assert d.post(alert_body(2)).status_code == 202
    wait_for(lambda: overwrite(sim, 2) == UNSUP, what="device 2 forced down after the hold")
