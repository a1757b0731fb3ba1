"""Whether UNSUPERVISED_IP really does not answer.

Forcing a device down points LibreNMS at UNSUPERVISED_IP, which must not answer. All of
127.0.0.0/8 (and ::1) is local on Linux: every poller answers ICMP there, so the device is down
only because SNMP fails, and a poller running snmpd on all addresses with the CPE's community is
polled itself under the CPE's record. The same holds for any address of a poller's own
interfaces. What really does not answer: a TEST-NET address (192.0.2.0/24) with a blackhole
route on every poller (docs/librenms-setup.md).
"""

from __future__ import annotations

import errno
import ipaddress
import socket

ADVICE = (
    "use a TEST-NET address such as 192.0.2.1 with `ip route add blackhole 192.0.2.1/32` on "
    "every poller (docs/librenms-setup.md)"
)


def is_local_address(ip: str) -> bool:
    """Whether `ip` is an address of this host: binding to it succeeds only then."""
    address = ipaddress.ip_address(ip)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((str(address), 0))
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            return False
        raise
    return True


def unsupervised_ip_warning(ip: str) -> str | None:
    """A warning when UNSUPERVISED_IP may answer (loopback, or an address of this host)."""
    address = ipaddress.ip_address(ip)
    if address.is_loopback:
        return (
            f"UNSUPERVISED_IP {ip} is a loopback address: every poller answers ICMP on it, so a "
            "forced-down device is down only through SNMP (the 'SNMP unreachable' alert, not "
            "'Device Down! Due to no ICMP response'), and a poller running snmpd with the CPE's "
            f"community is polled itself under the CPE's record; {ADVICE}"
        )
    try:
        local = is_local_address(ip)
    except OSError:
        return None  # cannot tell: say nothing rather than guess
    if local:
        return (
            f"UNSUPERVISED_IP {ip} is an address of this host: a poller here answers on it; "
            f"{ADVICE}"
        )
    return None
