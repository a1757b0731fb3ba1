"""Issue 7, continued: faults the daemon must heal from, run in-process against the simulator.

A sick LibreNMS (500s, timeouts, refused connections, 429 and 4xx), a recovery thread that
raises, a step that raises, a stuck recovery loop under the systemd watchdog, reconciliation with
LibreNMS, MAX_ATTEMPTS, and corrupt, empty and legacy state files. The daemon runs in this
process (`start_daemon`) so a fault that cannot be produced from outside (a scheduler that
raises, a poll that hangs past its own timeout, an answer the client cannot read) is injected by
replacing one method, and the log is read with caplog.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import requests

from alert_handler.core.facts import PortInfo
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.poll import Poller, PollResult
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from alert_handler.store.codec import record_to_json, snapshot_to_json
from tests.conftest import UNSUP, RunningDaemon, StartDaemon, alert_body, overwrite, wait_for
from tests.test_faults import assert_restored

STATE = "device_state.json"


def health(d: RunningDaemon) -> tuple[int, dict[str, Any]]:
    """GET /health: (status, body)."""
    reply = requests.get(d.url + "/health", timeout=30)
    return reply.status_code, reply.json()


def phase_of(d: RunningDaemon, device_id: int) -> Phase | None:
    """The device's phase in the daemon's memory, None when not tracked."""
    rec = d.daemon.store.get(device_id)
    return None if rec is None else rec.phase


def messages(
    caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING
) -> list[str]:
    """Log lines at `level` or above containing `text`."""
    return [r.getMessage() for r in caplog.records if r.levelno >= level and text in r.getMessage()]


def step_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The scheduler's warnings that a step failed (rate-limited to one a minute)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "alert_handler.recovery.scheduler"
        and r.levelno >= logging.WARNING
        and " failed: " in r.getMessage()
    ]


def daemon_warnings(caplog: pytest.LogCaptureFixture, at_least: int = 0) -> list[str]:
    """Every warning or error the daemon logged since the last caplog.clear(), once there are
    `at_least` (a line is logged just after the change a test waits for). Health level lines
    are left out: they follow the supervisor's one-second tick (test_health.py has them)."""

    def said() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("alert_handler")
            and r.name != "alert_handler.ops.health"
            and r.levelno >= logging.WARNING
        ]

    wait_for(lambda: len(said()) >= at_least, what=f"{at_least} warnings")
    return said()


def someone_sets(sim: Simulator, device_id: int, value: str | None) -> None:
    """An operator (or another tool) PATCHes overwrite_ip through the API."""
    reply = requests.patch(
        f"{sim.url}/devices/{device_id}",
        data=json.dumps({"field": "overwrite_ip", "data": value}),
        headers={"X-Auth-Token": DEFAULT_TOKEN},
        timeout=5,
    )
    assert reply.status_code == 200


def forced_down(
    sim: Simulator, start_daemon: StartDaemon, devices: dict[int, str | None], **env: str
) -> RunningDaemon:
    """A daemon that has forced `devices` (id -> original) down; port2 stays down."""
    for device_id, original in devices.items():
        sim.add_device(
            device_id, f"cpe-{device_id}", overwrite_ip=original, ports={"port2": "down"}
        )
    d = start_daemon(**env)
    for device_id in devices:
        assert d.post(alert_body(device_id)).status_code == 202
    ids = list(devices)
    wait_for(lambda: all(phase_of(d, i) is Phase.DOWN for i in ids), what=f"{ids} forced down")
    return d


def wait_forgotten(d: RunningDaemon, ids: list[int] | tuple[int, ...], timeout: float = 30) -> None:
    """Until none of `ids` is tracked."""
    wait_for(lambda: all(d.daemon.store.get(i) is None for i in ids), timeout, f"{ids} recovered")


# -- 1. a sick LibreNMS -----------------------------------------------------------------------
def test_librenms_answering_500_for_a_while(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Three devices are forced down; port2 comes back on all of them.
    2. LibreNMS answers its next 40 API requests with 500: every step fails and is retried at the
       next interval; the log says so once per device and failing step (not once per interval),
       so each device's history shows its failures; every failure is counted.
    3. LibreNMS heals: one line says so, every device recovers on its original; the recovery
       thread never died."""
    devices: dict[int, str | None] = {71: "198.51.100.71", 72: None, 73: "198.51.100.73"}
    d = forced_down(sim, start_daemon, devices, RECOVERY_INTERVAL_SEC="0.2")
    caplog.clear()
    sim.inject("*", r"^/(devices|ports)/", status=500, times=40)
    for device_id in devices:
        sim.set_link(device_id, "port2", "up")
    wait_forgotten(d, tuple(devices))
    assert sum(1 for r in sim.requests if r.status == 500) == 40
    said = daemon_warnings(caplog, at_least=4)
    failures, last = said[:-1], said[-1]
    assert "steps succeed again" in last and "40 failures" in last, said
    assert all(" failed: " in line and "HTTP 500" in line for line in failures), said
    heads = [re.match(r"device=(\d+) step=(\w+) failed", line) for line in failures]
    pairs = [(m.group(1), m.group(2)) for m in heads if m is not None]
    assert len(pairs) == len(failures) == len(set(pairs)), said  # once per device and step
    assert {int(device) for device, _ in pairs} == set(devices), said
    assert_restored(sim, devices)
    status, body = health(d)
    assert status == 200 and body["thread_restarts"] == 0
    metrics = d.daemon.metrics.render().decode()
    failed = re.findall(r'alert_handler_step_failures_total\{step="\w+"\} (\d+)', metrics)
    assert sum(float(n) for n in failed) == 40


def test_librenms_timing_out(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. A device is forced down (API_TIMEOUT_SEC=0.3); its port comes back.
    2. LibreNMS takes 1 s to answer the next three reads of the device: each attempt times out
       and is tried again later; one warning says so.
    3. Then it answers in time: the device recovers on its original."""
    devices: dict[int, str | None] = {74: "198.51.100.74"}
    d = forced_down(sim, start_daemon, devices, RECOVERY_INTERVAL_SEC="0.2", API_TIMEOUT_SEC="0.3")
    caplog.clear()
    sim.inject("GET", r"^/devices/74$", status=200, delay=1.0, times=3)
    sim.set_link(74, "port2", "up")
    wait_forgotten(d, [74])
    said = daemon_warnings(caplog, at_least=2)
    assert len(said) == 2, said
    assert " failed: " in said[0] and "timed out" in said[0] and "steps succeed again" in said[1]
    assert_restored(sim, devices)


def test_librenms_refusing_connections(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. A device is forced down; LibreNMS goes away (connection refused) and port2 comes back.
    2. Attempts fail; one warning says the connection failed; the recovery thread lives on.
    3. LibreNMS is back on the same address: the device recovers on its original."""
    devices: dict[int, str | None] = {75: "198.51.100.75"}
    d = forced_down(sim, start_daemon, devices, RECOVERY_INTERVAL_SEC="0.2")
    caplog.clear()
    port = urlsplit(sim.url).port
    assert port is not None
    sim.stop()
    sim.set_link(75, "port2", "up")
    wait_for(lambda: step_failures(caplog), what="a failed attempt")
    assert "connection failed" in step_failures(caplog)[0]
    assert health(d)[1]["recovery_thread"] == "alive"
    sim.start("127.0.0.1", port)
    wait_forgotten(d, [75])
    said = daemon_warnings(caplog, at_least=2)
    assert len(said) == 2 and "steps succeed again" in said[1], said
    assert_restored(sim, devices)


def test_503_and_429_retried_within_the_step_4xx_not(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. API_RETRIES=2: the PATCH forcing a device down gets 503, then 429, then 200: the step
       succeeds by itself, after backing off at least 0.25 s then 0.5 s (0.5 s doubling, jitter
       0.5-1.5x); no failure is logged.
    2. The restoring PATCH gets 403: not retried; the attempt fails (the device is looked at
       again before anything else is written) and a later attempt recovers it."""
    sim.add_device(76, "cpe-76", overwrite_ip="198.51.100.76", ports={"port2": "down"})
    d = start_daemon(API_RETRIES="2", RECOVERY_INTERVAL_SEC="0.3")
    sim.inject("PATCH", r"^/devices/76$", status=503, times=1)
    sim.inject("PATCH", r"^/devices/76$", status=429, times=1)
    assert d.post(alert_body(76)).status_code == 202
    wait_for(lambda: phase_of(d, 76) is Phase.DOWN, what="forced down")
    patches = [r for r in sim.requests if (r.method, r.path) == ("PATCH", "/devices/76")]
    assert [r.status for r in patches] == [503, 429, 200]
    assert patches[1].time - patches[0].time >= 0.25
    assert patches[2].time - patches[1].time >= 0.5
    assert step_failures(caplog) == []
    sim.inject("PATCH", r"^/devices/76$", status=403, times=1)
    sim.set_link(76, "port2", "up")
    wait_forgotten(d, [76])
    calls = [(r.method, r.path, r.status) for r in sim.requests if r.path == "/devices/76"]
    refused_at = calls.index(("PATCH", "/devices/76", 403))
    assert calls[refused_at + 1] == ("GET", "/devices/76", 200)
    assert "HTTP 403" in step_failures(caplog)[0]
    assert overwrite(sim, 76) == "198.51.100.76"


# -- 2. the recovery thread -------------------------------------------------------------------
def test_recovery_thread_that_raises_is_noticed_and_restarted(
    sim: Simulator,
    start_daemon: StartDaemon,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1. The scheduler raises once (a bug): the thread ends, the traceback is logged.
    2. /health answers 503 (recovery_thread dead) until the daemon's main loop restarts the
       thread (held back here until the 503 has been seen).
    3. /health is 200 again, the restart is counted in /health and /metrics, and the new
       thread does the work: an alert's device is forced down."""
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    scheduler = d.daemon.scheduler
    gate = threading.Event()
    real_ensure = scheduler.ensure_running
    monkeypatch.setattr(scheduler, "ensure_running", lambda: gate.is_set() and real_ensure())
    real_schedule = scheduler._schedule
    raised: list[bool] = []

    def faulty() -> float:
        if not raised:
            raised.append(True)
            raise RuntimeError("injected: the scheduler raises")
        return real_schedule()

    monkeypatch.setattr(scheduler, "_schedule", faulty)
    scheduler.wake()
    wait_for(lambda: health(d) == (503, {**health(d)[1], "recovery_thread": "dead"}), what="503")
    body = health(d)[1]
    assert body["status"] == "critical" and "recovery_loop: dead" in body["reasons"]
    died = [r for r in caplog.records if "recovery-thread died" in r.getMessage()]
    assert len(died) == 1 and died[0].exc_info is not None
    gate.set()
    wait_for(lambda: health(d)[0] == 200, what="/health 200 after the restart")
    assert health(d)[1]["thread_restarts"] == 1 and health(d)[1]["status"] == "ok"
    metrics = requests.get(d.url + "/metrics", timeout=5).text
    assert "alert_handler_recovery_thread_restarts_total 1.0" in metrics
    sim.add_device(62, "cpe-62", ports={"port2": "down"})
    assert d.post(alert_body(62)).status_code == 202
    wait_for(lambda: overwrite(sim, 62) == UNSUP, what="forced down by the new thread")


def test_a_thread_that_keeps_dying_is_restarted_with_back_off(
    start_daemon: StartDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1. The scheduler raises on every pass (a persistent bug).
    2. The main loop restarts it after 1 s, then 2 s, ...: not once per second for ever (under
       systemd the watchdog ends it; without systemd the log must not fill up)."""
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    scheduler = d.daemon.scheduler

    def always() -> float:
        raise RuntimeError("injected: the scheduler always raises")

    real_start = scheduler.start
    started: list[float] = []  # when each restart began (monotonic)

    def start() -> None:
        if scheduler.restarts:  # not the daemon's first start, which may come after the patch
            started.append(time.monotonic())
        real_start()

    monkeypatch.setattr(scheduler, "start", start)
    monkeypatch.setattr(scheduler, "_schedule", always)
    scheduler.wake()
    wait_for(lambda: scheduler.restarts >= 3, what="three restarts")
    # The main loop looks every second; with back-off the restarts are at least 1 s, then 2 s
    # apart (without it, about 1 s each time). A busy machine only makes the gaps longer.
    gaps = [b - a for a, b in itertools.pairwise(started)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps


def test_step_that_raises_is_a_failed_step(
    sim: Simulator,
    start_daemon: StartDaemon,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1. A forced-down device's port comes back; reading its ports after the poll raises
       KeyError once (an answer the client cannot read, or a bug).
    2. It counts as a failed check: the device is forced down again at once, the traceback
       is logged once, the thread lives on.
    3. The next attempt recovers it on its original."""
    devices: dict[int, str | None] = {63: "198.51.100.63"}
    d = forced_down(sim, start_daemon, devices, RECOVERY_INTERVAL_SEC="0.3")
    api = d.daemon.scheduler.api
    real = api.device_ports
    calls: list[int] = []

    def unreadable(device_id: int) -> list[PortInfo]:
        calls.append(device_id)
        if len(calls) == 1:
            raise KeyError("ifOperStatus")
        return real(device_id)

    monkeypatch.setattr(api, "device_ports", unreadable)
    sim.set_link(63, "port2", "up")
    wait_forgotten(d, [63])
    assert [data for _, data in sim.patches(63)] == [UNSUP, "198.51.100.63"] * 2
    failures = [r for r in caplog.records if "unexpected KeyError" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    status, body = health(d)
    assert status == 200 and body["thread_restarts"] == 0


class HungPoller:
    """A poll that hangs past its own timeout (a wedged library call): it cannot be produced
    with a real command, whose timeout kills it."""

    def __init__(self, real: Poller) -> None:
        self.real = real
        self.entered = threading.Event()
        self.release = threading.Event()

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        self.entered.set()
        self.release.wait(60)
        return self.real.poll(device_id, poller_group)

    def check(self) -> str:
        return self.real.check()

    def close(self) -> None:
        self.real.close()


def _drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on `sock`."""
    sock.setblocking(False)
    got: list[bytes] = []
    try:
        while True:
            got.append(sock.recv(256))
    except BlockingIOError:
        return got
    finally:
        sock.settimeout(10)


def loop_failures(d: RunningDaemon) -> int:
    """How many times in a row the main loop found the recovery loop not alive (/health)."""
    return int(health(d)[1]["dependencies"]["recovery_loop"]["consecutive_failures"])


def test_stuck_recovery_loop_stops_the_systemd_watchdog(
    sim: Simulator,
    start_daemon: StartDaemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under systemd (NOTIFY_SOCKET, WATCHDOG_USEC=0.4 s):
    1. READY=1, then WATCHDOG=1 pings.
    2. A check's poll hangs past the step limit: /health answers 503 (recovery_thread stuck), an
       error says the watchdog is no longer fed, and no WATCHDOG=1 is sent while it is stuck.
    3. The poll returns: pings resume, /health is 200, the device recovers."""
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        devices: dict[int, str | None] = {64: "198.51.100.64"}
        d = forced_down(sim, start_daemon, devices, RECOVERY_INTERVAL_SEC="0.3")
        assert sock.recv(64) == b"READY=1"
        assert sock.recv(64) == b"WATCHDOG=1"
        scheduler = d.daemon.scheduler
        hung = HungPoller(cast(Poller, scheduler.poller))
        monkeypatch.setattr(scheduler, "poller", hung)
        scheduler.step_limit = 0.5
        sim.set_link(64, "port2", "up")
        assert hung.entered.wait(10)
        wait_for(lambda: messages(caplog, "recovery loop is stuck"), what="stuck noticed")
        assert "WATCHDOG=1 is no longer sent" in messages(caplog, "recovery loop is stuck")[0]
        _drain(sock)  # pings sent before the main loop saw the stall
        # The main loop looks every 0.1 s (the ping period) and counts each look at a stuck
        # loop as a failure in /health: five more looks, and no ping was sent meanwhile.
        looked = loop_failures(d)
        wait_for(lambda: loop_failures(d) >= looked + 5, what="five looks at the stuck loop")
        assert _drain(sock) == []
        assert health(d)[0] == 503 and health(d)[1]["recovery_thread"] == "stuck"
        assert health(d)[1]["status"] == "critical"
        hung.release.set()
        wait_forgotten(d, [64])
        assert sock.recv(64) == b"WATCHDOG=1"
        wait_for(lambda: messages(caplog, "makes progress again"), what="progress noticed")
        assert health(d)[0] == 200
        assert_restored(sim, devices)


# -- 3. reconciliation with LibreNMS ----------------------------------------------------------
def test_reconcile_adopts_untracked_devices_on_the_unsupervised_ip(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. At start, device 81 is on UNSUPERVISED_IP but not tracked (state lost): adopted, with
       a warning that its original is unknown and will be restored to null.
    2. While the daemon runs, someone sets device 82 (198.51.100.82) to UNSUPERVISED_IP by hand:
       adopted at the next reconcile (RECONCILE_INTERVAL_SEC=0.3).
    3. Both ports are up: both are restored to null, the only value that is known to be safe."""
    sim.add_device(81, "cpe-81", overwrite_ip=UNSUP, ports={"port2": "down"})
    sim.add_device(82, "cpe-82", overwrite_ip="198.51.100.82", ports={"port2": "up"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3", RECONCILE_INTERVAL_SEC="0.3")
    wait_for(lambda: messages(caplog, "device=81 step=reconcile"), what="81 adopted")
    assert "restored to null" in messages(caplog, "device=81 step=reconcile")[0]
    wait_for(lambda: (r := d.daemon.store.get(81)) and r.adopted, what="81 inspected")
    someone_sets(sim, 82, UNSUP)
    wait_for(lambda: messages(caplog, "device=82 step=reconcile"), what="82 adopted")
    sim.set_link(81, "port2", "up")
    wait_forgotten(d, [81, 82])
    assert overwrite(sim, 81) is None and overwrite(sim, 82) is None
    assert [data for _, data in sim.patches(82)] == [UNSUP, None]


def test_reconcile_picks_up_open_alerts_that_never_arrived(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. LibreNMS lists open alerts the webhook never delivered: 'Port2 down' on device 83,
       'Disk full' on device 84; TRIGGER_RULES is 'Port2 down'.
    2. Device 83 is tracked at start and forced down with its original recorded; device 84 is
       never touched, however many passes run."""
    sim.add_device(83, "cpe-83", overwrite_ip="198.51.100.83", ports={"port2": "down"})
    sim.add_device(84, "cpe-84", ports={"port2": "down"})
    sim.add_alert(83, "Port2 down", rule_id=1)
    sim.add_alert(84, "Disk full", rule_id=2)
    d = start_daemon(
        TRIGGER_RULES="Port2 down", RECOVERY_INTERVAL_SEC="0.3", RECONCILE_INTERVAL_SEC="0.2"
    )
    wait_for(lambda: phase_of(d, 83) is Phase.DOWN, what="83 forced down")
    rec = d.daemon.store.get(83)
    assert rec is not None and rec.original_overwrite_ip == "198.51.100.83"
    wait_for(lambda: sum(1 for r in sim.requests if r.path == "/alerts") >= 3, what="3 passes")
    assert d.daemon.store.get(84) is None and sim.patches(84) == []
    picked = messages(caplog, "never reached the daemon")
    assert len(picked) == 1 and "device=83" in picked[0]


def _forcing_down_record(device_id: int, original: str, port_id: int) -> DeviceRecord:
    now = time.time()
    return DeviceRecord(
        device_id=device_id,
        phase=Phase.FORCING_DOWN,
        hostname=f"cpe-{device_id}",
        original_recorded=True,
        original_overwrite_ip=original,
        port_id=port_id,
        first_seen=now,
        next_attempt_at=now,
        last_alert=now,
    )


def test_foreign_change_is_left_alone_and_reported(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1. The state file says device 86 was about to be forced down (original 198.51.100.86)
       when the daemon died; meanwhile someone set it to 192.0.2.186. The restarted daemon
       looks before writing: it forgets the device with a warning and writes nothing.
    2. Device 85 is forced down; someone sets it to 192.0.2.185. At the next attempt the
       daemon leaves it alone (forgotten, a warning); 192.0.2.185 stays."""
    sim.add_device(86, "cpe-86", overwrite_ip="192.0.2.186", ports={"port2": "down"})
    rec = _forcing_down_record(86, "198.51.100.86", sim.port(86, "port2").port_id)
    (tmp_path / STATE).write_text(snapshot_to_json([(86, record_to_json(rec))], paused=False))
    devices: dict[int, str | None] = {85: "198.51.100.85"}
    d = forced_down(sim, start_daemon, devices, RECOVERY_INTERVAL_SEC="0.3")
    wait_forgotten(d, [86])
    assert overwrite(sim, 86) == "192.0.2.186" and sim.patches(86) == []
    someone_sets(sim, 85, "192.0.2.185")
    wait_forgotten(d, [85])
    assert overwrite(sim, 85) == "192.0.2.185"
    assert sim.patches(85)[-1] == (85, "192.0.2.185")
    wait_for(lambda: len(messages(caplog, "changed by someone else")) >= 2, what="2 reports")
    reported = messages(caplog, "changed by someone else")
    assert len(reported) == 2 and "192.0.2.186" in reported[0] and "192.0.2.185" in reported[1]


# -- 4. giving up -----------------------------------------------------------------------------
def test_max_attempts_restores_the_original_and_forgets(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """MAX_ATTEMPTS=2 and port2 never comes back: after the second check the device is left on
    its original, forgotten, and an error line says so."""
    sim.add_device(87, "cpe-87", overwrite_ip="198.51.100.87", ports={"port2": "down"})
    d = start_daemon(MAX_ATTEMPTS="2", RECOVERY_INTERVAL_SEC="0.2")
    assert d.post(alert_body(87)).status_code == 202
    wait_for(lambda: messages(caplog, "MAX_ATTEMPTS reached", logging.ERROR), what="give-up")
    wait_forgotten(d, [87])
    assert overwrite(sim, 87) == "198.51.100.87"
    assert [data for _, data in sim.patches(87)] == [UNSUP, "198.51.100.87"] * 2
    assert len(messages(caplog, "MAX_ATTEMPTS reached", logging.ERROR)) == 1


# -- 5. state files ---------------------------------------------------------------------------
def _state_text(sim: Simulator) -> str:
    """A valid state file tracking device 91 as forced down with its original."""
    rec = _forcing_down_record(91, "198.51.100.91", sim.port(91, "port2").port_id)
    return snapshot_to_json([(91, record_to_json(rec))], paused=False)


CORRUPTIONS: dict[str, Callable[[str], bytes]] = {
    "garbage": lambda valid: b"{not json at all",
    "truncated": lambda valid: valid.encode()[: len(valid) // 2],
    "not-utf8": lambda valid: b"\xff\xfe" + valid.encode(),
    "unknown-version": lambda valid: valid.replace('"version": 1', '"version": 99').encode(),
    "bad-record": lambda valid: valid.replace('"phase": "forcing_down"', '"phase": "x"').encode(),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_state_file_is_set_aside_and_the_device_adopted(
    kind: str,
    sim: Simulator,
    start_daemon: StartDaemon,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1. LibreNMS shows device 91 on UNSUPERVISED_IP; the state file that tracked it is
       corrupt (`kind`).
    2. The daemon starts: the file is moved aside byte for byte and an error says so.
    3. Reconcile adopts the device (its original is unknown, a warning says so); port2 is up,
       so it is restored to null."""
    sim.add_device(91, "cpe-91", overwrite_ip=UNSUP, ports={"port2": "up"})
    content = CORRUPTIONS[kind](_state_text(sim))
    (tmp_path / STATE).write_bytes(content)
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    aside = list(tmp_path.glob(STATE + ".corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert messages(caplog, "is corrupt", logging.ERROR)
    wait_for(lambda: messages(caplog, "device=91 step=reconcile"), what="adopted")
    wait_for(lambda: overwrite(sim, 91) is None, what="restored to null")
    wait_forgotten(d, [91])


def test_empty_state_file_means_no_devices(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty state file is an empty state (nothing set aside); a device LibreNMS shows on
    UNSUPERVISED_IP is adopted and restored to null."""
    sim.add_device(91, "cpe-91", overwrite_ip=UNSUP, ports={"port2": "up"})
    (tmp_path / STATE).write_bytes(b"")
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    assert not list(tmp_path.glob(STATE + ".corrupt-*"))
    assert not messages(caplog, "is corrupt")
    wait_for(lambda: messages(caplog, "device=91 step=reconcile"), what="adopted")
    wait_for(lambda: overwrite(sim, 91) is None, what="restored to null")
    wait_forgotten(d, [91])


def test_legacy_state_file_is_migrated(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1. The old script's flat file tracks device 92 (which it forced down) and device 93; its
       `ip` values came from alerts and are not originals.
    2. The daemon migrates it (a warning; the file is rewritten in the new format) and inspects
       both: 92 is on UNSUPERVISED_IP, adopted; 93's original is read from LibreNMS.
    3. The ports come back: 92 is restored to null, 93 to 198.51.100.93 (not the old `ip`)."""
    sim.add_device(92, "cpe-92", overwrite_ip=UNSUP, ports={"port2": "down"})
    sim.add_device(93, "cpe-93", overwrite_ip="198.51.100.93", ports={"port2": "down"})
    legacy = {
        str(i): {
            "hostname": f"cpe-{i}",
            "ip": ip,
            "port_id": sim.port(i, "port2").port_id,
            "added_at": "2024-05-01T10:00:00",
        }
        for i, ip in ((92, UNSUP), (93, "192.0.2.99"))
    }
    state = tmp_path / STATE
    state.write_text(json.dumps(legacy))
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    assert messages(caplog, "old single-script format")
    wait_for(lambda: json.loads(state.read_text()).get("version") == 1, what="rewritten")
    wait_for(lambda: (r := d.daemon.store.get(92)) and r.adopted, what="92 adopted")
    wait_for(lambda: phase_of(d, 93) is Phase.DOWN, what="93 forced down")
    rec = d.daemon.store.get(93)
    assert rec is not None and rec.original_overwrite_ip == "198.51.100.93" and not rec.adopted
    for i in (92, 93):
        sim.set_link(i, "port2", "up")
    wait_forgotten(d, [92, 93])
    assert overwrite(sim, 92) is None and overwrite(sim, 93) == "198.51.100.93"
