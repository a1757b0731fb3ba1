"""The simulator as LibreNMS on its own: it polls every device, runs its alert rules after each
poll and notifies with RunAlerts' delay, interval, max alerts and recovery rules (pure, against a
fake clock); with the daemon, a flipped port alone drives the whole story (in process, and
`alert-handler simulator --flip` with both as real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from alert_handler.sim.runner import (
    ACKNOWLEDGED,
    CLEAR,
    AlertRules,
    AlertRunner,
    Notice,
    RuleExtra,
    Transport,
    default_rules,
)
from alert_handler.sim.simulator import Simulator
from tests.conftest import (
    AUTH,
    UNSUP,
    StartDaemon,
    free_port,
    installed_cli,
    interrupt,
    overwrite,
    simulator_cli,
    spawn,
    wait_for,
)

T0 = 1_800_000_000.0
PORT2 = "Port2 down"


class Lnms:
    """A simulator with one device (7, port2 up) and the rules, driven by hand at fake times."""

    def __init__(self, extra: RuleExtra, tolerance: float = 0.0) -> None:
        self.sim = Simulator()
        self.sim.add_device(7, "cpe-7.example.net", ports={"ether1": "up", "port2": "up"})
        self.rules = AlertRules(default_rules(extra), tolerance)

    def link(self, status: str, t: float) -> None:
        """The port changes and LibreNMS polls the device at T0 + t."""
        self.sim.set_link(7, "port2", status)
        self.sim.poll(7)
        with self.sim.tables() as db:
            self.rules.run_device(db, 7, T0 + t)

    def run(self, t: float) -> list[tuple[str, int]]:
        """The alert runner at T0 + t: (rule, state) of each notification."""
        with self.sim.tables() as db:
            found = self.rules.run_alerts(db, T0 + t)
        return [(n.rule, n.state) for n in found]

    def row(self) -> dict[str, object]:
        """The port rule's alert as GET /alerts shows it."""
        rows = [a for a in self.sim.alerts() if a["name"] == PORT2]
        assert len(rows) == 1
        return {k: rows[0][k] for k in ("state", "alerted", "open")}


def test_one_alert_after_the_delay_then_a_recovery() -> None:
    """1. port2 goes down: the alert is open, not notified (alerted 0) during the delay.
    2. At the delay: one notification (alerted 1); max alerts 1: no repeat.
    3. port2 comes back: state 0 and a recovery notice at once (no delay); then closed."""
    lnms = Lnms(RuleExtra(delay=60, count=1))
    lnms.link("down", 0)
    assert lnms.row() == {"state": 1, "alerted": 0, "open": 1}
    assert lnms.run(0) == [] and lnms.run(59) == []
    assert lnms.row()["alerted"] == 0
    assert lnms.run(60) == [(PORT2, 1)]
    assert lnms.row() == {"state": 1, "alerted": 1, "open": 1}
    assert lnms.run(120) == [] and lnms.run(600) == []
    lnms.link("up", 700)
    assert lnms.row() == {"state": CLEAR, "alerted": 1, "open": 1}
    assert lnms.run(700) == [(PORT2, CLEAR)]
    assert lnms.row() == {"state": CLEAR, "alerted": 0, "open": 0}
    assert lnms.run(800) == []


def test_an_alert_that_recovers_within_its_delay_is_never_heard_of() -> None:
    lnms = Lnms(RuleExtra(delay=300))
    lnms.link("down", 0)
    assert lnms.run(100) == []
    lnms.link("up", 200)
    assert lnms.run(200) == []  # alerted 0 == state 0: no recovery for what was never sent
    assert lnms.row() == {"state": CLEAR, "alerted": 0, "open": 0}


def test_repeats_every_interval_up_to_max_alerts() -> None:
    """count 3, interval 60 s, tolerance 5 s: at 0, 55 (within the tolerance) and 120; then no
    more; count -1 goes on."""
    lnms = Lnms(RuleExtra(interval=60, count=3), tolerance=5)
    lnms.link("down", 0)
    sent = [t for t in (0, 30, 54, 55, 100, 120, 170, 180, 300, 900) if lnms.run(t)]
    assert sent == [0, 55, 120]
    endless = Lnms(RuleExtra(interval=60, count=-1))
    endless.link("down", 0)
    assert [t for t in range(0, 601, 30) if endless.run(t)] == list(range(0, 601, 60))


def test_no_recovery_notice_when_the_rule_says_so() -> None:
    lnms = Lnms(RuleExtra(recovery=False))
    lnms.link("down", 0)
    assert lnms.run(0) == [(PORT2, 1)]
    lnms.link("up", 10)
    assert lnms.run(10) == []
    assert lnms.row()["open"] == 0


def test_muted_ignored_and_acknowledged_alerts() -> None:
    """1. Under a mute maintenance window the alert stays open with alerted 0.
    2. Ignored: the same. 3. Acknowledged (state 2): no repeats, but its recovery is sent."""
    lnms = Lnms(RuleExtra(interval=10, count=-1))
    lnms.sim.set_maintenance(7, "mute")
    lnms.link("down", 0)
    assert lnms.run(0) == [] and lnms.row() == {"state": 1, "alerted": 0, "open": 1}
    lnms.sim.set_maintenance(7, None)
    lnms.sim.set_flags(7, ignore=True)
    assert lnms.run(20) == [] and lnms.row()["alerted"] == 0
    lnms.sim.set_flags(7, ignore=False)
    assert lnms.run(40) == [(PORT2, 1)]
    with lnms.sim.tables() as db:
        next(a for a in db.alerts.values() if a["rule_id"] == 1)["state"] = ACKNOWLEDGED
    lnms.link("down", 50)  # still down: an acknowledged alert is left alone
    assert lnms.run(60) == [] and lnms.run(80) == []
    lnms.link("up", 90)
    assert lnms.run(90) == [(PORT2, CLEAR)]


def test_a_forced_down_device_alerts_device_down() -> None:
    """The poll of a device on UNSUPERVISED_IP (loopback) fails on SNMP: the "SNMP not
    responding" rule fires; port2's stale `down` keeps its alert active."""
    lnms = Lnms(RuleExtra())
    lnms.link("down", 0)
    assert lnms.run(0) == [(PORT2, 1)]
    with lnms.sim.tables() as db:
        db.devices[7]["overwrite_ip"] = UNSUP
    lnms.link("up", 10)  # the link is up but LibreNMS cannot poll it
    assert lnms.run(10) == [("SNMP not responding on Device", 1)]


@pytest.fixture
def runner(sim: Simulator) -> Iterator[list[AlertRunner]]:
    """Runners started by the test, stopped at teardown."""
    made: list[AlertRunner] = []
    yield made
    for one in made:
        one.stop()


def test_a_flip_alone_drives_the_story(
    sim: Simulator, start_daemon: StartDaemon, runner: list[AlertRunner]
) -> None:
    """1. The simulator polls on its own (0.3 s) and alerts the daemon when port2 of 103 goes
    down: the daemon forces 103 down.
    2. port2 comes back: the daemon's next attempt restores 103; the simulator's next poll
    finds the port up and sends a recovery notice."""
    sim.add_device(103, "cpe-103.example.net", ports={"ether1": "up", "port2": "up"})
    d = start_daemon()
    transport = Transport(d.url + "/alert", {**AUTH, "Content-Type": "application/json"})
    loop = AlertRunner(sim, transport, interval=0.3)
    runner.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds >= 2, what="two poll rounds")
    assert loop.sent == [] and d.daemon.store.get(103) is None
    sim.set_link(103, "port2", "down")
    wait_for(lambda: overwrite(sim, 103) == UNSUP, 20, "103 forced down")
    first = loop.sent[0]
    assert first[0] == Notice(first[0].alert_id, 103, PORT2, 1) and first[1] == 202
    sim.set_link(103, "port2", "up")
    wait_for(lambda: d.daemon.store.get(103) is None, 20, "103 recovered and forgotten")
    assert overwrite(sim, 103) is None
    wait_for(
        lambda: any(n.state == CLEAR and n.rule == PORT2 for n, _ in loop.sent),
        20,
        "the recovery notice",
    )
    port_rule = [a for a in sim.alerts() if a["device_id"] == 103 and a["name"] == PORT2]
    assert [(a["state"], a["alerted"], a["open"]) for a in port_rule] == [(0, 0, 0)]


def _sim_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
    return subprocess.run(
        [*installed_cli(), *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_simulator_command_polls_on_its_own(tmp_path: Path) -> None:
    """`alert-handler simulator --poll-interval 0.5` and a daemon with its settings, both real
    processes: `--flip 103 port2 down` alone gets 103 forced down, `--flip 103 port2 up` alone
    gets it restored (the daemon's journal ends its episode `recovered`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
    daemon_port = free_port()
    sim_proc, guide = simulator_cli(
        tmp_path,
        "--daemon-port",
        str(daemon_port),
        "--write-env",
        "sim.env",
        "--poll-interval",
        "0.5",
        env=clean,
    )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        api = guide[0].removeprefix("LibreNMS simulator at ")
        port = api.split(":")[2].split("/")[0]
        assert any("polls every device every 0.5 s" in g for g in guide), guide
        daemon = spawn(
            [*installed_cli(), "--env-file", "sim.env"],
            cwd=tmp_path,
            env={**clean, "RECOVERY_INTERVAL_SEC": "0.5"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ip(device_id: int) -> object:
            headers = {"X-Auth-Token": "0123456789abcdef0123456789abcdef"}
            reply = requests.get(f"{api}/devices/{device_id}", headers=headers, timeout=5)
            return reply.json()["devices"][0]["overwrite_ip"]

        def journal() -> list[dict[str, object]]:
            path = tmp_path / "simulator-state.events.jsonl"  # named after its STATE_FILE
            if not path.exists():
                return []
            return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]

        assert (
            _sim_cli(
                tmp_path, "simulator", "--port", port, "--flip", "103", "port2", "down"
            ).returncode
            == 0
        )
        wait_for(lambda: ip(103) == UNSUP, 60, "103 forced down")
        assert (
            _sim_cli(
                tmp_path, "simulator", "--port", port, "--flip", "103", "port2", "up"
            ).returncode
            == 0
        )
        wait_for(
            lambda: any(e["type"] == "recovered" and e["device_id"] == 103 for e in journal()),
            60,
            "103 recovered",
        )
        assert ip(103) is None
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    assert interrupt(sim_proc) == 0


def test_the_daemons_own_poll_runs_the_rules_too(
    sim: Simulator, start_daemon: StartDaemon, runner: list[AlertRunner]
) -> None:
    """A port that flaps faster than LibreNMS polls: as in LibreNMS, `lnms device:poll` (the
    daemon's check) ends with the alert rules, so the alert clears when the daemon's poll finds
    the port up, and the next round alerts again when it is down again.
    1. Rounds by hand (the runner's own interval is an hour): 103 alerted and forced down.
    2. port2 up: the daemon's check poll recovers it and clears the alert (state 0).
    3. port2 down again: the next round sends a new alert; 103 is forced down again."""
    sim.add_device(103, "cpe-103.example.net", ports={"ether1": "up", "port2": "up"})
    d = start_daemon()
    loop = AlertRunner(sim, Transport(d.url + "/alert", dict(AUTH)), interval=3600)
    runner.append(loop)
    loop.start()
    wait_for(lambda: loop.rounds >= 1, what="the first round")

    def port_alert() -> dict[str, object]:
        rows = [a for a in sim.alerts() if a["device_id"] == 103 and a["name"] == PORT2]
        return {k: rows[-1][k] for k in ("state", "alerted", "open")} if rows else {}

    sim.set_link(103, "port2", "down")
    assert [(n.rule, n.state) for n, _ in loop.run_once()] == [(PORT2, 1)]
    wait_for(lambda: overwrite(sim, 103) == UNSUP, 20, "103 forced down")
    sim.set_link(103, "port2", "up")
    wait_for(lambda: d.daemon.store.get(103) is None, 20, "103 recovered and forgotten")
    assert port_alert()["state"] == CLEAR  # the daemon's poll ran the rules
    sim.set_link(103, "port2", "down")
    sent = [(n.rule, n.state) for n, _ in loop.run_once()]
    assert (PORT2, 1) in sent
    wait_for(lambda: overwrite(sim, 103) == UNSUP, 20, "103 forced down again")
    assert port_alert() == {"state": 1, "alerted": 1, "open": 1}


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--poll-interval", "-1"), ("--alert-delay", "soon"), ("--max-alerts", "-2")],
)
def test_the_simulator_refuses_bad_alert_settings(tmp_path: Path, flag: str, value: str) -> None:
    """A negative interval, a delay that is not a number, max alerts below -1: exit 2 naming
    the flag, nothing served."""
    done = _sim_cli(tmp_path, "simulator", "--port", "0", flag, value)
    assert done.returncode == 2 and f"argument {flag}:" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
