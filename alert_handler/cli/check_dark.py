"""`check` proves UNSUPERVISED_IP is dark where it matters: on every poller.

A forced-down device is polled at UNSUPERVISED_IP by the pollers of its group. On each poller
target (the SSH host of each poller group, or this host for `local`), `check` runs LibreNMS's own
fping (the path `lnms config:get fping` gives, asked the way POLL_COMMAND runs lnms; else
`fping`) with LibreNMS's options (`LibreNMS/Data/Source/Icmp/Fping.php`: `-e -q -c 3 -p 500 -t 500
-O 0`) against UNSUPERVISED_IP. A reply fails the check with the fix; so does a poller where
no fping can be run (darkness not proven).
"""

from __future__ import annotations

import re
import shlex

from alert_handler.config.table import Config
from alert_handler.core.facts import PollError
from alert_handler.ops.unsupervised import ADVICE
from alert_handler.poll.groups import GroupPoller, GroupRoute

FPING_OPTIONS = "-e -q -c 3 -p 500 -t 500 -O 0"  # LibreNMS's defaults (fping_options.*)
_POLL = "device:poll {device_id}"
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]{1,200}$")


def fping_question(poll_command: str) -> str | None:
    """`lnms config:get fping`, run as POLL_COMMAND runs lnms; None when POLL_COMMAND is not
    an `lnms device:poll {device_id}` command."""
    if _POLL not in poll_command:
        return None
    return poll_command.replace(_POLL, "config:get fping")


def dark_checks(cfg: Config, poller: GroupPoller) -> list[tuple[bool, str]]:
    """One (ok, line) per distinct poller target."""
    lines: list[tuple[bool, str]] = []
    seen: set[int] = set()
    for route in poller.routes():
        if id(route.target) in seen:
            continue
        seen.add(id(route.target))
        lines.append(_probe(cfg, route))
    return lines


def _librenms_fping(cfg: Config, route: GroupRoute) -> tuple[str, str]:
    """(the fping to run, where that came from)."""
    question = fping_question(cfg.poll_command)
    if question is None:
        return "fping", "fping (POLL_COMMAND does not run lnms device:poll)"
    try:
        answer = route.target.run_command(question)
    except PollError as exc:
        return "fping", f"fping (lnms config:get fping: {exc})"
    value = answer.output_tail[-1].strip() if answer.output_tail else ""
    if answer.exit_status == 0 and _SAFE_PATH.match(value):
        return value, f"LibreNMS's fping {value}"
    return "fping", f"fping (lnms config:get fping: exit {answer.exit_status})"


def _probe(cfg: Config, route: GroupRoute) -> tuple[bool, str]:
    ip = cfg.unsupervised_ip
    where = f"poller {route.label}"
    fping, source = _librenms_fping(cfg, route)
    command = f"{shlex.quote(fping)} {FPING_OPTIONS} {shlex.quote(ip)}"
    try:
        result = route.target.run_command(command)
    except PollError as exc:
        return False, f"UNSUPERVISED_IP {ip} on {where}: cannot run {source}: {exc}"
    summary = result.output_tail[-1] if result.output_tail else "no output"
    if result.exit_status == 0:
        return False, (
            f"UNSUPERVISED_IP {ip} ANSWERS ping from {where} ({source}: {summary}): forced-down "
            "devices stay reachable there and go down only if SNMP fails (or the poller "
            f"itself is polled under their record). The fix: {ADVICE}"
        )
    if result.exit_status == 1:
        return True, f"UNSUPERVISED_IP {ip} is dark from {where} ({source}: {summary})"
    return False, (
        f"UNSUPERVISED_IP {ip} on {where}: {source} exited {result.exit_status} ({summary}): "
        "cannot prove it is dark; install fping there (LibreNMS needs it) or fix POLL_COMMAND"
    )
