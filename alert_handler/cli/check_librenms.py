"""What `alert-handler check` asks LibreNMS about how it is run: its version (which alert rule
form applies), its poller groups and pollers against POLLER_GROUP_HOSTS, and every mapped poller
host tested; and whether UNSUPERVISED_IP may answer."""

from __future__ import annotations

import re
from collections.abc import Callable

from alert_handler.config.table import Config
from alert_handler.core.facts import LibreNMSError, PollError
from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.components import probe_rights
from alert_handler.poll import GroupPoller

Line = Callable[[bool, str], None]  # a ✔/✘ line that counts
Warn = Callable[[str], None]  # a ✘ line that does not
OPERATIONS_SINCE = (26, 4)
_SETUP = "docs/librenms-setup.md"


def rule_form(version: str | None) -> str:
    """Which alert rule form applies to LibreNMS `version`."""
    match = re.search(r"(\d+)\.(\d+)", version or "")
    if match is None:
        return f"version unknown: see {_SETUP} for both alert rule forms"
    if (int(match.group(1)), int(match.group(2))) >= OPERATIONS_SINCE:
        return (
            "26.4 or later: notifications go through alert operations, so the alert rule needs "
            f"an operation that notifies the API transport of this daemon ({_SETUP})"
        )
    return (
        "before 26.4: the alert rule itself lists the API transport of this daemon, with its "
        f"delay, interval and max alerts ({_SETUP})"
    )


def check_librenms(cfg: Config, api: LibreNMS, poller: GroupPoller, line: Line, warn: Warn) -> None:
    """The version, poller groups and pollers, each mapped poller host (UNSUPERVISED_IP is
    among the start warnings `check` prints like `serve` logs them)."""
    try:
        version = api.version()
        line(True, f"LibreNMS {version or '(version not shown)'}: {rule_form(version)}")
    except LibreNMSError as exc:
        warn(f"LibreNMS version (GET /system): {exc}")
    _poller_groups(cfg, api, poller, warn)
    for route in poller.routes()[1:]:
        groups = ", ".join(str(g) for g in route.groups)
        try:
            line(True, f"poller {route.label} (groups {groups}): {route.target.check()}")
        except PollError as exc:
            line(False, f"poller {route.label} (groups {groups}): {exc}")


def _poller_groups(cfg: Config, api: LibreNMS, poller: GroupPoller, warn: Warn) -> None:
    try:
        groups = {0: "default", **api.poller_groups()}
        pollers = api.pollers()
    except LibreNMSError as exc:
        hint = " (the token may not view pollers and poller groups)" if exc.status == 403 else ""
        warn(f"poller groups and pollers: {exc}{hint}")
        return
    mapped = {t.group for t in cfg.poller_group_hosts}
    for group, name in sorted(groups.items()):
        serving = sorted(p for p, served in pollers.items() if group in served)
        served = f"served by {', '.join(serving)}" if serving else "no poller serves it"
        via = poller.route(group).label
        if group in mapped or group == 0:
            source = "POLLER_GROUP_HOSTS" if group in mapped else "POLL_METHOD"
            print(f"\u2714 poller group {group} ({name}): {served}; polled via {via} ({source})")
        else:
            warn(
                f"poller group {group} ({name}): {served}; not in POLLER_GROUP_HOSTS, so polled "
                f"via {via}: right only if that host is one of its pollers, else every check "
                "says 'device down' (exit 6)"
            )
    for group in sorted(mapped - set(groups)):
        warn(f"POLLER_GROUP_HOSTS maps poller group {group}, which LibreNMS does not have")


_ROUTES = {
    "create": "POST /devices/{id}/components/{type}",
    "edit": "PUT /devices/{id}/components",
    "delete": "DELETE /devices/{id}/components/{id}",
}


def check_components(api: LibreNMS, device_id: int | None, line: Line) -> None:
    """One line each: may the token create, edit and delete device components (the original
    of each forced-down device is kept in one; without them nothing is forced down)."""
    if device_id is None:
        return  # LibreNMS has no device: none to probe on, and none to force down
    for right in probe_rights(api, device_id):
        route = _ROUTES[right.action]
        left = f" ({right.left}: delete it by hand)" if right.left else ""
        if right.allowed:
            line(True, f"API token may {right.action} device components ({route})")
        elif right.allowed is False:
            line(
                False,
                f"API token may not {right.action} device components ({route}: 403): the "
                "daemon keeps each original in one and forces nothing down without it; give "
                f"the token component.{'update' if right.action == 'edit' else right.action}"
                f" ({_SETUP}){left}",
            )
        else:
            line(
                False,
                f"cannot tell whether the token may {right.action} components: {right.detail}"
                + left,
            )
