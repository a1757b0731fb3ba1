"""Run `device:poll <id>` on the LibreNMS host, over SSH (paramiko) or as a local process.

`make_poller(cfg)` returns a `Poller`. `poll(device_id)` returns a `PollResult` for any exit status
and raises `PollError` only when the command could not be run to its end (connect, auth, host key,
timeout). Error messages and log lines never contain a password or passphrase.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.pkey import UnknownKeyType

from alert_handler.config import Config, render_poll_command

log = logging.getLogger(__name__)

TAIL_LINES = 10
KEEPALIVE_SEC = 30
_TAIL_BYTES = 64 * 1024  # only the end of the output is kept: lnms prints a lot when verbose
_KILL_GRACE_SEC = 2.0
_MEANINGS = {0: "polled", 6: "device down", 1: "no such device or database error"}


@dataclass(frozen=True)
class PollResult:
    """How one poll run ended; any exit status is a result, not an error."""

    device_id: int
    exit_status: int
    output_tail: tuple[str, ...]  # last non-empty lines of stdout and stderr together
    duration: float  # seconds from starting the command to its exit

    @property
    def meaning(self) -> str:
        """The exit status in LibreNMS's words (0 polled, 6 device down, 1 no such device)."""
        return _MEANINGS.get(self.exit_status, "error")


class PollError(Exception):
    """The poll could not be run (connect, auth, host key, timeout); the message is safe to log."""


class HostKeyMismatch(PollError):
    """The server's host key is not the one known_hosts has for it; nothing was sent or run."""

    def __init__(self, host: str, port: int, known: str, offered: str, known_hosts: str) -> None:
        name = _known_hosts_name(host, port)
        super().__init__(
            f"host key for {host}:{port} has changed: {known_hosts} has {known}, the server"
            f" offered {offered}; refusing to connect. If the change is expected, remove the old"
            f" key with: ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(known_hosts)}"
        )
        self.host, self.port, self.known, self.offered = host, port, known, offered


class Poller(Protocol):
    """Runs the poll command for one device at a time; safe to call from several threads."""

    def poll(self, device_id: int) -> PollResult: ...
    def check(self) -> str: ...
    def close(self) -> None: ...


def make_poller(cfg: Config) -> Poller:
    """The poller POLL_METHOD asks for."""
    if cfg.poll_method == "local":
        return LocalPoller(cfg)
    return SSHPoller(cfg)


def _tail(data: bytes, *, truncated: bool = False) -> tuple[str, ...]:
    """The last TAIL_LINES non-empty lines; a line cut by truncation is dropped."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    if truncated and lines:
        lines = lines[1:]
    return tuple([s for s in (line.rstrip() for line in lines) if s][-TAIL_LINES:])


def _log_result(result: PollResult) -> PollResult:
    log.info(
        "device=%d step=poll exit=%d meaning=%s duration=%.2fs",
        result.device_id,
        result.exit_status,
        result.meaning,
        result.duration,
    )
    # The tail explains a failure, so it is worth INFO then; on success it is noise.
    level = logging.DEBUG if result.exit_status == 0 else logging.INFO
    log.log(
        level, "device=%d step=poll output=%s", result.device_id, " | ".join(result.output_tail)
    )
    return result


class LocalPoller:
    """Runs the command on this host: split with shlex, no shell, own process group."""

    def __init__(self, cfg: Config) -> None:
        self._template = cfg.poll_command
        self._timeout = cfg.poll_timeout_sec

    def poll(self, device_id: int) -> PollResult:
        """Run the command for `device_id`; PollError if it cannot start or times out."""
        argv = shlex.split(render_poll_command(self._template, device_id))
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a timeout can kill sudo/php and their children
            )
        except OSError as exc:
            raise PollError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        with proc:
            try:
                out, _ = proc.communicate(timeout=self._timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                log.warning(
                    "device=%d step=poll timed out after %gs, killed process group %d",
                    device_id,
                    self._timeout,
                    proc.pid,
                )
                raise PollError(f"timed out after {self._timeout:g}s") from None
        result = PollResult(device_id, proc.returncode, _tail(out), time.monotonic() - started)
        return _log_result(result)

    def check(self) -> str:
        """Confirm the command's program exists; returns a description."""
        argv = shlex.split(render_poll_command(self._template, 1))
        found = shutil.which(argv[0]) if argv else None
        if found is None:
            raise PollError(f"POLL_COMMAND: {argv[0] if argv else '(empty)'} not found")
        return f"local command {found}"

    def close(self) -> None:
        """Nothing to release."""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM the process group (sudo relays it), KILL it after a grace period, reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=_KILL_GRACE_SEC)
            return
        except subprocess.TimeoutExpired:
            continue
    # A child that left the group still holds the pipe open; stop reading from it.
    if proc.stdout is not None:
        proc.stdout.close()
    proc.wait()


def _known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH files a host under: `host` on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def _fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:...` as OpenSSH prints it."""
    return key.fingerprint


def _hashed_name_matches(pattern: str, name: str) -> bool:
    """Whether an OpenSSH `|1|salt|hash` entry is `name`."""
    try:
        _, _, salt, digest = pattern.split("|")
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(base64.b64encode(mac).decode(), digest)
    except ValueError:
        return False


class _KnownHosts:
    """The entries of one OpenSSH known_hosts file for one host:port."""

    def __init__(self, path: str, host: str, port: int) -> None:
        self.path = os.path.expanduser(path)
        self.host, self.port = host, port
        self.name = _known_hosts_name(host, port)

    def _matches(self, pattern: str) -> bool:
        if pattern.startswith("|1|"):
            return _hashed_name_matches(pattern, self.name)
        return pattern == self.name

    def load(self) -> tuple[list[paramiko.PKey], list[paramiko.PKey]]:
        """(known keys, @revoked keys) for this host; both empty if the file is missing."""
        try:
            text = Path(self.path).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            raise PollError(f"cannot read known_hosts {self.path}: {exc.strerror}") from exc
        known: list[paramiko.PKey] = []
        revoked: list[paramiko.PKey] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line, marker = raw.strip(), ""
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                line = line.strip()
            if not line or line.startswith("#") or marker not in ("", "@revoked"):
                continue  # @cert-authority: host certificates are not supported
            if not any(self._matches(p) for p in line.split(None, 1)[0].split(",")):
                continue
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except (InvalidHostKey, UnknownKeyType, paramiko.SSHException) as exc:
                raise PollError(f"known_hosts {self.path} line {lineno} is invalid") from exc
            if entry is None:  # a key type paramiko does not know: it cannot be offered either
                continue
            (revoked if marker else known).append(entry.key)
        return known, revoked

    def add(self, key: paramiko.PKey) -> None:
        """Append `key` for this host, creating the directory 0700 and the file 0600."""
        directory = os.path.dirname(self.path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700)
        line = f"{self.name} {key.get_name()} {key.get_base64()}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size and not Path(self.path).read_bytes().endswith(b"\n"):
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _preferred_key_types(known: Iterable[paramiko.PKey]) -> list[str]:
    """Host key algorithms to ask for first, so a server with several keys shows a known one."""
    types: list[str] = []
    for key in known:
        name = key.get_name()
        types += ["rsa-sha2-512", "rsa-sha2-256"] if name == "ssh-rsa" else [name]
    return types


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Compares the server's key with known_hosts; on first contact trusts it or refuses.

    SSHClient is given no host keys, so it asks this policy about every server key.
    """

    def __init__(
        self,
        known_hosts: _KnownHosts,
        known: list[paramiko.PKey],
        revoked: list[paramiko.PKey],
        accept_new: bool,
        device: str,
    ) -> None:
        self._kh, self._known, self._revoked = known_hosts, known, revoked
        self._accept_new, self._device = accept_new, device

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        kh, offered = self._kh, f"{key.get_name()} {_fingerprint(key)}"
        if any(k.asbytes() == key.asbytes() for k in self._revoked):
            raise PollError(f"host key {offered} of {kh.host}:{kh.port} is @revoked in {kh.path}")
        if any(k.asbytes() == key.asbytes() for k in self._known):
            return
        if self._known:
            same_type = [k for k in self._known if k.get_name() == key.get_name()] or self._known
            known = ", ".join(f"{k.get_name()} {_fingerprint(k)}" for k in same_type)
            log.error(
                "device=%s step=ssh host key for %s:%d changed: known %s, offered %s; refusing",
                self._device,
                kh.host,
                kh.port,
                known,
                offered,
            )
            raise HostKeyMismatch(kh.host, kh.port, known, offered, kh.path)
        if not self._accept_new:
            raise PollError(
                f"host key {offered} of {kh.host}:{kh.port} is not in {kh.path} and"
                " SSH_HOST_KEY_POLICY=strict; verify it and add it to that file"
            )
        try:
            kh.add(key)
        except OSError as exc:
            raise PollError(f"cannot record host key in {kh.path}: {exc.strerror}") from exc
        log.warning(
            "device=%s step=ssh first contact with %s:%d: trusting host key %s, added to %s",
            self._device,
            kh.host,
            kh.port,
            offered,
            kh.path,
        )


class SSHPoller:
    """Polls over one reused SSH connection, one channel per poll, shared by threads."""

    def __init__(self, cfg: Config) -> None:
        if not cfg.ssh_host or not cfg.ssh_user:
            raise ValueError("SSHPoller needs ssh_host and ssh_user")
        self._host, self._port, self._user = cfg.ssh_host, cfg.ssh_port, cfg.ssh_user
        self._password = cfg.ssh_password
        self._key_file = os.path.expanduser(cfg.ssh_key_file) if cfg.ssh_key_file else None
        self._passphrase = cfg.ssh_key_passphrase
        self._known_hosts = _KnownHosts(cfg.ssh_known_hosts, cfg.ssh_host, cfg.ssh_port)
        self._accept_new = cfg.ssh_host_key_policy == "accept-new"
        self._connect_timeout = cfg.ssh_connect_timeout_sec
        self._timeout = cfg.poll_timeout_sec
        self._template = cfg.poll_command
        self._channels = threading.BoundedSemaphore(cfg.ssh_max_channels)
        # Guards _client. Connecting happens under it on purpose: threads that find no
        # connection wait for the one being opened instead of each opening their own.
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._pkey: paramiko.PKey | None = None
        self._closed = False

    @property
    def _where(self) -> str:
        return f"{self._host}:{self._port}"

    def _redact(self, text: str) -> str:
        for secret in (self._password, self._passphrase):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _load_key(self) -> paramiko.PKey | None:
        """The SSH_KEY_FILE key, loaded once; PollError if it cannot be read or decrypted."""
        if self._key_file is None or self._pkey is not None:
            return self._pkey
        # Each class in turn, as SSHClient does: PKey.from_path in paramiko 5 passes a str
        # passphrase to cryptography, which wants bytes, so it cannot open encrypted keys.
        encrypted = False
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                self._pkey = kind.from_private_key_file(self._key_file, password=self._passphrase)
                return self._pkey
            except OSError as exc:
                raise PollError(f"SSH_KEY_FILE {self._key_file}: {exc.strerror}") from None
            except paramiko.PasswordRequiredException:
                encrypted = True
            except (paramiko.SSHException, ValueError, TypeError):
                continue
        if encrypted:
            raise PollError(f"SSH_KEY_FILE {self._key_file} is encrypted: set SSH_KEY_PASSPHRASE")
        raise PollError(
            f"SSH_KEY_FILE {self._key_file}: cannot load the key"
            " (not an RSA, ECDSA or Ed25519 private key, or a wrong SSH_KEY_PASSPHRASE)"
        )

    def _auth_methods(self) -> str:
        methods = [f"key file {self._key_file}"] if self._key_file else ["~/.ssh/id_* keys"]
        if os.environ.get("SSH_AUTH_SOCK"):
            methods.append("ssh-agent")
        if self._password:
            methods.append("password")
        return ", ".join(methods)

    def _connect(self, device: str) -> paramiko.SSHClient:
        """A new authenticated client whose host key matched known_hosts, or PollError."""
        known, revoked = self._known_hosts.load()
        prefer = _preferred_key_types(known)

        # The gss_* parameters only match types-paramiko's signature; paramiko 5 never passes them.
        def transport_factory(
            sock: Any,
            /,
            *,
            gss_kex: bool = False,
            gss_deleg_creds: bool = False,
            disabled_algorithms: Mapping[str, Iterable[str]] | None = None,
        ) -> paramiko.Transport:
            if isinstance(sock, socket.socket):
                # Small request/reply packets: without this, Nagle's algorithm meets the
                # server's delayed ACK and every channel open and exit costs ~40 ms.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
            options = transport.get_security_options()
            offered = list(options.key_types)
            first = [t for t in prefer if t in offered]
            options.key_types = first + [t for t in offered if t not in first]
            return transport

        pkey = self._load_key()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(
            _KnownHostsPolicy(self._known_hosts, known, revoked, self._accept_new, device)
        )
        timeout = self._connect_timeout
        try:
            client.connect(
                self._host,
                self._port,
                username=self._user,
                password=self._password,
                pkey=pkey,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=bool(os.environ.get("SSH_AUTH_SOCK")),
                look_for_keys=self._key_file is None,
                transport_factory=transport_factory,
            )
        except BaseException as exc:
            client.close()
            if isinstance(exc, PollError):
                raise
            if isinstance(exc, paramiko.AuthenticationException):
                raise PollError(
                    f"authentication failed for {self._user}@{self._where}"
                    f" (tried {self._auth_methods()})"
                ) from None
            if isinstance(exc, TimeoutError):
                raise PollError(
                    f"timed out connecting to {self._where} after {timeout:g}s"
                ) from None
            if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
                raise PollError(self._redact(f"cannot connect to {self._where}: {exc}")) from None
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_SEC)
        log.info("device=%s step=ssh %s", device, self._describe(transport))
        return client

    def _describe(self, transport: paramiko.Transport) -> str:
        key = transport.get_remote_server_key()
        return (
            f"connected to {self._where} as {self._user},"
            f" host key {_fingerprint(key)} ({key.get_name()})"
        )

    def _transport(
        self, device: str, stale: paramiko.Transport | None = None, reason: str = ""
    ) -> tuple[paramiko.Transport, bool]:
        """The live transport, connecting if there is none; (transport, whether it is new).

        `device` is the id for log lines ("-" outside a poll); `stale` is a transport the caller
        found dead, replaced unless another thread already did.
        """
        with self._lock:
            if self._closed:
                raise PollError("the SSH poller is closed")
            current = self._client.get_transport() if self._client is not None else None
            if current is not None and current.is_active() and current is not stale:
                return current, False
            if self._client is not None:
                log.warning(
                    "device=%s step=ssh reconnecting to %s: %s",
                    device,
                    self._where,
                    reason or "connection lost",
                )
                self._client.close()
                self._client = None
            self._client = self._connect(device)
            transport = self._client.get_transport()
            assert transport is not None
            return transport, True

    def _open_channel(self, device_id: int) -> paramiko.Channel:
        """A session channel; a dead connection is re-opened at most once."""
        device = str(device_id)
        transport, fresh = self._transport(device)
        try:
            return transport.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if fresh:
                raise PollError(
                    self._redact(f"cannot open an SSH channel on {self._where}: {exc}")
                ) from exc
            reason = f"cannot open a channel: {exc or type(exc).__name__}"
        transport, _ = self._transport(device, stale=transport, reason=reason)
        try:
            return transport.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise PollError(
                self._redact(f"cannot open an SSH channel on {self._where}: {exc}")
            ) from exc

    def poll(self, device_id: int) -> PollResult:
        """Run the command for `device_id` on its own channel; PollError if it cannot finish."""
        command = render_poll_command(self._template, device_id)
        with self._channels:
            chan = self._open_channel(device_id)
            try:
                return _log_result(self._run(chan, command, device_id))
            finally:
                chan.close()

    def _run(self, chan: paramiko.Channel, command: str, device_id: int) -> PollResult:
        log.debug("device=%d step=poll running %s on %s", device_id, command, self._where)
        timed_out = threading.Event()

        def expire() -> None:
            # Closing the channel wakes every wait below (exec reply, output, exit status).
            # It is all SSH offers: sshd does not signal a command that has no tty; the
            # command ends when it next writes to its closed pipe.
            timed_out.set()
            chan.close()

        watchdog = threading.Timer(self._timeout, expire)
        watchdog.daemon = True
        started = time.monotonic()
        buf, truncated = bytearray(), False
        watchdog.start()
        try:
            chan.set_combine_stderr(True)
            chan.exec_command(command)
            while data := chan.recv(32768):
                buf += data
                if len(buf) > _TAIL_BYTES:
                    del buf[: len(buf) - _TAIL_BYTES]
                    truncated = True
            chan.status_event.wait()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not timed_out.is_set():
                raise PollError(self._redact(f"poll failed on {self._where}: {exc}")) from exc
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            log.warning(
                "device=%d step=poll timed out after %gs on %s, channel closed",
                device_id,
                self._timeout,
                self._where,
            )
            raise PollError(f"timed out after {self._timeout:g}s")
        status = chan.exit_status
        transport = chan.get_transport()
        if status == -1 and (transport is None or not transport.is_active()):
            raise PollError(f"connection to {self._where} lost during the poll")
        return PollResult(
            device_id, status, _tail(bytes(buf), truncated=truncated), time.monotonic() - started
        )

    def check(self) -> str:
        """Connect, verify the host key and authenticate (or reuse the live connection)."""
        transport, _ = self._transport("-")
        return self._describe(transport)

    def close(self) -> None:
        """Close the connection; later polls raise PollError."""
        with self._lock:
            self._closed = True
            if self._client is not None:
                self._client.close()
                self._client = None
