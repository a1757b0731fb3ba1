"""The lab for tests: `require_lab()` and `lab_simulator()`.

The lab needs root. CI runs as root: there a lab that cannot be built FAILS the test. Outside CI,
without root, the lab tests skip with a one-line reason (the only skip allowed for them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alert_handler.sim.lab import Lab, missing_prerequisite
from alert_handler.sim.realpoll import RealPoller
from alert_handler.sim.simulator import Simulator

SNMP_PORT_HEX = ":00A1"  # 161 in /proc/net/udp's local_address column


def require_lab() -> None:
    """Skip (not root, not CI) or fail (anything else missing) when no lab can be built."""
    why = missing_prerequisite()
    if why is None:
        return
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip(f"lab tests: {why}")
    pytest.fail(f"lab tests cannot run: {why} (bash .ci/run installs iproute2 snmpd snmp fping)")


def host_snmp_listeners() -> list[str]:
    """Local addresses of UDP sockets on port 161 in the host's namespace (a system snmpd on
    0.0.0.0 or 127.0.0.1 would answer 127.0.0.50 and spoil the loopback tests)."""
    found = []
    for table in (Path("/proc/net/udp"), Path("/proc/net/udp6")):
        for line in table.read_text().splitlines()[1:]:
            local = line.split()[1]
            if local.endswith(SNMP_PORT_HEX):
                found.append(local)
    return found


def lab_simulator(lab: Lab) -> Simulator:
    """A started simulator in lab mode: device 101 is CPE 1 (hostname its address, overwrite_ip
    null), 102 is CPE 2 (hostname cpe-102.lab.invalid, overwrite_ip its address), and so on
    alternately. SNMP timeout 1 s and 1 retry (LibreNMS's default is 5 retries)."""
    sim = Simulator()
    sim.use_lab(lab, RealPoller(snmp_retries=1))
    for cpe in lab.cpes:
        device_id = 100 + cpe.index
        name = None if cpe.index % 2 else f"cpe-{device_id}.lab.invalid"
        sim.add_lab_device(device_id, cpe.index, hostname=name)
    sim.start()
    return sim
