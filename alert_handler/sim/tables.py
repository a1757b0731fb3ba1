"""The LibreNMS tables the simulator keeps (devices, ports, alerts) and how the API shows
their rows; not thread-safe, the owner holds its lock."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any

MAIN_POLLER = "librenms"  # the host `lnms device:poll` runs on unless told otherwise
PORT_STATUSES = frozenset(
    {"up", "down", "testing", "unknown", "dormant", "notPresent", "lowerLayerDown"}
)
# Device columns the Eloquent model casts (get_device) but the raw SQL of list_devices does not.
BOOL_COLUMNS = (
    "status",
    "ignore",
    "ignore_status",
    "disabled",
    "snmp_disable",
    "disable_notify",
    "override_sysLocation",
)
DATE_COLUMNS = ("inserted", "last_discovered", "last_polled", "last_ping")
# Device::$fillable: PATCH silently ignores every other field name.
_FILLABLE_NAMES = """
authalgo authlevel authname authpass community cryptoalgo cryptopass disable_notify disabled
features hardware hostname display icon ignore ignore_status ip location_id notes os
override_sysLocation overwrite_ip poller_group port port_association_mode purpose retries serial
snmp_disable snmp_max_repeaters snmpver status status_reason sysDescr sysName sysObjectID timeout
transport type version uptime"""
FILLABLE = frozenset(_FILLABLE_NAMES.split())


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
    deleted: int = 0  # 1: the interface vanished; the row stays, its ifOperStatus stale


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


# Component::$reserved: columns of the component table, never attributes (prefs).
COMPONENT_RESERVED = ("type", "label", "status", "ignore", "disabled", "error")
# Component::$fillable: what a PUT fills on the row (device_id too: a PUT can move it).
COMPONENT_FILLABLE = ("device_id", "label", "status", "disabled", "ignore", "error")


@dataclass
class SimComponent:
    """One row of `component` with its `component_prefs` (attribute -> value, always a string)."""

    component_id: int
    device_id: int | None
    type: str
    label: str | None = None
    status: int = 0
    disabled: int = 0
    ignore: int = 0
    error: str | None = None
    prefs: dict[str, str] = field(default_factory=dict)

    def shown(self) -> dict[str, Any]:
        """As getComponents() shows it: the attributes, then the reserved columns over them."""
        return {
            **self.prefs,
            "type": self.type,
            "label": self.label,
            "status": self.status,
            "ignore": self.ignore,
            "disabled": self.disabled,
            "error": self.error,
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
    # device -> the behaviour of its active maintenance window: "skip", "mute" or "run_alerts"
    maintenance: dict[int, str] = field(default_factory=dict)
    # poller_cluster: poller name -> the poller groups it serves; the main host serves 0
    pollers: dict[str, set[int]] = field(default_factory=lambda: {MAIN_POLLER: {0}})
    poller_groups: dict[int, str] = field(default_factory=dict)  # id -> group_name (0: none)
    zone: tzinfo = timezone.utc  # the LibreNMS server's time zone (its DATETIMEs are local)
    version: str = "26.1.0"  # what GET /system says
    groups: dict[str, set[int]] = field(default_factory=dict)  # device group name -> members
    components: dict[int, SimComponent] = field(default_factory=dict)  # id -> component
    next_component_id: int = 1
    eventlog: list[tuple[int | None, str]] = field(default_factory=list)  # (device_id, message)

    def silenced(self, device_id: int) -> bool:
        """Whether LibreNMS sends no notification for the device (RunAlerts): ignored, disabled,
        or under a mute or skip maintenance window. (Parents all down is not modelled.)"""
        row = self.devices[device_id]
        behaviour = self.maintenance.get(device_id)
        return bool(row["ignore"] or row["disabled"]) or behaviour in ("skip", "mute")

    def find_device(self, spec: str) -> dict[str, Any] | None:
        """All digits is a device_id, anything else an exact case-insensitive hostname."""
        if spec.isascii() and spec.isdigit():
            return self.devices.get(int(spec))
        device_id = self.by_hostname.get(spec.lower())
        return None if device_id is None else self.devices[device_id]

    def device_ports(self, device_id: int) -> list[SimPort]:
        """The device's current ports in ifIndex order (get_ports hides deleted ones)."""
        current = (p for p in self.ports_by_device.get(device_id, ()) if not p.deleted)
        return sorted(current, key=lambda p: p.ifIndex)


def device_json(row: dict[str, Any], *, model: bool, zone: tzinfo = timezone.utc) -> dict[str, Any]:
    """A device row as get_device (Eloquent casts, `model`: ISO 8601 in UTC) or list_devices
    (raw SQL: the server's local time in `zone`, no offset) shows it."""
    out = dict(row)
    for name in DATE_COLUMNS:
        value = out[name]
        if isinstance(value, datetime):
            out[name] = (
                value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                if model
                else local_time(value, zone)
            )
    if not model:
        for name in BOOL_COLUMNS:
            out[name] = int(out[name])
        out.update(dependency_parent_id=None, dependency_parent_hostname=None)
    out.update(location=None, lat=None, lng=None)
    return out


def local_time(moment: datetime, zone: tzinfo) -> str:
    """How MySQL hands LibreNMS a DATETIME: the server's local time, no offset."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def alert_json(db: Database, alert: dict[str, Any]) -> dict[str, Any]:
    """One row of list_alerts: `D.hostname, A.*, R.severity, R.name, R.proc, R.notes`."""
    out = {"hostname": db.devices[alert["device_id"]]["hostname"], **alert}
    out["timestamp"] = local_time(alert["timestamp"], db.zone)
    out.update(severity="critical", name=db.rules.get(alert["rule_id"], ""), proc=None, notes="")
    return out


def poller_json(name: str, groups: set[int], index: int, now: datetime) -> dict[str, Any]:
    """One poller_cluster row as list_pollers shows it (PollerCluster::with('stats'))."""
    return {
        "id": index,
        "node_id": f"{name}-node",
        "poller_name": name,
        "poller_version": "26.7.0",
        "poller_groups": ",".join(str(g) for g in sorted(groups)),
        "last_report": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "master": int(index == 1),
        "poller_enabled": 1,
        "poller_frequency": 300,
        "poller_workers": 24,
        "poller_down_retry": 60,
        "discovery_enabled": 1,
        "discovery_frequency": 21600,
        "discovery_workers": 16,
        "services_enabled": 1,
        "stats": [],
    }
