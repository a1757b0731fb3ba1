"""Distributed polling (issue 11, item 1): each poll runs on a poller of the device's group,
against two real OpenSSH sshd on loopback standing for two regional pollers."""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import (
    UNSUP,
    StartDaemon,
    alert_body,
    base_env,
    overwrite,
    poll_command,
    wait_for,
)
from tests.sshd import SSHD, require_sshd, running_sshd
from tests.test_operator_cli import cli, write_env


def as_poller(server: SSHD, sim: Simulator, name: str, key: Path) -> Path:
    """Make `server` the poller `name`: `key` may run only a wrapper that polls the simulator
    as that poller (the stand-in's --poller) and leaves a marker per device; returns the
    marker directory."""
    ran = server.dir / "ran"
    ran.mkdir()
    wrapper = server.dir / "poll-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        "id=${SSH_ORIGINAL_COMMAND##* }\n"
        'case "$id" in ""|*[!0-9]*) exit 2 ;; esac\n'
        f'touch {ran}/"$id"\n'
        f"exec {shlex.quote(sys.executable)} -m alert_handler.sim poll "
        f'--url {sim.url} --token {DEFAULT_TOKEN} --poller {name} "$id"\n'
    )
    wrapper.chmod(0o755)
    pub = key.with_name(key.name + ".pub").read_text().strip()
    server.authorized_keys.write_text(f'command="{wrapper}",restrict {pub}\n')
    return ran


@pytest.fixture
def two_pollers() -> Iterator[tuple[SSHD, SSHD]]:
    require_sshd()
    with running_sshd() as east, running_sshd() as west:
        yield east, west


def ran(markers: Path) -> set[int]:
    """The devices a poller has polled."""
    return {int(p.name) for p in markers.iterdir()}


def test_each_poll_runs_on_a_poller_of_the_devices_group(
    sim: Simulator,
    two_pollers: tuple[SSHD, SSHD],
    start_daemon: StartDaemon,
    tmp_path: Path,
) -> None:
    """1. LibreNMS has poller-east (group 1) and poller-west (group 2) besides the main host
       (group 0); POLLER_GROUP_HOSTS maps 1 and 2 to two sshd; group 0 polls locally.
    2. Devices 51 (group 1), 52 (group 2) and 53 (group 0) lose port2 and are forced down;
       each attempt polls on its group's poller (a poll anywhere else would exit 6).
    3. Device 51 moves to group 2 while forced down: its next attempt polls on west.
    4. The ports come back: all three recover on their originals.
    5. One SSH connection per poller host served every poll; the per-poller metrics count
       them."""
    east, west = two_pollers
    key = east.client_key
    sim.add_poller_group(1, "east")
    sim.add_poller_group(2, "west")
    sim.add_poller("poller-east", [1])
    sim.add_poller("poller-west", [2])
    on_east = as_poller(east, sim, "poller-east", key)
    on_west = as_poller(west, sim, "poller-west", key)
    for device_id, group in ((51, 1), (52, 2), (53, 0)):
        sim.add_device(
            device_id,
            f"cpe-{device_id}",
            overwrite_ip=f"198.51.100.{device_id}",
            ports={"port2": "down"},
        )
        sim.set_poller_group(device_id, group)
    user = east.user
    d = start_daemon(
        POLL_METHOD="local",
        POLL_COMMAND=poll_command(sim),
        POLLER_GROUP_HOSTS=(f"1={user}@{east.host}:{east.port}, 2={user}@{west.host}:{west.port}"),
        SSH_KEY_FILE=str(key),
        SSH_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
        RECOVERY_INTERVAL_SEC="0.3",
    )
    for device_id in (51, 52, 53):
        assert d.post(alert_body(device_id)).status_code == 202
    wait_for(
        lambda: all((r := d.daemon.store.get(i)) and r.attempts >= 2 for i in (51, 52, 53)),
        timeout=60,
        what="two attempts each",
    )
    assert ran(on_east) == {51} and ran(on_west) == {52}
    for device_id in (51, 52, 53):  # every check polled while up: still down only by port2
        rec = d.daemon.store.get(device_id)
        assert rec is not None and rec.last_error == "port2 is down"
    sim.set_poller_group(51, 2)
    wait_for(lambda: 51 in ran(on_west), timeout=60, what="51 polled on west after its move")
    for device_id in (51, 52, 53):
        sim.set_link(device_id, "port2", "up")
    wait_for(
        lambda: all(d.daemon.store.get(i) is None for i in (51, 52, 53)),
        timeout=60,
        what="all recovered",
    )
    for device_id in (51, 52, 53):
        assert overwrite(sim, device_id) == f"198.51.100.{device_id}" != UNSUP
    assert east.count("Accepted publickey") == 1 and west.count("Accepted publickey") == 1
    metrics = requests.get(d.url + "/metrics", timeout=5).text
    for poller in (f"{user}@{east.host}:{east.port}", f"{user}@{west.host}:{west.port}", "local"):
        series = f'alert_handler_poller_polls_total{{exit_status="0",poller="{poller}"}} '
        line = next(x for x in metrics.splitlines() if x.startswith(series))
        assert float(line.rsplit(" ", 1)[1]) >= 1, line


def test_a_device_polled_from_the_wrong_host_never_recovers(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """Why the mapping matters: without POLLER_GROUP_HOSTS, device 56 of group 1 is polled on
    the main host, which cannot reach it: every check exits 6 (LibreNMS writes it down) though
    its port is up."""
    sim.add_poller("poller-east", [1])
    sim.add_device(56, "cpe-56", ports={"port2": "down"})
    sim.set_poller_group(56, 1)
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.2")
    d.post(alert_body(56))
    wait_for(lambda: overwrite(sim, 56) == UNSUP, what="forced down")
    sim.set_link(56, "port2", "up")
    wait_for(lambda: (r := d.daemon.store.get(56)) and r.attempts >= 3, what="three attempts")
    rec = d.daemon.store.get(56)
    assert rec is not None and rec.last_error == "poll: device down (exit 6)"


def test_check_shows_the_poller_group_mapping_and_the_warnings(
    two_pollers: tuple[SSHD, SSHD], tmp_path: Path
) -> None:
    """A new user runs `alert-handler check 51` against LibreNMS 26.7 with three poller groups:
    1. The version line says alert operations apply (26.4 and later).
    2. Each LibreNMS poller group is listed with its pollers and where it is polled from:
       east and west through POLLER_GROUP_HOSTS, the default through POLL_METHOD; north is not
       mapped (a warning: every check of its devices would say "device down"); group 9 is
       mapped but LibreNMS has no such group (a warning).
    3. Every mapped poller host is connected to and authenticated; device 51 (group 1) is
       polled on east.
    4. UNSUPERVISED_IP 127.0.0.50 may answer (a warning). Warnings do not fail the check.
    5. A token that may not view pollers gets a warning naming that, not a failure."""
    east, west = two_pollers
    key = east.client_key
    with Simulator(version="26.7.0") as sim:
        for group, name in ((1, "east"), (2, "west"), (3, "north")):
            sim.add_poller_group(group, name)
            sim.add_poller(f"poller-{name}", [group])
        as_poller(east, sim, "poller-east", key)
        as_poller(west, sim, "poller-west", key)
        sim.add_device(51, "cpe-51", ports={"port2": "up"})
        sim.set_poller_group(51, 1)
        user = east.user
        env = base_env(
            sim,
            tmp_path,
            POLLER_GROUP_HOSTS=(
                f"1={user}@{east.host}:{east.port},2={user}@{west.host}:{west.port},9=local"
            ),
            SSH_KEY_FILE=str(key),
            SSH_KNOWN_HOSTS=str(tmp_path / "known_hosts"),
        )
        write_env(tmp_path, env)
        result = cli(tmp_path, "check", "51")
        limited = "abcdef0123456789abcdef0123456789"
        sim_tokens = {
            limited: frozenset(
                {
                    "device.viewAny",
                    "device.update",
                    "alert.viewAny",
                    "component.create",
                    "component.update",
                    "component.delete",
                }
            )
        }
        with Simulator(tokens=sim_tokens) as other:
            write_env(tmp_path, {**base_env(other, tmp_path), "LIBRENMS_API_TOKEN": limited})
            narrow = cli(tmp_path, "check")
    print(result.stdout)  # the walkthrough in docs/librenms-setup.md shows this output
    # 127.0.0.50 answers ping on every poller (all three are this host): check fails (issue 21).
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    east_at, west_at = f"{user}@{east.host}:{east.port}", f"{user}@{west.host}:{west.port}"

    def has(start: str, *parts: str) -> bool:
        return any(x.startswith(start) and all(p in x for p in parts) for x in lines)

    assert has("\u2714 LibreNMS 26.7.0: 26.4 or later", "alert operations")
    assert has("\u2714 poller group 0 (default): served by librenms; polled via local")
    assert has("\u2714 poller group 1 (east): served by poller-east", east_at, "POLLER_GROUP_HOSTS")
    assert has("\u2714 poller group 2 (west): served by poller-west", west_at)
    assert has("\u2718 poller group 3 (north)", "not in POLLER_GROUP_HOSTS", "(warning only)")
    assert has("\u2718 POLLER_GROUP_HOSTS maps poller group 9", "does not have", "(warning only)")
    assert has(f"\u2714 poller {east_at} (groups 1): connected to")
    assert has(f"\u2714 poller {west_at} (groups 2): connected to")
    assert has("\u2714 poll of device 51: exit 0 (polled)")
    assert has("\u2718 UNSUPERVISED_IP 127.0.0.50 is a loopback address", "(warning only)")
    failed = [x for x in lines if x.startswith("\u2718") and not x.endswith("(warning only)")]
    # Here: 127.0.0.50 answers LibreNMS's fping (or there is no fping to prove it dark). On
    # east and west the key may run the poll only, so darkness cannot be proven there either.
    local = "ANSWERS ping from poller local " if shutil.which("fping") else "on poller local: "
    assert len(failed) == 3, result.stdout
    assert failed[0].startswith(f"\u2718 UNSUPERVISED_IP 127.0.0.50 {local}")
    for text, where in zip(failed[1:], (east_at, west_at), strict=True):
        assert text.startswith(f"\u2718 UNSUPERVISED_IP 127.0.0.50 on poller {where}: ")
        assert "cannot prove it is dark" in text
    assert narrow.returncode == 1, narrow.stdout
    assert any(
        "poller groups and pollers" in x and "HTTP 403" in x and "may not view pollers" in x
        for x in narrow.stdout.splitlines()
    ), narrow.stdout
