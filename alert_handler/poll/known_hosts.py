"""The OpenSSH known_hosts file for the SSH poller: look up, check and record one host's keys.

Plain and hashed (`|1|salt|hash`) names and `@revoked` lines are understood; `@cert-authority`
lines are skipped. `KnownHostsPolicy` is what paramiko asks about the server's key: known keys
pass, a changed key raises `HostKeyMismatch`, and a first contact is trusted and recorded only
under SSH_HOST_KEY_POLICY=accept-new.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import shlex
from collections.abc import Iterable
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.pkey import UnknownKeyType

from alert_handler.core.facts import PollError

log = logging.getLogger(__name__)


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


def _known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH files a host under: `host` on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
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


class KnownHosts:
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


def preferred_key_types(known: Iterable[paramiko.PKey]) -> list[str]:
    """Host key algorithms to ask for first, so a server with several keys shows a known one."""
    types: list[str] = []
    for key in known:
        name = key.get_name()
        types += ["rsa-sha2-512", "rsa-sha2-256"] if name == "ssh-rsa" else [name]
    return types


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Compares the server's key with known_hosts; on first contact trusts it or refuses.

    SSHClient is given no host keys, so it asks this policy about every server key.
    """

    def __init__(
        self,
        known_hosts: KnownHosts,
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
        kh, offered = self._kh, f"{key.get_name()} {fingerprint(key)}"
        if any(k.asbytes() == key.asbytes() for k in self._revoked):
            raise PollError(f"host key {offered} of {kh.host}:{kh.port} is @revoked in {kh.path}")
        if any(k.asbytes() == key.asbytes() for k in self._known):
            return
        if self._known:
            same_type = [k for k in self._known if k.get_name() == key.get_name()] or self._known
            known = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in same_type)
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
