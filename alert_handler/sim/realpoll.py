"""The simulator's poll over real packets (lab mode): what LibreNMS's poller does for our purpose.

`probe(target, community)`: LibreNMS's ICMP check (`LibreNMS/Data/Source/Icmp/Fping.php`:
`fping -e -q -c 3 -p 500 -t 500 -O 0 HOST`), then, if it answered, SNMP as LibreNMS does it:
a GET of sysObjectID (is the device SNMP-able) and IF-MIB walks of ifName, ifOperStatus and
ifAdminStatus (numeric OIDs: Debian's snmp package ships no IF-MIB file). The simulator turns the
`Probe` into the device's status/status_reason and its ports rows.

Safety: only addresses of the lab range 198.18.0.0/15 and loopback are ever sent to; any other
target (a name that would need DNS, a documentation address of the demo fleet, the machine's own
network) is answered as "no ICMP reply" without a packet.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass, field

FPING_OPTIONS = ("-e", "-q", "-c", "3", "-p", "500", "-t", "500", "-O", "0")  # LibreNMS defaults
SYS_OBJECT_ID = ".1.3.6.1.2.1.1.2.0"
IF_NAME = ".1.3.6.1.2.1.31.1.1.1.1"
IF_OPER_STATUS = ".1.3.6.1.2.1.2.2.1.8"
IF_ADMIN_STATUS = ".1.3.6.1.2.1.2.2.1.7"
IF_STATUS = {
    "1": "up",
    "2": "down",
    "3": "testing",
    "4": "unknown",
    "5": "dormant",
    "6": "notPresent",
    "7": "lowerLayerDown",
}
_ALLOWED = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("127.0.0.0/8"))


def sendable(target: str) -> bool:
    """Whether a real poll may send packets to `target`: an address of 198.18.0.0/15 or
    127.0.0.0/8 (never a name, never anything that could leave the machine)."""
    try:
        address = ipaddress.ip_address(target)
    except ValueError:
        return False
    return any(address in net for net in _ALLOWED)


@dataclass(frozen=True)
class IfRow:
    """One interface as IF-MIB shows it."""

    index: int
    name: str
    oper: str
    admin: str


@dataclass(frozen=True)
class Probe:
    """What a real poll saw: ICMP answered, SNMP answered, the interfaces (ifIndex order)."""

    icmp: bool
    snmp: bool
    interfaces: list[IfRow] = field(default_factory=list)
    icmp_seconds: float = 0.0
    snmp_seconds: float = 0.0
    note: str = ""  # why nothing was sent


@dataclass
class RealPoller:
    """Runs fping and the net-snmp tools; `snmp_timeout`/`snmp_retries` are LibreNMS's
    `snmp.timeout` (1 s) and `snmp.retries` (5) unless set."""

    fping: str = "fping"
    snmp_timeout: float = 1.0
    snmp_retries: int = 5

    def probe(self, target: str, community: str) -> Probe:
        if not sendable(target):
            return Probe(False, False, note=f"{target} is outside 198.18.0.0/15 and loopback")
        started = time.monotonic()
        icmp = self._fping(target)
        icmp_done = time.monotonic()
        if not icmp:
            return Probe(False, False, icmp_seconds=icmp_done - started)
        rows = self._snmp(target, community)
        snmp_seconds = time.monotonic() - icmp_done
        if rows is None:
            return Probe(True, False, icmp_seconds=icmp_done - started, snmp_seconds=snmp_seconds)
        return Probe(True, True, rows, icmp_done - started, snmp_seconds)

    def _fping(self, target: str) -> bool:
        done = subprocess.run(
            [self.fping, *FPING_OPTIONS, target], capture_output=True, check=False
        )
        return done.returncode == 0

    def _snmp_args(self, tool: str, community: str) -> list[str]:
        path = shutil.which(tool) or tool
        timing = ["-t", f"{self.snmp_timeout:g}", "-r", str(self.snmp_retries)]
        return [path, "-v2c", "-c", community, "-On", "-Oq", "-m", "", *timing]

    def _snmp(self, target: str, community: str) -> list[IfRow] | None:
        """The interfaces, or None when the agent does not answer."""
        got = subprocess.run(
            [*self._snmp_args("snmpget", community), target, SYS_OBJECT_ID],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode != 0 or not got.stdout.strip():
            return None
        columns: list[dict[int, str]] = []
        for oid in (IF_NAME, IF_OPER_STATUS, IF_ADMIN_STATUS):
            walked = self._walk(target, community, oid)
            if walked is None:
                return None
            columns.append(walked)
        names, oper, admin = columns
        return [
            IfRow(
                index,
                name,
                IF_STATUS.get(oper.get(index, ""), "unknown"),
                IF_STATUS.get(admin.get(index, ""), "unknown"),
            )
            for index, name in sorted(names.items())
        ]

    def _walk(self, target: str, community: str, oid: str) -> dict[int, str] | None:
        """ifIndex -> value of one IF-MIB column, None when the agent does not answer."""
        done = subprocess.run(
            [*self._snmp_args("snmpbulkwalk", community), target, oid],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return None
        values: dict[int, str] = {}
        for line in done.stdout.splitlines():
            name, _, value = line.partition(" ")
            if not name.startswith(oid + "."):
                continue
            index = name[len(oid) + 1 :]
            if index.isdigit():
                values[int(index)] = value.strip().strip('"')
        return values
