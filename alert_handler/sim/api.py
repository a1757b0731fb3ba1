"""The LibreNMS API v0 routes as the simulator answers them.

`api()` is pure: it takes the `Database`, one request and `now`, mutates the database the way the
LibreNMS 26.1 code does (routes/api.php, includes/html/api_functions.inc.php) and returns a `Reply`.
The caller holds the lock; `server.SimServer` moves the bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

from alert_handler.sim import components
from alert_handler.sim.tables import (
    BOOL_COLUMNS,
    FILLABLE,
    PORT_COLUMNS,
    Database,
    alert_json,
    device_json,
    poller_json,
    port_row,
)

_BAD_FIELDS = ("device_id", "hostname")
# The permissions the routes the daemon uses check (routes/api.php `can:` middleware; before
# 26.7 a write needed an admin token, which holds them all).
PERMISSIONS = frozenset(
    {
        "device.viewAny",
        "device.update",
        "alert.viewAny",
        "alert.update",
        "poller.viewAny",
        "pollergroup.viewAny",
        "component.create",
        "component.update",
        "component.delete",
    }
)
READ_ONLY = frozenset(p for p in PERMISSIONS if p.endswith(".viewAny"))


_COMPONENT_PERMISSION = {
    "POST": "component.create",
    "PUT": "component.update",
    "DELETE": "component.delete",
}


def _permission(method: str, seg: list[str]) -> str | None:
    """The permission a route needs (None: any valid token)."""
    head = seg[0] if seg else ""
    if head == "devices" and len(seg) >= 3 and seg[2] == "components" and method != "GET":
        return _COMPONENT_PERMISSION.get(method)
    if head == "devices":
        return "device.update" if method == "PATCH" else "device.viewAny"
    if head == "alerts":
        return "alert.update" if method == "PUT" else "alert.viewAny"
    if head == "pollers":
        return "poller.viewAny"
    if head == "poller_group":
        return "pollergroup.viewAny"
    return None


@dataclass(frozen=True)
class Reply:
    """One HTTP answer; `drop` closes the connection without one."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


class ApiError(Exception):
    """Raised inside a route; becomes `{"status":"error","message":...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON reply (compact: LibreNMS pretty-prints, no client may care)."""
    return Reply(status, json.dumps(payload).encode(), headers=headers)


def phrase(status: int) -> str:
    """The reason phrase of `status`, or "" for a code the stdlib does not know."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def error_reply(status: int) -> Reply:
    """The body LibreNMS (or the nginx in front of it) sends with an unexpected `status`."""
    if status in (502, 504):
        title = f"{status} {phrase(status)}"
        html = f"<html><head><title>{title}</title></head><body>"
        html += f"<center><h1>{title}</h1></center><hr><center>nginx</center></body></html>"
        return Reply(status, html.encode(), content_type="text/html")
    messages = {
        401: "Unauthenticated.",
        403: "This action is unauthorized.",
        429: "Too Many Attempts.",
        500: "Server Error",
    }
    if status == 404:
        return json_reply(404, {"status": "error", "message": "This API route doesn't exist."})
    message = messages.get(status) or phrase(status)
    headers = (("Retry-After", "1"),) if status == 429 else ()
    return json_reply(status, {"message": message}, headers)


def _ok(**payload: Any) -> Reply:
    return json_reply(200, {"status": "ok", **payload})


def _error(status: int, message: str) -> Reply:
    return json_reply(status, {"status": "error", "message": message})


def _php_empty(value: Any) -> bool:
    return value in (None, "", "0", 0, False) or value == [] or value == {}


def php_str(value: Any) -> str:
    """How PHP prints a value into a string."""
    if value is None or value is False:
        return ""
    return "1" if value is True else str(value)


def _columns(requested: str | None, default: list[str]) -> list[str]:
    """validate_column_list(): default when absent, 400 naming unknown columns."""
    if not requested:
        return default
    names = [c.strip() for c in requested.split(",")]
    invalid = [c for c in names if c not in PORT_COLUMNS]
    if invalid:
        raise ApiError(400, "Invalid columns: " + ",".join(invalid))
    return names


def like(term: str) -> re.Pattern[str]:
    """MySQL `LIKE '%term%'` under a case-insensitive collation: % and _ are wildcards."""
    out = []
    chars = iter(term)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile(".*" + "".join(out) + ".*", re.IGNORECASE | re.DOTALL)


def _leading_int(text: str) -> int:
    match = re.match(r"\s*(-?\d+)", text)
    return int(match.group(1)) if match else 0


def api(
    db: Database,
    method: str,
    path: str,
    query: str,
    body: bytes,
    *,
    can: frozenset[str],
    now: datetime,
) -> Reply:
    """Answer one authenticated request whose token holds the permissions `can` (see
    PERMISSIONS); `path` has the /api/v0 prefix removed."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    try:
        return _route(db, method, segments, params, body, can=can, now=now)
    except ApiError as exc:
        return _error(exc.status, str(exc))


def _route(
    db: Database,
    method: str,
    seg: list[str],
    params: dict[str, str],
    body: bytes,
    *,
    can: frozenset[str],
    now: datetime,
) -> Reply:
    get = method == "GET"
    needed = _permission(method, seg)
    if needed is not None and needed not in can:
        return error_reply(403)  # the route's `can:` middleware
    match seg:
        case [] if get:
            return json_reply(
                200, {"list_devices": "/api/v0/devices", "get_device": "/api/v0/devices/{hostname}"}
            )
        case ["system"] if get:
            return _ok(
                system=[
                    {"local_ver": db.version, "local_sha": "490710c6c", "db_schema": "2025_11_01"}
                ],
                count=1,
            )
        case ["devices"] if get:
            return _list_devices(db, params)
        case ["pollers"] if get:
            rows = [
                poller_json(name, groups, n, now)
                for n, (name, groups) in enumerate(sorted(db.pollers.items()), start=1)
            ]
            return _ok(pollers=rows, count=len(rows))
        case ["poller_group"] if get:
            rows = [
                {"id": i, "group_name": n, "descr": ""} for i, n in sorted(db.poller_groups.items())
            ]
            return _ok(get_poller_group=rows, count=len(rows))
        case ["poller_group", spec] if get:
            found = [
                {"id": i, "group_name": n, "descr": ""}
                for i, n in sorted(db.poller_groups.items())
                if (str(i) == spec if spec.isdigit() else n == spec)
            ]
            if not found:
                return _error(404, "Poller Group does not exist")
            return _ok(get_poller_group=found[0])
        case ["devices", spec] if get:
            row = db.find_device(spec)
            if row is None:
                return _error(404, f"Device {spec} does not exist")
            return _ok(devices=[device_json(row, model=True)], count=1)
        case ["devices", spec] if method == "PATCH":
            return _update_device(db, spec, body)
        case ["devices", spec, "discover"] if get:
            row = db.find_device(spec)
            if row is None:
                return _error(404, f"Device {spec} does not exist")
            changed = int(row["last_discovered"] is not None)
            row["last_discovered"] = None
            result = {"status": changed, "message": "Device will be rediscovered"}
            return _ok(result=result, count=2)
        case ["devices", spec, "maintenance"] if get:
            row = db.find_device(spec)
            if row is None:
                return _error(404, f"Device {spec} not found")
            return _ok(is_under_maintenance=row["device_id"] in db.maintenance)
        case ["devices", spec, "components"] if get:
            return _component_call(components.get_components, db, spec, params)
        case ["devices", spec, "components", kind] if method == "POST":
            return _component_call(components.add_component, db, spec, kind)
        case ["devices", spec, "components"] if method == "PUT":
            return _component_call(components.edit_components, db, spec, body)
        case ["devices", _, "components", raw_id] if method == "DELETE":
            return _component_call(components.delete_component, db, raw_id)
        case ["devices", spec, "ports"] if get:
            columns = _columns(params.get("columns"), ["ifName"])
            row = db.find_device(spec)
            ports = db.device_ports(row["device_id"]) if row else []
            if not ports:
                return _error(404, "No ports found")
            rows = [port_row(p) for p in ports]
            return _ok(ports=[{c: r[c] for c in columns} for r in rows])
        case ["devices", spec, "ports", *rest] if get:
            return _port_by_name(db, spec, "/".join(rest), params)
        case ["ports", "search", field_list, *rest] if get:
            return _search_ports(db, field_list, "/".join(rest), params)
        case ["ports", port_id] if get:
            port = db.ports.get(int(port_id)) if port_id.isascii() and port_id.isdigit() else None
            return _ok(port=[port_row(port)] if port else [])
        case ["devicegroups"] if get:
            groups = [{"id": n, "name": name} for n, name in enumerate(sorted(db.groups), 1)]
            return _ok(
                groups=groups, message=f"Found {len(groups)} device groups", count=len(groups)
            )
        case ["devicegroups", name] if get:
            # api_functions.inc.php get_devices_by_group: exact name; unknown: 404; the members
            # as {"device_id": n}.
            members = db.groups.get(name)
            if members is None:
                return _error(404, "Device group not found")
            devices = [{"device_id": d} for d in sorted(members)]
            return _ok(
                devices=devices, message=f"Found {len(devices)} in group {name}", count=len(devices)
            )
        case ["alerts"] | ["alerts", _] if get:
            return _list_alerts(db, seg[1] if len(seg) > 1 else "", params)
        case ["alerts", alert_id] if method == "PUT":
            return _ack_alert(db, alert_id, body, now)
        case ["alerts", "unmute", alert_id] if method == "PUT":
            return _unmute_alert(db, alert_id, body, now)
    return error_reply(404)


def _component_call(route: Callable[..., Any], *args: Any) -> Reply:
    """A component route's answer (`components` when it returns some, else a bare ok); its
    failure as LibreNMS answers it."""
    try:
        result = route(*args)
    except components.ComponentError as exc:
        return error_reply(exc.status) if exc.message is None else _error(exc.status, exc.message)
    return _ok() if result is None else _ok(components=result, count=len(result))


def _list_devices(db: Database, params: dict[str, str]) -> Reply:
    kind, query = params.get("type", ""), params.get("query", "")

    def active(r: dict[str, Any]) -> bool:
        return not r["ignore"] and not r["disabled"]

    filters: dict[str, Callable[[dict[str, Any]], bool]] = {
        "active": active,
        "up": lambda r: bool(r["status"]) and active(r),
        "down": lambda r: not r["status"] and active(r),
        "ignored": lambda r: bool(r["ignore"]) and not r["disabled"],
        "disabled": lambda r: bool(r["disabled"]),
        "device_id": lambda r: str(r["device_id"]) == query,
        "hostname": lambda r: bool(like(query).fullmatch(r["hostname"])),
        "os": lambda r: r["os"] == query,
        "sysName": lambda r: r["sysName"] == query,
    }
    keep = filters.get(kind, _everything)
    rows = sorted((r for r in db.devices.values() if keep(r)), key=lambda r: r["hostname"].lower())
    return _ok(devices=[device_json(r, model=False, zone=db.zone) for r in rows], count=len(rows))


def _everything(row: dict[str, Any]) -> bool:
    return True


def _update_device(db: Database, spec: str, body: bytes) -> Reply:
    row = db.find_device(spec)
    if row is None:
        return _error(404, f"Device {spec} not found")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    fields, values = data.get("field"), data.get("data")
    if _php_empty(fields):
        return _error(400, "Device field to patch has not been supplied")
    if isinstance(fields, str) and fields in _BAD_FIELDS:
        return _error(500, "Device field is not allowed to be updated")
    if isinstance(fields, list) and isinstance(values, list):
        if any(f in _BAD_FIELDS for f in fields if isinstance(f, str)):
            return _error(500, "Device field is not allowed to be updated")
        if len(fields) != len(values):
            return _error(
                500,
                f"Device fields failed to be updated as the number of fields ({len(fields)})"
                f" does not match the supplied data ({len(values)})",
            )
        _fill(db, row, zip(fields, values, strict=True))
        return _ok(message="Device fields have been updated")
    if isinstance(fields, (list, dict)):
        return error_reply(500)  # PHP: an array used as an array key is a fatal TypeError
    _fill(db, row, [(fields, values)])
    return _ok(message=f"Device {php_str(fields)} field has been updated")


def _fill(db: Database, row: dict[str, Any], updates: Iterable[tuple[Any, Any]]) -> None:
    for name, value in updates:
        if not isinstance(name, str) or name not in FILLABLE or name not in row:
            continue  # Eloquent fill() drops what is not fillable
        row[name] = not _php_empty(value) if name in BOOL_COLUMNS else value
        if name == "overwrite_ip":
            db.patches.append((row["device_id"], value))


def _port_by_name(db: Database, spec: str, ifname: str, params: dict[str, str]) -> Reply:
    row = db.find_device(spec)
    ports = db.device_ports(row["device_id"]) if row else []
    found = [p for p in ports if p.ifName.lower() == ifname.lower()]
    # get_port_stats_by_port_hostname: no such port is PHP warnings, not an error, in production.
    port: dict[str, Any] = port_row(found[0]) if found else {}
    port.update(in_rate="0 bps", out_rate="0 bps", in_perc=0, out_perc=0, in_pps="0", out_pps="0")
    if "columns" in params:
        wanted = params["columns"].split(",")
        port = {k: v for k, v in port.items() if k in wanted}
    return _ok(port=port, count=len(port))


def _search_ports(db: Database, field_list: str, term: str, params: dict[str, str]) -> Reply:
    columns = _columns(
        params.get("columns"), ["device_id", "port_id", "ifIndex", "ifName", "ifAlias"]
    )
    if _php_empty(term):  # only {field} given: it is the search term
        field_list, term = "", field_list
    fields = _columns(field_list, ["ifAlias", "ifDescr", "ifName"])
    pattern = like(term)
    rows = [port_row(p) for p in db.ports.values()]
    hits = [
        r for r in rows if any(r[f] is not None and pattern.fullmatch(str(r[f])) for f in fields)
    ]
    if not hits:
        return _error(404, "No ports found")
    hits.sort(key=lambda r: (str(r["ifName"]).lower(), r["port_id"]))
    return _ok(ports=[{c: r[c] for c in columns} for r in hits])


def _list_alerts(db: Database, alert_id: str, params: dict[str, str]) -> Reply:
    states = {_leading_int(s) for s in params["state"].split(",")} if "state" in params else {1}
    rule = params.get("alert_rule")
    rows = [
        a
        for a in db.alerts.values()
        if a["state"] in states
        and (not alert_id.isdigit() or int(alert_id) == 0 or a["id"] == int(alert_id))
        and (rule is None or not rule.isdigit() or a["rule_id"] == int(rule))
    ]
    rows.sort(key=lambda a: (a["timestamp"], a["id"]), reverse=True)
    return _ok(alerts=[alert_json(db, a) for a in rows], count=len(rows))


def _noted_alert(
    db: Database, alert_id: str, body: bytes, now: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The alert an ack or unmute names (None: no such alert) with the note of the body appended
    as LibreNMS writes it ("Ack (admin)" for both), and the body's fields."""
    alert = db.alerts.get(int(alert_id))
    if alert is None:
        return None, {}
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    note = alert["note"] + "\n" if alert["note"] else ""
    alert["note"] = (
        note
        + f"{now.astimezone(db.zone):%d/%m/%Y %H:%M:%S} - Ack (admin) {php_str(data.get('note'))}"
    )
    return alert, data


def _ack_alert(db: Database, alert_id: str, body: bytes, now: datetime) -> Reply:
    if not re.fullmatch(r"\d+", alert_id):
        return _error(400, "Invalid alert has been provided")
    alert, data = _noted_alert(db, alert_id, body, now)
    if alert is None:
        return _ok(message="No Alert by that ID")
    alert["info"] = json.dumps({"until_clear": data.get("until_clear")})
    alert["state"] = 2
    return _ok(message="Alert has been acknowledged")


def _unmute_alert(db: Database, alert_id: str, body: bytes, now: datetime) -> Reply:
    """unmute_alert: state 1 whatever it was (no check), the note appended (LibreNMS writes
    "Ack" there too)."""
    if not re.fullmatch(r"\d+", alert_id):
        return _error(400, "Invalid alert has been provided")
    alert, _ = _noted_alert(db, alert_id, body, now)
    if alert is None:
        return _ok(message="No alert by that ID")
    alert["state"] = 1
    return _ok(message="Alert has been unmuted")
