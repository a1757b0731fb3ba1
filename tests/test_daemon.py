"""The daemon in-process against the simulator over real sockets; polls run as real processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from alert_handler.sim.simulator import Simulator
from alert_handler.store.codec import Snapshot, record_to_dict
from alert_handler.store.files import read_state
from tests.conftest import (
    AUTH,
    UNSUP,
    WEBHOOK_TOKEN,
    StartDaemon,
    alert_body,
    overwrite,
    wait_for,
)


def state_devices(path: Path) -> dict[str, dict[str, object]]:
    """The devices on disk: the state file and its journal, as a restart would load them."""
    snap = read_state(path, time.time())
    return {str(device_id): record_to_dict(rec) for device_id, rec in snap.devices.items()}


def on_disk(path: Path) -> tuple[Snapshot, int]:
    """What a restart would load, with the last journal line's number (a write moves it)."""
    snap = read_state(path, time.time())
    return snap, snap.seq


def test_device_forced_down_then_restored_to_null(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. An alert for a CPE whose port2 is down: 202, on disk before the reply.
    2. The daemon reads overwrite_ip (null), forces the device down, queues a discovery, no poll.
    3. The port comes back: restore null, discover, poll, check up; the device is forgotten and
       ends on null, not on the IP LibreNMS resolved."""
    sim.add_device(42, "cpe-42", real_ip="192.0.2.42", ports={"port2": "down", "ether1": "up"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.5")
    reply = d.post(alert_body(42))
    assert reply.status_code == 202
    assert reply.json() == {"status": "accepted", "device_id": 42, "new": True}
    assert "42" in state_devices(Path(d.cfg.state_file))
    wait_for(lambda: overwrite(sim, 42) == UNSUP, what="forced down")
    # The PATCH is visible in the simulator a moment before the discovery request is sent.
    wait_for(
        lambda: ("GET", "/devices/42/discover") in [(r.method, r.path) for r in sim.requests],
        what="the discovery request",
    )
    paths = [(r.method, r.path) for r in sim.requests]
    patch_at = paths.index(("PATCH", "/devices/42"))
    assert paths[patch_at + 1] == ("GET", "/devices/42/discover")
    assert paths.index(("GET", "/devices/42")) < patch_at  # original read first
    record = wait_for(lambda: d.daemon.store.get(42), what="record")
    assert record.original_recorded and record.original_overwrite_ip is None
    sim.set_link(42, "port2", "up")
    wait_for(lambda: d.daemon.store.get(42) is None, what="recovery")
    assert overwrite(sim, 42) is None
    assert sim.device(42)["ip"] == "192.0.2.42"
    assert sim.patches(42) == [(42, UNSUP), (42, None)] or sim.patches(42)[-1] == (42, None)
    wait_for(lambda: state_devices(Path(d.cfg.state_file)) == {}, what="state file emptied")


def test_original_overwrite_ip_is_restored_exactly(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. A CPE whose overwrite_ip is 198.51.100.7 loses port2 and is forced down.
    2. LibreNMS polls it while forced down and alerts 'Device Down' with ip=UNSUPERVISED_IP.
    3. That self-inflicted alert is a repeat: 200, the original is untouched.
    4. The port comes back: overwrite_ip is 198.51.100.7 again."""
    sim.add_device(7, "cpe-7", overwrite_ip="198.51.100.7", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="1")
    assert d.post(alert_body(7, ip="198.51.100.7")).status_code == 202
    wait_for(lambda: overwrite(sim, 7) == UNSUP, what="forced down")
    assert sim.poll(7)[0] == 6
    assert sim.device(7)["ip"] == UNSUP
    status = sim.send_alert(
        d.url + "/alert",
        7,
        rule="Device Down! Due to no ICMP response.",
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
    )
    assert status == 200
    record = d.daemon.store.get(7)
    assert record is not None
    assert record.original_overwrite_ip == "198.51.100.7"
    assert record.alerts == 2 and record.last_ip == UNSUP
    sim.set_link(7, "port2", "up")
    wait_for(lambda: d.daemon.store.get(7) is None, what="recovery")
    assert overwrite(sim, 7) == "198.51.100.7"
    assert all(data in (UNSUP, "198.51.100.7") for _, data in sim.patches(7))


def test_still_down_is_forced_down_again_and_retried(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. Forced down; the first attempt restores, polls, finds port2 down, forces it down again.
    2. The next attempt (one interval later) finds it up and forgets it."""
    sim.add_device(5, "cpe-5", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    d.post(alert_body(5))
    wait_for(lambda: (r := d.daemon.store.get(5)) and r.attempts >= 2, what="two attempts")
    assert overwrite(sim, 5) in (UNSUP, None)
    sim.set_link(5, "port2", "up")
    wait_for(lambda: d.daemon.store.get(5) is None, what="recovery")
    patches = [data for _, data in sim.patches(5)]
    assert patches[:4] == [UNSUP, None, UNSUP, None]
    assert patches[-1] is None


def test_stale_alert_and_decoy_ports(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. Device 1: port2 up, decoys port20 and Port2-backup down: stale, nothing changed.
    2. Device 2: only port20 and Port2-backup: no target port, nothing changed.
    3. Device 3: port2 down while every other device's port2 is up: forced down, and the port
       it watches is its own port2."""
    sim.add_device(1, "cpe-1", ports={"port2": "up", "port20": "down", "Port2-backup": "down"})
    sim.add_device(2, "cpe-2", ports={"port20": "down", "Port2-backup": "down"})
    sim.add_device(3, "cpe-3", ports={"port2": "down", "port20": "up"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="30")
    for device_id in (1, 2, 3):
        assert d.post(alert_body(device_id)).status_code == 202
    wait_for(lambda: overwrite(sim, 3) == UNSUP, what="device 3 forced down")
    wait_for(
        lambda: d.daemon.store.get(1) is None and d.daemon.store.get(2) is None, what="dismissed"
    )
    assert sim.patches(1) == [] and sim.patches(2) == []
    record = d.daemon.store.get(3)
    assert record is not None and record.port_id == sim.port(3, "port2").port_id
    assert not any("/ports/search" in r.path for r in sim.requests)


def test_failed_api_call_mid_cycle_is_retried(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. Forced down.
    2. The restore PATCH answers 500: the attempt fails, the device is forced down again.
    3. Reading the device's ports after the poll answers 500 on the next try: forced down
       again.
    4. Then LibreNMS is healthy: recovered on the original."""
    sim.add_device(9, "cpe-9", overwrite_ip="192.0.2.99", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    d.post(alert_body(9))
    wait_for(lambda: overwrite(sim, 9) == UNSUP, what="forced down")
    sim.set_link(9, "port2", "up")
    sim.inject("PATCH", r"^/devices/9$", status=500, times=1)
    sim.inject("GET", r"^/devices/9/ports$", status=500, times=1)
    wait_for(lambda: d.daemon.store.get(9) is None, timeout=60, what="recovery")
    assert overwrite(sim, 9) == "192.0.2.99"
    failed = [r for r in sim.requests if r.status == 500]
    assert len(failed) == 2


def test_restart_between_force_down_and_restore(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. A daemon forces a device down, then stops (state saved).
    2. A new daemon on the same state file resumes: restores the recorded original
       (never the UNSUPERVISED_IP it now reads from the API) once the port is up."""
    sim.add_device(11, "cpe-11", overwrite_ip="203.0.113.11", ports={"port2": "down"})
    first = start_daemon(RECOVERY_INTERVAL_SEC="2")
    first.post(alert_body(11))
    wait_for(lambda: overwrite(sim, 11) == UNSUP, what="forced down")
    wait_for(lambda: (r := first.daemon.store.get(11)) and r.phase.value == "down", what="down")
    assert first.stop() == 0
    saved = state_devices(tmp_path / "device_state.json")["11"]
    assert saved["phase"] == "down" and saved["original_overwrite_ip"] == "203.0.113.11"
    sim.set_link(11, "port2", "up")
    second = start_daemon(RECOVERY_INTERVAL_SEC="2")
    resumed = second.daemon.store.get(11)
    assert resumed is not None and resumed.original_overwrite_ip == "203.0.113.11"
    wait_for(lambda: second.daemon.store.get(11) is None, what="recovery after restart")
    assert overwrite(sim, 11) == "203.0.113.11"


def test_recovered_notification_checks_at_once(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. Forced down with a long interval.
    2. LibreNMS sends state 0 (recovered) for the device: it is checked now, not in 60 s."""
    sim.add_device(12, "cpe-12", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="60")
    d.post(alert_body(12))
    wait_for(lambda: (r := d.daemon.store.get(12)) and r.phase.value == "down", what="down")
    sim.set_link(12, "port2", "up")
    reply = d.post(alert_body(12, state=0))
    assert reply.status_code == 200 and reply.json()["status"] == "recheck"
    wait_for(lambda: d.daemon.store.get(12) is None, what="recovery")
    assert overwrite(sim, 12) is None


def test_webhook_answers(sim: Simulator, start_daemon: StartDaemon) -> None:
    """Each kind of request gets its documented status, and rejected ones write nothing."""
    for device_id in (20, 23, 24):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="60", TRIGGER_RULES="Port2 down")
    state = Path(d.cfg.state_file)
    assert d.post(alert_body(20, state=2)).json()["status"] == "ignored"
    assert d.post(alert_body(21, state=0)).json()["status"] == "ignored"
    assert d.post(alert_body(22, rule="Disk full")).json()["status"] == "ignored"
    assert state_devices(state) == {}
    assert d.post(alert_body(20)).status_code == 202
    wait_for(lambda: (r := d.daemon.store.get(20)) and r.phase.value == "down", what="down")
    second = d.post(alert_body(20, rule="Disk full"))
    assert second.status_code == 200 and second.json()["status"] == "repeat"
    before = on_disk(state)
    for bad in ('{"device_id": "42; rm -rf /"}', "{not json", '{"state": 1}', '{"device_id": 0}'):
        reply = d.post(bad)
        assert reply.status_code == 400 and "error" in reply.json()
    assert d.post(alert_body(20), auth=False).status_code == 401
    assert d.post(b"x" * (64 * 1024 + 1)).status_code == 413
    assert requests.get(d.url + "/nope", timeout=5).status_code == 404
    # GET /alert is an alert with its fields in the query string (LibreNMS's GET transport):
    # the webhook token first, then the fields; other methods are still refused.
    assert requests.get(d.url + "/alert", timeout=5).status_code == 401
    assert requests.get(d.url + "/alert", headers=AUTH, timeout=5).status_code == 400
    assert requests.delete(d.url + "/alert", headers=AUTH, timeout=5).status_code == 405
    assert on_disk(state) == before
    form = d.post("device_id=23&state=1&rule=Port2+down")
    assert form.status_code == 202
    query = requests.post(
        d.url + "/?device_id=24&rule=Port2%20down",
        headers={"X-Auth-Token": WEBHOOK_TOKEN},
        timeout=5,
    )
    assert query.status_code == 202
    health = requests.get(d.url + "/health", timeout=5)
    assert health.status_code == 200
    body = health.json()
    assert body["tracked"] == 3 and body["recovery_thread"] == "alive" and body["auth"] == "enabled"


@pytest.mark.parametrize("interval", ["0.3"])
def test_sigterm_saves_state(sim: Simulator, start_daemon: StartDaemon, interval: str) -> None:
    """SIGTERM: the run loop returns 0 and every tracked device is in the state file."""
    sim.add_device(30, "cpe-30", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC=interval)
    d.post(alert_body(30))
    wait_for(lambda: overwrite(sim, 30) == UNSUP, what="forced down")
    assert d.stop() == 0
    assert "30" in state_devices(Path(d.cfg.state_file))
