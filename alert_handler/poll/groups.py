"""`GroupPoller`: each poll runs where LibreNMS would poll the device, on a poller of its group.

`lnms device:poll <id>` polls from whichever host runs it, ignoring the device's poller group: run
on a host that cannot reach the CPE, the poll writes it down (exit 6). POLLER_GROUP_HOSTS maps
groups to targets (`local` or an SSH host); groups not listed use the default (POLL_METHOD with
SSH_HOST). Every SSH host gets one reused connection with its own channel cap, shared by all the
groups that name it (and by the default when it is the same host).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from alert_handler.config.kinds import PollTarget
from alert_handler.config.table import Config
from alert_handler.core.facts import PollError, PollResult
from alert_handler.poll.local import LocalPoller
from alert_handler.poll.ssh import SSHPoller

log = logging.getLogger(__name__)

PollObserver = Callable[[str, str], None]  # (poller label, exit status or "error")


class PollSite(Protocol):
    """One place polls run: the local command or one SSH host."""

    def poll(self, device_id: int) -> PollResult: ...
    def check(self) -> str: ...
    def close(self) -> None: ...
    def run_command(self, command: str) -> PollResult: ...


@dataclass(frozen=True)
class GroupRoute:
    """Where one poller group's polls go; `label` is the metrics label (from the config)."""

    label: str
    groups: tuple[int, ...]  # () for the default: every group not listed
    target: PollSite


def _key(cfg: Config, target: PollTarget | None) -> tuple[str, str | None, int]:
    """What makes two targets one connection: (user, host, port); ("", None, 0) is local."""
    if target is None:
        if cfg.poll_method == "local":
            return "", None, 0
        return cfg.ssh_user or "", cfg.ssh_host, cfg.ssh_port
    if target.host is None:
        return "", None, 0
    return target.user or cfg.ssh_user or "", target.host, target.port or 22


def _label(key: tuple[str, str | None, int]) -> str:
    user, host, port = key
    if host is None:
        return "local"
    where = f"[{host}]" if ":" in host else host
    return f"{user}@{where}:{port}"


def _make(cfg: Config, key: tuple[str, str | None, int]) -> PollSite:
    user, host, port = key
    if host is None:
        return LocalPoller(cfg)
    return SSHPoller(replace(cfg, ssh_host=host, ssh_port=port, ssh_user=user))


class GroupPoller:
    """Routes each poll to its group's target; safe to call from several threads."""

    def __init__(self, cfg: Config, observe: PollObserver | None = None) -> None:
        self._observe = observe
        made: dict[tuple[str, str | None, int], PollSite] = {}

        def target_for(key: tuple[str, str | None, int]) -> PollSite:
            if key not in made:
                made[key] = _make(cfg, key)
            return made[key]

        default_key = _key(cfg, None)
        self._default = GroupRoute(_label(default_key), (), target_for(default_key))
        grouped: dict[tuple[str, str | None, int], list[int]] = {}
        for target in cfg.poller_group_hosts:
            grouped.setdefault(_key(cfg, target), []).append(target.group)
        self._routes = [
            GroupRoute(_label(key), tuple(groups), target_for(key))
            for key, groups in grouped.items()
        ]
        self._by_group = {group: route for route in self._routes for group in route.groups}
        self._targets = list(made.values())
        self._lock = threading.Lock()
        self._closed = False

    def route(self, poller_group: int) -> GroupRoute:
        """Where a device of `poller_group` is polled."""
        return self._by_group.get(poller_group, self._default)

    def routes(self) -> list[GroupRoute]:
        """The default route first, then one per mapped target, in config order."""
        return [self._default, *self._routes]

    def labels(self) -> list[str]:
        """Every poller label this config can produce (bounded metric labels)."""
        return sorted({route.label for route in self.routes()})

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
        """Run the poll on a poller of the device's group; PollError if it could not run."""
        route = self.route(poller_group)
        log.debug("device=%d step=poll poller_group=%d on %s", device_id, poller_group, route.label)
        try:
            result = route.target.poll(device_id)
        except PollError:
            self._count(route.label, "error")
            raise
        self._count(route.label, str(result.exit_status))
        return result

    def _count(self, label: str, status: str) -> None:
        if self._observe is not None:
            self._observe(label, status)

    def check(self) -> str:
        """The default target's check (connect and authenticate, or find the command)."""
        return self._default.target.check()

    def close(self) -> None:
        """Close every target (each SSH connection once)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for target in self._targets:
            target.close()
