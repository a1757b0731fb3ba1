"""The installed `alert-handler` run as a real process with a .env, driven like LibreNMS does."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

from alert_handler.sim.simulator import Simulator
from alert_handler.store.files import read_state
from tests.conftest import (
    UNSUP,
    WEBHOOK_TOKEN,
    DaemonProcess,
    base_env,
    free_port,
    installed_cli,
    wait_for,
)


def test_alert_in_forced_down_restored_and_sigterm(sim: Simulator, tmp_path: Path) -> None:
    """1. `alert-handler serve` starts in a directory holding a .env.
    2. LibreNMS's transport posts text/plain alerts for two CPEs whose port2 is down.
    3. Both are forced down; one gets port2 back and is restored to its original (null).
    4. SIGTERM: exit status 0, the one still down is in the state file with its original (a
       clean stop leaves the whole state in the file, no journal beside it)."""
    sim.add_device(501, "cpe-501", ports={"port2": "down"})
    sim.add_device(502, "cpe-502", overwrite_ip="198.51.100.52", ports={"port2": "down"})
    port = free_port()
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVAL_SEC="0.5")
    env["STATE_FILE"] = "device_state.json"  # relative to the working directory
    env["LOG_FILE"] = "alert_handler.log"
    daemon = DaemonProcess(tmp_path, env, port)
    try:
        auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        assert sim.send_alert(daemon.url + "/alert", 501, headers=auth) == 202
        assert sim.send_alert(daemon.url + "/alert", 502, headers=auth) == 202
        wait_for(
            lambda: all(sim.device(d)["overwrite_ip"] == UNSUP for d in (501, 502)),
            what="both forced down",
        )
        sim.set_link(501, "port2", "up")
        # What is on disk: the state file (at most about a second behind) and its journal.
        state = tmp_path / "device_state.json"
        wait_for(
            lambda: read_state(state, time.time()).devices.keys() == {502}, what="501 recovered"
        )
        assert sim.device(501)["overwrite_ip"] is None
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    saved = json.loads((tmp_path / "device_state.json").read_text())
    assert not (tmp_path / "device_state.json.journal").exists()
    assert list(saved["devices"]) == ["502"]
    assert saved["devices"]["502"]["original_overwrite_ip"] == "198.51.100.52"
    log = (tmp_path / "alert_handler.log").read_text()
    assert "device=501" in log and "recovered" in log
    assert WEBHOOK_TOKEN not in log


def test_bad_config_exits_2_naming_the_key(sim: Simulator, tmp_path: Path) -> None:
    """A bad value stops the program at start with status 2 and one line naming the key."""
    env = base_env(sim, tmp_path, RECOVERY_INTERVAL_SEC="abc")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = subprocess.run(
        [*installed_cli(), "serve"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "RECOVERY_INTERVAL_SEC: must be a positive number, got 'abc'" in result.stderr
    assert WEBHOOK_TOKEN not in result.stderr


def test_port_in_use_is_one_clear_line(sim: Simulator, tmp_path: Path) -> None:
    """Another program holds LISTEN_PORT: exit 1 with a line naming the address."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = base_env(sim, tmp_path, LISTEN_PORT=str(port))
        (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        result = subprocess.run(
            [*installed_cli()], cwd=tmp_path, capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigint_also_exits_0(sim: Simulator, tmp_path: Path) -> None:
    """Ctrl-C in a terminal stops the daemon cleanly too."""
    port = free_port()
    daemon = DaemonProcess(tmp_path, base_env(sim, tmp_path, LISTEN_PORT=str(port)), port)
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(30) == 0
    daemon.kill()
