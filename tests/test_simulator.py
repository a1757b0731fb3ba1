"""The LibreNMS simulator, over a real socket, against the facts in /work/shared/LIBRENMS.md."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator, demo_fleet
from alert_handler.sim.transport import render_template
from tests.conftest import spawn

READ_ONLY = "fedcba9876543210fedcba9876543210"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """Device 42 (overwrite_ip null, decoy port20), 43 (Port2-backup), 44 (no ports)."""
    simulator = Simulator(read_only_token=READ_ONLY)
    simulator.add_device(
        42,
        "cpe-42.example.net",
        real_ip="192.0.2.42",
        ports={"ether1": "up", "port2": "down", "port20": "up"},
    )
    simulator.add_device(
        43,
        "CPE-43.example.net",
        overwrite_ip="198.51.100.43",
        real_ip="192.0.2.43",
        ports={"port2": "up", "Port2-backup": "down"},
    )
    simulator.add_device(44, "cpe-44.example.net", real_ip="192.0.2.44", ports={})
    simulator.start()
    yield simulator
    simulator.stop()


def _session(token: str | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, never through a proxy
    if token is not None:
        session.headers["X-Auth-Token"] = token
    return session


@pytest.fixture
def api() -> Iterator[requests.Session]:
    with _session(DEFAULT_TOKEN) as session:
        yield session


def _patch(api: requests.Session, sim: Simulator, spec: str, body: Any) -> requests.Response:
    # LibreNMS reads the raw body: send it without a JSON Content-Type on purpose.
    return api.patch(f"{sim.url}/devices/{spec}", data=json.dumps(body).encode())


# ---- authentication ----


@pytest.mark.parametrize("token", [None, "0" * 32, DEFAULT_TOKEN.upper()])
@pytest.mark.parametrize("path", ["/devices/42", "/alerts", "/no/such/route", "/../../etc"])
def test_missing_or_bad_token_is_401_on_every_route(
    sim: Simulator, token: str | None, path: str
) -> None:
    with _session(token) as session:
        response = session.get(sim.url + path)
    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}


def test_read_only_token_reads_but_cannot_write(sim: Simulator) -> None:
    alert_id = sim.add_alert(42)
    with _session(READ_ONLY) as session:
        assert session.get(f"{sim.url}/devices/42").status_code == 200
        assert session.get(f"{sim.url}/alerts").status_code == 200
        patched = _patch(session, sim, "42", {"field": "overwrite_ip", "data": "127.0.0.50"})
        acked = session.put(
            f"{sim.url}/alerts/{alert_id}", json={"note": "x", "until_clear": False}
        )
        polled = session.post(sim.url.replace("/api/v0", "/_sim/poll/42"))
    for response in (patched, acked, polled):
        assert response.status_code == 403
        assert response.json() == {"message": "This action is unauthorized."}
    assert sim.device(42)["overwrite_ip"] is None
    assert sim.alerts()[0]["state"] == 1
    assert sim.patches() == []


# ---- devices ----


def test_get_device_by_id_and_case_insensitive_hostname(
    sim: Simulator, api: requests.Session
) -> None:
    by_id = api.get(f"{sim.url}/devices/43").json()
    by_name = api.get(f"{sim.url}/devices/cpe-43.EXAMPLE.net").json()
    assert by_id == by_name
    assert by_id["status"] == "ok" and by_id["count"] == 1
    (row,) = by_id["devices"]
    assert row["device_id"] == 43 and row["hostname"] == "CPE-43.example.net"
    assert row["overwrite_ip"] == "198.51.100.43" and row["ip"] == "198.51.100.43"
    assert row["status"] is True and row["status_reason"] == ""
    assert row["community"] == "s3cr3t-community"
    for column in ("sysName", "os", "last_polled", "last_discovered"):
        assert column in row
    assert api.get(f"{sim.url}/devices/42").json()["devices"][0]["overwrite_ip"] is None


def test_unknown_device_and_unknown_route_are_404(sim: Simulator, api: requests.Session) -> None:
    missing = api.get(f"{sim.url}/devices/999")
    assert missing.status_code == 404
    assert missing.json() == {"status": "error", "message": "Device 999 does not exist"}
    # No lookup by IP: an address is a hostname that does not exist.
    assert api.get(f"{sim.url}/devices/192.0.2.42").status_code == 404
    for method, path in [("GET", "/nope"), ("POST", "/devices/42"), ("DELETE", "/alerts/1")]:
        response = api.request(method, sim.url + path)
        assert response.status_code == 404
        assert response.json() == {"status": "error", "message": "This API route doesn't exist."}


def test_list_devices_and_type_filter(sim: Simulator, api: requests.Session) -> None:
    everything = api.get(f"{sim.url}/devices", params={"type": "all"}).json()
    assert everything["count"] == 3
    assert [d["device_id"] for d in everything["devices"]] == [42, 43, 44]  # hostname order
    assert "overwrite_ip" in everything["devices"][0]
    sim.set_reachable(44, False)
    assert sim.poll(44)[0] == 6
    down = api.get(f"{sim.url}/devices", params={"type": "down"}).json()
    assert [d["device_id"] for d in down["devices"]] == [44]
    up = api.get(f"{sim.url}/devices", params={"type": "up"}).json()
    assert [d["device_id"] for d in up["devices"]] == [42, 43]


def test_patch_overwrite_ip_then_null(sim: Simulator, api: requests.Session) -> None:
    response = _patch(
        api, sim, "cpe-42.example.net", {"field": "overwrite_ip", "data": "127.0.0.50"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "message": "Device overwrite_ip field has been updated",
    }
    assert sim.device(42)["overwrite_ip"] == "127.0.0.50"
    assert _patch(api, sim, "42", {"field": "overwrite_ip", "data": None}).status_code == 200
    assert sim.device(42)["overwrite_ip"] is None
    assert sim.patches() == [(42, "127.0.0.50"), (42, None)]
    assert sim.patches(43) == []


def test_patch_arrays_and_errors(sim: Simulator, api: requests.Session) -> None:
    arrays = _patch(api, sim, "43", {"field": ["overwrite_ip", "notes"], "data": [None, "n"]})
    assert arrays.status_code == 200 and arrays.json()["status"] == "ok"
    assert sim.device(43)["overwrite_ip"] is None and sim.device(43)["notes"] == "n"

    unknown = _patch(api, sim, "42", {"field": "no_such_column", "data": "x"})
    assert unknown.status_code == 200  # silently ignored, like Eloquent's fill()
    assert "no_such_column" not in sim.device(42)

    missing = _patch(api, sim, "999", {"field": "overwrite_ip", "data": None})
    assert missing.status_code == 404
    assert missing.json() == {"status": "error", "message": "Device 999 not found"}
    assert _patch(api, sim, "42", {"data": "x"}).status_code == 400
    assert api.patch(f"{sim.url}/devices/42", data=b"not json").status_code == 400
    for forbidden in ("hostname", "device_id"):
        assert _patch(api, sim, "42", {"field": forbidden, "data": "x"}).status_code == 500
    uneven = _patch(api, sim, "42", {"field": ["overwrite_ip", "notes"], "data": ["x"]})
    assert uneven.status_code == 500
    assert sim.device(42)["hostname"] == "cpe-42.example.net"
    assert sim.patches() == [(43, None)]


def test_discover_only_clears_last_discovered(sim: Simulator, api: requests.Session) -> None:
    first = api.get(f"{sim.url}/devices/42/discover")
    assert first.status_code == 200
    assert first.json() == {
        "status": "ok",
        "result": {"status": 1, "message": "Device will be rediscovered"},
        "count": 2,
    }
    assert sim.device(42)["last_discovered"] is None
    again = api.get(f"{sim.url}/devices/42/discover").json()
    assert again["result"]["status"] == 0  # no row changed
    assert api.get(f"{sim.url}/devices/999/discover").status_code == 404


# ---- ports ----


def test_device_ports_columns(sim: Simulator, api: requests.Session) -> None:
    default = api.get(f"{sim.url}/devices/42/ports").json()
    assert default == {
        "status": "ok",
        "ports": [{"ifName": "ether1"}, {"ifName": "port2"}, {"ifName": "port20"}],
    }
    chosen = api.get(
        f"{sim.url}/devices/42/ports", params={"columns": "port_id,ifName,ifOperStatus"}
    ).json()["ports"]
    assert [set(p) for p in chosen] == [{"port_id", "ifName", "ifOperStatus"}] * 3
    assert chosen[1]["ifName"] == "port2" and chosen[1]["ifOperStatus"] == "down"
    bad = api.get(f"{sim.url}/devices/42/ports", params={"columns": "ifName,secret"})
    assert bad.status_code == 400
    assert bad.json() == {"status": "error", "message": "Invalid columns: secret"}
    for spec in ("44", "999"):
        none = api.get(f"{sim.url}/devices/{spec}/ports")
        assert none.status_code == 404
        assert none.json() == {"status": "error", "message": "No ports found"}


def test_port_search_is_a_substring_match_over_all_devices(
    sim: Simulator, api: requests.Session
) -> None:
    response = api.get(
        f"{sim.url}/ports/search/ifName/port2", params={"columns": "device_id,ifName"}
    )
    assert response.status_code == 200
    found = [(p["device_id"], p["ifName"]) for p in response.json()["ports"]]
    assert found == [(42, "port2"), (43, "port2"), (43, "Port2-backup"), (42, "port20")]
    wildcard = api.get(f"{sim.url}/ports/search/ifName/p_rt2-%25").json()["ports"]
    assert [p["ifName"] for p in wildcard] == ["Port2-backup"]
    assert set(wildcard[0]) == {"device_id", "port_id", "ifIndex", "ifName", "ifAlias"}
    nothing = api.get(f"{sim.url}/ports/search/ifName/port9")
    assert nothing.status_code == 404
    assert nothing.json() == {"status": "error", "message": "No ports found"}


def test_port_by_id(sim: Simulator, api: requests.Session) -> None:
    port_id = sim.port(42, "port2").port_id
    body = api.get(f"{sim.url}/ports/{port_id}").json()
    assert body["status"] == "ok"
    (row,) = body["port"]
    assert row["port_id"] == port_id and row["device_id"] == 42 and row["ifName"] == "port2"
    assert row["ifOperStatus"] == "down" and row["ifAdminStatus"] == "up"
    assert "link" not in row  # the physical truth is not a LibreNMS column
    unknown = api.get(f"{sim.url}/ports/99999")
    assert unknown.status_code == 200
    assert unknown.json() == {"status": "ok", "port": []}


# ---- polling ----


def _oper_status(api: requests.Session, sim: Simulator, port_id: int) -> str:
    return str(api.get(f"{sim.url}/ports/{port_id}").json()["port"][0]["ifOperStatus"])


def test_ifoperstatus_changes_only_after_a_poll(sim: Simulator, api: requests.Session) -> None:
    port_id = sim.port(42, "port2").port_id
    sim.set_link(42, "port2", "up")
    assert _oper_status(api, sim, port_id) == "down"
    assert sim.port(42, "port2").link == "up"
    code, output = sim.poll(42)
    assert code == 0
    assert output.startswith("Starting polling run:\n\nHostname:  cpe-42.example.net")
    assert "ID:        42\n" in output and "IP:        192.0.2.42\n" in output
    assert ">>> Polled cpe-42.example.net (42) in " in output
    assert _oper_status(api, sim, port_id) == "up"
    with pytest.raises(ValueError):
        sim.set_link(42, "port2", "sideways")


def test_forced_down_poll_then_restore(sim: Simulator, api: requests.Session) -> None:
    """1. overwrite_ip -> unsupervised IP (loopback: it answers ICMP), poll: exit 6, down
       through SNMP (status_reason snmp), devices.ip = that IP.
    2. ports keep their last polled status. 3. overwrite_ip null, poll: exit 0, ip = real ip."""
    sim.set_link(42, "port2", "up")
    _patch(api, sim, "42", {"field": "overwrite_ip", "data": "127.0.0.50"})
    code, output = sim.poll(42)
    assert code == 6
    assert output.endswith("Device was down, unable to poll.\n")
    row = api.get(f"{sim.url}/devices/42").json()["devices"][0]
    assert (row["status"], row["status_reason"], row["ip"]) == (False, "snmp", "127.0.0.50")
    assert sim.port(42, "port2").ifOperStatus == "down"

    _patch(api, sim, "42", {"field": "overwrite_ip", "data": None})
    assert sim.device(42)["ip"] == "127.0.0.50"  # nothing changes until the next poll
    assert sim.poll(42)[0] == 0
    row = api.get(f"{sim.url}/devices/42").json()["devices"][0]
    assert (row["status"], row["status_reason"], row["ip"]) == (True, "", "192.0.2.42")
    assert sim.port(42, "port2").ifOperStatus == "up"


def test_poll_unknown_unreachable_and_latency(sim: Simulator) -> None:
    code, output = sim.poll(999)
    assert code == 1 and "No devices found" in output
    sim.unreachable.add("198.51.100.43")
    assert sim.poll(43)[0] == 6
    sim.unreachable.clear()
    sim.set_reachable(42, False)
    assert sim.poll(42)[0] == 6
    assert sim.device(42)["ip"] == "192.0.2.42"
    sim.poll_latency = 0.2
    started = time.monotonic()
    assert sim.poll(43)[0] == 0
    assert time.monotonic() - started >= 0.2


def _run_poll_cli(
    sim: Simulator, spec: str, token: str = DEFAULT_TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "alert_handler.sim", "poll"]
    return subprocess.run(
        [*command, "--url", sim.url, "--token", token, spec],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_poll_cli_is_a_real_process_with_lnms_exit_codes(sim: Simulator) -> None:
    sim.set_link(42, "port2", "up")
    polled = _run_poll_cli(sim, "42")
    assert polled.returncode == 0, polled.stderr
    assert ">>> Polled cpe-42.example.net (42)" in polled.stdout
    assert sim.port(42, "port2").ifOperStatus == "up"

    sim.unreachable.add("192.0.2.42")
    down = _run_poll_cli(sim, "cpe-42.example.net")
    assert down.returncode == 6
    assert "Device was down, unable to poll." in down.stdout

    assert _run_poll_cli(sim, "999").returncode == 1
    refused = _run_poll_cli(sim, "42", token="f" * 32)
    assert refused.returncode == 1
    assert "401" in refused.stderr and "f" * 32 not in refused.stderr


# ---- faults ----


def test_inject_500_then_ok(sim: Simulator, api: requests.Session) -> None:
    sim.inject("GET", r"^/devices/42$", status=500, times=2)
    for _ in range(2):
        failed = api.get(f"{sim.url}/devices/42")
        assert failed.status_code == 500
        assert failed.json() == {"message": "Server Error"}
    assert api.get(f"{sim.url}/devices/43").status_code == 200  # other paths unaffected
    assert api.get(f"{sim.url}/devices/42").status_code == 200
    assert [r.status for r in sim.requests] == [500, 500, 200, 200]


def test_inject_429_has_laravel_body(sim: Simulator, api: requests.Session) -> None:
    sim.inject("PATCH", r"^/devices/", status=429)
    response = _patch(api, sim, "42", {"field": "overwrite_ip", "data": "127.0.0.50"})
    assert response.status_code == 429
    assert response.json() == {"message": "Too Many Attempts."}
    assert sim.device(42)["overwrite_ip"] is None


def test_inject_delay(sim: Simulator, api: requests.Session) -> None:
    sim.inject("GET", r"^/devices/42$", status=200, delay=0.3)
    started = time.monotonic()
    assert api.get(f"{sim.url}/devices/42").status_code == 200
    assert time.monotonic() - started >= 0.3
    sim.inject("GET", r"^/devices/42$", status=500, delay=0.5)
    with pytest.raises(requests.Timeout):
        api.get(f"{sim.url}/devices/42", timeout=0.1)


def test_inject_drop_closes_without_answer(sim: Simulator, api: requests.Session) -> None:
    sim.inject("*", r"^/devices/42/ports$", drop=True)
    with pytest.raises(requests.ConnectionError):
        api.get(f"{sim.url}/devices/42/ports")
    assert api.get(f"{sim.url}/devices/42/ports").status_code == 200
    assert [r.status for r in sim.requests] == [0, 200]


def test_request_log(sim: Simulator, api: requests.Session) -> None:
    _patch(api, sim, "42", {"field": "overwrite_ip", "data": None})
    api.get(f"{sim.url}/alerts", params={"state": "1"})
    first, second = sim.requests
    assert (first.method, first.path, first.status) == ("PATCH", "/devices/42", 200)
    assert json.loads(first.body) == {"field": "overwrite_ip", "data": None}
    assert (second.method, second.path, second.query) == ("GET", "/alerts", "state=1")
    assert first.time <= second.time <= time.monotonic()


def test_keep_alive_serves_many_requests_on_one_connection(sim: Simulator) -> None:
    host, port = sim.url.split("//")[1].split("/")[0].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/api/v0/devices/42", headers={"X-Auth-Token": DEFAULT_TOKEN})
        first = connection.getresponse()
        first.read()
        sock = connection.sock
        assert first.status == 200 and not first.will_close
        connection.request("GET", "/api/v0/devices/43", headers={"X-Auth-Token": DEFAULT_TOKEN})
        second = connection.getresponse()
        assert json.loads(second.read())["devices"][0]["device_id"] == 43
        assert connection.sock is sock
    finally:
        connection.close()


# ---- alerts ----


def test_alerts_list_filter_and_ack(sim: Simulator, api: requests.Session) -> None:
    port_alert = sim.add_alert(42, "Port2 down", rule_id=7)
    sim.add_alert(43, "Device Down! Due to no ICMP response.", rule_id=1)
    listed = api.get(f"{sim.url}/alerts", params={"state": "1"}).json()
    assert listed["status"] == "ok" and listed["count"] == 2
    only_rule = api.get(f"{sim.url}/alerts", params={"state": "1", "alert_rule": "7"}).json()
    (row,) = only_rule["alerts"]
    assert {k: row[k] for k in ("id", "device_id", "rule_id", "state", "hostname", "name")} == {
        "id": port_alert,
        "device_id": 42,
        "rule_id": 7,
        "state": 1,
        "hostname": "cpe-42.example.net",
        "name": "Port2 down",
    }
    assert "timestamp" in row and "severity" in row

    acked = api.put(
        f"{sim.url}/alerts/{port_alert}",
        data=json.dumps({"note": "forced down", "until_clear": False}),
    )
    assert acked.status_code == 200
    assert acked.json() == {"status": "ok", "message": "Alert has been acknowledged"}
    assert api.get(f"{sim.url}/alerts", params={"state": "1"}).json()["count"] == 1
    both = api.get(f"{sim.url}/alerts", params={"state": "1,2"}).json()
    acked_row = next(a for a in both["alerts"] if a["id"] == port_alert)
    assert acked_row["state"] == 2 and acked_row["note"].endswith("forced down")


# ---- the alert transport ----


class _Receiver(HTTPServer):
    def __init__(self, status: int) -> None:
        self.status = status
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers.items()), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(200)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_send_alert_posts_text_plain_with_devices_ip(sim: Simulator, receiver: _Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/alert?key=1"
    assert sim.send_alert(url, 42, rule='Port2 "down"') == 200
    _patch_direct(sim, 42, "127.0.0.50")
    sim.poll(42)
    assert sim.send_alert(url, 42, rule="Device Down! Due to no ICMP response.") == 200
    receiver.status = 500
    assert sim.send_alert(url, 42, state=0, headers={"Authorization": "Bearer t"}) == 500

    (path, headers, body), (_, _, second), (_, third_headers, third) = receiver.received
    assert path == "/alert"  # Api.php drops the API URL's query: it builds one from Options
    assert headers["Content-Type"] == "text/plain"
    first = json.loads(body)
    assert first == {
        "device_id": 42,
        "host": "cpe-42.example.net",
        "ip": "192.0.2.42",
        "state": 1,
        "rule": 'Port2 "down"',
        "uid": first["uid"],
    }
    assert json.loads(second)["ip"] == "127.0.0.50"  # devices.ip after a forced-down poll
    assert json.loads(second)["uid"] > first["uid"]
    assert third_headers["Authorization"] == "Bearer t" and json.loads(third)["state"] == 0


def _patch_direct(sim: Simulator, device_id: int, overwrite_ip: str | None) -> None:
    with _session(DEFAULT_TOKEN) as session:
        _patch(session, sim, str(device_id), {"field": "overwrite_ip", "data": overwrite_ip})


def test_render_template_inserts_raw_values() -> None:
    template = '{"h": "{{ $hostname }}", "n": {{ $name|json_encode }}, "x": "{{ $missing }}"}'
    rendered = render_template(template, {"hostname": 'a"b', "name": 'a"b'})
    assert rendered == '{"h": "a"b", "n": "a\\"b", "x": ""}'  # raw values can break the JSON


# ---- lifecycle ----


def test_demo_fleet_has_port2_everywhere_and_decoys() -> None:
    simulator = Simulator()
    demo_fleet(simulator)
    with simulator, _session(DEFAULT_TOKEN) as session:
        devices = session.get(f"{simulator.url}/devices").json()["devices"]
        assert len(devices) >= 4
        assert any(d["overwrite_ip"] is None for d in devices)
        assert any(d["overwrite_ip"] for d in devices)
        names = {
            (p["device_id"], p["ifName"])
            for p in session.get(f"{simulator.url}/ports/search/ifName/port2").json()["ports"]
        }
    assert {d["device_id"] for d in devices} == {
        device for device, name in names if name == "port2"
    }
    assert {"port20", "Port2-backup"} <= {name for _, name in names}
    for address in [d["ip"] for d in devices]:
        assert address.startswith(("192.0.2.", "198.51.100.", "203.0.113."))


def test_stop_cuts_keep_alive_connections(sim: Simulator, api: requests.Session) -> None:
    url = sim.url
    assert api.get(f"{url}/devices/42").status_code == 200
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        api.get(f"{url}/devices/42", timeout=2)


def test_serve_cli_runs_until_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "alert_handler.sim", "serve", "--port", "0"]
    process = spawn(
        [*command, "--devices", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v0")
    with _session(DEFAULT_TOKEN) as session:
        assert session.get(f"{url}/devices").json()["count"] == 3
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_sim_link_route_changes_the_physical_state_only(
    sim: Simulator, api: requests.Session
) -> None:
    root = sim.url.removesuffix("/api/v0")
    assert api.post(f"{root}/_sim/link/42/port2", data=b"up").status_code == 200
    assert sim.port(42, "port2").link == "up" and sim.port(42, "port2").ifOperStatus == "down"
    assert api.post(f"{root}/_sim/link/42/port2", data=b"sideways").status_code == 400
    assert api.post(f"{root}/_sim/link/42/port9", data=b"up").status_code == 400
    answer = api.post(f"{root}/_sim/poll/42").json()
    assert answer["exit"] == 0 and "Polled" in answer["output"]
    assert sim.port(42, "port2").ifOperStatus == "up"


def test_maintenance_route(sim: Simulator, api: requests.Session) -> None:
    """GET /devices/{h}/maintenance: is_under_maintenance for any window behaviour; 404 for an
    unknown device (device_under_maintenance)."""
    sim.add_device(3, "cpe-3")
    url = sim.url + "/devices/3/maintenance"
    assert api.get(url).json() == {"status": "ok", "is_under_maintenance": False}
    for behaviour in ("skip", "mute", "run_alerts"):
        sim.set_maintenance(3, behaviour)
        assert api.get(url).json()["is_under_maintenance"] is True
    sim.set_maintenance(3, None)
    assert api.get(url).json()["is_under_maintenance"] is False
    missing = api.get(sim.url + "/devices/9/maintenance")
    assert missing.status_code == 404
    assert missing.json() == {"status": "error", "message": "Device 9 not found"}


def test_polls_reach_a_device_only_from_a_poller_of_its_group(
    sim: Simulator, api: requests.Session
) -> None:
    """`lnms device:poll` polls from whichever host runs it: from a poller that does not serve
    the device's group, the device does not answer: exit 6, written down (icmp)."""
    sim.add_poller_group(2, "east")
    sim.add_poller("poller-east", [2])
    sim.add_device(7, "cpe-7", ports={"port2": "up"})
    sim.set_poller_group(7, 2)
    code, output = sim.poll(7)  # the main host: group 0 only
    assert code == 6 and output.endswith("Device was down, unable to poll.\n")
    row = api.get(f"{sim.url}/devices/7").json()["devices"][0]
    assert (row["status"], row["status_reason"], row["poller_group"]) == (False, "icmp", 2)
    assert sim.poll(7, "poller-east")[0] == 0
    assert sim.device(7)["status"] is True
    assert sim.poll(42, "poller-east")[0] == 6  # group 0 is not east's


def test_pollers_and_poller_groups_routes(sim: Simulator, api: requests.Session) -> None:
    """GET /pollers (poller_cluster rows, poller_groups a comma list) and GET /poller_group
    (all, by id, by name; 404 'Poller Group does not exist')."""
    sim.add_poller_group(2, "east")
    sim.add_poller("poller-east", [2])
    pollers = api.get(f"{sim.url}/pollers").json()
    assert pollers["status"] == "ok"
    assert {(p["poller_name"], p["poller_groups"]) for p in pollers["pollers"]} == {
        ("librenms", "0"),
        ("poller-east", "2"),
    }
    groups = api.get(f"{sim.url}/poller_group").json()
    assert groups["get_poller_group"] == [{"id": 2, "group_name": "east", "descr": ""}]
    for spec in ("2", "east"):
        one = api.get(f"{sim.url}/poller_group/{spec}").json()
        assert one["get_poller_group"] == {"id": 2, "group_name": "east", "descr": ""}
    missing = api.get(f"{sim.url}/poller_group/9")
    assert missing.status_code == 404
    assert missing.json()["message"] == "Poller Group does not exist"


def test_a_loopback_target_answers_and_may_be_the_poller_itself(sim: Simulator) -> None:
    """127.0.0.0/8 is local: ICMP answers, so the device is down through SNMP only; with snmpd
    on the poller (the CPE's community), LibreNMS polls the poller under the CPE's record: OS
    changed, the CPE's ports deleted."""
    sim.add_device(8, "cpe-8", overwrite_ip="127.0.0.50", ports={"port2": "down"})
    assert sim.poll(8)[0] == 6
    assert (sim.device(8)["status"], sim.device(8)["status_reason"]) == (False, "snmp")
    sim.snmpd_on_pollers = True
    assert sim.poll(8)[0] == 0
    row = sim.device(8)
    assert (row["status"], row["os"]) == (True, "linux")
    with pytest.raises(KeyError):
        sim.port(8, "port2")  # deleted


@pytest.mark.parametrize(
    ("user", "line"),
    [
        ("root", "Error: lnms must not run as root."),
        ("www-data", "Error: lnms must be run as the user librenms."),
    ],
)
def test_the_poll_stand_in_refuses_the_wrong_user(sim: Simulator, user: str, line: str) -> None:
    code, output = sim.poll(42, run_as=user)
    assert (code, output.strip()) == (1, line)


def test_alert_times_are_the_servers_local_time() -> None:
    """/alerts timestamps and raw /devices dates are naive local times of the server's zone;
    GET /devices/{id} (Eloquent) shows ISO 8601 in UTC."""
    with Simulator(timezone_name="Pacific/Kiritimati") as sim:  # UTC+14
        sim.add_device(5, "cpe-5")
        sim.add_alert(5)
        alert = sim.alerts()[0]
        local = datetime.strptime(str(alert["timestamp"]), "%Y-%m-%d %H:%M:%S")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        assert abs((local - now).total_seconds() - 14 * 3600) < 60
        with _session(DEFAULT_TOKEN) as api:
            raw = api.get(f"{sim.url}/devices").json()["devices"][0]["last_polled"]
            cast = api.get(f"{sim.url}/devices/5").json()["devices"][0]["last_polled"]
        assert cast.endswith("Z") and "T" in cast and " " in raw
        assert raw[11:13] != cast[11:13]  # 14 hours apart
