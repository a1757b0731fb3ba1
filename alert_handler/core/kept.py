"""The original kept in LibreNMS itself (a device component, `librenms/components.py`), so it
outlives the daemon's host: the port the steps write it through, and when they read it (a
device found on UNSUPERVISED_IP with no original of ours) or remove it (the device let go).
The write itself, before the PATCH to UNSUPERVISED_IP, is in `steps._force_down`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from alert_handler.core.facts import DeviceInfo
from alert_handler.core.machine import Action, Decision
from alert_handler.core.records import DeviceRecord, Phase


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


def held_original(
    rec: DeviceRecord,
    info: DeviceInfo,
    components: ComponentPort | None,
    unsupervised_ip: str,
    mark: Callable[[str], None],
) -> tuple[str | None] | None:
    """The original LibreNMS holds for a device found on UNSUPERVISED_IP with no original of
    ours (adoption, `release` of an untracked device): it wins over the event journal's.
    `mark` names the sub-step before the read."""
    if components is None or rec.original_recorded or info.overwrite_ip != unsupervised_ip:
        return None
    mark("component")
    return components.held(rec.device_id)


def drop_component(
    rec: DeviceRecord,
    action: Action,
    decision: Decision,
    components: ComponentPort | None,
    mark: Callable[[str], None],
) -> str | None:
    """The device was let go (after its restore, if any): its component goes. Why it could not
    be removed, or None; never a failed step (`Components.sweep` tries again)."""
    if components is None or not decision.forget:
        return None
    if rec.phase is Phase.NEW and action is not Action.RELEASE:
        return None  # inspected and left alone: nothing was written
    mark("component")
    return components.drop(rec.device_id)
