"""systemd's notify protocol, written to $NOTIFY_SOCKET directly; a no-op without it."""

from __future__ import annotations

import os
import socket


class SystemdNotifier:
    """Sends READY=1, WATCHDOG=1, STOPPING=1 when running under systemd Type=notify."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 2_000_000 if enabled else None

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return self.address is not None

    def send(self, message: str) -> None:
        """Send one datagram; errors are ignored (systemd may be gone)."""
        if self.address is None:
            return
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(address)
                sock.sendall(message.encode())
        except OSError:
            pass
