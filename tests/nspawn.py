"""This machine's own root filesystem booted as a systemd container, for tests of the unit.

`Container(workdir, binds)` mounts a tmpfs in `workdir`, an overlay over `/` on it (everything
the container writes lands in the tmpfs; the host's files are never changed), and `boot()` runs
`systemd-nspawn -b` on the merged tree with the host's network (the container reaches the test's
loopback servers and the test reaches the container's). nspawn reports on $NOTIFY_SOCKET: its
READY=1 waits for the container's systemd to finish booting (`--notify-ready=yes`) and
X_NSPAWN_LEADER_PID names the container's PID 1, which `run()` enters with nsenter (no
systemd-machined here: `--register=no`, `--keep-unit`). `shutdown()` powers the container off
and unmounts everything. `missing_prerequisite()` says why this cannot work on a machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NSPAWN = "/usr/bin/systemd-nspawn"
INIT = "/lib/systemd/systemd"
# The target booted: basic.target starts no network services (ssh, databases...) that would
# bind ports in the host's network namespace, which the container shares.
BOOT_TARGET = "basic.target"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerError(RuntimeError):
    """The container could not be set up, booted or entered; the message says why."""


def missing_prerequisite() -> str | None:
    """Why this machine cannot boot its root as a container, or None."""
    if os.geteuid() != 0:
        return "booting a container needs root"
    if not os.access(NSPAWN, os.X_OK):
        return (
            f"{NSPAWN} is missing: apt-get install --no-install-recommends "
            "systemd-container=<the installed systemd version> (.ci/run does)"
        )
    if shutil.which("nsenter") is None:
        return "nsenter is missing (util-linux)"
    if Path(INIT).resolve().name != "systemd" or not os.access(INIT, os.X_OK):
        return f"{INIT} is not systemd: the root filesystem cannot boot with systemd"
    return None


class Container:
    """One booted container over a throwaway overlay of `/`; see the module docstring."""

    def __init__(self, workdir: Path, binds: dict[Path, str], name: str) -> None:
        self.workdir = workdir
        self.binds = binds  # host path -> path inside, bound read-only
        self.name = name
        self.root = workdir / "root"
        self.console = workdir / "console.log"
        self.leader: int | None = None
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._mounted: list[Path] = []

    # ---- lifecycle ----

    def boot(self, timeout: float = 90.0) -> None:
        """Mount the overlay and boot; returns once the container's systemd is up."""
        layer = self.workdir / "layer"
        layer.mkdir()
        self._mount(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(layer)], layer)
        upper, work = layer / "upper", layer / "work"
        upper.mkdir()
        work.mkdir()
        self.root.mkdir()
        options = f"lowerdir=/,upperdir={upper},workdir={work}"
        self._mount(["-t", "overlay", "-o", options, "overlay", str(self.root)], self.root)
        notify_path = self.workdir / "notify.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            command = [
                NSPAWN,
                f"--directory={self.root}",
                f"--machine={self.name}",
                "--boot",
                "--keep-unit",
                "--register=no",
                "--link-journal=no",
                "--notify-ready=yes",
                "--console=read-only",
                *(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items()),
                f"systemd.unit={BOOT_TARGET}",
            ]
            env = {
                "PATH": CONTAINER_PATH,
                "LANG": "C.UTF-8",
                "NOTIFY_SOCKET": str(notify_path),
                "SYSTEMD_LOG_COLOR": "0",
            }
            with self.console.open("wb") as console:
                self._nspawn = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            self._wait_ready(notify, timeout)

    def _wait_ready(self, notify: socket.socket, timeout: float) -> None:
        """Read nspawn's notifications until READY=1; ContainerError if it exits or hangs."""
        assert self._nspawn is not None
        deadline = time.monotonic() + timeout
        ready = False
        while not ready or self.leader is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ContainerError(f"the container did not boot in {timeout:.0f}s{self.tail()}")
            notify.settimeout(min(remaining, 0.5))
            try:
                message = notify.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                if self._nspawn.poll() is not None:
                    raise ContainerError(
                        f"systemd-nspawn exited {self._nspawn.returncode} while booting"
                        f"{self.tail()}"
                    ) from None
                continue
            for line in message.splitlines():
                key, _, value = line.partition("=")
                if key == "READY" and value == "1":
                    ready = True
                elif key == "X_NSPAWN_LEADER_PID":
                    self.leader = int(value)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Power the container off (SIGTERM to nspawn), then unmount; kills it if it hangs."""
        nspawn, self._nspawn = self._nspawn, None
        if nspawn is not None and nspawn.poll() is None:
            nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to halt
            try:
                nspawn.wait(timeout)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait(10)
        for mount in reversed(self._mounted):
            subprocess.run(["umount", "--lazy", str(mount)], check=False, capture_output=True)
        self._mounted.clear()
        # nspawn leaves this behind when /run is not a tmpfs (it refuses to rm -rf a disk).
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)

    def _mount(self, args: list[str], target: Path) -> None:
        result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ContainerError(f"mount {' '.join(args)}: {result.stderr.strip()}")
        self._mounted.append(target)

    # ---- using it ----

    def run(
        self, *argv: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """`argv` inside the container (all its namespaces, as root); ContainerError on a
        non-zero exit when `check`."""
        if self.leader is None:
            raise ContainerError("the container is not running")
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "TERM": "dumb"},
        )
        if check and result.returncode != 0:
            raise ContainerError(
                f"{' '.join(argv)} exited {result.returncode} in the container:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def path(self, inside: str) -> Path:
        """The host's view of the container's path `inside` (the overlay's merged tree)."""
        return self.root / inside.lstrip("/")

    def tail(self, lines: int = 30) -> str:
        """The last lines nspawn and the container's console wrote, for failure messages."""
        with contextlib.suppress(OSError):
            text = self.console.read_text(errors="replace").splitlines()[-lines:]
            return "\nconsole:\n" + "\n".join(text)
        return ""
