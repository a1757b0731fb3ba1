"""TLS both ways: the optional https listener (TLS 1.2+) and certificate checks towards LibreNMS."""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from urllib3.exceptions import InsecureRequestWarning

from alert_handler.config.table import parse
from alert_handler.core.facts import LibreNMSError
from alert_handler.daemon import make_api
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import WEBHOOK_TOKEN, StartDaemon, alert_body, base_env
from tests.security_support import (
    Certs,
    Dribbler,
    HTTPSLibreNMS,
    Unchanged,
    client_context,
    host_port,
    legacy_server_context,
    make_certs,
    post,
    read_all,
)


@pytest.fixture
def https_librenms(certs: Certs) -> Iterator[HTTPSLibreNMS]:
    """An https server with a certificate from the test CA, answering like LibreNMS."""
    with HTTPSLibreNMS(certs) as stub:
        yield stub


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    """A CA and a server certificate for 127.0.0.1."""
    directory = tmp_path / "certs"
    directory.mkdir()
    return make_certs(directory)


def handshake(port: int, context: ssl.SSLContext) -> str:
    """The TLS version negotiated with 127.0.0.1:`port`; ssl.SSLError when refused."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


def test_tls_listener_speaks_only_tls12_or_newer(
    sim: Simulator, start_daemon: StartDaemon, certs: Certs
) -> None:
    """1. TLS_CERT_FILE/TLS_KEY_FILE set: an alert over https (certificate checked by the client)
       is accepted; the session is TLS 1.2 or 1.3.
    2. A client offering only TLS 1.1 is refused, although the same client completes a TLS 1.1
       handshake with a server that allows it (so the refusal is the daemon's).
    3. Plain http on the https port gets no HTTP answer and changes nothing."""
    sim.add_device(42, "cpe-42", ports={"port2": "down"})
    d = start_daemon(
        TLS_CERT_FILE=str(certs.cert), TLS_KEY_FILE=str(certs.key), RECOVERY_INTERVAL_SEC="60"
    )
    _, port = host_port(d.url)
    before = Unchanged.take(d, sim)
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    with plain:
        plain.sendall(post("/alert", alert_body(42).encode()))
        assert not read_all(plain).startswith(b"HTTP/")
    before.check(d, sim)

    https = f"https://127.0.0.1:{port}"
    reply = requests.post(
        https + "/alert",
        data=alert_body(42),
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        verify=str(certs.ca),
        timeout=10,
    )
    assert reply.status_code == 202
    assert handshake(port, client_context(certs.ca)) in ("TLSv1.2", "TLSv1.3")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 is deprecated
        assert legacy_control_handshake(certs) == "TLSv1.1"
        with pytest.raises(ssl.SSLError):
            handshake(port, client_context(legacy=True))


def legacy_control_handshake(certs: Certs) -> str:
    """The legacy client against a server that allows TLS 1.1: proves the client can offer it."""
    server_context = legacy_server_context(certs)
    with socket.create_server(("127.0.0.1", 0)) as control:
        control.settimeout(10)

        def accept_one() -> None:
            try:
                conn, _ = control.accept()
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        try:
            return handshake(control.getsockname()[1], client_context(legacy=True))
        finally:
            thread.join(10)


def test_tls_clients_that_never_finish_the_handshake_are_dropped(
    sim: Simulator, start_daemon: StartDaemon, certs: Certs
) -> None:
    """CLIENT_TIMEOUT_SEC=1 with TLS on: a connection that never starts the handshake and one
    that completes it and then dribbles its request a byte every 50 ms (no single read waits a
    whole second) are both closed long before the request could be complete; a real client is
    still served."""
    d = start_daemon(
        TLS_CERT_FILE=str(certs.cert), TLS_KEY_FILE=str(certs.key), CLIENT_TIMEOUT_SEC="1"
    )
    _, port = host_port(d.url)
    idle = socket.create_connection(("127.0.0.1", port), timeout=15)
    raw = socket.create_connection(("127.0.0.1", port), timeout=15)
    slow = client_context(certs.ca).wrap_socket(raw, server_hostname="127.0.0.1")
    request = post("/alert", alert_body(42).encode())
    dribble = Dribbler(slow, request)
    try:
        with idle:
            assert read_all(idle) == b""
        assert read_all(slow) == b""
        assert dribble.sent < len(request)
    finally:
        dribble.stop()
        slow.close()
    health = requests.get(f"https://127.0.0.1:{port}/health", verify=str(certs.ca), timeout=10)
    assert health.status_code == 200


# -- towards LibreNMS ---------------------------------------------------------------------------
def test_librenms_certificate_is_verified_by_default(
    sim: Simulator,
    tmp_path: Path,
    certs: Certs,
    https_librenms: HTTPSLibreNMS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1. LIBRENMS_URL is https with a certificate the system does not trust: the call fails
       before any request is sent, and the error names neither the token nor the device row.
    2. REQUESTS_CA_BUNDLE (the environment variable requests reads) naming the CA: the call
       succeeds.
    3. LIBRENMS_VERIFY_TLS=false: the call succeeds (the daemon warns at start, see
       test_security_process)."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    url = https_librenms.url

    def api_with(**extra: str) -> object:
        cfg = parse(base_env(sim, tmp_path, LIBRENMS_URL=url, **extra))
        api = make_api(cfg)
        try:
            return api.get_device(42)
        finally:
            api.close()

    with pytest.raises(LibreNMSError) as caught:
        api_with()
    message = str(caught.value)
    assert DEFAULT_TOKEN not in message and "snmp-community-secret" not in message
    assert https_librenms.paths == []
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certs.ca))
    assert getattr(api_with(), "device_id", None) == 42
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.warns(InsecureRequestWarning):
        assert getattr(api_with(LIBRENMS_VERIFY_TLS="false"), "device_id", None) == 42
    assert https_librenms.paths == ["/api/v0/devices/42", "/api/v0/devices/42"]
