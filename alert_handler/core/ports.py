"""The narrow ports the step runner talks through: LibreNMS, the poll, the clock and the
controls' verdict; Protocols only (the API client, the pollers and `Controls` implement them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from alert_handler.core.facts import DeviceInfo, OpenAlert, PollResult, PortInfo
from alert_handler.core.records import DeviceRecord
from alert_handler.core.verdict import Verdict


class LibreNMSPort(Protocol):
    """The LibreNMS API calls the steps make; failures raise LibreNMSError (DeviceNotFound)."""

    def get_device(self, device_id: int) -> DeviceInfo: ...
    def under_maintenance(self, device_id: int) -> bool: ...
    def device_ports(self, device_id: int) -> list[PortInfo]: ...
    def set_overwrite_ip(self, device_id: int, value: str | None) -> None: ...
    def discover(self, device_id: int) -> None: ...
    def open_alerts(self) -> list[OpenAlert]: ...
    def ack_alert(self, alert_id: int, note: str) -> None: ...
    def acknowledged_alerts(self) -> list[OpenAlert]: ...
    def unmute_alert(self, alert_id: int, note: str) -> None: ...


class PollPort(Protocol):
    """Runs `lnms device:poll <id>` on a poller of the device's group (where LibreNMS would poll
    it); PollError when it could not be run to its end."""

    def poll(self, device_id: int, poller_group: int) -> PollResult: ...


class Clock(Protocol):
    """Wall-clock time (what records store) and a monotonic timer (what durations use)."""

    def time(self) -> float: ...
    def monotonic(self) -> float: ...


class SteerPort(Protocol):
    """The operator's verdict on a device (EXCLUDE, silences, groups not read yet), answered
    from memory: `Controls.verdict`."""

    def verdict(self, device_id: int, hostname: str | None) -> Verdict | None: ...


class ComponentPort(Protocol):
    """The daemon's components in LibreNMS; failures raise LibreNMSError."""

    def keep(self, rec: DeviceRecord, now: float) -> None:
        """Before a force-down: one component holds this episode's original (written once)."""
        ...

    def held(self, device_id: int) -> tuple[str | None] | None:
        """`(original,)` LibreNMS holds for the device, None if it holds none."""
        ...

    def drop(self, device_id: int) -> str | None:
        """The device was let go: remove its component; never raises, returns why it failed."""
        ...


@dataclass(frozen=True)
class Ports:
    """Everything outside the core that a step talks to; `steer` None: nothing is excluded."""

    api: LibreNMSPort
    poller: PollPort
    clock: Clock
    steer: SteerPort | None = None
    components: ComponentPort | None = None  # None: originals are kept on this host only
    sleep: Callable[[float], None] = time.sleep  # the wait before a check's re-poll

    def verdict(self, rec: DeviceRecord, hostname: str | None = None) -> Verdict | None:
        """The controls' verdict on the device now."""
        if self.steer is None:
            return None
        return self.steer.verdict(rec.device_id, rec.hostname or hostname)
