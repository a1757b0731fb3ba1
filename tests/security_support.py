"""Helpers for the security tests: raw HTTP over sockets, "nothing changed" snapshots, TLS certs."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from alert_handler.sim.simulator import Simulator
from alert_handler.store.codec import Snapshot
from alert_handler.store.files import read_state
from tests.conftest import WEBHOOK_TOKEN, RunningDaemon, wait_for

AUTH = f"Authorization: Bearer {WEBHOOK_TOKEN}\r\n"


@dataclass(frozen=True)
class Reply:
    """One HTTP response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (every reply of the daemon is JSON but /metrics)."""
        return json.loads(self.body)


def parse_reply(raw: bytes) -> Reply:
    """Split a whole HTTP/1.x response; AssertionError if it is not one."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response: {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version in ("HTTP/1.0", "HTTP/1.1"), lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body), "Content-Length does not match the body"
    return Reply(int(status), headers, body)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset after a complete reply counts as a close)."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def exchange(url: str, data: bytes, *, timeout: float = 10.0) -> Reply:
    """Send raw bytes to the daemon at `url` (http://host:port) and read the whole reply."""
    with connect(url, timeout) as sock:
        sock.sendall(data)
        return parse_reply(read_all(sock))


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the daemon at `url`."""
    host, port = host_port(url)
    return socket.create_connection((host, port), timeout=timeout)


def host_port(url: str) -> tuple[str, int]:
    """(host, port) of http(s)://host:port."""
    rest = url.split("://", 1)[1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def post(path: str, body: bytes, headers: str = AUTH, *, length: int | None = None) -> bytes:
    """A raw POST request; `headers` are whole `Name: value\\r\\n` lines."""
    size = len(body) if length is None else length
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {size}\r\n\r\n").encode(
        "latin-1"
    ) + body


class Dribbler:
    """Sends `data` on `sock` one byte every `gap` seconds from a thread, until stopped or cut."""

    def __init__(self, sock: socket.socket, data: bytes, gap: float = 0.05) -> None:
        self.sock = sock
        self.data = data
        self.gap = gap
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for byte in self.data:
                if self._stop.wait(self.gap):
                    return
                self.sock.sendall(bytes([byte]))
                self.sent += 1
        except OSError:
            return

    def stop(self) -> None:
        """Stop sending and wait for the thread."""
        self._stop.set()
        self._thread.join(5)


@dataclass(frozen=True)
class Unchanged:
    """What a rejected request must not change: the state on disk (the state file with its
    journal, and the journal's last line number) and LibreNMS's request log."""

    state: tuple[Snapshot, int]
    api_calls: int
    tracked: int

    @classmethod
    def take(cls, daemon: RunningDaemon, sim: Simulator) -> Unchanged:
        """Snapshot once the daemon is idle (its first reconcile pass is over)."""
        wait_for(lambda: any(r.path == "/alerts" for r in sim.requests), what="the first reconcile")
        daemon.daemon.store.flush(5)
        return cls(
            _on_disk(Path(daemon.cfg.state_file)),
            len(sim.requests),
            daemon.daemon.store.count(),
        )

    def check(self, daemon: RunningDaemon, sim: Simulator) -> None:
        """Assert nothing changed since the snapshot."""
        daemon.daemon.store.flush(5)
        assert _on_disk(Path(daemon.cfg.state_file)) == self.state
        assert len(sim.requests) == self.api_calls, sim.requests[self.api_calls :]
        assert daemon.daemon.store.count() == self.tracked


def _on_disk(path: Path) -> tuple[Snapshot, int]:
    """What a restart would load, with the number of the last journal line written."""
    snap = read_state(path, time.time())
    return snap, snap.seq


# -- TLS ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certs:
    """A private CA and a server certificate for 127.0.0.1 signed by it, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """Write a CA and a 127.0.0.1/localhost server certificate (key mode 0600) to `directory`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alert-handler test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certs(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    certs.key.touch(mode=0o600)
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certs


def client_context(ca: Path | None = None, *, legacy: bool = False) -> ssl.SSLContext:
    """A client context trusting `ca` (or nothing); `legacy`: offer TLS 1.1 only.

    Creating a TLS 1.1 context warns (DeprecationWarning): callers silence it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if legacy:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL offer TLS 1.1 at all
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def legacy_server_context(certs: Certs) -> ssl.SSLContext:
    """A server context still accepting TLS 1.1: the control for `client_context(legacy=True)`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.load_cert_chain(certs.cert, certs.key)
    return context


# -- an https LibreNMS --------------------------------------------------------------------------
DEVICE_ROW = {
    "device_id": 42,
    "hostname": "cpe-42",
    "overwrite_ip": None,
    "ip": "192.0.2.42",
    "status": True,
    "community": "snmp-community-secret",
}


class _FakeLibreNMS(BaseHTTPRequestHandler):
    """Any GET: one device row, LibreNMS's envelope; records the paths."""

    server: HTTPSLibreNMS

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body = json.dumps({"status": "ok", "devices": [DEVICE_ROW], "count": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class HTTPSLibreNMS(ThreadingHTTPServer):
    """A minimal LibreNMS over https with a certificate from the test CA (a context manager)."""

    daemon_threads = True

    def __init__(self, certs: Certs) -> None:
        super().__init__(("127.0.0.1", 0), _FakeLibreNMS)
        self.paths: list[str] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert, certs.key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        """The API base URL."""
        return f"https://127.0.0.1:{self.server_address[1]}/api/v0"

    def __enter__(self) -> HTTPSLibreNMS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes are expected
