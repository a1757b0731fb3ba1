"""The operator commands on the `alert-handler` parser: check, status, release, track, pause,
resume, demo, simulator.

The commands that talk to the running daemon are in `control`, `check` in `check`, the demo
in `sim.demo`, the simulator in `sim.command`. Exit status: 0 success, 1 failure, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
from typing import Any

from alert_handler.cli.control import cmd_pause, cmd_release, cmd_resume, cmd_status, cmd_track
from alert_handler.cli.events import add_event_commands
from alert_handler.cli.output import device_id_arg
from alert_handler.cli.recover import add_recover_command
from alert_handler.cli.steer import add_steer_commands


def cmd_check(args: argparse.Namespace) -> int:
    """Config, state file, API token and rights, SSH and the poll command: one line per check."""
    # Imported when run: `check` needs the daemon's parts (requests, paramiko,
    # prometheus_client: a quarter of a second), which the other commands do without.
    from alert_handler.cli.check import run_check

    return run_check(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the daemon against the built-in simulator and show a device recovered."""
    # Imported when run, for the reason given in cmd_check.
    from alert_handler.sim.demo import run_demo

    return run_demo(seconds=args.seconds, interval=args.interval, keep=args.keep)


def cmd_simulator(args: argparse.Namespace) -> int:
    """Serve the built-in LibreNMS simulator, or flip a port of the one running."""
    # Imported when run, for the reason given in cmd_check.
    from alert_handler.sim.command import flip_command, simulator_command

    if args.flip:
        return flip_command(args)
    return simulator_command(args)


def add_commands(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the commands on the `alert-handler` parser; returns their names."""
    p = sub.add_parser(
        "check",
        parents=[common],
        help="test the config, state file, API token, SSH and the poll command",
        description="One line per check, \u2714 or \u2718; exit 0 when all pass.",
    )
    p.add_argument("device_id", nargs="?", type=device_id_arg, help="also poll this device")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser(
        "status",
        parents=[common],
        help="show the tracked devices",
        description="From the running daemon (GET /devices), else from the state file.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "release",
        parents=[common],
        help="restore a device's original overwrite_ip now and forget it",
        description="Asks the running daemon (POST /devices/<id>/release) and waits for it.",
    )
    p.add_argument("device_id", type=device_id_arg)
    p.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for it (0: do not wait)"
    )
    p.set_defaults(func=cmd_release)
    p = sub.add_parser(
        "track",
        parents=[common],
        help="start handling a device by hand, as an alert would",
        description="Checks that LibreNMS has the device, then asks the running daemon "
        "(POST /devices/<id>/track).",
    )
    p.add_argument("device_id", type=device_id_arg)
    p.add_argument(
        "--force",
        action="store_true",
        help="do not ask LibreNMS first whether the device exists (when it cannot be reached)",
    )
    p.set_defaults(func=cmd_track)
    sub.add_parser(
        "pause",
        parents=[common],
        help="maintenance mode: alerts are recorded, no device is changed",
        description="Persisted across restarts; written to the state file if no daemon runs.",
    ).set_defaults(func=cmd_pause)
    sub.add_parser(
        "resume", parents=[common], help="leave maintenance mode", description="Undo `pause`."
    ).set_defaults(func=cmd_resume)
    p = sub.add_parser(
        "demo",
        help="run against the built-in LibreNMS simulator (start here)",
        description="Needs no LibreNMS: everything runs on loopback.",
    )
    p.add_argument("--seconds", type=float, default=90.0, help="give up after this long")
    p.add_argument("--interval", type=float, default=5.0, help="RECOVERY_INTERVAL_SEC to use")
    p.add_argument("--keep", action="store_true", help="keep the demo's state and log files")
    p.set_defaults(func=cmd_demo)
    add_simulator(sub)
    names = {"check", "status", "release", "track", "pause", "resume", "demo", "simulator"}
    names |= add_recover_command(sub, common)
    return names | add_steer_commands(sub, common) | add_event_commands(sub, common)


def add_simulator(sub: Any) -> None:
    """`alert-handler simulator`: a LibreNMS stand-in to try every command against."""
    p = sub.add_parser(
        "simulator",
        help="serve a LibreNMS simulator with four CPEs, to try the commands against",
        description="Serves the built-in LibreNMS simulator on loopback until Ctrl-C and prints "
        "its URL, its API token, the settings that point a daemon at it and how to flip a "
        "port. `--flip ID IFNAME up|down` changes a port of the simulator that runs.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free one)")
    p.add_argument("--token", default=None, help="its API token (default: the built-in one)")
    p.add_argument(
        "--daemon-port", type=int, default=5000, help="LISTEN_PORT in the printed settings"
    )
    p.add_argument("--write-env", metavar="FILE", help="also write those settings to FILE")
    p.add_argument(
        "--flip",
        nargs=3,
        metavar=("ID", "IFNAME", "STATUS"),
        help="set a port of the running simulator up or down (LibreNMS sees it at the next poll)",
    )
    p.set_defaults(func=cmd_simulator)
