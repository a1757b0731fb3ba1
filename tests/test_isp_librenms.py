"""LibreNMS as ISPs run it (issue 11), the daemon in-process against the simulator over real
sockets, polls as real processes: re-created ports, maintenance and suppression, unmute, local
alert times, payload forms, the wrong poll user, an UNSUPERVISED_IP that answers."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from alert_handler.config.table import parse
from alert_handler.core.records import Phase
from alert_handler.librenms.zone import librenms_zone, read_time
from alert_handler.ops.unsupervised import unsupervised_ip_warning
from alert_handler.sim.simulator import BUILDER_JSON, DEFAULT_TOKEN, Simulator
from alert_handler.sim.transport import render_template
from tests.conftest import (
    AUTH,
    UNSUP,
    DaemonProcess,
    RunningDaemon,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    overwrite,
    poll_command,
    wait_for,
)
from tests.test_operator_cli import cli, write_env


def messages(
    caplog: pytest.LogCaptureFixture, start: str, text: str, level: int = logging.INFO
) -> list[str]:
    """Log lines at `level` or above that contain `start` and `text`."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= level and start in r.getMessage() and text in r.getMessage()
    ]


def api_get(sim: Simulator, path: str) -> dict[str, object]:
    """GET an API path of the simulator with the admin token; the decoded body."""
    reply = requests.get(sim.url + path, headers={"X-Auth-Token": DEFAULT_TOKEN}, timeout=5)
    body: dict[str, object] = reply.json()
    return body


# -- ports found again --------------------------------------------------------------------------
def test_a_re_created_port_is_found_again(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. A CPE is forced down; its port2 is port_id P.
    2. The interface vanishes and comes back with a new ifIndex: LibreNMS marks P deleted=1
       (GET /ports/P still answers, with the stale "down") and creates port_id Q.
    3. The next check finds port2 again as Q (still down) and keeps Q as its hint.
    4. The link comes up: the check reads Q, up: recovered on the original."""
    sim.add_device(31, "cpe-31", overwrite_ip="198.51.100.31", ports={"port2": "down"})
    old_id = sim.port(31, "port2").port_id
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    assert d.post(alert_body(31)).status_code == 202
    wait_for(lambda: (r := d.daemon.store.get(31)) and r.port_id == old_id, what="forced down")
    new_id = sim.recreate_port(31, "port2")
    stale = api_get(sim, f"/ports/{old_id}")["port"]
    assert isinstance(stale, list) and stale[0]["deleted"] == 1
    assert stale[0]["ifOperStatus"] == "down"
    listing = api_get(sim, "/devices/31/ports?columns=port_id,ifName,deleted")["ports"]
    assert listing == [{"port_id": new_id, "ifName": "port2", "deleted": 0}]
    sim.clear_requests()
    wait_for(
        lambda: (r := d.daemon.store.get(31)) is not None and r.port_id == new_id,
        what="port2 found again under its new port_id",
    )
    sim.set_link(31, "port2", "up")
    wait_for(lambda: d.daemon.store.get(31) is None, what="recovery")
    assert overwrite(sim, 31) == "198.51.100.31"
    assert overwrite(sim, 31) != UNSUP
    # The check never asks for a port by id: that row may be deleted and stale.
    assert not [r for r in sim.requests if r.path.startswith("/ports/")]


# -- LibreNMS's own suppression -----------------------------------------------------------------
def test_suppressed_devices_are_never_forced_down(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Device 41 is under a "run alerts" maintenance window (LibreNMS still notifies), 42 is
       disabled, 43 ignored; each has port2 down and an alert reaches the daemon.
    2. The webhook never asks LibreNMS (it answers at once): 202. The inspection reads the
       device and GET /devices/{id}/maintenance and lets each go: nothing is PATCHed, each line
       names LibreNMS's reason.
    3. Under a mute window LibreNMS sends nothing at all."""
    caplog.set_level(logging.INFO)
    for device_id in (41, 42, 43, 44):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    sim.set_maintenance(41, "run_alerts")
    sim.set_flags(42, disabled=True)
    sim.set_flags(43, ignore=True)
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    for device_id in (41, 42, 43):
        assert d.post(alert_body(device_id)).status_code == 202
    for device_id, why in ((41, "maintenance"), (42, "disabled"), (43, "ignored")):
        start = f"device={device_id} step=inspect"
        wait_for(lambda: messages(caplog, start, why), what=f"{start} ({why})")  # noqa: B023
    wait_for(lambda: all(d.daemon.store.get(i) is None for i in (41, 42, 43)), what="let go")
    assert sim.patches() == []
    assert ("GET", "/devices/41/maintenance") in [(r.method, r.path) for r in sim.requests]
    sim.set_maintenance(44, "mute")
    assert sim.send_alert(d.url + "/alert", 44) == 0


def test_a_forced_down_device_put_under_maintenance_is_restored(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Devices 45 (original 198.51.100.45) and 46 (original null) are forced down.
    2. An engineer starts a maintenance window on 45 and disables 46 in LibreNMS.
    3. At its next attempt each is restored to its original and forgotten, with a warning,
       not polled: people are working on it."""
    devices: dict[int, str | None] = {45: "198.51.100.45", 46: None}
    for device_id, original in devices.items():
        sim.add_device(
            device_id, f"cpe-{device_id}", overwrite_ip=original, ports={"port2": "down"}
        )
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    for device_id in devices:
        d.post(alert_body(device_id))
    wait_for(lambda: all(overwrite(sim, i) == UNSUP for i in devices), what="forced down")
    sim.set_maintenance(45, "skip")
    sim.set_flags(46, disabled=True)
    wait_for(lambda: all(d.daemon.store.get(i) is None for i in devices), what="let go")
    assert overwrite(sim, 45) == "198.51.100.45" and overwrite(sim, 46) is None
    assert messages(caplog, "device=45 step=verify", "under maintenance", level=logging.WARNING)
    assert messages(caplog, "device=46 step=verify", "disabled", level=logging.WARNING)


def test_reconcile_picks_up_only_what_librenms_notified(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. Open 'Port2 down' alerts that never reached the daemon: on 47 (notified: alerted 1),
       on 48 under a mute window (LibreNMS held it back: alerted 0), and on 49 notified before
       someone disabled the device.
    2. Reconciliation tracks 47 only: LibreNMS's own silence is respected."""
    caplog.set_level(logging.INFO)
    for device_id in (47, 48, 49):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    sim.set_maintenance(48, "mute")
    for device_id in (47, 48, 49):
        sim.add_alert(device_id, "Port2 down")
    sim.set_flags(49, disabled=True)
    assert [a["alerted"] for a in sim.alerts()] == [1, 0, 1]
    d = start_daemon(RECOVERY_INTERVAL_SEC="30", RECONCILE_INTERVAL_SEC="0.2")
    wait_for(lambda: overwrite(sim, 47) == UNSUP, what="47 picked up and forced down")
    wait_for(lambda: sum(1 for r in sim.requests if r.path == "/alerts") >= 3, what="3 passes")
    assert d.daemon.store.get(48) is None and d.daemon.store.get(49) is None
    assert sim.patches(48) == [] and sim.patches(49) == []
    assert messages(caplog, "device=49 step=reconcile", "disabled", level=logging.INFO)


# -- unmute what was acknowledged -----------------------------------------------------------------
def alert_of(sim: Simulator, device_id: int) -> dict[str, object]:
    """The device's one alert as GET /alerts shows it."""
    return next(a for a in sim.alerts() if a["device_id"] == device_id)


def test_what_was_acknowledged_is_unmuted_when_the_daemon_lets_go(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. ACK_ALERTS: devices 61-64 are forced down and their 'Port2 down' alerts acknowledged
       (state 2: LibreNMS sends no more about them).
    2. The daemon lets go of 61 (the operator releases it), 62 (put under maintenance) and 63
       (someone else changed its overwrite_ip): each alert is unmuted (PUT /alerts/unmute/{id},
       state 1, with a note), so LibreNMS tells people about those devices again.
    3. 64 recovers: its alert is left to LibreNMS, which clears it."""
    devices = (61, 62, 63, 64)
    for device_id in devices:
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
        sim.add_alert(device_id, "Port2 down")
    d = start_daemon(ACK_ALERTS="true", TRIGGER_RULES="Port2 down", RECOVERY_INTERVAL_SEC="0.3")
    for device_id in devices:  # (reconciliation may have found the open alerts first)
        assert d.post(alert_body(device_id)).status_code in (200, 202)
    wait_for(
        lambda: all(alert_of(sim, i)["state"] == 2 for i in devices), what="alerts acknowledged"
    )
    wait_for(lambda: all(overwrite(sim, i) == UNSUP for i in devices), what="forced down")
    reply = requests.post(d.url + "/devices/61/release", headers=AUTH, timeout=5)
    assert reply.status_code == 200
    sim.set_maintenance(62, "mute")
    reply = requests.patch(
        f"{sim.url}/devices/63",
        data=json.dumps({"field": "overwrite_ip", "data": "203.0.113.63"}),
        headers={"X-Auth-Token": DEFAULT_TOKEN},
        timeout=5,
    )
    assert reply.status_code == 200
    sim.set_link(64, "port2", "up")
    wait_for(lambda: all(d.daemon.store.get(i) is None for i in devices), what="all let go")
    for device_id in (61, 62, 63):
        alert = alert_of(sim, device_id)
        assert alert["state"] == 1, (device_id, alert)
        assert "let the device go" in str(alert["note"])
    assert alert_of(sim, 64)["state"] == 2  # recovered: not unmuted
    unmutes = [r.path for r in sim.requests if r.path.startswith("/alerts/unmute/")]
    assert sorted(unmutes) == sorted(
        f"/alerts/unmute/{alert_of(sim, i)['id']}" for i in (61, 62, 63)
    )


def test_giving_up_unmutes(sim: Simulator, start_daemon: StartDaemon) -> None:
    """MAX_ATTEMPTS reached: the device is left restored and forgotten, and its acknowledged
    alert is unmuted."""
    sim.add_device(65, "cpe-65", ports={"port2": "down"})
    first = sim.add_alert(65, "Port2 down")
    d = start_daemon(ACK_ALERTS="true", MAX_ATTEMPTS="2", RECOVERY_INTERVAL_SEC="0.2")
    assert d.post(alert_body(65)).status_code in (200, 202)
    wait_for(lambda: alert_of(sim, 65)["state"] == 2, what="acknowledged")
    wait_for(lambda: d.daemon.store.get(65) is None, what="given up")
    assert alert_of(sim, 65)["state"] == 1
    assert [r.path for r in sim.requests if "unmute" in r.path] == [f"/alerts/unmute/{first}"]


# -- alert times in the LibreNMS server's zone ----------------------------------------------------
def test_librenms_times_are_read_in_its_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Naive times are the server's local time; "Z" or an offset is absolute; junk is None.
    Unset, the zone is this host's ($TZ, else /etc/localtime)."""
    kiritimati = librenms_zone("Pacific/Kiritimati")  # UTC+14, no DST
    utc_noon = datetime(2026, 8, 1, 12, 0, tzinfo=timezone.utc).timestamp()
    assert read_time("2026-08-02 02:00:00", kiritimati) == utc_noon
    assert read_time("2026-08-01T12:00:00.000000Z", kiritimati) == utc_noon
    assert read_time("2026-08-01T14:00:00+02:00", kiritimati) == utc_noon
    for junk in (None, "", "yesterday", 5):
        assert read_time(junk, kiritimati) is None
    monkeypatch.setenv("TZ", "America/Lima")
    assert str(librenms_zone(None)) == "America/Lima"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert librenms_zone(None) is not None  # falls back to /etc/localtime or UTC


Zoned = Callable[..., tuple[Simulator, RunningDaemon]]


@pytest.fixture
def zoned(tmp_path: Path) -> Iterator[Zoned]:
    """Factory: zoned(server zone, **env) -> a simulator whose LibreNMS runs in that zone and a
    daemon against it (reconciling every 0.2 s); both stopped at teardown."""
    made: list[tuple[Simulator, RunningDaemon]] = []

    def start(zone: str, **env: str) -> tuple[Simulator, RunningDaemon]:
        sim = Simulator(timezone_name=zone)
        sim.start()
        settings = base_env(
            sim, tmp_path, RECOVERY_INTERVAL_SEC="0.3", RECONCILE_INTERVAL_SEC="0.2", **env
        )
        made.append((sim, RunningDaemon(parse(settings))))
        return made[-1]

    yield start
    for sim, d in made:
        d.stop()
        sim.stop()


@pytest.mark.parametrize(("zone", "picked_again"), [("Pacific/Kiritimati", False), ("UTC", True)])
def test_a_stale_alert_is_recognised_in_the_servers_zone(
    zoned: Zoned, caplog: pytest.LogCaptureFixture, zone: str, picked_again: bool
) -> None:
    """1. LibreNMS runs in Pacific/Kiritimati (UTC+14): /alerts times are local, no offset.
    2. Device 71 is forced down and recovers; its 'Port2 down' alert is still listed open.
    3. Reconciliation skips it: it was raised before the daemon let the device go. Read as UTC
       (LIBRENMS_TIMEZONE wrong), the same alert looks 14 hours younger and is picked up
       again: the bug this setting fixes."""
    sim, d = zoned("Pacific/Kiritimati", LIBRENMS_TIMEZONE=zone)
    sim.add_device(71, "cpe-71", ports={"port2": "down"})
    sim.add_alert(71, "Port2 down")
    d.post(alert_body(71))
    wait_for(lambda: overwrite(sim, 71) == UNSUP, what="forced down")
    sim.set_link(71, "port2", "up")
    wait_for(
        lambda: d.daemon.store.get(71) is None and 71 in d.daemon.scheduler.dismissed,
        what="recovered",
    )
    caplog.clear()
    passes = sum(1 for r in sim.requests if r.path == "/alerts")
    wait_for(
        lambda: sum(1 for r in sim.requests if r.path == "/alerts") >= passes + 2,
        what="two more reconcile passes",
    )
    again = messages(
        caplog, "device=71 step=reconcile", "never reached the daemon", level=logging.WARNING
    )
    assert bool(again) is picked_again


# -- the payload: name, builder JSON, PUT and GET -------------------------------------------------
RULE_FIRST = (
    '{"device_id": {{ $device_id }}, "rule": {{ $rule|json_encode }}, '
    '"name": {{ $name|json_encode }}, "state": {{ $state }}}'
)


def test_the_rule_name_is_name_and_builder_json_is_not_a_name(
    sim: Simulator, start_daemon: StartDaemon
) -> None:
    """1. A transport body carrying `{{ $rule }}` (the rule's builder JSON) before
       `{{ $name }}`: the rule name is `name`, so TRIGGER_RULES matches: 202.
    2. A body with the builder JSON only has no rule name: with TRIGGER_RULES set it is
       ignored, not mistaken for a rule called '{"condition":...}'."""
    sim.add_device(81, "cpe-81", ports={"port2": "down"})
    sim.add_device(82, "cpe-82", ports={"port2": "down"})
    d = start_daemon(TRIGGER_RULES="Port2 down", RECOVERY_INTERVAL_SEC="30")
    headers = {"Authorization": AUTH["Authorization"]}
    assert sim.send_alert(d.url + "/alert", 81, headers=headers, body_template=RULE_FIRST) == 202
    rec = d.daemon.store.get(81)
    assert rec is not None and rec.last_rule == "Port2 down"
    only_json = '{"device_id": {{ $device_id }}, "rule": {{ $rule|json_encode }}}'
    reply = requests.post(
        d.url + "/alert",
        data=render_for(sim, 82, only_json),
        headers=AUTH,
        timeout=5,
    )
    assert reply.status_code == 200
    assert reply.json()["reason"] == "rule not in TRIGGER_RULES"


def render_for(sim: Simulator, device_id: int, template: str) -> bytes:
    """What LibreNMS would send for `template` (the simulator's templating)."""
    values = {"device_id": device_id, "rule": BUILDER_JSON, "name": "Port2 down"}
    return render_template(template, values).encode()


@pytest.mark.parametrize("method", ["PUT", "GET"])
def test_the_transport_may_put_or_get(
    sim: Simulator, start_daemon: StartDaemon, method: str
) -> None:
    """LibreNMS's API transport can use PUT (a body, like POST) or GET (no body: the fields are
    its Options lines, sent as the query string): both are alerts."""
    sim.add_device(83, "cpe-83", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="30")
    options = (
        {"device_id": "{{ $device_id }}", "state": "{{ $state }}", "name": "{{ $name }}"}
        if method == "GET"
        else None
    )
    status = sim.send_alert(d.url + "/alert", 83, headers=AUTH, method=method, options=options)
    assert status == 202
    rec = d.daemon.store.get(83)
    assert rec is not None and rec.last_rule == "Port2 down"


# -- the wrong poll user --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("user", "says"), [("root", "must not run as root"), ("www-data", "runs as the wrong user")]
)
def test_the_wrong_poll_user_is_a_configuration_error(
    sim: Simulator,
    start_daemon: StartDaemon,
    caplog: pytest.LogCaptureFixture,
    user: str,
    says: str,
) -> None:
    """1. POLL_COMMAND runs lnms as the wrong user: it exits 1 with "Error: lnms must not run
       as root." (or "... must be run as the user librenms.").
    2. That is no "no such device": each check logs a configuration error at ERROR with the
       fix (sudo -u librenms), and the device is forced down again as for any failed check.
    3. /health is degraded at once, naming the configuration error (retrying cannot fix it)."""
    sim.add_device(91, "cpe-91", overwrite_ip="198.51.100.91", ports={"port2": "down"})
    d = start_daemon(
        POLL_COMMAND=poll_command(sim).replace(" poll ", f" poll --run-as {user} "),
        RECOVERY_INTERVAL_SEC="0.3",
    )
    d.post(alert_body(91))
    wait_for(lambda: overwrite(sim, 91) == UNSUP, what="forced down")
    sim.set_link(91, "port2", "up")  # it would recover, were the poll run as librenms
    wait_for(lambda: (r := d.daemon.store.get(91)) and r.attempts >= 2, what="two attempts")
    wait_for(lambda: overwrite(sim, 91) == UNSUP, what="forced down again")
    errors = messages(caplog, "device=91 step=check", "configuration error", level=logging.ERROR)
    assert errors and says in errors[0] and "sudo -u librenms" in errors[0]
    rec = d.daemon.store.get(91)
    assert rec is not None and rec.last_error is not None and says in rec.last_error
    health = requests.get(d.url + "/health", timeout=5).json()
    assert health["status"] == "degraded", health
    assert any("configuration error" in reason for reason in health["reasons"]), health


# -- an UNSUPERVISED_IP that answers -------------------------------------------------------------
def local_non_loopback_ipv4() -> str | None:
    """An IPv4 address of one of this host's interfaces other than lo, from the kernel's table."""
    text = Path("/proc/net/fib_trie").read_text()
    found = re.findall(r"\|-- (\d+\.\d+\.\d+\.\d+)\n\s+/32 host LOCAL", text)
    return next((ip for ip in found if not ip.startswith("127.")), None)


def test_unsupervised_ip_that_may_answer_is_warned_about() -> None:
    """Loopback (all of 127.0.0.0/8 answers on every poller) and this host's own addresses get
    a warning with the fix; an address nothing here owns does not."""
    loopback = unsupervised_ip_warning("127.0.0.50")
    assert loopback is not None and "ip route add blackhole 192.0.2.1/32" in loopback
    assert "SNMP" in loopback
    assert unsupervised_ip_warning("::1") is not None
    assert unsupervised_ip_warning("203.0.113.254") is None
    own = local_non_loopback_ipv4()
    if own is not None:  # a host with only lo has no such address to try
        warning = unsupervised_ip_warning(own)
        assert warning is not None and "address of this host" in warning


def test_a_forced_down_device_that_still_answers_is_reported_once(
    sim: Simulator, start_daemon: StartDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    """1. UNSUPERVISED_IP is the default 127.0.0.50 and the pollers run snmpd on all addresses
       with the CPE's community.
    2. Device 95 is forced down; LibreNMS's next poll (after the force-down) reaches the poller
       itself under the CPE's record: up, OS linux, the CPE's ports marked deleted.
    3. At the next attempt the daemon logs, once for this device, that UNSUPERVISED_IP seems
       to answer, with the fix; at later attempts it does not repeat it.
    4. Restored, the CPE answers again: LibreNMS re-creates its ports with new ids, and the
       daemon finds port2 again and recovers it when it comes up."""
    sim.snmpd_on_pollers = True
    sim.add_device(95, "cpe-95", overwrite_ip="198.51.100.95", ports={"port2": "down"})
    # The LibreNMS poll must come between a force-down and the next attempt: a second and a
    # half after the force-down (LibreNMS's times are whole seconds), and 6 s leave a busy
    # machine room for it (with 2 s the next attempt could restore the CPE first).
    d = start_daemon(RECOVERY_INTERVAL_SEC="6")
    d.post(alert_body(95))

    def forced_at() -> float | None:
        rec = d.daemon.store.get(95)
        return rec.last_forced_at if rec is not None and rec.phase is Phase.DOWN else None

    for _ in range(2):  # two force-downs, each followed by a LibreNMS poll
        forced: float = wait_for(forced_at, what="forced down")
        wait_for(lambda: time.time() > forced + 1.5, what="a moment after it")  # noqa: B023
        assert sim.poll(95)[0] == 0  # the dispatcher's poll: the poller answered
        assert sim.device(95)["os"] == "linux"
        wait_for(lambda: forced_at() not in (None, forced), timeout=60, what="the next attempt")  # noqa: B023
    said = messages(caplog, "device=95 step=verify", "seems to answer", level=logging.WARNING)
    assert len(said) == 1 and "ip route add blackhole" in said[0]
    sim.set_link(95, "port2", "up")
    wait_for(lambda: d.daemon.store.get(95) is None, timeout=60, what="recovered")
    assert overwrite(sim, 95) == "198.51.100.95" and sim.device(95)["os"] == "routeros"


def test_serve_warns_at_start_about_a_loopback_unsupervised_ip(
    sim: Simulator, tmp_path: Path
) -> None:
    """`alert-handler serve` with the default UNSUPERVISED_IP (127.0.0.50) says at start that
    it may answer, and how to fix it; with a TEST-NET address it says nothing."""
    for unsupervised, warned in (("127.0.0.50", True), ("203.0.113.254", False)):
        workdir = tmp_path / unsupervised
        workdir.mkdir()
        port = free_port()
        env = base_env(sim, workdir, LISTEN_PORT=str(port), UNSUPERVISED_IP=unsupervised)
        daemon = DaemonProcess(workdir, env, port)
        try:
            assert daemon.terminate() == 0
        finally:
            if daemon.proc.poll() is None:
                daemon.kill()
        log = (workdir / "alert_handler.log").read_text()
        assert ("is a loopback address" in log) is warned, log
        assert ("ip route add blackhole 192.0.2.1/32" in log) is warned


def test_check_explains_the_wrong_poll_user(sim: Simulator, tmp_path: Path) -> None:
    """`check 42` with lnms run as root: the poll line fails and the next line gives the fix."""
    sim.add_device(42, "cpe-42", ports={"port2": "up"})
    command = poll_command(sim).replace(" poll ", " poll --run-as root ")
    write_env(tmp_path, base_env(sim, tmp_path, POLL_COMMAND=command))
    result = cli(tmp_path, "check", "42")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("\u2718 poll of device 42: exit 1"))
    assert "(configuration error)" in lines[at]
    assert lines[at + 1].startswith("\u2718 the fix: lnms must not run as root")
    assert "sudo -u librenms lnms device:poll {device_id}" in lines[at + 1]
