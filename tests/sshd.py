"""A real OpenSSH sshd on a loopback port, for the poller's tests and benchmark.

`SSHD(workdir)` writes a temporary host key, client key and sshd_config into `workdir`; `start()`
runs `/usr/sbin/sshd -D -e` and waits until it listens; `restart(new_host_key=...)` and `stop()`
kill it together with its session processes, like a host going away. `require_sshd()` skips the
calling test when sshd cannot run here, or fails it under CI=true.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import paramiko

SSHD_BIN = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")
PASSWORD_USER = "ahtest"
PASSWORD = "Ah-test-pw-7319"


def in_ci() -> bool:
    """Whether CI=true: missing prerequisites then fail instead of skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip the calling test with `reason`, or fail it under CI."""
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)")
    pytest.skip(reason)


def missing_prerequisite() -> str | None:
    """Why sshd cannot run here, or None; as root, creates sshd's privilege separation dir."""
    if not os.access(SSHD_BIN, os.X_OK):
        return f"{SSHD_BIN} is not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is not installed (apt-get install openssh-client)"
    if os.geteuid() == 0:
        # Run as root, sshd chroots its pre-auth child into this directory.
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    return None


def require_sshd() -> None:
    """Skip (or fail under CI) unless sshd and ssh-keygen can run here (as root or not)."""
    reason = missing_prerequisite()
    if reason is not None:
        unavailable(reason)


def require_password_user() -> tuple[str, str]:
    """(user, password) of a local account sshd accepts a password for; created if missing."""
    require_sshd()
    if os.geteuid() != 0:
        unavailable("password auth needs root: to create the user and for sshd to read /etc/shadow")
    try:
        pwd.getpwnam(PASSWORD_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/bin/sh", PASSWORD_USER],
            check=True,
            capture_output=True,
        )
    # Set every time: with UsePAM no, sshd checks this against /etc/shadow.
    subprocess.run(["chpasswd"], input=f"{PASSWORD_USER}:{PASSWORD}\n", text=True, check=True)
    return PASSWORD_USER, PASSWORD


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def keygen(path: Path, *, kind: str = "ed25519", passphrase: str = "") -> Path:
    """Write a new key pair at `path` and `path`.pub; returns `path`."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "alert-handler-test", "-f", path],
        check=True,
        capture_output=True,
    )
    return path


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc (sshd's session processes call setsid)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class SSHD:
    """One sshd on 127.0.0.1 with its own host key, client key and log."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, max_sessions: int = 30) -> None:
        self.dir = workdir
        self.port = free_port()
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "client_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.config = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.max_sessions = max_sessions
        self.extra_host_keys: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None
        keygen(self.host_key)
        keygen(self.client_key)
        self.authorized_keys.write_text("")
        self.authorize(self.client_key)

    def authorize(self, key: Path) -> None:
        """Let the private key at `key` log in (as any user)."""
        pub = key.with_name(key.name + ".pub").read_text()
        with self.authorized_keys.open("a") as f:
            f.write(pub)

    def add_host_key(self, kind: str) -> Path:
        """Give sshd another host key of type `kind` (from the next start); returns its path."""
        path = keygen(self.dir / f"ssh_host_{kind}_key", kind=kind)
        self.extra_host_keys.append(path)
        return path

    def session_pids(self) -> list[int]:
        """The processes sshd runs for its current connections."""
        return _children(self._proc.pid) if self._proc is not None else []

    def _write_config(self) -> None:
        host_keys = "".join(f"HostKey {p}\n" for p in [self.host_key, *self.extra_host_keys])
        self.config.write_text(
            f"""\
ListenAddress {self.host}
Port {self.port}
{host_keys}\
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.authorized_keys}
StrictModes no
UsePAM no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
MaxSessions {self.max_sessions}
MaxStartups 100
UseDNS no
PrintMotd no
LogLevel INFO
"""
        )

    def start(self) -> None:
        """Start sshd and return once it listens; raises with its log if it does not."""
        assert self._proc is None, "already running"
        self._write_config()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [SSHD_BIN, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # sshd logs this right after listen(): from here on the port accepts.
            if f"Server listening on {self.host} port {self.port}" in self.log(offset):
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"sshd did not start on port {self.port}:\n{self.log(offset)}")

    def stop(self) -> None:
        """Kill sshd and every session it runs (their connections drop), and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pid in [proc.pid, *_children(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()

    def restart(self, *, new_host_key: bool = False) -> None:
        """Kill and start again on the same port, with the same or a new host key."""
        self.stop()
        if new_host_key:
            keygen(self.host_key)
        self.start()

    def log(self, offset: int = 0) -> str:
        """sshd's log from byte `offset` on."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, text: str) -> int:
        """How many log lines contain `text` (e.g. "Accepted publickey")."""
        return sum(text in line for line in self.log().splitlines())

    def host_public_key(self, private: Path | None = None) -> paramiko.PKey:
        """The public half of the (main) host key."""
        private = private or self.host_key
        kind, blob = private.with_name(private.name + ".pub").read_text().split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(blob))

    def __enter__(self) -> SSHD:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_sshd(*, max_sessions: int = 30) -> Iterator[SSHD]:
    """A started SSHD in a fresh world-readable directory (a password user must reach it)."""
    workdir = Path(tempfile.mkdtemp(prefix="ah-sshd-"))
    workdir.chmod(0o755)
    try:
        with SSHD(workdir, max_sessions=max_sessions) as server:
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
