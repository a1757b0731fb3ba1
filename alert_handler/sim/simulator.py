"""A LibreNMS API v0 simulator on a real socket, for tests, benchmarks and `alert-handler demo`.

It keeps LibreNMS's split between what is (`SimPort.link`, set by the scenario) and what LibreNMS
knows (`ifOperStatus`, `devices.status`, `devices.ip`): only `poll()`, the stand-in for
`lnms device:poll <id>`, copies the one into the other. `python -m alert_handler.sim poll`
runs that poll as a real process, `... serve` runs the simulator (see `command`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

from alert_handler.sim.api import PERMISSIONS, READ_ONLY, Reply, api, error_reply, json_reply
from alert_handler.sim.lab import Lab
from alert_handler.sim.realpoll import IfRow, Probe, RealPoller
from alert_handler.sim.server import SimServer
from alert_handler.sim.tables import (
    MAIN_POLLER,
    PORT_STATUSES,
    Database,
    SimPort,
    alert_json,
    device_json,
    device_row,
    local_time,
)
from alert_handler.sim.transport import DEFAULT_BODY_TEMPLATE, post, render_template

__all__ = ["DEFAULT_TOKEN", "RequestRecord", "SimPort", "Simulator", "demo_fleet"]

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "0123456789abcdef0123456789abcdef"  # noqa: S105 (public test token)
API_PREFIX = "/api/v0"
_NO_DEVICES = "Starting polling run:\n\nNo devices found matching your given device specification\n"
_DOC_NETS = ("192.0.2", "198.51.100", "203.0.113")
BUILDER_JSON = (
    '{"condition":"AND","rules":[{"id":"macros.port_down","field":"macros.port_down",'
    '"type":"integer","input":"radio","operator":"equal","value":"1"}],"valid":true}'
)


class RequestRecord(NamedTuple):
    """One request as the simulator saw it; `path` lacks /api/v0, `time` is `time.monotonic()`."""

    method: str
    path: str
    query: str
    body: bytes
    status: int  # 0: the connection was dropped (inject(drop=True))
    time: float
    agent: str = ""  # the User-Agent: which daemon sent it (HA: it names the instance)


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    delay: float
    drop: bool
    lose_answer: bool = False


@dataclass
class _Host:
    """What is true of a device outside LibreNMS's database."""

    real_ip: str
    reachable: bool = True
    identity: tuple[str, str, str] = ("", "", "")  # os, sysDescr, hardware as discovered


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _doc_address(n: int) -> str:
    """The n-th address of the documentation ranges (RFC 5737): data only, never connected to."""
    n = (n - 1) % (254 * len(_DOC_NETS))
    return f"{_DOC_NETS[n // 254]}.{n % 254 + 1}"


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_loopback
    except ValueError:
        return False


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Simulator:
    """LibreNMS as the daemon sees it: its API, its poller and its API alert transport.

    One lock guards every table, the fault list and the request log; sleeps and network I/O
    (latency, injected delays, `send_alert`) happen outside it.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        read_only_token: str | None = None,
        tokens: dict[str, frozenset[str]] | None = None,
        unsupervised_ip: str = "127.0.0.50",
        api_latency: float = 0.0,
        poll_latency: float = 0.0,
        timezone_name: str = "UTC",
        version: str = "26.1.0",
    ) -> None:
        """`timezone_name`: the LibreNMS server's zone; its alert times and raw device rows
        are naive local times in it. `version`: the LibreNMS release GET /system shows."""
        self._token = token.encode()
        # token -> its permissions: the admin token holds all, the read-only one every viewAny,
        # `tokens` whatever they are given (per-permission tokens, LibreNMS after 26.7).
        self._tokens: dict[bytes, frozenset[str]] = {self._token: PERMISSIONS}
        if read_only_token:
            self._tokens[read_only_token.encode()] = READ_ONLY
        for other, allowed in (tokens or {}).items():
            self._tokens[other.encode()] = frozenset(allowed)
        self.unsupervised_ip = unsupervised_ip
        self.api_latency = api_latency
        self.poll_latency = poll_latency
        self.unreachable: set[str] = set()  # targets where nothing answers, besides unsupervised_ip
        self.snmpd_on_pollers = False  # every poller runs snmpd on all addresses, CPE community
        self._lock = threading.Lock()
        self._db = Database(zone=ZoneInfo(timezone_name), version=version)
        self._hosts: dict[int, _Host] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RequestRecord] = []
        self._in_flight: list[tuple[str, str]] = []
        self._next_port_id = 1
        self._next_uid = 1
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        # Called with the device id after `lnms device:poll` (POST /_sim/poll) polled it: the
        # alert runner's rules, run at the end of every poll as LibreNMS does (sim/runner.py).
        self.after_poll: Callable[[int], None] | None = None
        self._real: RealPoller | None = None  # lab mode: polls go over real packets
        self.lab: Lab | None = None
        self._lab_cpes: dict[int, int] = {}  # device_id -> the lab CPE's index
        self.last_probe: dict[int, Probe] = {}  # lab mode: what each device's last poll saw

    # ---- lifecycle ----

    def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (port 0 picks a free one) and serve in a background thread; OSError if it can't."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = SimServer((host, port), self._handle)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # stop() waits at most this long
            name="librenms-simulator",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections; a no-op when not started."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()

    def __enter__(self) -> Simulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The API base URL, e.g. "http://127.0.0.1:PORT/api/v0"."""
        if self._server is None:
            raise RuntimeError("simulator not started")
        host, port = self._server.server_address[:2]
        host = str(host)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}{API_PREFIX}"

    # ---- the scenario ----

    def add_device(
        self,
        device_id: int,
        hostname: str,
        *,
        overwrite_ip: str | None = None,
        real_ip: str | None = None,
        ports: dict[str, str] | None = None,
    ) -> None:
        """Add a device as if already discovered and polled; `ports` maps ifName -> link status."""
        ports = {"port2": "down", "ether1": "up"} if ports is None else ports
        for status in ports.values():
            _check_status(status)
        real = real_ip or (hostname if _is_ip(hostname) else _doc_address(device_id))
        row = device_row(device_id, hostname, overwrite_ip, overwrite_ip or real, _now())
        with self._lock:
            if device_id in self._db.devices or hostname.lower() in self._db.by_hostname:
                raise ValueError(f"device {device_id} or {hostname!r} already exists")
            self._db.devices[device_id] = row
            self._db.by_hostname[hostname.lower()] = device_id
            self._hosts[device_id] = _Host(
                real, identity=(row["os"], row["sysDescr"], row["hardware"])
            )
            device_ports = self._db.ports_by_device.setdefault(device_id, [])
            for index, (name, link) in enumerate(ports.items(), start=1):
                port = SimPort(self._next_port_id, device_id, name, link, link, ifIndex=index)
                self._next_port_id += 1
                self._db.ports[port.port_id] = port
                device_ports.append(port)

    def use_lab(self, lab: Lab, real: RealPoller | None = None) -> None:
        """Lab mode: every poll goes over real ICMP and SNMP (`real`, LibreNMS's defaults unless
        given), links flip the lab's ports, and UNSUPERVISED_IP is the lab's dark address."""
        self.lab = lab
        self._real = real or RealPoller()
        self.unsupervised_ip = lab.dark

    def add_lab_device(
        self,
        device_id: int,
        cpe_index: int,
        *,
        hostname: str | None = None,
        forced_down: bool = False,
    ) -> None:
        """A device for the lab's CPE `cpe_index`: by default its hostname is its address
        (overwrite_ip null); given a `hostname` (use .invalid names: never resolved), its
        overwrite_ip is the address. Its ports are what a first real poll finds; `forced_down`
        then points its overwrite_ip at the lab's dark address."""
        if self.lab is None:
            raise RuntimeError("use_lab() first")
        cpe = self.lab.cpe(cpe_index)
        self.add_device(
            device_id,
            hostname or cpe.address,
            overwrite_ip=cpe.address if hostname else None,
            real_ip=cpe.address,
            ports={},
        )
        with self._lock:
            self._db.devices[device_id]["community"] = self.lab.community
            self._lab_cpes[device_id] = cpe_index
        code, output = self.poll_device(device_id)
        if code != 0:
            raise RuntimeError(f"lab CPE {cpe_index} does not answer its first poll: {output}")
        if forced_down:
            with self._lock:
                self._db.devices[device_id]["overwrite_ip"] = self.lab.dark

    def set_group(self, name: str, device_ids: set[int]) -> None:
        """Create or replace a LibreNMS device group with these members."""
        with self._lock:
            self._db.groups[name] = set(device_ids)

    def set_link(self, device_id: int, ifname: str, status: str) -> None:
        """Change the physical state of a port; LibreNMS learns it at the next poll."""
        _check_status(status)
        cpe = self._lab_cpes.get(device_id)
        if self.lab is not None and cpe is not None:
            if ifname != "port2" or status not in ("up", "down"):
                raise ValueError("a lab CPE flips only port2, up or down (the cable)")
            self.lab.set_port(cpe, "up" if status == "up" else "cable_pulled")
            return
        with self._lock:
            self._find_port(device_id, ifname).link = status

    def set_reachable(self, device_id: int, reachable: bool) -> None:
        """Make the device itself answer pings or not, whatever its target address."""
        cpe = self._lab_cpes.get(device_id)
        if self.lab is not None and cpe is not None:
            self.lab.set_online(cpe, reachable)
            return
        with self._lock:
            self._hosts[device_id].reachable = reachable

    def set_maintenance(self, device_id: int, behaviour: str | None = "mute") -> None:
        """Start a maintenance window on the device ("skip", "mute" or "run_alerts": only the
        last still notifies), or end it (None)."""
        if behaviour not in (None, "skip", "mute", "run_alerts"):
            raise ValueError(f"no maintenance behaviour {behaviour!r}")
        with self._lock:
            if device_id not in self._db.devices:
                raise KeyError(device_id)
            if behaviour is None:
                self._db.maintenance.pop(device_id, None)
            else:
                self._db.maintenance[device_id] = behaviour

    def set_flags(
        self, device_id: int, *, disabled: bool | None = None, ignore: bool | None = None
    ) -> None:
        """Disable or ignore the device in LibreNMS (or undo it); None leaves a flag as it is."""
        with self._lock:
            row = self._db.devices[device_id]
            if disabled is not None:
                row["disabled"] = disabled
            if ignore is not None:
                row["ignore"] = ignore

    def add_poller(self, name: str, groups: list[int]) -> None:
        """A poller (dispatcher service) named `name` that polls the devices of `groups`; it
        reaches only those. The main host, MAIN_POLLER, serves group 0 unless redefined."""
        with self._lock:
            self._db.pollers[name] = set(groups)
            for group in groups:
                if group:
                    self._db.poller_groups.setdefault(group, f"group-{group}")

    def add_poller_group(self, group_id: int, name: str) -> None:
        """A row of poller_groups (id > 0; 0 is the default group, which has no row)."""
        if group_id <= 0:
            raise ValueError("poller group ids start at 1")
        with self._lock:
            self._db.poller_groups[group_id] = name

    def set_poller_group(self, device_id: int, group: int) -> None:
        """Move the device to another poller group."""
        with self._lock:
            self._db.devices[device_id]["poller_group"] = group

    def device(self, device_id: int) -> dict[str, Any]:
        """A copy of the device row as `GET /devices/{id}` shows it; KeyError if unknown."""
        with self._lock:
            return device_json(self._db.devices[device_id], model=True)

    def port(self, device_id: int, ifname: str) -> SimPort:
        """A copy of the port named exactly `ifname`; KeyError if unknown."""
        with self._lock:
            return replace(self._find_port(device_id, ifname))

    def ports(self, device_id: int) -> list[SimPort]:
        """Copies of the device's current (not deleted) ports, in ifIndex order."""
        with self._lock:
            return [replace(p) for p in self._db.device_ports(device_id)]

    def _find_port(self, device_id: int, ifname: str) -> SimPort:
        for port in self._db.ports_by_device.get(device_id, ()):
            if port.ifName == ifname and not port.deleted:
                return port
        raise KeyError(f"device {device_id} has no port {ifname!r}")

    def recreate_port(self, device_id: int, ifname: str, link: str | None = None) -> int:
        """The interface vanished and came back with a new ifIndex: LibreNMS marks the old row
        deleted=1 (its ifOperStatus left stale) and discovers a new row with a new port_id, which
        it returns. `link` is the new interface's state (default: the old one's)."""
        with self._lock:
            old = self._find_port(device_id, ifname)
            link = old.link if link is None else link
            _check_status(link)
            old.deleted = 1
            siblings = self._db.ports_by_device[device_id]
            port = SimPort(
                self._next_port_id,
                device_id,
                ifname,
                link,
                link,
                ifIndex=max(p.ifIndex for p in siblings) + 1,
            )
            self._next_port_id += 1
            self._db.ports[port.port_id] = port
            siblings.append(port)
            return port.port_id

    def poll(
        self, device_id: int, poller: str | None = None, run_as: str = "librenms"
    ) -> tuple[int, str]:
        """`lnms device:poll <id>` run on `poller` (None: the main host) as user `run_as`:
        (exit code, output); 0 polled, 6 device down, 1 no device or the wrong user.

        What answers: a loopback target answers ICMP on every poller (127.0.0.0/8 is local), so
        it is down only through SNMP (status_reason "snmp") unless `snmpd_on_pollers`, when the
        poller itself answers and is polled under the device's record (OS changed, the device's
        ports marked deleted). Otherwise the device answers only a poller of its poller group,
        when it is reachable and its target is its own address."""
        if run_as == "root":
            return 1, "Error: lnms must not run as root.\n"
        if run_as != "librenms":
            return 1, "Error: lnms must be run as the user librenms.\n"
        if self.poll_latency > 0:
            time.sleep(self.poll_latency)
        return self.poll_device(device_id, poller)

    def poll_device(self, device_id: int, poller: str | None = None) -> tuple[int, str]:
        """One poll of the device as LibreNMS's poller runs it, (exit code, output): over real
        ICMP and SNMP when the simulator polls a lab (`use_lab`), else from the tables. Every
        poll path (`poll`, `lnms device:poll` over HTTP, periodic polls) goes through here."""
        if self._real is not None:
            return self._real_poll(device_id, poller, self._real)
        return self._table_poll(device_id, poller)

    def _header(self, row: dict[str, Any], ip: str) -> str:
        return (
            f"Starting polling run:\n\nHostname:  {row['hostname']} \nID:        "
            f"{row['device_id']}\nOS:        {row['os']}\nIP:        {ip}\n\n"
        )

    def _table_poll(self, device_id: int, poller: str | None) -> tuple[int, str]:
        """The poll decided from the tables: `_Host.reachable`, `SimPort.link`."""
        started = time.monotonic()
        with self._lock:
            row = self._db.devices.get(device_id)
            if row is None:
                return 1, _NO_DEVICES
            host = self._hosts[device_id]
            target = row["overwrite_ip"] or row["hostname"]
            ip = row["overwrite_ip"] or host.real_ip
            row["ip"] = ip  # every poll sets devices.ip to overwrite_ip when that is set
            header = self._header(row, ip)
            serves = self._db.pollers.get(poller or MAIN_POLLER, set())
            if _is_loopback(ip):
                if not self.snmpd_on_pollers:
                    row.update(status=False, status_reason="snmp")
                    return 6, header + "Device was down, unable to poll.\n"
                self._poll_the_poller(row)
            else:
                silent = self.unreachable | {self.unsupervised_ip}
                if (
                    row["poller_group"] not in serves
                    or not host.reachable
                    or target in silent
                    or ip in silent
                ):
                    row.update(status=False, status_reason="icmp")
                    return 6, header + "Device was down, unable to poll.\n"
                if (row["os"], row["sysDescr"], row["hardware"]) != host.identity:
                    self._found_again(row, host)
                for port in self._db.device_ports(device_id):  # a deleted row is not polled
                    if port.ifOperStatus != port.link:
                        port.ifOperStatus_prev, port.ifOperStatus = port.ifOperStatus, port.link
            return _polled(row, device_id, header, started)

    def _real_poll(self, device_id: int, poller: str | None, real: RealPoller) -> tuple[int, str]:
        """The poll over real packets: fping, then SNMP, against overwrite_ip or hostname; the
        network I/O runs outside the lock."""
        started = time.monotonic()
        with self._lock:
            row = self._db.devices.get(device_id)
            if row is None:
                return 1, _NO_DEVICES
            target = row["overwrite_ip"] or row["hostname"]
            row["ip"] = row["overwrite_ip"] or self._hosts[device_id].real_ip
            community = str(row["community"])
            served = row["poller_group"] in self._db.pollers.get(poller or MAIN_POLLER, set())
        probe = real.probe(target, community) if served else Probe(False, False)
        with self._lock:
            row = self._db.devices.get(device_id)
            if row is None:
                return 1, _NO_DEVICES
            header = self._header(row, row["ip"])
            self.last_probe[device_id] = probe
            if not probe.icmp or not probe.snmp:
                row.update(status=False, status_reason="snmp" if probe.icmp else "icmp")
                return 6, header + "Device was down, unable to poll.\n"
            self._write_interfaces(device_id, probe.interfaces)
            return _polled(row, device_id, header, started)

    def _write_interfaces(self, device_id: int, interfaces: list[IfRow]) -> None:
        """Under the lock: the ports rows as LibreNMS's ports module leaves them: each interface
        updates its row (same ifIndex and ifName) or gets a new one (new port_id); a row whose
        interface is gone is marked deleted."""
        ports = self._db.ports_by_device.setdefault(device_id, [])
        current = {(p.ifIndex, p.ifName): p for p in ports if not p.deleted}
        for iface in interfaces:
            port = current.pop((iface.index, iface.name), None)
            if port is None:
                port = SimPort(
                    self._next_port_id,
                    device_id,
                    iface.name,
                    iface.oper,
                    iface.oper,
                    ifIndex=iface.index,
                )
                self._next_port_id += 1
                self._db.ports[port.port_id] = port
                ports.append(port)
            if port.ifOperStatus != iface.oper:
                port.ifOperStatus_prev, port.ifOperStatus = port.ifOperStatus, iface.oper
            port.ifAdminStatus = iface.admin
            port.link = iface.oper
        for gone in current.values():
            gone.deleted = 1

    def _found_again(self, row: dict[str, Any], host: _Host) -> None:
        """Under the lock: the CPE answers again after LibreNMS had polled a poller under its
        record: its OS comes back and each port it lost returns as a new row (new port_id)."""
        row["os"], row["sysDescr"], row["hardware"] = host.identity
        ports = self._db.ports_by_device[row["device_id"]]
        current = {p.ifName for p in ports if not p.deleted}
        for old in [p for p in ports if p.deleted and p.ifName not in current]:
            current.add(old.ifName)
            port = SimPort(
                self._next_port_id,
                old.device_id,
                old.ifName,
                old.link,
                old.link,
                ifIndex=max(p.ifIndex for p in ports) + 1,
            )
            self._next_port_id += 1
            self._db.ports[port.port_id] = port
            ports.append(port)

    def _poll_the_poller(self, row: dict[str, Any]) -> None:
        """Under the lock: the poller's own snmpd answered with the CPE's community, so LibreNMS
        records the poller under the CPE's row: its OS, and the CPE's ports vanish (deleted)."""
        row.update(os="linux", sysDescr="Linux poller 6.1.0", hardware="x86_64")
        for port in self._db.device_ports(row["device_id"]):
            port.deleted = 1

    def add_alert(
        self, device_id: int, rule_name: str = "Port2 down", rule_id: int = 1, state: int = 1
    ) -> int:
        """Open an alert of rule `rule_id` on the device; returns the alert id. `alerted` is 0
        when LibreNMS would notify nobody (the device ignored, disabled, or under a mute or
        skip maintenance window), 1 otherwise."""
        with self._lock:
            if device_id not in self._db.devices:
                raise KeyError(device_id)
            alerted = 0 if self._db.silenced(device_id) else 1
            self._db.rules[rule_id] = rule_name
            alert_id = self._db.new_alert_id()
            self._db.alerts[alert_id] = {
                "id": alert_id,
                "device_id": device_id,
                "rule_id": rule_id,
                "state": state,
                "alerted": alerted,
                "open": 1,
                "note": "",
                "timestamp": _now(),
                "info": "{}",
            }
        return alert_id

    @contextmanager
    def tables(self) -> Iterator[Database]:
        """The tables under the simulator's lock (the alert runner's rules); no I/O inside."""
        with self._lock:
            yield self._db

    def components(self, device_id: int | None = None) -> dict[int, dict[str, Any]]:
        """Every component (of one device), id -> the row as GET .../components shows it plus
        its `device_id`."""
        with self._lock:
            return {
                cid: {**comp.shown(), "device_id": comp.device_id}
                for cid, comp in sorted(self._db.components.items())
                if device_id is None or comp.device_id == device_id
            }

    def eventlog(self, device_id: int | None = None) -> list[str]:
        """The Eventlog lines the component routes wrote (for one device), oldest first."""
        with self._lock:
            return [m for d, m in self._db.eventlog if device_id is None or d == device_id]

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert, in id order, as `GET /alerts` rows."""
        with self._lock:
            return [alert_json(self._db, a) for _, a in sorted(self._db.alerts.items())]

    # ---- faults and observation ----

    def inject(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 500,
        times: int = 1,
        delay: float = 0.0,
        drop: bool = False,
        lose_answer: bool = False,
    ) -> None:
        """The next `times` authenticated requests matching `method` ("*": any) and `path_regex`
        (re.search on the path without /api/v0) sleep `delay`, then answer `status` with
        LibreNMS's body for it, or are answered normally if `status` < 400, or get the connection
        closed without an answer if `drop`; `lose_answer`: carried out, then the connection is
        closed without the answer (a retry of a call that is not idempotent repeats it)."""
        fault = _Fault(
            method.upper(), re.compile(path_regex), status, times, delay, drop, lose_answer
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every pending injected fault."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def in_flight(self) -> list[tuple[str, str]]:
        """(method, path) of the requests being answered now, e.g. held by `inject(delay=...)`;
        `requests` logs a request only once it is answered."""
        with self._lock:
            return list(self._in_flight)

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def patches(self, device_id: int | None = None) -> list[tuple[int, Any]]:
        """(device_id, data) of every successful PATCH of overwrite_ip, in order."""
        with self._lock:
            return [p for p in self._db.patches if device_id is None or p[0] == device_id]

    # ---- the API alert transport ----

    def send_alert(
        self,
        webhook_url: str,
        device_id: int,
        *,
        state: int = 1,
        rule: str = "Port2 down",
        headers: dict[str, str] | None = None,
        body_template: str | None = None,
        method: str = "POST",
        options: dict[str, str] | None = None,
    ) -> int:
        """POST an alert as LibreNMS's API transport does (text/plain unless `headers` set a
        Content-Type); returns the HTTP status, or 0 when LibreNMS sends nothing because it
        silences the device (ignored, disabled, mute or skip maintenance). OSError if the
        receiver can't be reached. `method` is the transport's API Method (GET sends no
        body); `options` are its Options lines, templated and sent as the query string."""
        with self._lock:
            if self._db.silenced(device_id):
                return 0
            row = self._db.devices[device_id]
            alert = next(
                (
                    a
                    for a in self._db.alerts.values()
                    if a["device_id"] == device_id and self._db.rules.get(a["rule_id"]) == rule
                ),
                None,
            )
            rule_id = next((i for i, name in self._db.rules.items() if name == rule), 0)
            uid = self._next_uid
            self._next_uid += 1
            values = {
                "device_id": device_id,
                "hostname": row["hostname"],
                "sysName": row["sysName"],
                "ip": row["ip"],  # devices.ip as it is now, the unsupervised IP once forced down
                "state": state,
                "severity": "critical",
                "name": rule,
                "rule": BUILDER_JSON,  # {{ $rule }} is the rule's query-builder JSON
                "rule_id": rule_id,
                "title": f"Alert for device {row['hostname']} - {rule}",
                "timestamp": local_time(_now(), self._db.zone),
                "uid": uid,
                "alert_id": alert["id"] if alert else 0,
            }
        body = render_template(body_template or DEFAULT_BODY_TEMPLATE, values).encode()
        sent = {"User-Agent": "GuzzleHttp/7", **(headers or {})}
        has_type = any(name.lower() == "content-type" for name in sent)
        if method != "GET" and not has_type:
            sent["Content-Type"] = "text/plain"
        url = webhook_url.split("?")[0]  # a query string in the API URL is dropped
        if options:
            query = {k: render_template(v, values) for k, v in options.items()}
            url += "?" + urlencode(query)
        data = None if method == "GET" else body
        request = urllib.request.Request(url, data, sent, method=method)  # noqa: S310 (post checks the scheme)
        return post(request, timeout=30.0)[0]

    # ---- the HTTP side ----

    def _permissions(self, token: str | None) -> frozenset[str] | None:
        """The token's permissions, None for no or an unknown token (401)."""
        if token is None:
            return None
        given = token.encode("utf-8", "surrogateescape")
        found = None
        for known, allowed in self._tokens.items():
            if hmac.compare_digest(given, known):
                found = allowed
        return found

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in ("*", method) and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _handle(
        self, method: str, target: str, token: str | None, body: bytes, agent: str = ""
    ) -> Reply:
        """The server's app: one request in, one Reply out, logged in `requests`."""
        arrived = time.monotonic()
        parts = urlsplit(target)
        in_api = parts.path == API_PREFIX or parts.path.startswith(API_PREFIX + "/")
        path = parts.path[len(API_PREFIX) :] if in_api else parts.path
        with self._lock:
            self._in_flight.append((method, path))
        try:
            if self.api_latency > 0:
                time.sleep(self.api_latency)
            reply = self._answer(method, path, parts.query, token, body, in_api=in_api)
        finally:
            with self._lock:
                self._in_flight.remove((method, path))
        record = RequestRecord(method, path, parts.query, body, reply.status, arrived, agent)
        with self._lock:
            self._requests.append(record)
        return reply

    def _answer(
        self, method: str, path: str, query: str, token: str | None, body: bytes, *, in_api: bool
    ) -> Reply:
        can = self._permissions(token)
        if can is None:
            return error_reply(401)
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.drop:
                return Reply(0, drop=True)
            if fault.status >= 400 and not fault.lose_answer:
                return error_reply(fault.status)
        if path.startswith("/_sim/"):
            return self._control(method, path, query, body, admin=can == PERMISSIONS)
        if not in_api:
            return error_reply(404)
        with self._lock:
            reply = api(self._db, method, path, query, body, can=can, now=_now())
        return Reply(0, drop=True) if fault is not None and fault.lose_answer else reply

    def _control(self, method: str, path: str, query: str, body: bytes, *, admin: bool) -> Reply:
        """Simulator-only routes: POST /_sim/poll/{spec}?poller=NAME&run_as=USER,
        POST /_sim/link/{id}/{ifName}."""
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if method != "POST" or len(segments) < 3 or segments[1] not in ("poll", "link"):
            return error_reply(404)
        if not admin:
            return error_reply(403)
        if segments[1] == "poll" and len(segments) == 3:
            with self._lock:
                row = self._db.find_device(segments[2])
            params = dict(parse_qsl(query))
            code, output = (
                self.poll(row["device_id"], params.get("poller"), params.get("run_as", "librenms"))
                if row
                else (1, _NO_DEVICES)
            )
            if row and code in (0, 6) and self.after_poll is not None:
                self.after_poll(row["device_id"])
            return json_reply(200, {"exit": code, "output": output})
        if segments[1] == "link" and len(segments) == 4 and segments[2].isdigit():
            status = body.decode("utf-8", "replace").strip()
            try:
                self.set_link(int(segments[2]), segments[3], status)
            except (KeyError, ValueError) as exc:
                return json_reply(400, {"status": "error", "message": str(exc)})
            return json_reply(200, {"status": "ok"})
        return error_reply(404)


def _check_status(status: str) -> None:
    if status not in PORT_STATUSES:
        raise ValueError(f"{status!r} is not an ifOperStatus ({', '.join(sorted(PORT_STATUSES))})")


def demo_fleet(sim: Simulator) -> None:
    """Four CPEs: overwrite_ip null and set, decoys port20 / Port2-backup, a port2 on each."""
    sim.add_device(
        101,
        "cpe-101.example.net",
        real_ip="192.0.2.11",
        ports={"ether1": "up", "port2": "down", "port20": "up"},
    )
    sim.add_device(
        102,
        "cpe-102.example.net",
        overwrite_ip="198.51.100.7",
        real_ip="192.0.2.12",
        ports={"ether1": "up", "port2": "up", "Port2-backup": "down"},
    )
    sim.add_device(
        103, "cpe-103.example.net", real_ip="192.0.2.13", ports={"ether1": "up", "port2": "up"}
    )
    sim.add_device(
        104,
        "cpe-104.example.net",
        real_ip="203.0.113.14",
        ports={"ether1": "up", "port2": "down", "port20": "down", "Port2-backup": "up"},
    )


def _polled(row: dict[str, Any], device_id: int, header: str, started: float) -> tuple[int, str]:
    """A poll that reached the device (under the simulator's lock): the row marked up and
    polled now, and `lnms device:poll`'s success line."""
    now = _now()
    row.update(status=True, status_reason="", last_polled=now, last_ping=now)
    elapsed = time.monotonic() - started
    row["last_polled_timetaken"] = round(elapsed, 3)
    name = row["display"] or row["hostname"]
    return 0, header + f">>> Polled {name} ({device_id}) in {elapsed:.3f} seconds <<<\n"
