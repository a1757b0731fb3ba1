"""The daemon's clock: schedules survive a wall-clock step (NTP, a VM resume)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from alert_handler.core.records import DeviceRecord, shifted
from alert_handler.ops.clock import SteadyClock
from alert_handler.sim.simulator import Simulator
from alert_handler.store.files import read_state
from tests.conftest import UNSUP, WEBHOOK_TOKEN, DaemonProcess, base_env, free_port, wait_for

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class Clocks:
    """A wall clock that can be stepped and a monotonic clock that only runs."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 50.0

    def run(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_steady_clock_ignores_a_step_until_checked_then_reports_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = Clocks()
    clock = SteadyClock(lambda: c.wall, lambda: c.mono)
    c.run(10)
    assert clock() == 1_700_000_010.0 and clock.check_step() == 0.0
    c.wall -= 3600  # NTP steps the wall clock back an hour
    c.run(5)
    assert clock() == 1_700_000_015.0  # still on the monotonic pace
    assert clock.check_step() == -3600.0
    assert clock() == c.wall and clock.check_step() == 0.0
    assert "wall clock stepped back by 3600.0s" in caplog.text
    c.wall += 1.0  # drift below the threshold is not a step
    assert clock.check_step() == 0.0


def test_a_shifted_record_keeps_every_distance() -> None:
    rec = DeviceRecord(
        device_id=1, first_seen=100.0, next_attempt_at=160.0, last_alert=110.0, forced_down_at=120.0
    )
    moved = shifted(rec, -3600.0)
    assert moved.next_attempt_at - moved.forced_down_at == 40.0  # type: ignore[operator]
    assert moved.first_seen == 100.0 - 3600 and moved.attempt_started_at is None


def _require_faketime() -> str:
    if not os.path.exists(LIBFAKETIME) or shutil.which("faketime") is None:
        pytest.fail(f"libfaketime is missing ({LIBFAKETIME}): apt-get install faketime")
    return LIBFAKETIME


def _daemon_under_faketime(
    sim: Simulator, tmp_path: Path, *, interval: str
) -> tuple[DaemonProcess, Path]:
    """`alert-handler serve` under libfaketime: its wall clock is offset by what the returned
    file says (rewritten to step it), its monotonic clock is the real one. It is killed when
    the test ends (conftest), also when the test fails."""
    spec = tmp_path / "faketime"
    spec.write_text("+0\n")
    port = free_port()
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVAL_SEC=interval)
    process_env = {
        "LD_PRELOAD": _require_faketime(),
        "FAKETIME_TIMESTAMP_FILE": str(spec),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    return DaemonProcess(tmp_path, env, port, process_env=process_env), spec


@pytest.mark.parametrize("step", ["-3600", "+3600"])
def test_the_daemon_under_faketime_recovers_on_schedule_after_a_wall_clock_step(
    sim: Simulator, tmp_path: Path, step: str
) -> None:
    """1. The daemon runs under libfaketime: its wall clock comes from a file the test rewrites,
       its monotonic clock is the real one.
    2. A device is forced down (RECOVERY_INTERVAL_SEC=2).
    3. The wall clock steps an hour back (or forward); the port comes back.
    4. The device recovers within seconds, not an hour later (or at once); the log says the
       clock stepped; the state file's times follow the new wall clock."""
    sim.add_device(601, "cpe-601", overwrite_ip="198.51.100.61", ports={"port2": "down"})
    daemon, spec = _daemon_under_faketime(sim, tmp_path, interval="2")
    auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    assert sim.send_alert(daemon.url + "/alert", 601, headers=auth) == 202
    wait_for(lambda: sim.device(601)["overwrite_ip"] == UNSUP, what="forced down")
    spec.write_text(f"{step}\n")
    sim.set_link(601, "port2", "up")
    state = tmp_path / "device_state.json"
    # Seconds after the step on a busy machine, an hour (or at once) if the step were followed.
    wait_for(lambda: read_state(state, time.time()).devices == {}, what="recovered")
    assert sim.device(601)["overwrite_ip"] == "198.51.100.61"
    log = (tmp_path / "alert_handler.log").read_text()
    direction = "back" if step.startswith("-") else "forward"
    assert f"wall clock stepped {direction} by 36" in log
    # A job in flight across the step may persist times from before it: at worst one
    # attempt comes early (documented in clock.py); the device still ends on its original.
    assert [data for _, data in sim.patches(601)][-1] == "198.51.100.61"
    assert daemon.terminate() == 0


def test_stored_times_follow_the_wall_clock_after_a_step(sim: Simulator, tmp_path: Path) -> None:
    """A device still forced down when the clock steps back: its next attempt in the state
    file moves with the wall clock, so a restart keeps the same distance to it."""
    sim.add_device(602, "cpe-602", ports={"port2": "down"})
    daemon, spec = _daemon_under_faketime(sim, tmp_path, interval="600")
    state = tmp_path / "device_state.json"

    def next_attempt() -> float | None:
        """On disk: the state file and its journal, as a restart would load them."""
        rec = read_state(state, time.time()).devices.get(602)
        if rec is None or rec.phase.value != "down":
            return None
        return rec.next_attempt_at

    auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    assert sim.send_alert(daemon.url + "/alert", 602, headers=auth) == 202
    wait_for(lambda: next_attempt() is not None, what="forced down")
    before = next_attempt()
    assert before is not None
    spec.write_text("-3600\n")
    wait_for(
        lambda: (after := next_attempt()) is not None and abs(before - 3600 - after) < 5,
        what="the next attempt shifted an hour back",
    )
    assert daemon.terminate() == 0
