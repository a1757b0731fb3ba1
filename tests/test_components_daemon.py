"""Lose the daemon's state, lose nothing: the daemon as a real process against the simulator,
SIGKILLed with devices forced down, its state directory (state file, journals, event journal)
deleted; the restarted daemon restores each device to its exact original, read from LibreNMS."""

from __future__ import annotations

import shutil
from pathlib import Path

from alert_handler.sim.simulator import Simulator
from tests.conftest import (
    UNSUP,
    DaemonProcess,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    wait_for,
)

IDS = list(range(301, 311))
ORIGINALS = {i: None if i % 2 else f"198.51.100.{i - 300}" for i in IDS}


def _env(sim: Simulator, tmp_path: Path, port: int, interval: str) -> dict[str, str]:
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVAL_SEC=interval)
    env["STATE_FILE"] = str(tmp_path / "state" / "device_state.json")
    return env


def test_a_daemon_whose_state_was_deleted_restores_exact_originals(
    sim: Simulator, tmp_path: Path
) -> None:
    """1. Ten CPEs lose port2 (five originals null, five addresses); the daemon forces them
       down, each original written to a LibreNMS component first.
    2. kill -9; the state directory (state file, its journal, the event journal) is deleted.
    3. Port2 comes back; a new daemon starts with nothing: reconciliation adopts every device
       from its component ("original from LibreNMS component") and recovers it to its exact
       original (no null in between), and the components are gone."""
    for i in IDS:
        sim.add_device(i, f"cpe-{i}", overwrite_ip=ORIGINALS[i], ports={"port2": "down"})
    port = free_port()
    (tmp_path / "state").mkdir()
    first = DaemonProcess(tmp_path, _env(sim, tmp_path, port, "3600"), port)
    try:
        for i in IDS:
            assert first.post(alert_body(i)).status_code == 202
        wait_for(
            lambda: (
                all(len(sim.components(i)) == 1 for i in IDS)
                and all(sim.device(i)["overwrite_ip"] == UNSUP for i in IDS)
            ),
            30,
            "every device forced down with its component",
        )
    finally:
        first.kill()
    for i in IDS:
        (component,) = sim.components(i).values()
        assert component["original"] == ("null" if ORIGINALS[i] is None else f'"{ORIGINALS[i]}"')
    shutil.rmtree(tmp_path / "state")
    (tmp_path / "state").mkdir()
    forced = {i: len(sim.patches(i)) for i in IDS}
    for i in IDS:
        sim.set_link(i, "port2", "up")
    second = DaemonProcess(tmp_path, _env(sim, tmp_path, port, "0.5"), port)
    try:
        wait_for(
            lambda: (
                all(sim.device(i)["overwrite_ip"] == ORIGINALS[i] for i in IDS)
                and sim.components() == {}
            ),
            60,
            "every device restored and its component removed",
        )
    finally:
        second.terminate()
    for i in IDS:
        assert sim.patches(i)[forced[i] :] == [(i, ORIGINALS[i])]  # exactly the original, once
    log = (tmp_path / "alert_handler.log").read_text()
    for i in IDS:
        shown = "null" if ORIGINALS[i] is None else ORIGINALS[i]
        assert f"device={i} step=inspect original from LibreNMS component: {shown}" in log


def test_a_component_whose_removal_failed_is_swept_by_reconciliation(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. A device is forced down (its component written) and its port comes back, but every
       DELETE of a component fails: the device is restored and let go all the same.
    2. Once LibreNMS takes DELETEs again, the next reconciliation removes the component."""
    sim.add_device(7, "cpe-7", overwrite_ip="10.0.0.7", ports={"port2": "down"})
    sim.inject("DELETE", r"/components/", status=500, times=10_000)
    running = start_daemon(RECONCILE_INTERVAL_SEC="1")
    assert running.post(alert_body(7)).status_code == 202
    wait_for(lambda: sim.device(7)["overwrite_ip"] == UNSUP, 20, "device 7 forced down")
    assert len(sim.components(7)) == 1
    sim.set_link(7, "port2", "up")
    wait_for(
        lambda: running.daemon.store.get(7) is None and sim.device(7)["overwrite_ip"] == "10.0.0.7",
        30,
        "device 7 recovered and let go",
    )
    assert len(sim.components(7)) == 1  # the removal failed; the device was not held back
    sim.clear_faults()
    wait_for(lambda: sim.components() == {}, 30, "the leftover component swept")
