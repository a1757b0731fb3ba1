"""`alert-handler recover-from-librenms`: from LibreNMS alone (no daemon, no state file), the
devices on UNSUPERVISED_IP and their originals; `--restore` puts them back and removes the
components, refusing where LibreNMS holds no original."""

from __future__ import annotations

import os
from pathlib import Path

from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.components import Components
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import UNSUP, base_env
from tests.test_operator_cli import cli, write_env

NAME = "recover-from-librenms"
T0 = 1_780_000_000.0


def _fleet(sim: Simulator) -> Components:
    """41 (component: null), 42 (component: 10.0.0.2), 43 (on UNSUPERVISED_IP, no component),
    44 (not forced down)."""
    for i in (41, 42, 43, 44):
        sim.add_device(i, f"cpe-{i}", overwrite_ip=UNSUP if i != 44 else "10.0.0.4")
    comps = Components(LibreNMS(sim.url, DEFAULT_TOKEN), daemon="host-a")
    comps.write(41, None, "ep_41", T0)
    comps.write(42, "10.0.0.2", "ep_42", T0)
    return comps


def test_it_lists_then_restores_and_refuses_to_guess(sim: Simulator, tmp_path: Path) -> None:
    """1. Listing: each device on UNSUPERVISED_IP with its original ("unknown" for 43), no
       change made, exit 0.
    2. --restore: 41 to null, 42 to 10.0.0.2, their components removed; 43 left alone and
       said so: exit 1 (a refusal).
    3. --restore --unknown-as-null: 43 to null, exit 0."""
    _fleet(sim)
    write_env(tmp_path, base_env(sim, tmp_path))
    listed = cli(tmp_path, NAME)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:4]]
    assert [r[:3] for r in rows] == [
        ["41", "cpe-41", "null"],
        ["42", "cpe-42", "10.0.0.2"],
        ["43", "cpe-43", "unknown"],
    ]
    assert rows[0][4:] == ["host-a", "ep_41"]
    assert "3 device(s) on UNSUPERVISED_IP 127.0.0.50: 2 with an original" in listed.stdout
    assert sim.patches() == [] and DEFAULT_TOKEN not in listed.stdout + listed.stderr

    restored = cli(tmp_path, NAME, "--restore")
    assert restored.returncode == 1, restored.stdout + restored.stderr
    assert "device 41: restored overwrite_ip null (from its LibreNMS component)" in restored.stdout
    assert "device 43: not restored: LibreNMS holds no original for it" in restored.stdout
    assert sim.device(41)["overwrite_ip"] is None
    assert sim.device(42)["overwrite_ip"] == "10.0.0.2"
    assert sim.device(43)["overwrite_ip"] == UNSUP and sim.components() == {}

    forced = cli(tmp_path, NAME, "--restore", "--unknown-as-null")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "device 43: restored overwrite_ip null (unknown: null)" in forced.stdout
    assert sim.device(43)["overwrite_ip"] is None and sim.device(44)["overwrite_ip"] == "10.0.0.4"


def test_usage_and_a_running_daemon_are_refused(sim: Simulator, tmp_path: Path) -> None:
    """1. --unknown-as-null without --restore: usage, exit 2. Bad settings: exit 2.
    2. A daemon holding this host's state lock owns its devices: --restore refuses, exit 1,
       nothing changed."""
    _fleet(sim)
    write_env(tmp_path, base_env(sim, tmp_path))
    usage = cli(tmp_path, NAME, "--unknown-as-null")
    assert usage.returncode == 2 and "needs --restore" in usage.stderr
    bad = cli(tmp_path, NAME, LIBRENMS_URL="ftp://x")
    assert bad.returncode == 2 and "LIBRENMS_URL" in bad.stderr
    lock = tmp_path / "device_state.json.lock"
    lock.write_text(f"{os.getpid()}\n")  # this test's process: alive, as a daemon would be
    refused = cli(tmp_path, NAME, "--restore")
    assert refused.returncode == 1 and "a daemon runs on this host" in refused.stderr
    assert sim.patches() == [] and len(sim.components()) == 2
