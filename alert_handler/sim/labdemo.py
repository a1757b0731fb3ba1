"""`alert-handler simulator --lab N` and `alert-handler demo --lab`: the simulator polling a lab
of real CPEs (network namespaces, a real port2, snmpd each) over real ICMP and SNMP. Root only.

Everything stays on this machine: the lab uses 198.18.0.0/15 under a blackhole route, and the
daemon's UNSUPERVISED_IP is the lab's dark address (a blackholed /32), which answers nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

from alert_handler.config.table import parse
from alert_handler.core.records import Phase
from alert_handler.ops.logs import setup_logging
from alert_handler.sim.command import (
    _alert_runner,
    _wait_for_signal,
    _write_env,
    catch_signals,
    simulator_env,
)
from alert_handler.sim.demo import (
    InThread,
    _Clock,
    _close_log_files,
    _null,
    _say,
    demo_env,
    signals_held,
    term_like_ctrl_c,
)
from alert_handler.sim.lab import Lab, LabError, missing_prerequisite
from alert_handler.sim.runner import DEFAULT_POLL_INTERVAL
from alert_handler.sim.simulator import API_PREFIX, DEFAULT_TOKEN, Simulator


def refusal() -> str | None:
    """Why --lab cannot run here (one line for stderr), or None."""
    why = missing_prerequisite()
    if why is None:
        return None
    if os.geteuid() != 0:
        return (
            "alert-handler: --lab needs root (it builds network namespaces, veths, routes and "
            "an snmpd per CPE); run it with sudo"
        )
    return f"alert-handler: --lab cannot run: {why}"


def lab_fleet(sim: Simulator, lab: Lab) -> list[int]:
    """Device 100+i for CPE i: odd ones have their address as hostname (overwrite_ip null), even
    ones a name (cpe-N.lab.invalid, never resolved) and overwrite_ip their address."""
    ids = []
    for cpe in lab.cpes:
        device_id = 100 + cpe.index
        name = None if cpe.index % 2 else f"cpe-{device_id}.lab.invalid"
        sim.add_lab_device(device_id, cpe.index, hostname=name)
        ids.append(device_id)
    return ids


def lab_simulator_command(args: argparse.Namespace) -> int:
    """`alert-handler simulator --lab N`: the lab, the simulator polling it, a guide; until
    Ctrl-C or SIGTERM, then everything is removed."""
    why = refusal()
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = args.token or DEFAULT_TOKEN
    lab = Lab(args.lab)
    signals = catch_signals()  # before up(): a TERM while it builds is kept, not fatal
    try:
        lab.up()
    except LabError as exc:
        print(f"alert-handler: cannot build the lab: {exc}", file=sys.stderr)
        return 1
    try:
        sim = Simulator(token)
        sim.use_lab(lab)
        ids = lab_fleet(sim, lab)
        try:
            sim.start(args.host, args.port)
        except OSError as exc:
            print(
                f"alert-handler: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
            )
            return 1
        env = simulator_env(sim.url, token, args.daemon_port, Path.cwd())
        env["UNSUPERVISED_IP"] = lab.dark
        del env["CHECK_REPOLL_SEC"]  # real agents cache their ifTable: the default applies
        if args.write_env:
            _write_env(Path(args.write_env), env)
        print(_guide(sim, lab, ids, args, env), flush=True)
        # LibreNMS's own polls and alert rules, as without --lab: a flip alone drives the story.
        return _wait_for_signal(sim, signals, _alert_runner(sim, args, env))
    finally:
        lab.down()


def _guide(
    sim: Simulator, lab: Lab, ids: list[int], args: argparse.Namespace, env: dict[str, str]
) -> str:
    root = sim.url.removesuffix(API_PREFIX)
    here = f" --port {root.rsplit(':', 1)[1]}"
    env_file = args.write_env or "simulator.env"
    ah = f"alert-handler --env-file {shlex.quote(env_file)}"
    saved = f"written to {env_file}" if args.write_env else f"to save as {env_file}"
    lines = [
        f"LibreNMS simulator at {sim.url}, polling a lab of {len(ids)} real CPEs",
        f"(lab: 198.18.{lab.subnet}.0/24 on bridge {lab.bridge}; UNSUPERVISED_IP {lab.dark} "
        "is blackholed; polls use fping and SNMP for real)",
        "",
        "Its devices:",
    ]
    for device_id in ids:
        row = sim.device(device_id)
        cpe = lab.cpe(device_id - 100)
        ip = row["overwrite_ip"] or "null"
        lines.append(
            f"  {device_id}  {row['hostname']:22}  overwrite_ip {ip:13}  netns {cpe.netns}  "
            f"port2 {sim.port(device_id, 'port2').ifOperStatus}"
        )
    interval = getattr(args, "poll_interval", DEFAULT_POLL_INTERVAL)
    polls = (
        [
            f"It polls every CPE every {interval:g} s over ICMP and SNMP (LibreNMS: every 300 s), "
            "runs its alert rules after",
            "each poll and sends alerts and recovery notices to the daemon at LISTEN_PORT.",
        ]
        if interval and interval > 0
        else ["It polls only when the daemon asks (--poll-interval 0): no alert comes by itself."]
    )
    lines += [
        "",
        f"Settings for a daemon on this host, {saved}:",
        *(f"  {k}={v}" for k, v in env.items()),
        "",
        *polls,
        "",
        "Then, each in its own terminal:",
        f"  {ah}                    # the daemon",
        f"  alert-handler simulator{here} --flip 101 port2 down   # pull port2's cable",
        f"  {ah} status             # after its next poll: 101 forced down ({lab.dark})",
        f"  alert-handler simulator{here} --flip 101 port2 up     # plug it back in",
        f"  {ah} status             # within RECOVERY_INTERVAL_SEC: 101 restored, forgotten",
        f"Or by hand, as root: ip -n {lab.cpe(1).netns} link set port2 down   (admin down)",
        "",
        "Ctrl-C stops the simulator and removes the lab.",
    ]
    return "\n".join(lines)


# -- alert-handler demo --lab -----------------------------------------------------------------
def run_lab_demo(
    seconds: float = 120.0, interval: float = 5.0, workdir: str | None = None, keep: bool = False
) -> int:
    """The demo against two lab CPEs; 0 when both end on their original overwrite_ip."""
    why = refusal()
    if why is not None:
        print(why, file=sys.stderr)
        return 2
    folder = Path(workdir or tempfile.mkdtemp(prefix="alert-handler-demo-lab-"))
    lab = Lab(2, workdir=folder / "lab")
    with term_like_ctrl_c():
        try:
            lab.up()
            return _run(lab, folder, seconds, interval, keep or workdir is not None)
        except LabError as exc:
            print(f"alert-handler: cannot build the lab: {exc}", file=sys.stderr)
            return 1
        finally:
            with signals_held():  # the teardown removes routes and namespaces: never cut short
                _close_log_files()
                lab.down()
                if workdir is None and not keep:
                    shutil.rmtree(folder, ignore_errors=True)


def _run(lab: Lab, folder: Path, seconds: float, interval: float, kept: bool) -> int:
    sim = Simulator()
    sim.use_lab(lab)
    ids = lab_fleet(sim, lab)
    _say(
        f"a lab of {len(ids)} real CPEs on 198.18.{lab.subnet}.0/24 (network namespaces, port2, "
        f"snmpd each); UNSUPERVISED_IP {lab.dark} is blackholed"
    )
    for index, device_id in enumerate(ids, start=1):
        lab.set_port(index, "cable_pulled")
        _Clock(30).wait(partial(_reads_down, sim, device_id))  # the agent's cache: up to 3 s
    for device_id in ids:
        print(f"  device {device_id}: port2 {_port2(sim, device_id)} (SNMP)", file=sys.stderr)
    sim.start()
    token = secrets.token_hex(16)
    env = {**demo_env(sim, folder, interval, token), "UNSUPERVISED_IP": lab.dark}
    cfg = parse(env)
    setup_logging(cfg)
    originals = {d: sim.device(d)["overwrite_ip"] for d in ids}
    running = InThread(cfg)
    daemon, webhook = running.daemon, running.webhook
    auth = {"Authorization": f"Bearer {token}"}
    ok = False
    try:
        _say('LibreNMS posts "Port2 down" alerts for the CPEs')
        for device_id in ids:
            sim.send_alert(webhook, device_id, headers=auth)
        _Clock(30).wait(lambda: all(sim.device(d)["overwrite_ip"] == lab.dark for d in ids))
        _say("forced down: LibreNMS's poll pings the dark address for real")
        for device_id in ids:
            code, _ = sim.poll_device(device_id)
            row = sim.device(device_id)
            print(
                f"  device {device_id}: poll exit {code}, status "
                f"{'up' if row['status'] else 'down'} ({row['status_reason'] or '-'})",
                file=sys.stderr,
            )
        _say("the daemon's first checks: restore, poll over SNMP, port2 still down, forced down")
        _Clock(interval * 4 + 30).wait(
            lambda: all(
                r.attempts >= 1 and r.phase is Phase.DOWN for r in daemon.store.records().values()
            )
        )
        for device_id in ids:
            rec = daemon.store.get(device_id)
            attempts = rec.attempts if rec else 0
            print(
                f"  device {device_id}: attempts {attempts}, port2 {_port2_known(sim, device_id)}"
                f", overwrite_ip {_null(sim.device(device_id)['overwrite_ip'])}",
                file=sys.stderr,
            )
        _say("port2's cable is plugged back in on both CPEs")
        for index in range(1, len(ids) + 1):
            lab.set_port(index, "up")
        _Clock(max(interval * 4 + 30, seconds)).wait(lambda: daemon.store.count() == 0)
        _say("Result: every CPE back on its own overwrite_ip, port2 up")
        ok = daemon.store.count() == 0
        for device_id, original in originals.items():
            final = sim.device(device_id)["overwrite_ip"]
            good = final == original
            ok &= good
            print(
                f"  device {device_id}: original overwrite_ip {_null(original):14} "
                f"now {_null(final):14} port2 {_port2_known(sim, device_id):5} "
                f"{'OK' if good else 'WRONG'}",
                file=sys.stderr,
            )
        where = f"log: {cfg.log_file}" if kept else "its files are removed (--keep keeps them)"
        print(f"  {where}", file=sys.stderr)
    finally:
        running.stop()
        sim.stop()
    _say("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1


def _port2(sim: Simulator, device_id: int) -> str:
    """Poll the device for real and return port2's ifOperStatus as LibreNMS now knows it."""
    sim.poll_device(device_id)
    return _port2_known(sim, device_id)


def _reads_down(sim: Simulator, device_id: int) -> bool:
    return _port2(sim, device_id) == "down"


def _port2_known(sim: Simulator, device_id: int) -> str:
    try:
        return sim.port(device_id, "port2").ifOperStatus
    except KeyError:
        return "missing"
