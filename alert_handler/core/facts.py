"""What the core knows of the outside world: facts read from LibreNMS and from a poll, and the
errors the step runner tells apart. Plain data; the API client and the pollers build them."""

from __future__ import annotations

from dataclasses import dataclass

_MEANINGS = {0: "polled", 6: "device down", 1: "no such device or database error"}


class LibreNMSError(Exception):
    """An API call failed; `str()` is safe to log (no token, no device row)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class DeviceNotFound(LibreNMSError):
    """LibreNMS has no such device."""


@dataclass(frozen=True)
class DeviceInfo:
    """The few columns of a device row the daemon uses."""

    device_id: int
    hostname: str | None
    overwrite_ip: str | None
    ip: str | None
    status: bool | None
    poller_group: int = 0  # the pollers of this group poll it (0: the default group)
    disabled: bool = False
    ignore: bool = False
    # When LibreNMS's last poll that found it up began: last_polled (set at the end of a poll,
    # only when the device is up) minus last_polled_timetaken; epoch seconds.
    last_up_poll_started: float | None = None


@dataclass(frozen=True)
class PortInfo:
    """One port of a device."""

    port_id: int
    if_name: str
    oper_status: str | None
    deleted: bool = False  # LibreNMS keeps a vanished port's row, stale, with deleted=1


@dataclass(frozen=True)
class OpenAlert:
    """One alert from GET /alerts."""

    alert_id: int
    device_id: int
    rule_name: str | None
    state: int
    timestamp: str | None
    alerted: bool = True  # LibreNMS notified it (0: suppressed by maintenance, delay, parents)
    raised_at: float | None = None  # `timestamp` (server-local time) as epoch seconds


@dataclass(frozen=True)
class PollResult:
    """How one poll run ended; any exit status is a result, not an error."""

    device_id: int
    exit_status: int
    output_tail: tuple[str, ...]  # last non-empty lines of stdout and stderr together
    duration: float  # seconds from starting the command to its exit
    config_error: str | None = None  # the output says the daemon is set up wrong (the fix)

    @property
    def meaning(self) -> str:
        """The exit status in LibreNMS's words (0 polled, 6 device down, 1 no such device)."""
        if self.config_error is not None:
            return "configuration error"
        return _MEANINGS.get(self.exit_status, "error")


class PollError(Exception):
    """The poll could not be run (connect, auth, host key, timeout); the message is safe to log."""
