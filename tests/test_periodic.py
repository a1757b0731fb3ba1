"""The periodic thread (reconcile, exclude-groups): a pass after the first delay, then every
interval; a pass that raises is logged and the next one runs; stop() ends a pause at once."""

from __future__ import annotations

import logging
import threading

import pytest

from alert_handler.ops.periodic import Periodic
from tests.conftest import wait_for


def test_a_failing_pass_is_logged_and_the_next_runs(caplog: pytest.LogCaptureFixture) -> None:
    """1. The first pass raises: logged with the step and its traceback.
    2. The thread goes on: the second pass runs.
    3. stop() while it pauses for an hour: the thread ends without waiting the hour."""
    caplog.set_level(logging.ERROR, logger="alert_handler.ops.periodic")
    passes: list[int] = []
    third = threading.Event()

    def work() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("boom")
        if len(passes) == 2:
            third.set()

    periodic = Periodic("test-periodic", work, 0.01, step="testing")
    periodic.start()
    wait_for(third.is_set, what="the pass after the failing one")
    assert [r.message for r in caplog.records] == ["step=testing unexpected error"]
    assert caplog.records[0].exc_info is not None
    periodic.interval = 3600.0
    periodic.stop()
    periodic._thread.join(timeout=30)
    assert not periodic._thread.is_alive()
    assert periodic._thread.name == "test-periodic"
    assert periodic.passes == len(passes) >= 2  # the failing pass counts as a pass


def test_stop_before_the_first_delay_runs_nothing() -> None:
    """A thread stopped during its first delay ends without running a pass."""
    ran: list[int] = []
    periodic = Periodic("test-delay", lambda: ran.append(1), 1.0, first_delay=3600.0)
    periodic.start()
    periodic.stop()
    periodic._thread.join(timeout=30)
    assert not periodic._thread.is_alive()
    assert ran == [] and periodic.passes == 0
