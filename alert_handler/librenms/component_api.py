"""The device component routes of API v0 (GET, POST, PUT, DELETE /devices/{id}/components...)
over the client's transport, with their answers checked; `components.Components` builds the
daemon's use of them on these."""

from __future__ import annotations

import urllib.parse
from typing import Any

from alert_handler.core.facts import LibreNMSError
from alert_handler.librenms.client import LibreNMS


class ComponentRoutes:
    """The four routes, over one `LibreNMS` client (its session, retries, errors, metrics; a
    POST or DELETE is tried once)."""

    def __init__(self, api: LibreNMS) -> None:
        self.api = api

    def list(self, device_id: int, kind: str) -> dict[int, dict[str, Any]]:
        """GET /devices/{id}/components?type=kind: id -> the row (attributes as strings plus
        type, label, status, ignore, disabled, error); {} when there are none (LibreNMS then
        sends no `components` key at all). Rows of another type (the filter is LibreNMS's,
        case-insensitive) are dropped here."""
        status, data = self.api._call(
            "GET",
            f"/devices/{device_id}/components",
            "GET /devices/{id}/components",
            params={"type": kind},
        )
        if status == 404 or data.get("status") != "ok":
            # Never DeviceNotFound: LibreNMS answers "ok" for an unknown device here, so a 404
            # is a missing route, and a step must fail, not forget the device.
            raise LibreNMSError(f"components of device {device_id}: unexpected answer")
        rows = data.get("components") or {}
        if isinstance(rows, list):  # PHP sends an array with keys 0..n-1 as a list
            rows = dict(enumerate(rows))
        if not isinstance(rows, dict):
            raise LibreNMSError(f"components of device {device_id}: unexpected answer")
        out = {}
        for key, row in rows.items():
            if str(key).isdigit() and isinstance(row, dict) and row.get("type") == kind:
                out[int(key)] = row
        return out

    def add(self, device_id: int, kind: str) -> int:
        """POST /devices/{id}/components/{kind}, tried once (a retry whose first answer was lost
        makes a second component): the new component's id. Its answer carries nulls, not what
        is stored: the caller writes the attributes next."""
        path = f"/devices/{device_id}/components/" + urllib.parse.quote(kind, safe="")
        _, data = self.api._call("POST", path, "POST /devices/{id}/components/{type}")
        rows = data.get("components")
        ids = [int(k) for k in rows if str(k).isdigit()] if isinstance(rows, dict) else []
        if data.get("status") != "ok" or len(ids) != 1:
            raise LibreNMSError(f"component of device {device_id}: unexpected answer")
        return ids[0]

    def edit(self, device_id: int, component_id: int, fields: dict[str, Any]) -> None:
        """PUT /devices/{id}/components: `fields` become the component's whole attribute set
        (LibreNMS deletes every attribute not sent). LibreNMS edits the id whatever device the
        URL names: the caller must have read the id from this device."""
        body = {str(component_id): fields}
        path = f"/devices/{device_id}/components"
        _, data = self.api._call("PUT", path, "PUT /devices/{id}/components", body=body)
        if data.get("status") != "ok":
            raise LibreNMSError(f"component {component_id} of device {device_id}: not edited")

    def delete(self, device_id: int, component_id: int) -> None:
        """DELETE /devices/{id}/components/{cid}, tried once: a missing id answers 500, so the
        caller re-reads to tell "already gone" from a failure."""
        path = f"/devices/{device_id}/components/{component_id}"
        status, data = self.api._call("DELETE", path, "DELETE /devices/{id}/components/{cid}")
        if status == 404 or data.get("status") != "ok":
            raise LibreNMSError(f"component {component_id} of device {device_id}: not deleted")
