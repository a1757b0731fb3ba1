"""Run `device:poll <id>` on a LibreNMS poller, over SSH (paramiko) or as a local process.

`make_poller(cfg)` returns a `Poller` (a `GroupPoller`: each poll runs on a poller of the device's
group). `poll(device_id, poller_group)` returns a `PollResult` for any exit status and raises
`PollError` only when the command could not be run to its end (connect, auth, host key, timeout).
Error messages and log lines never contain a password or passphrase.
"""

from __future__ import annotations

from typing import Protocol

from alert_handler.config.table import Config
from alert_handler.core.facts import PollError, PollResult
from alert_handler.poll.groups import GroupPoller, PollObserver
from alert_handler.poll.known_hosts import HostKeyMismatch
from alert_handler.poll.local import LocalPoller
from alert_handler.poll.ssh import SSHPoller

__all__ = [
    "GroupPoller",
    "HostKeyMismatch",
    "LocalPoller",
    "PollError",
    "PollResult",
    "Poller",
    "SSHPoller",
    "make_poller",
]


class Poller(Protocol):
    """Runs the poll command for one device at a time, on a poller of its group; safe to call
    from several threads."""

    def poll(self, device_id: int, poller_group: int = 0) -> PollResult: ...
    def check(self) -> str: ...
    def close(self) -> None: ...


def make_poller(cfg: Config, observe: PollObserver | None = None) -> GroupPoller:
    """The poller for POLL_METHOD and POLLER_GROUP_HOSTS; `observe` counts each poll."""
    return GroupPoller(cfg, observe)
