"""`SSHPoller`: run the poll command on the LibreNMS host over one reused SSH connection (paramiko).

The host key is checked against known_hosts (see `known_hosts`) before any credential is sent.
Error messages and log lines never contain a password or passphrase.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import paramiko

from alert_handler.config.table import Config, redact, render_poll_command
from alert_handler.core.facts import PollError, PollResult
from alert_handler.poll.known_hosts import (
    KnownHosts,
    KnownHostsPolicy,
    fingerprint,
    preferred_key_types,
)
from alert_handler.poll.result import log_result, output_tail

log = logging.getLogger(__name__)

KEEPALIVE_SEC = 30
MAX_CHANNELS = 8  # concurrent polls on one connection, under OpenSSH's MaxSessions (10)
_TAIL_BYTES = 64 * 1024  # only the end of the output is kept: lnms prints a lot when verbose


class SSHPoller:
    """Polls over one reused SSH connection, one channel per poll, shared by threads."""

    def __init__(self, cfg: Config, max_channels: int = MAX_CHANNELS) -> None:
        if not cfg.ssh_host or not cfg.ssh_user:
            raise ValueError("SSHPoller needs ssh_host and ssh_user")
        self._host, self._port, self._user = cfg.ssh_host, cfg.ssh_port, cfg.ssh_user
        self._password = cfg.ssh_password
        self._key_file = os.path.expanduser(cfg.ssh_key_file) if cfg.ssh_key_file else None
        self._passphrase = cfg.ssh_key_passphrase
        self._known_hosts = KnownHosts(cfg.ssh_known_hosts, cfg.ssh_host, cfg.ssh_port)
        self._accept_new = cfg.ssh_host_key_policy == "accept-new"
        self._connect_timeout = cfg.ssh_connect_timeout_sec
        self._timeout = cfg.poll_timeout_sec
        self._template = cfg.poll_command
        self._channels = threading.BoundedSemaphore(max_channels)
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
        return redact(text, (self._password, self._passphrase))

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
        prefer = preferred_key_types(known)

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
            KnownHostsPolicy(self._known_hosts, known, revoked, self._accept_new, device)
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
            f" host key {fingerprint(key)} ({key.get_name()})"
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
                return log_result(self._run(chan, command, device_id))
            finally:
                chan.close()

    def run_command(self, command: str) -> PollResult:
        """Run another command of `check` on the host, as polls run (quote what you put in
        it: the remote shell reads it); its result under device_id 0."""
        with self._channels:
            chan = self._open_channel(0)
            try:
                return self._run(chan, command, 0)
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
            device_id,
            status,
            output_tail(bytes(buf), truncated=truncated),
            time.monotonic() - started,
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
