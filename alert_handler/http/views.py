"""How the API shows what the daemon holds: the rows of GET /devices (and `alert-handler status`).

Kept apart from the endpoints, which need the whole daemon, so that the command line can show
the state file the same way without loading it.
"""

from __future__ import annotations

from typing import Any

from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.times import iso


def device_row(rec: DeviceRecord) -> dict[str, Any]:
    """One device as shown by /devices and `alert-handler status`."""
    return {
        "device_id": rec.device_id,
        "hostname": rec.hostname,
        "phase": rec.phase.value + (" (held)" if rec.held else ""),
        "held": rec.held,
        "attempts": rec.attempts,
        "first_seen": iso(rec.first_seen),
        "next_attempt": iso(rec.next_attempt_at) if rec.phase is not Phase.NEW else None,
        "last_error": rec.last_error,
        "original_overwrite_ip": rec.original_overwrite_ip,
        "adopted": rec.adopted,
        "alerts": rec.alerts,
    }
