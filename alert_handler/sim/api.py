"""The LibreNMS API v0 as the simulator speaks it: the data, the routes, and the HTTP transport.

`api()` is pure: it takes the `Database`, one request and `now`, mutates the database the way the
LibreNMS 26.1 code does (routes/api.php, includes/html/api_functions.inc.php) and returns a `Reply`.
The caller holds the lock. `SimServer` only moves bytes: it parses a request, asks its `app` for a
`Reply` and writes it in one `sendall`.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

log = logging.getLogger(__name__)

PORT_STATUSES = frozenset(
    {"up", "down", "testing", "unknown", "dormant", "notPresent", "lowerLayerDown"}
)
# Device columns the Eloquent model casts (get_device) but the raw SQL of list_devices does not.
_BOOL_COLUMNS = (
    "status",
    "ignore",
    "ignore_status",
    "disabled",
    "snmp_disable",
    "disable_notify",
    "override_sysLocation",
)
_DATE_COLUMNS = ("inserted", "last_discovered", "last_polled", "last_ping")
# Device::$fillable: PATCH silently ignores every other field name.
_FILLABLE_NAMES = """
authalgo authlevel authname authpass community cryptoalgo cryptopass disable_notify disabled
features hardware hostname display icon ignore ignore_status ip location_id notes os
override_sysLocation overwrite_ip poller_group port port_association_mode purpose retries serial
snmp_disable snmp_max_repeaters snmpver status status_reason sysDescr sysName sysObjectID timeout
transport type version uptime"""
FILLABLE = frozenset(_FILLABLE_NAMES.split())
_BAD_FIELDS = ("device_id", "hostname")


@dataclass
class SimPort:
    """One row of the `ports` table plus `link`, the physical truth only a poll copies."""

    port_id: int
    device_id: int
    ifName: str
    link: str = "down"
    ifOperStatus: str = "down"
    ifAdminStatus: str = "up"
    ifIndex: int = 0
    ifAlias: str = ""
    ifOperStatus_prev: str | None = None


def port_row(port: SimPort) -> dict[str, Any]:
    """All columns of a port as `GET /ports/{id}` returns them (`link` is not a column)."""
    row = asdict(port)
    del row["link"]
    row.update(
        ifDescr=port.ifName,
        portName=None,
        ifType="ethernetCsmacd",
        ifSpeed=1_000_000_000,
        ifMtu=1500,
        ifDuplex="fullDuplex",
        ifPhysAddress=f"02005e{port.port_id:06x}",
        ifAdminStatus_prev=None,
        ifLastChange=0,
        ifVlan="",
        ifTrunk=None,
        ignore=0,
        disabled=0,
        detailed=0,
        deleted=0,
        ifInOctets_rate=0,
        ifOutOctets_rate=0,
        ifInUcastPkts_rate=0,
        ifOutUcastPkts_rate=0,
        poll_time=None,
    )
    return row


PORT_COLUMNS = frozenset(port_row(SimPort(0, 0, "")))


def device_row(
    device_id: int, hostname: str, overwrite_ip: str | None, ip: str, now: datetime
) -> dict[str, Any]:
    """A new `devices` row: discovered, polled and up at `now`."""
    return {
        "device_id": device_id,
        "inserted": now,
        "hostname": hostname,
        "sysName": hostname.split(".")[0],
        "display": None,
        "ip": ip,
        "overwrite_ip": overwrite_ip,
        "community": "s3cr3t-community",
        "authlevel": None,
        "authname": None,
        "authpass": None,
        "authalgo": None,
        "cryptopass": None,
        "cryptoalgo": None,
        "snmpver": "v2c",
        "port": 161,
        "transport": "udp",
        "timeout": None,
        "retries": None,
        "snmp_disable": False,
        "sysObjectID": ".1.3.6.1.4.1.14988.1",
        "sysDescr": "RouterOS RB951Ui-2HnD",
        "version": "6.49.17",
        "hardware": "RB951Ui-2HnD",
        "features": None,
        "location_id": None,
        "os": "routeros",
        "status": True,
        "status_reason": "",
        "ignore": False,
        "ignore_status": False,
        "disabled": False,
        "disable_notify": False,
        "override_sysLocation": False,
        "uptime": 864000,
        "last_polled": now,
        "last_polled_timetaken": 1.5,
        "last_discovered": now,
        "last_discovered_timetaken": 4.2,
        "last_ping": now,
        "last_ping_timetaken": 1.1,
        "purpose": None,
        "type": "network",
        "serial": None,
        "icon": "mikrotik.svg",
        "poller_group": 0,
        "notes": None,
        "port_association_mode": 1,
        "max_depth": 0,
    }


@dataclass
class Database:
    """The simulated LibreNMS tables; not thread-safe, the owner holds its lock."""

    devices: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_hostname: dict[str, int] = field(default_factory=dict)
    ports: dict[int, SimPort] = field(default_factory=dict)
    ports_by_device: dict[int, list[SimPort]] = field(default_factory=dict)
    alerts: dict[int, dict[str, Any]] = field(default_factory=dict)
    rules: dict[int, str] = field(default_factory=dict)
    patches: list[tuple[int, Any]] = field(default_factory=list)

    def find_device(self, spec: str) -> dict[str, Any] | None:
        """All digits is a device_id, anything else an exact case-insensitive hostname."""
        if spec.isascii() and spec.isdigit():
            return self.devices.get(int(spec))
        device_id = self.by_hostname.get(spec.lower())
        return None if device_id is None else self.devices[device_id]

    def device_ports(self, device_id: int) -> list[SimPort]:
        """The device's ports in ifIndex order."""
        return sorted(self.ports_by_device.get(device_id, ()), key=lambda p: p.ifIndex)


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


def device_json(row: dict[str, Any], *, model: bool) -> dict[str, Any]:
    """A device row as get_device (Eloquent casts, `model`) or list_devices (raw SQL) shows it."""
    out = dict(row)
    for name in _DATE_COLUMNS:
        value = out[name]
        if isinstance(value, datetime):
            out[name] = (
                value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                if model
                else value.strftime("%Y-%m-%d %H:%M:%S")
            )
    if not model:
        for name in _BOOL_COLUMNS:
            out[name] = int(out[name])
        out.update(dependency_parent_id=None, dependency_parent_hostname=None)
    out.update(location=None, lat=None, lng=None)
    return out


def alert_json(db: Database, alert: dict[str, Any]) -> dict[str, Any]:
    """One row of list_alerts: `D.hostname, A.*, R.severity, R.name, R.proc, R.notes`."""
    out = {"hostname": db.devices[alert["device_id"]]["hostname"], **alert}
    out["timestamp"] = alert["timestamp"].strftime("%Y-%m-%d %H:%M:%S")
    out.update(severity="critical", name=db.rules.get(alert["rule_id"], ""), proc=None, notes="")
    return out


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
    admin: bool,
    now: datetime,
) -> Reply:
    """Answer one authenticated request; `path` has the /api/v0 prefix removed."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    segments = [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []
    try:
        return _route(db, method, segments, params, body, admin=admin, now=now)
    except ApiError as exc:
        return _error(exc.status, str(exc))


def _route(
    db: Database,
    method: str,
    seg: list[str],
    params: dict[str, str],
    body: bytes,
    *,
    admin: bool,
    now: datetime,
) -> Reply:
    get = method == "GET"
    match seg:
        case [] if get:
            return json_reply(
                200, {"list_devices": "/api/v0/devices", "get_device": "/api/v0/devices/{hostname}"}
            )
        case ["system"] if get:
            return _ok(
                system=[
                    {"local_ver": "26.1.0", "local_sha": "490710c6c", "db_schema": "2025_11_01"}
                ],
                count=1,
            )
        case ["devices"] if get:
            return _list_devices(db, params)
        case ["devices", spec] if get:
            row = db.find_device(spec)
            if row is None:
                return _error(404, f"Device {spec} does not exist")
            return _ok(devices=[device_json(row, model=True)], count=1)
        case ["devices", spec] if method == "PATCH":
            return _update_device(db, spec, body) if admin else error_reply(403)
        case ["devices", spec, "discover"] if get:
            row = db.find_device(spec)
            if row is None:
                return _error(404, f"Device {spec} does not exist")
            changed = int(row["last_discovered"] is not None)
            row["last_discovered"] = None
            result = {"status": changed, "message": "Device will be rediscovered"}
            return _ok(result=result, count=2)
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
        case ["alerts"] | ["alerts", _] if get:
            return _list_alerts(db, seg[1] if len(seg) > 1 else "", params)
        case ["alerts", alert_id] if method == "PUT":
            return _ack_alert(db, alert_id, body, now) if admin else error_reply(403)
    return error_reply(404)


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
    return _ok(devices=[device_json(r, model=False) for r in rows], count=len(rows))


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
        row[name] = not _php_empty(value) if name in _BOOL_COLUMNS else value
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


def _ack_alert(db: Database, alert_id: str, body: bytes, now: datetime) -> Reply:
    if not re.fullmatch(r"\d+", alert_id):
        return _error(400, "Invalid alert has been provided")
    alert = db.alerts.get(int(alert_id))
    if alert is None:
        return _ok(message="No Alert by that ID")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    note = alert["note"] + "\n" if alert["note"] else ""
    alert["note"] = note + f"{now:%d/%m/%Y %H:%M:%S} - Ack (admin) {php_str(data.get('note'))}"
    alert["info"] = json.dumps({"until_clear": data.get("until_clear")})
    alert["state"] = 2
    return _ok(message="Alert has been acknowledged")


# ---- transport ----

App = Callable[[str, str, str | None, bytes], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the daemon talks through a requests.Session
    server: SimServer
    timeout = 120  # an idle keep-alive connection gives its thread back eventually

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            body = None
        if body is None:
            self.close_connection = True
            self._write(Reply(400, b'{"message":"Bad Request"}'))
            return
        try:
            reply = self.server.app(self.command, self.path, self.headers.get("X-Auth-Token"), body)
        except Exception:  # a simulator bug: answer like an uncaught PHP error, but say so
            log.exception("simulator: %s %s failed", self.command, self.path.split("?")[0])
            reply = error_reply(500)
        if reply.drop:
            self.close_connection = True
            return
        self._write(reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _write(self, reply: Reply) -> None:
        lines = [
            f"HTTP/1.1 {reply.status} {phrase(reply.status)}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(reply.body)}",
            "Cache-Control: no-cache, private",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + reply.body)  # unbuffered socket writer: one sendall
        self.log_request(reply.status)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator: %s %s", self.address_string(), format % args)


class SimServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server that hands each request to `app` and can cut every connection."""

    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        """Remember open connections so `close_connections` can end idle keep-alives."""
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down every open connection; their threads then exit on EOF."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-reply is routine here: log it, don't print a traceback."""
        log.debug("simulator: connection from %s failed", client_address, exc_info=True)
