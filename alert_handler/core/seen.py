"""What the daemon makes of what LibreNMS shows about a device; pure.

The state machine (`machine`) takes these judgements as inputs: whether LibreNMS itself leaves a
device alone. `steps` reads the facts and asks here.
"""

from __future__ import annotations

from alert_handler.core.facts import DeviceInfo
from alert_handler.core.machine import Reason


def suppression(info: DeviceInfo, maintenance: bool) -> Reason | None:
    """Why LibreNMS itself leaves the device alone (it notifies nobody about it: RunAlerts), or
    None: a maintenance window of any behaviour, `disabled` or `ignore`."""
    if maintenance:
        return Reason.SUPPRESSED_MAINTENANCE
    if info.disabled:
        return Reason.SUPPRESSED_DISABLED
    if info.ignore:
        return Reason.SUPPRESSED_IGNORED
    return None
