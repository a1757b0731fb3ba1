"""The lab over real packets: CPEs in network namespaces with a real port2 and snmpd, polled by
the simulator with LibreNMS's fping options and IF-MIB over SNMP (docs/lab.md).

Every packet goes to 198.18.0.0/15 (blackholed as a whole) or to loopback; nothing leaves the
machine. Needs root: it fails under CI without it, and skips elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import requests

from alert_handler import daemon as daemon_mod
from alert_handler.cli.main import main
from alert_handler.config.table import parse
from alert_handler.core.machine import Action, Reason
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.steps import Ports, StepReport, run_step
from alert_handler.poll import make_poller
from alert_handler.sim.lab import LAB_NET, Lab, host_snapshot, without_other_labs
from alert_handler.sim.realpoll import RealPoller, sendable
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import (
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    overwrite,
    wait_for,
)
from tests.lab_support import host_snmp_listeners, lab_simulator, require_lab

IF_OPER_PORT2 = ".1.3.6.1.2.1.2.2.1.8.3"  # port2 is ifIndex 3 (lo 1, ether1 2) on a lab CPE


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_lab()
    with Lab(3) as built:
        yield built


@pytest.fixture
def sim(lab: Lab) -> Iterator[Simulator]:
    """Overrides conftest's `sim`: start_daemon then talks to the lab simulator."""
    simulator = lab_simulator(lab)
    yield simulator
    simulator.stop()


def _on(sim: Simulator, device_id: int, address: str | None) -> bool:
    return bool(overwrite(sim, device_id) == address)


def _patched(sim: Simulator, device_id: int, values: list[str | None]) -> bool:
    """Whether the device's first PATCHes of overwrite_ip set `values`, in order."""
    return [v for _, v in sim.patches(device_id)][: len(values)] == values


def _oper(sim: Simulator, device_id: int) -> tuple[str, str]:
    port = sim.port(device_id, "port2")
    return port.ifOperStatus, port.ifAdminStatus


# -- the lab itself ---------------------------------------------------------------------------
def test_the_lab_builds_real_cpes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    require_lab()
    before = host_snapshot()
    lab = Lab(3, workdir=tmp_path)
    try:
        lab.up()
        subnet = lab.subnet
        during = host_snapshot()
        lab.assert_blackholed()
        assert f"blackhole {LAB_NET} metric {lab.metric} " in "\n".join(during["routes"]) + " "
        assert {c.netns for c in lab.cpes} | {lab.lan_netns} <= set(during["netns"])
        assert {lab.bridge, *(c.uplink for c in lab.cpes)} <= set(during["links"])
        assert len(during["processes"]) >= 3
        for cpe in lab.cpes:
            assert cpe.agent is not None and cpe.agent.poll() is None
            assert lab.snmp_get(cpe.address, ".1.3.6.1.2.1.1.5.0") == f'"cpe-{cpe.index}"'
            assert (cpe.folder / "persist").is_dir()  # its own SNMP_PERSISTENT_DIR
    finally:
        lab.down()
    # Namespace deletion is asynchronous: down() waits for the links; the rest must match too.
    # Labs of other test workers may come and go meanwhile: what they own is left out.
    mine = partial(without_other_labs, subnet=subnet)
    wait_for(lambda: mine(host_snapshot()) == mine(before), 30, "the host as before the lab")
    lab.down()  # twice is harmless


def test_ports_and_uplink_flip_as_ifmib_and_fping_see_them(lab: Lab, sim: Simulator) -> None:
    """Admin down: ifOperStatus and ifAdminStatus down; cable pulled: ifOperStatus down,
    ifAdminStatus up; the uplink out: fping gets no answer (status_reason icmp)."""
    lab.set_cache_timeout(1, 0)  # every read fresh (the native cache is tested below)
    assert _oper(sim, 101) == ("up", "up")
    lab.set_port(1, "admin_down")
    assert sim.poll_device(101)[0] == 0 and _oper(sim, 101) == ("down", "down")
    lab.set_port(1, "cable_pulled")
    assert sim.poll_device(101)[0] == 0 and _oper(sim, 101) == ("down", "up")
    lab.set_port(1, "up")
    assert sim.poll_device(101)[0] == 0 and _oper(sim, 101) == ("up", "up")
    assert sim.port(101, "port2").ifOperStatus_prev == "down"
    assert [p.ifName for p in sim.ports(101)] == ["lo", "ether1", "port2"]
    lab.set_online(1, False)
    code, output = sim.poll_device(101)
    assert code == 6 and "Device was down, unable to poll." in output
    assert sim.device(101)["status"] is False and sim.device(101)["status_reason"] == "icmp"
    lab.set_online(1, True)
    assert sim.poll_device(101)[0] == 0 and sim.device(101)["status"] is True


def test_a_vanished_interface_is_marked_deleted_and_returns_as_a_new_row(
    lab: Lab, sim: Simulator
) -> None:
    lab.set_cache_timeout(1, 0)
    old = sim.port(101, "port2")
    subprocess.run(["ip", "-n", lab.cpe(1).netns, "link", "del", "port2"], check=True)
    assert sim.poll_device(101)[0] == 0
    with pytest.raises(KeyError):
        sim.port(101, "port2")
    subprocess.run(
        [
            "ip",
            "-n",
            lab.cpe(1).netns,
            "link",
            "add",
            "port2",
            "type",
            "veth",
            "peer",
            "name",
            "p9",
            "netns",
            lab.lan_netns,
        ],
        check=True,
    )
    subprocess.run(["ip", "-n", lab.cpe(1).netns, "link", "set", "port2", "up"], check=True)
    wait_for(lambda: sim.poll_device(101)[0] == 0 and _has_port2(sim), 30, "port2 to return")
    new = sim.port(101, "port2")
    assert new.port_id != old.port_id and new.ifIndex != old.ifIndex


def _has_port2(sim: Simulator) -> bool:
    try:
        sim.port(101, "port2")
    except KeyError:
        return False
    return True


def test_a_real_poll_sends_nothing_outside_the_lab_range_and_loopback() -> None:
    """No root needed: the guard itself. TEST-NET-1 (this machine's own network in CI), other
    documentation ranges and names (DNS) are never sent to."""
    for target in ("192.0.2.1", "198.51.100.7", "203.0.113.14", "8.8.8.8", "cpe-1.example.net"):
        assert not sendable(target)
        probe = RealPoller(fping="/nonexistent/fping").probe(target, "public")
        assert not probe.icmp and "outside" in probe.note
    assert sendable("198.18.1.2") and sendable("198.19.255.254") and sendable("127.0.0.50")


# -- the daemon against the lab ---------------------------------------------------------------
def test_the_whole_cycle_with_a_blackholed_unsupervised_ip(
    lab: Lab, sim: Simulator, start_daemon: StartDaemon
) -> None:
    """Forced down: fping gets nothing from the dark address (status_reason icmp); restored:
    SNMP reads port2 down, forced down again; cable back: recovered, each device on exactly its
    original overwrite_ip (null for 101, its address for 102)."""
    for cpe in lab.cpes:
        lab.set_cache_timeout(cpe.index, 0)
    originals = {101: None, 102: lab.cpe(2).address}
    assert {d: overwrite(sim, d) for d in originals} == originals
    for index, device_id in ((1, 101), (2, 102)):
        lab.set_port(index, "cable_pulled")
        assert sim.poll_device(device_id)[0] == 0 and _oper(sim, device_id) == ("down", "up")
    # CHECK_REPOLL_SEC as by default (base_env turns it off for the table simulator).
    daemon = start_daemon(UNSUPERVISED_IP=lab.dark, RECOVERY_INTERVAL_SEC="2", CHECK_REPOLL_SEC="4")
    for device_id in originals:
        assert daemon.post(alert_body(device_id)).status_code == 202
    # LibreNMS's own poll of a forced-down CPE: its fping gets no reply from the dark address.
    for device_id in originals:
        while True:
            wait_for(partial(_on, sim, device_id, lab.dark), 60, "the force-down")
            code, output = sim.poll_device(device_id)
            if f"IP:        {lab.dark}" in output:  # else a check restored it meanwhile
                break
        assert code == 6 and sim.device(device_id)["status_reason"] == "icmp"
        assert not sim.last_probe[device_id].icmp
    # The daemon's checks: restore, a real poll reads port2 down, forced down again.
    for device_id, original in originals.items():
        wait_for(
            partial(_patched, sim, device_id, [lab.dark, original, lab.dark]),
            90,
            f"device {device_id} restored and forced down again",
        )
        rec = daemon.daemon.store.get(device_id)
        assert rec is not None and rec.original_overwrite_ip == original
        assert _oper(sim, device_id) == ("down", "up")
    lab.set_port(1, "up")
    lab.set_port(2, "up")
    wait_for(lambda: daemon.daemon.store.count() == 0, 120, "both devices recovered")
    for device_id, original in originals.items():
        assert overwrite(sim, device_id) == original
        assert sim.patches(device_id)[-1][1] == original
        assert _oper(sim, device_id) == ("up", "up")
        assert sim.device(device_id)["status"] is True


def test_the_loopback_default_answers_icmp_so_librenms_marks_it_down_through_snmp(
    lab: Lab, sim: Simulator
) -> None:
    """127.0.0.50 answers fping on every Linux host: a CPE pointed there goes down only because
    SNMP gets no answer (status_reason snmp, not icmp)."""
    assert host_snmp_listeners() == [], "an SNMP agent listens on this host: stop it first"
    done = subprocess.run(
        ["fping", "-e", "-q", "-c", "3", "-p", "500", "-t", "500", "-O", "0", "127.0.0.50"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "3/3/0%" in done.stderr
    reply = requests.patch(
        f"{sim.url}/devices/101",
        json={"field": "overwrite_ip", "data": "127.0.0.50"},
        headers={"X-Auth-Token": DEFAULT_TOKEN},
        timeout=10,
    )
    assert reply.status_code == 200
    code, output = sim.poll_device(101)
    assert code == 6 and "IP:        127.0.0.50" in output
    assert sim.device(101)["status"] is False and sim.device(101)["status_reason"] == "snmp"
    probe = sim.last_probe[101]
    assert probe.icmp and not probe.snmp


# -- the agent's cache and the daemon's check ------------------------------------------------
def _check(lab: Lab, sim: Simulator, tmp_path: Path, device_id: int, **env: str) -> StepReport:
    """One recovery check of a forced-down device, run by the core's step runner with the
    daemon's real LibreNMS client and poller (the simulator's poll over real packets)."""
    settings = base_env(sim, tmp_path, UNSUPERVISED_IP=lab.dark, **env)
    if "CHECK_REPOLL_SEC" not in env:
        del settings["CHECK_REPOLL_SEC"]  # the daemon's default, not the table tests' 0
    cfg = parse(settings)
    api = daemon_mod.make_api(cfg)
    api.set_overwrite_ip(device_id, lab.dark)
    now = time.time()
    rec = DeviceRecord(
        device_id=device_id,
        phase=Phase.RESTORING,
        original_recorded=True,
        original_overwrite_ip=None,
        port_id=sim.port(device_id, "port2").port_id,
        attempts=1,
        next_attempt_at=now,
        attempt_started_at=now,
        forced_down_at=now - 60,
    )
    ports = Ports(api=api, poller=make_poller(cfg), clock=time)
    return run_step(rec, Action.CHECK, ports, daemon_mod.rules_from(cfg))


def _stale_port2(lab: Lab, index: int, cache: int) -> None:
    """Port2 reads down from the agent's cache while it is up again: cable pulled, the cache
    filled (`cache` seconds) with port2 down, cable back."""
    lab.set_cache_timeout(index, cache)
    lab.set_port(index, "cable_pulled")
    address = lab.cpe(index).address
    wait_for(lambda: lab.snmp_get(address, IF_OPER_PORT2) == "2", 30, "port2 to read down")
    lab.set_port(index, "up")
    assert lab.snmp_get(address, IF_OPER_PORT2) == "2"  # still down: from the cache


def test_a_stale_read_without_the_repoll_forces_a_healthy_cpe_down_again(
    lab: Lab, sim: Simulator, tmp_path: Path
) -> None:
    """What the daemon did before CHECK_REPOLL_SEC: the check's poll reads port2 from the
    agent's cache (down), so the CPE, whose port2 is up, goes down for another interval."""
    _stale_port2(lab, 1, cache=120)
    report = _check(lab, sim, tmp_path, 101, CHECK_REPOLL_SEC="0")
    assert report.check is not None and report.check.oper_status == "down"
    assert report.decision.reason is Reason.STILL_DOWN


def test_the_check_reads_again_past_the_agents_cache_and_recovers(
    lab: Lab, sim: Simulator, tmp_path: Path
) -> None:
    """With CHECK_REPOLL_SEC above the cache age, the first read is stale (down), the one after
    the wait is fresh (up): recovered in this attempt, not an interval later."""
    _stale_port2(lab, 1, cache=8)
    report = _check(lab, sim, tmp_path, 101, CHECK_REPOLL_SEC="9")
    steps = [name for name, _ in report.laps]
    assert steps == ["restore", "discover", "poll", "check", "repoll", "check"]
    assert report.check is not None and report.check.oper_status == "up"
    assert report.decision.reason is Reason.RECOVERED
    assert overwrite(sim, 101) is None


def test_with_the_agents_native_3s_cache_the_default_setting_recovers(
    lab: Lab, sim: Simulator, tmp_path: Path
) -> None:
    """net-snmp's own 3 s ifTable cache and the default CHECK_REPOLL_SEC (4): a port that came up
    a moment ago may read down right after the restore; the check reads again and recovers."""
    _stale_port2(lab, 1, cache=3)
    report = _check(lab, sim, tmp_path, 101)
    first_read_stale = "repoll" in [name for name, _ in report.laps]
    print(f"native cache: first read after the restore was stale: {first_read_stale}")
    assert report.decision.reason is Reason.RECOVERED


# -- the command line -------------------------------------------------------------------------
def test_simulator_lab_refuses_without_root(capsys: pytest.CaptureFixture[str]) -> None:
    """`alert-handler simulator --lab N` and `demo --lab` need root: as another user they say so
    and exit 2 (as root, the test runs the command with the effective uid of nobody)."""
    as_root = os.geteuid() == 0
    # Imported as root first: a checkout in a 0700 folder (mktemp -d) is unreadable to nobody.
    import alert_handler.sim.command
    import alert_handler.sim.demo
    import alert_handler.sim.labdemo  # noqa: F401

    codes = []
    for argv in (["simulator", "--lab", "2"], ["demo", "--lab"]):
        if as_root:
            os.seteuid(65534)
        try:
            codes.append(main(argv))
        finally:
            if as_root:
                os.seteuid(0)
        assert "--lab needs root" in capsys.readouterr().err
    assert codes == [2, 2]


def test_the_before_and_after_comparison_leaves_out_only_other_labs() -> None:
    """No root needed: labs of other test workers are left out of the comparison, this lab's
    leftovers and everything else of the host are not."""
    snapshot = {
        "links": ["eth0", "ahl03br", "ahl03u1", "ahl0cu7", "ahl0cbr"],
        "routes": [
            "default via 192.0.2.1 dev eth0",
            "blackhole 198.18.0.0/15 metric 4000000003",
            "blackhole 198.18.0.0/15 metric 4000000012",
            "198.18.12.0/24 dev ahl0cbr proto kernel scope link src 198.18.12.1",
            "fe80::/64 dev ahl0cu7 proto kernel metric 256 pref medium",
            "blackhole 198.19.3.254",
        ],
        "netns": ["ahl-3-1", "ahl-12-lan", "other"],
        "processes": [
            "7 /usr/sbin/snmpd -f udp:198.18.12.8:161",
            "8 /usr/sbin/snmpd udp:198.18.3.2:161",
        ],
    }
    assert without_other_labs(snapshot, 3) == {
        "links": ["eth0", "ahl03br", "ahl03u1"],
        "routes": [
            "default via 192.0.2.1 dev eth0",
            "blackhole 198.18.0.0/15 metric 4000000003",
            "blackhole 198.19.3.254",
        ],
        "netns": ["ahl-3-1", "other"],
        "processes": ["8 /usr/sbin/snmpd udp:198.18.3.2:161"],
    }


def test_demo_lab_shows_a_cpe_forced_down_polled_for_real_and_recovered(tmp_path: Path) -> None:
    """`alert-handler demo --lab` as a new user runs it (as root): the CPEs forced down on the
    dark address, LibreNMS's real poll getting no ping reply, the daemon's checks reading port2
    down over SNMP, then port2 back and both CPEs on exactly their original overwrite_ip; the
    lab is gone afterwards."""
    require_lab()
    before = host_snapshot()
    done = subprocess.run(
        [*installed_cli(), "demo", "--lab"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "poll exit 6, status down (icmp)" in out
    assert "step=check port=port2 status=down poll_exit=0" in out
    assert "restored overwrite_ip null, port2 is up: recovered" in out
    assert "=== demo succeeded" in out
    assert out.count(" OK\n") == 2
    subnet = int(out.split("198.18.")[1].split(".")[0])
    mine = partial(without_other_labs, subnet=subnet)
    wait_for(lambda: mine(host_snapshot()) == mine(before), 30, "the host as before the demo")


def test_demo_lab_stopped_with_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    """`alert-handler demo --lab` stopped with SIGTERM once its lab is up (`timeout`, `kill`)
    removes the lab as Ctrl-C does and exits 1: it used to die at once and leave its
    namespaces, links and blackhole routes on the host."""
    require_lab()
    before = host_snapshot()
    demo = subprocess.Popen(
        [*installed_cli(), "demo", "--lab"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            seen.append(line)
            if "=== a lab of 2 real CPEs on 198.18." in line:
                break
        assert "=== a lab of" in "".join(seen), "".join(seen)
        demo.send_signal(signal.SIGTERM)
        seen.append(demo.communicate(timeout=300)[0])
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    out = "".join(seen)
    assert demo.returncode == 1, out
    subnet = int(out.split("198.18.")[1].split(".")[0])
    mine = partial(without_other_labs, subnet=subnet)
    wait_for(lambda: mine(host_snapshot()) == mine(before), 30, "the host as before the demo")


def test_simulator_lab_guide_runs_as_written(tmp_path: Path) -> None:
    """`alert-handler simulator --lab 2` as lab.md and its guide say: 1. the simulator and the
    daemon with the settings it writes; 2. a flip of 101's port2 down alone gets 101 forced down
    on the dark address (the simulator polls and alerts as LibreNMS does: without its poller,
    nothing ever saw the flip); 3. a flip up gets it restored; 4. Ctrl-C removes the lab."""
    require_lab()
    before = host_snapshot()
    cli = installed_cli()
    guide = tmp_path / "sim.out"
    argv = ["simulator", "--lab", "2", "--port", "0", "--daemon-port", str(free_port())]
    with guide.open("w") as out:
        sim = subprocess.Popen(
            [*cli, *argv, "--write-env", "lab.env"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: "Ctrl-C stops the simulator" in guide.read_text(), 120, "the guide")
        text = guide.read_text()
        root = text.split("LibreNMS simulator at ")[1].split("/api/v0")[0]
        port = root.rsplit(":", 1)[1]
        env = dict(
            line.split("=", 1) for line in (tmp_path / "lab.env").read_text().splitlines() if line
        )
        with (tmp_path / "daemon.out").open("w") as log:
            daemon = subprocess.Popen(
                [*cli, "--env-file", "lab.env"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
            )

        def on_101() -> object:
            answer = requests.get(
                f"{root}/api/v0/devices/101", headers={"X-Auth-Token": DEFAULT_TOKEN}, timeout=10
            )
            return answer.json()["devices"][0]["overwrite_ip"]

        flip = [*cli, "simulator", "--port", port, "--flip", "101", "port2"]
        assert subprocess.run([*flip, "down"], check=False).returncode == 0
        wait_for(lambda: on_101() == env["UNSUPERVISED_IP"], 120, "101 forced down")
        assert subprocess.run([*flip, "up"], check=False).returncode == 0
        wait_for(lambda: on_101() is None, 120, "101 restored to null")
    finally:
        for proc, how in ((daemon, signal.SIGTERM), (sim, signal.SIGINT)):
            if proc is not None and proc.poll() is None:
                proc.send_signal(how)
                try:
                    proc.wait(120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert sim.returncode == 0, guide.read_text()
    subnet = int(text.split("(lab: 198.18.")[1].split(".")[0])
    mine = partial(without_other_labs, subnet=subnet)
    wait_for(lambda: mine(host_snapshot()) == mine(before), 30, "the host as before the lab")


def test_the_lab_round_benchmark_runs() -> None:
    """bench/lab_round.py --quick runs and prints each of its figures."""
    require_lab()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent.parent / "bench" / "lab_round.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for figure in (
        "RESULT lab of 3 CPEs: up ",
        "RESULT real poll, healthy CPE: ",
        "RESULT real poll, forced down on the dark address ",
        "RESULT real poll, forced down on 127.0.0.50: ",
        "RESULT pretend-poll round P=4 N=3: ",
        "RESULT real-poll round P=4 N=3: ",
        "RESULT real ICMP and SNMP cost per attempt: ",
    ):
        assert any(line.startswith(figure) for line in done.stdout.splitlines()), done.stdout
