"""The steering commands: silence, unsilence, silences, confirm, discard (through the daemon)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from alert_handler.cli.control import _error, _refused, request
from alert_handler.cli.env import load_config
from alert_handler.cli.guards import offline_silences
from alert_handler.cli.link import DaemonDown, DaemonLink
from alert_handler.cli.lookup import lookup
from alert_handler.cli.output import plural
from alert_handler.cli.usage import duration_arg, silence_target_arg, usage
from alert_handler.core.verdict import parse_target
from alert_handler.steering.controls import silences_path


def _ask(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any] | int:
    """`control.request` to the daemon the settings point at."""
    return request(DaemonLink(load_config(args)), method, path, body)


def cmd_silence(args: argparse.Namespace) -> int:
    """Keep automation away from a device (or hostname glob) for a while."""
    target = parse_target(args.target, allow_group=False)  # checked by argparse
    if target.matches_everything and not args.all:
        return usage(args, f"{target} matches every device: add --all to mean it")
    if target.device_id is not None and not args.force:
        problem = _unknown_device(args, target.device_id)
        if problem:
            return _error(f"{problem} (--force silences it anyway)")
    body = {"target": str(target), "for": args.duration, "reason": args.reason, "all": args.all}
    reply = _ask(args, "POST", "/silences", body)
    if isinstance(reply, int):
        return reply
    silence = reply.get("silence", {})
    print(f"silenced {silence.get('target')} until {silence.get('until')}")
    released = reply.get("released") or []
    if released:
        listed = ", ".join(str(d) for d in released)
        print(f"restoring and forgetting {plural(len(released), 'tracked device')}: {listed}")
    return 0


def _unknown_device(args: argparse.Namespace, device_id: int) -> str | None:
    """Why a device id cannot be silenced (LibreNMS has no such device, or cannot be asked)."""
    found = lookup(load_config(args), device_id)
    if found.exists is None:
        return f"cannot check device {device_id} in LibreNMS: {found.error}"
    return None if found.exists else f"LibreNMS has no device {device_id}"


def cmd_unsilence(args: argparse.Namespace) -> int:
    """End a silence now."""
    reply = _ask(args, "POST", "/unsilence", {"target": args.target})
    if isinstance(reply, int):
        return reply
    print(f"unsilenced {reply.get('silence', {}).get('target')}")
    return 0


def cmd_silences(args: argparse.Namespace) -> int:
    """List the active silences."""
    cfg = load_config(args)
    link = DaemonLink(cfg)
    try:
        code, reply = link.call("GET", "/silences")
    except DaemonDown:  # as `status` does: the daemon's file, read only
        offline = offline_silences(cfg)
        if isinstance(offline, str):
            return _error(offline)
        silences, source = offline, f" (from {silences_path(cfg.state_file)}: no daemon runs)"
    else:
        if code >= 400:
            return _refused(code, reply)
        silences, source = list(reply.get("silences") or []), ""
    if args.json:
        print(json.dumps(silences, indent=2))
        return 0
    if not silences:
        print(f"no active silences{source}")
    elif source:
        print(f"{plural(len(silences), 'active silence')}{source}")
    for s in silences:
        why = f" ({s.get('reason')})" if s.get("reason") else ""
        print(f"{s.get('target')} until {s.get('until')}, set by {s.get('by')}{why}")
    return 0


def _decide(args: argparse.Namespace, verb: str, done: str) -> int:
    reply = _ask(args, "POST", f"/{verb}")
    if isinstance(reply, int):
        return reply
    devices = reply.get("devices") or []
    if not devices:
        print("no device is held")
        return 0
    print(f"{plural(len(devices), 'held device')} {done}: {', '.join(str(d) for d in devices)}")
    return 0


def cmd_confirm(args: argparse.Namespace) -> int:
    """Force the held devices down."""
    return _decide(args, "confirm", "confirmed: forcing them down")


def cmd_discard(args: argparse.Namespace) -> int:
    """Let the held devices go: each is restored if LibreNMS shows it on UNSUPERVISED_IP all
    the same, else left as it is, and forgotten."""
    return _decide(args, "discard", "discarded: released and forgotten")


def add_steer_commands(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the steering commands; returns their names."""
    p = sub.add_parser(
        "silence",
        parents=[common],
        help="keep automation away from a device (or hostname glob) for a while",
        description="A silenced device is not forced down; a forced-down one is restored to "
        "its original and forgotten. Persisted; ends by itself.",
    )
    p.add_argument(
        "target", type=silence_target_arg, help="a device id or a hostname glob (cpe-lab-*)"
    )
    p.add_argument(
        "--for",
        dest="duration",
        type=duration_arg,
        required=True,
        help="how long: 30m, 2h, 1d, 1w (at most 90d)",
    )
    p.add_argument("--reason", default="", help="why (shown in status and the log)")
    p.add_argument("--all", action="store_true", help="allow a glob that matches every device")
    p.add_argument("--force", action="store_true", help="do not check that LibreNMS has the device")
    p.set_defaults(func=cmd_silence)
    p = sub.add_parser("unsilence", parents=[common], help="end a silence now")
    p.add_argument("target", help="the silenced device id or glob, as given to `silence`")
    p.set_defaults(func=cmd_unsilence)
    p = sub.add_parser(
        "silences",
        parents=[common],
        help="list the active silences",
        description="From the running daemon (GET /silences), else from the silences file "
        "beside the state file.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_silences)
    sub.add_parser(
        "confirm",
        parents=[common],
        help="force down the new devices held by the CONFIRM_ABOVE gate",
    ).set_defaults(func=cmd_confirm)
    sub.add_parser(
        "discard",
        parents=[common],
        help="let go the new devices held by the CONFIRM_ABOVE gate (restored if on "
        "UNSUPERVISED_IP all the same, then forgotten)",
    ).set_defaults(func=cmd_discard)
    return {"silence", "unsilence", "silences", "confirm", "discard"}
