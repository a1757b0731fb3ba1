"""The operator commands on the `alert-handler` parser: check, status, release, track, pause,
resume, demo.

The commands that talk to the running daemon are in `control`, `check` in `check`, the demo
in `sim.demo`. Exit status: 0 success, 1 failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
from typing import Any

from alert_handler.cli.control import cmd_pause, cmd_release, cmd_resume, cmd_status, cmd_track
from alert_handler.cli.events import add_event_commands
from alert_handler.core.alerts import BadPayload, parse_device_id


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

    return run_demo(seconds=args.seconds, interval=args.interval)


def _device_id(text: str) -> int:
    try:
        return parse_device_id(text)
    except BadPayload as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the commands on the `alert-handler` parser; returns their names."""
    p = sub.add_parser(
        "check",
        parents=[common],
        help="test the config, state file, API token, SSH and the poll command",
        description="One line per check, \u2714 or \u2718; exit 0 when all pass.",
    )
    p.add_argument("device_id", nargs="?", type=_device_id, help="also poll this device")
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
    p.add_argument("device_id", type=_device_id)
    p.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for it (0: do not wait)"
    )
    p.set_defaults(func=cmd_release)
    p = sub.add_parser(
        "track",
        parents=[common],
        help="start handling a device by hand, as an alert would",
        description="Asks the running daemon (POST /devices/<id>/track).",
    )
    p.add_argument("device_id", type=_device_id)
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
    p.set_defaults(func=cmd_demo)
    names = {"check", "status", "release", "track", "pause", "resume", "demo"}
    return names | add_event_commands(sub, common)
