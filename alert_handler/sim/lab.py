"""A lab of real CPEs on this host: network namespaces with a real `port2` and a real SNMP agent.

`Lab(n).up()` (root only) builds, on one /24 of the benchmarking range 198.18.0.0/15 (RFC 2544),
which never leaves the machine:

- a host bridge `ahl<XX>br` with 198.18.X.1/24, the poller's side;
- a blackhole route for the whole 198.18.0.0/15 at a low priority (a metric only this lab uses)
  and one for `dark`, 198.19.X.254/32: no lab packet can follow the default route, and `dark` is
  an UNSUPERVISED_IP that really answers nothing;
- per CPE i: a namespace `ahl-X-i` whose uplink `ether1` (a veth; the host side `ahl<XX>u<i>` is
  on the bridge) has 198.18.X.(i+1), a veth really named `port2` whose peer `p<i>` sits in the
  shared LAN namespace `ahl-X-lan` (the cable), and its own `snmpd` bound to its address with a
  read-only community and a write community limited to NET-SNMP-AGENT-MIB's cache timeout of
  the ifTable, its own config (`-C -c`) and `SNMP_PERSISTENT_DIR`.

`down()` removes all of it (agents, namespaces, links, routes) and waits until the kernel has
finished deleting the links. Operations: `set_port` (up, admin down, cable pulled), `set_online`
(the CPE's uplink), `set_cache_timeout` (the agent's ifTable cache, 3 s unless set).

Safety: every address this module sends to is inside 198.18.0.0/15, and `up()` checks that the
/15 blackhole route is in place before any agent starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LAB_NET = ipaddress.ip_network("198.18.0.0/15")
MAX_CPES = 250  # .2 .. .251 of the lab's /24
PORT_STATES = ("up", "admin_down", "cable_pulled")
NS_CACHE_TIMEOUT = ".1.3.6.1.4.1.8072.1.5.3.1.2"  # NET-SNMP-AGENT-MIB::nsCacheTimeout
CACHE_TIMEOUT_OID = NS_CACHE_TIMEOUT + ".1.3.6.1.2.1.2.2"  # ... of the ifTable
SYS_OBJECT_ID = ".1.3.6.1.2.1.1.2.0"
# What a lab agent serves: system, IF-MIB (ifTable, ifXTable), NET-SNMP-AGENT-MIB's cache table,
# access control; other MIB modules only cost memory.
AGENT_MODULES = (
    "system_mib,sysORTable,interfaces,ifTable,ifXTable,nsCache,vacm_vars,vacm_conf,snmp_mib"
)
_METRIC_BASE = 4_000_000_000  # + the lab's subnet: below every real route, one per lab
_LOCK_FILE = Path("/run/alert-handler-lab.lock")
_SUBNET_RE = re.compile(r"^198\.18\.(\d+)\.0/24\b", re.MULTILINE)


class LabError(RuntimeError):
    """The lab cannot be built or run here (not root, a tool missing, a command failed)."""


def missing_prerequisite() -> str | None:
    """Why a lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veths, routes)"
    for tool, package in (
        ("ip", "iproute2"),
        ("snmpd", "snmpd"),
        ("snmpget", "snmp"),
        ("snmpset", "snmp"),
        ("fping", "fping"),
    ):
        if _which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def in_lab_range(address: str) -> bool:
    """Whether `address` is an IPv4 address of 198.18.0.0/15."""
    try:
        return ipaddress.ip_address(address) in LAB_NET
    except ValueError:
        return False


def _run(args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    """Run a command (never through a shell); its stdout. LabError naming it if it fails."""
    done = subprocess.run(list(args), input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        what = " ".join(args[:6])
        raise LabError(f"`{what}` failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout


def _ip_batch(commands: list[str], netns: str | None = None) -> None:
    """Several `ip` commands in one process (`ip [-n NS] -batch -`)."""
    if commands:
        _run(["ip", *(["-n", netns] if netns else []), "-batch", "-"], "\n".join(commands) + "\n")


@dataclass
class Cpe:
    """One CPE of the lab."""

    index: int  # 1..n
    netns: str
    address: str
    uplink: str  # the host side of its ether1
    lan_peer: str  # the far end of its port2 cable, in the LAN namespace
    folder: Path
    agent: subprocess.Popen[bytes] | None = None


@dataclass
class Lab:
    """N CPEs; `up()` builds them, `down()` (also on leaving a `with`) removes everything."""

    n: int
    community: str = field(default_factory=lambda: "ro" + secrets.token_hex(8))
    write_community: str = field(default_factory=lambda: "rw" + secrets.token_hex(8))
    workdir: Path | None = None
    cpes: list[Cpe] = field(default_factory=list)
    subnet: int = 0  # X of 198.18.X.0/24, chosen by up()
    _routes: list[str] = field(default_factory=list)
    _folder: Path | None = None
    _own_folder: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.n <= MAX_CPES:
            raise ValueError(f"a lab has 1 to {MAX_CPES} CPEs, not {self.n}")

    # -- names and addresses ------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return f"ahl{self.subnet:02x}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def lan_netns(self) -> str:
        return f"ahl-{self.subnet}-lan"

    @property
    def gateway(self) -> str:
        """The host's address on the lab bridge (where polls come from)."""
        return f"198.18.{self.subnet}.1"

    @property
    def dark(self) -> str:
        """An address of the range with a blackhole route: it answers nothing (UNSUPERVISED_IP)."""
        return f"198.19.{self.subnet}.254"

    @property
    def metric(self) -> int:
        return _METRIC_BASE + self.subnet

    def cpe(self, which: int | str) -> Cpe:
        """A CPE by index (1..n) or address."""
        for cpe in self.cpes:
            if which in (cpe.index, cpe.address):
                return cpe
        raise KeyError(f"no CPE {which!r} in the lab")

    # -- building -----------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> None:
        """Build the lab; on any failure remove what was built and raise LabError."""
        why = missing_prerequisite()
        if why is not None:
            raise LabError(why)
        if self.cpes:
            raise LabError("the lab is already up")
        self._own_folder = self.workdir is None
        self._folder = Path(self.workdir or tempfile.mkdtemp(prefix="alert-handler-lab-"))
        try:
            with _locked():
                self.subnet = _free_subnet()
                self._routes = [
                    f"blackhole {LAB_NET} metric {self.metric}",
                    f"blackhole {self.dark}/32",
                ]
                _ip_batch([f"route add {r}" for r in self._routes])
                self.assert_blackholed()
                _ip_batch(
                    [
                        f"link add {self.bridge} type bridge",
                        f"addr add {self.gateway}/24 dev {self.bridge}",
                        f"link set {self.bridge} up",
                    ]
                )
            self._build_cpes()
            self._wait_links_up()
            self._start_agents()
        except BaseException:
            self.down()
            raise

    def assert_blackholed(self) -> None:
        """LabError unless the /15 and the dark address have their blackhole routes."""
        present = _blackholes()
        for route in self._routes:
            if _route_key(route) not in present:
                raise LabError(f"the blackhole route `{route}` is not in place: refusing to go on")

    def _build_cpes(self) -> None:
        folder = self._folder
        assert folder is not None
        _run(["ip", "netns", "add", self.lan_netns])
        host: list[str] = []
        for i in range(1, self.n + 1):
            cpe = Cpe(
                index=i,
                netns=f"ahl-{self.subnet}-{i}",
                address=f"198.18.{self.subnet}.{i + 1}",
                uplink=f"{self.prefix}u{i}",
                lan_peer=f"p{i}",
                folder=folder / f"cpe{i}",
            )
            self.cpes.append(cpe)
            _run(["ip", "netns", "add", cpe.netns])
            host += [
                f"link add {cpe.uplink} type veth peer name ether1 netns {cpe.netns}",
                f"link set {cpe.uplink} master {self.bridge} up",
                f"link add port2 netns {cpe.netns} type veth peer name {cpe.lan_peer} "
                f"netns {self.lan_netns}",
            ]
        _ip_batch(host)
        _ip_batch(
            ["link set lo up", *(f"link set {c.lan_peer} up" for c in self.cpes)], self.lan_netns
        )
        for cpe in self.cpes:
            _ip_batch(
                [
                    "link set lo up",
                    f"addr add {cpe.address}/24 dev ether1",
                    "link set ether1 up",
                    "link set port2 up",
                    f"route add default via {self.gateway}",
                ],
                cpe.netns,
            )

    def _wait_links_up(self, patience: float = 30.0) -> None:
        """Wait until every CPE's ether1 and port2 are operationally up (the kernel reports a
        carrier change up to a second late; an agent started before would cache it down)."""
        deadline = time.monotonic() + patience
        for cpe in self.cpes:
            while True:
                out = _run(["ip", "-n", cpe.netns, "-o", "link", "show", "up"])
                up = sum(" state UP " in line for line in out.splitlines())
                if up >= 2:
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"CPE {cpe.index}: ether1/port2 not up: {out.strip()}")
                time.sleep(0.02)

    def _start_agents(self) -> None:
        snmpd = _which("snmpd")
        assert snmpd is not None
        for cpe in self.cpes:
            cpe.folder.mkdir(parents=True, exist_ok=True)
            (cpe.folder / "persist").mkdir(exist_ok=True)
            conf = cpe.folder / "snmpd.conf"
            conf.write_text(
                f"rocommunity {self.community} 198.18.{self.subnet}.0/24\n"
                f"rwcommunity {self.write_community} {self.gateway} {NS_CACHE_TIMEOUT}\n"
                f"sysName cpe-{cpe.index}\n"
                "sysDescr alert-handler lab CPE\n"
                "interface_fadeout 0\n"  # a deleted link leaves the ifTable (default: 300 s)
                "interface_replace_old yes\n"  # one recreated under its name replaces the old
            )
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "SNMP_PERSISTENT_DIR": str(cpe.folder / "persist"),
                "MIBS": "",
            }
            log = cpe.folder / "snmpd.log"
            cpe.agent = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    cpe.netns,
                    snmpd,
                    "-f",
                    "-C",
                    "-c",
                    str(conf),
                    "-I",
                    AGENT_MODULES,
                    "-Lf",
                    str(log),
                    f"udp:{cpe.address}:161",
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for cpe in self.cpes:
            self._wait_agent(cpe)

    def _wait_agent(self, cpe: Cpe, patience: float = 30.0) -> None:
        """Wait until the CPE's agent answers a GET from the host."""
        deadline = time.monotonic() + patience
        while True:
            if cpe.agent is not None and cpe.agent.poll() is not None:
                log = (cpe.folder / "snmpd.log").read_text(errors="replace")[-500:]
                raise LabError(f"snmpd of CPE {cpe.index} exited ({cpe.agent.returncode}): {log}")
            if self.snmp_get(cpe.address, SYS_OBJECT_ID, timeout=0.2) is not None:
                return
            if time.monotonic() > deadline:
                raise LabError(f"snmpd of CPE {cpe.index} does not answer on {cpe.address}")

    def snmp_get(self, address: str, oid: str, timeout: float = 1.0) -> str | None:
        """One SNMP GET with the read community (the value as snmpget prints it), None if no
        answer."""
        _guard(address)
        done = subprocess.run(
            [
                "snmpget",
                "-v2c",
                "-c",
                self.community,
                "-On",
                "-Oqv",
                "-t",
                str(timeout),
                "-r",
                "0",
                "-m",
                "",
                address,
                oid,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    # -- operations ---------------------------------------------------------------------------
    def set_port(self, which: int | str, state: str) -> None:
        """Port2 of a CPE: "up", "admin_down" (ifAdminStatus and ifOperStatus down) or
        "cable_pulled" (the far end down: ifOperStatus down, ifAdminStatus up)."""
        if state not in PORT_STATES:
            raise ValueError(f"port state {state!r} is not one of {', '.join(PORT_STATES)}")
        cpe = self.cpe(which)
        admin = "down" if state == "admin_down" else "up"
        far = "down" if state == "cable_pulled" else "up"
        _run(["ip", "-n", cpe.netns, "link", "set", "port2", admin])
        _run(["ip", "-n", self.lan_netns, "link", "set", cpe.lan_peer, far])

    def set_online(self, which: int | str, online: bool) -> None:
        """Plug the CPE's uplink in or out (out: nothing of it answers)."""
        cpe = self.cpe(which)
        _run(["ip", "link", "set", cpe.uplink, "up" if online else "down"])

    def set_cache_timeout(self, which: int | str, seconds: int) -> None:
        """The agent's ifTable cache timeout (net-snmp's default: 3 s), set over SNMP."""
        cpe = self.cpe(which)
        _guard(cpe.address)
        _run(
            [
                "snmpset",
                "-v2c",
                "-c",
                self.write_community,
                "-t",
                "1",
                "-r",
                "2",
                "-m",
                "",
                cpe.address,
                CACHE_TIMEOUT_OID,
                "i",
                str(int(seconds)),
            ]
        )

    # -- tearing down -------------------------------------------------------------------------
    def down(self) -> None:
        """Stop every agent and remove namespaces, links and routes; waits until the kernel has
        deleted the host-side links. Safe to call twice, and on a half-built lab."""
        for cpe in self.cpes:
            if cpe.agent is not None and cpe.agent.poll() is None:
                cpe.agent.send_signal(signal.SIGTERM)
        for cpe in self.cpes:
            if cpe.agent is not None:
                try:
                    cpe.agent.wait(10)
                except subprocess.TimeoutExpired:
                    cpe.agent.kill()
                    cpe.agent.wait()
        if self.subnet:
            links = _host_links()
            gone = [f"link del {c.uplink}" for c in self.cpes if c.uplink in links]
            if self.bridge in links:
                gone.append(f"link del {self.bridge}")
            _ip_batch(gone)
            spaces = _netns()
            for netns in [c.netns for c in self.cpes] + [self.lan_netns]:
                if netns in spaces:
                    _run(["ip", "netns", "del", netns], check=False)
            present = _blackholes()
            for route in self._routes:
                if _route_key(route) in present:
                    _run(["ip", "route", "del", *route.split()], check=False)
            self._wait_links_gone()
        self.cpes = []
        self._routes = []
        if self._own_folder and self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = None

    def _wait_links_gone(self, patience: float = 30.0) -> None:
        """Namespace deletion is asynchronous: wait until no host link of this lab is left."""
        deadline = time.monotonic() + patience
        while any(name.startswith(self.prefix) for name in _host_links()):
            if time.monotonic() > deadline:
                raise LabError(f"links {self.prefix}* still present after {patience:.0f} s")
            time.sleep(0.05)


def _guard(address: str) -> None:
    """Refuse to send anything outside 198.18.0.0/15."""
    if not in_lab_range(address):
        raise LabError(f"refusing to send to {address}: the lab uses 198.18.0.0/15 only")


def _route_key(route: str) -> str:
    """A route as `ip route show` prints it: no type word, no /32."""
    words = [w for w in route.split() if w != "blackhole"]
    words[0] = words[0].removesuffix("/32")
    return " ".join(words)


def _blackholes() -> set[str]:
    """The blackhole routes of the main table, as `_route_key` writes them."""
    table = _run(["ip", "-4", "route", "show", "type", "blackhole"])
    return {_route_key(line) for line in table.splitlines() if line.strip()}


def _netns() -> set[str]:
    return {line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()}


def _host_links() -> set[str]:
    out = _run(["ip", "-o", "link", "show"])
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _free_subnet() -> int:
    """The next X after the last one handed out with no route to 198.18.X.0/24 (under the lab
    lock): a subnet is used again only after every other one, so the names of a lab that just
    went are not taken at once by the next (tests compare the host before and after)."""
    used = {int(m) for m in _SUBNET_RE.findall(_run(["ip", "-4", "route", "show"]))}
    try:
        last = int(_LOCK_FILE.read_text().strip() or 0)
    except (OSError, ValueError):
        last = 0
    for step in range(1, 255):
        x = (last + step - 1) % 254 + 1
        if x not in used:
            _LOCK_FILE.write_text(f"{x}\n")
            return x
    raise LabError("every 198.18.X.0/24 is in use")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One lab at a time picks its subnet (labs in parallel test workers)."""
    with open(_LOCK_FILE, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_MARKS = (
    re.compile(r"\bahl([0-9a-f]{2})(?:br|u\d+)\b"),
    re.compile(r"\bahl-(\d+)-"),
    re.compile(r"\b198\.1[89]\.(\d+)\."),
    re.compile(r"\bmetric 4(\d{9})\b"),
)


def _lab_of(entry: str) -> set[int]:
    """The subnets of the labs an entry of `host_snapshot` names (empty: no lab's)."""
    found: set[int] = set()
    for number, mark in enumerate(_MARKS):
        for value in mark.findall(entry):
            found.add(int(value, 16) if number == 0 else int(value))
    return found


def without_other_labs(snapshot: dict[str, list[str]], subnet: int) -> dict[str, list[str]]:
    """`snapshot` without what other labs (built by other processes meanwhile) own."""
    return {
        kind: [e for e in entries if not (marks := _lab_of(e)) or subnet in marks]
        for kind, entries in snapshot.items()
    }


def host_snapshot() -> dict[str, list[str]]:
    """The host's links, routes, namespaces and lab processes: what a lab must leave as it was."""
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if "snmpd" in cmd and "udp:198.18." in cmd:
                    procs.append(f"{entry.name} {cmd.strip()}")
    return {
        "links": sorted(_host_links()),
        "routes": sorted(
            _run(["ip", "-4", "route", "show", "table", "all"]).splitlines()
            + _run(["ip", "-6", "route", "show", "table", "all"]).splitlines()
        ),
        "netns": sorted(_netns()),
        "processes": sorted(procs),
    }
