"""`alert-handler recover-from-librenms`: from LibreNMS alone (no daemon, no state file), the
devices on UNSUPERVISED_IP and their originals; `--restore` puts them back and removes the
components, refusing where LibreNMS holds no original."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.components import Components
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import UNSUP, StartDaemon, base_env, wait_for
from tests.test_operator_cli import cli, start_with_env, write_env

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


def test_release_of_an_untracked_device_takes_the_original_librenms_holds(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Device 9 sits on UNSUPERVISED_IP, untracked (a daemon's lost state), its component
       holding 10.0.0.9; the event journal knows nothing.
    2. `release 9` restores 10.0.0.9, not null, says it came from the component, the daemon's
       log says so too, and the component is gone."""
    sim.add_device(9, "cpe-9", ports={"port2": "up"})
    start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    # After the reconciler's first pass (which would adopt it), as in the edges' release test.
    wait_for(lambda: any(r.path == "/devices" for r in sim.requests), what="reconcile pass")
    api = LibreNMS(sim.url, DEFAULT_TOKEN)
    Components(api, daemon="host-a").write(9, "10.0.0.9", "ep_9", T0)
    api.set_overwrite_ip(9, UNSUP)
    caplog.set_level(logging.INFO)
    released = cli(tmp_path, "release", "9")
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == (
        "device 9: was not tracked; overwrite_ip restored to 10.0.0.9, from its LibreNMS component"
    )
    assert sim.patches(9)[-1] == (9, "10.0.0.9") and sim.components() == {}
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device=9 step=")]
    assert any("(original from LibreNMS component: 10.0.0.9)" in line for line in said), said


def test_check_says_when_the_token_may_not_keep_originals_in_librenms(tmp_path: Path) -> None:
    """1. A token that may PATCH devices but not touch components (LibreNMS 26.7 permissions):
       `check` says so in one line each for create, edit and delete (✘, exit 1), nothing made.
    2. A token that may create but not delete: its probe component stays, and the delete line
       names it, to be removed by hand."""
    limited = "abcdef0123456789abcdef0123456789"
    creates = "0123456789abcdef0123456789abcdee"
    base = {"device.viewAny", "device.update", "alert.viewAny"}
    tokens = {limited: frozenset(base), creates: frozenset(base | {"component.create"})}
    with Simulator(tokens=tokens) as sim:
        sim.add_device(5, "cpe-5")
        write_env(tmp_path, base_env(sim, tmp_path, LIBRENMS_API_TOKEN=limited))
        result = cli(tmp_path, "check")
        lines = result.stdout.splitlines()
        assert result.returncode == 1
        for action, route, perm in (
            ("create", "POST /devices/{id}/components/{type}", "create"),
            ("edit", "PUT /devices/{id}/components", "update"),
            ("delete", "DELETE /devices/{id}/components/{id}", "delete"),
        ):
            assert any(
                line.startswith(
                    f"\u2718 API token may not {action} device components ({route}: 403)"
                )
                and f"component.{perm}" in line
                for line in lines
            ), result.stdout
        assert sim.components() == {}
        write_env(tmp_path, base_env(sim, tmp_path, LIBRENMS_API_TOKEN=creates))
        half = cli(tmp_path, "check").stdout
        assert "\u2714 API token may create device components" in half
        assert "probe component 1 left on device 5" in half
        assert list(sim.components(5)) == [1]
