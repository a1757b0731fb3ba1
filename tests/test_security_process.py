"""Issue 4 end to end: the installed `alert-handler` as a process; its log, replies and files."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import requests

from alert_handler.config.table import parse
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import (
    UNSUP,
    WEBHOOK_TOKEN,
    DaemonProcess,
    RunningDaemon,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    on_teardown,
    spawn,
    wait_for,
)
from tests.security_support import Certs, HTTPSLibreNMS, exchange, make_certs, post

SSH_PASSWORD = "ssh-password-Zq8wX2pL"
SSH_KEY_PASSPHRASE = "key-passphrase-Vb7nM4kR"
COMMUNITY = "s3cr3t-community"  # every simulated device row carries it
OFFERED = "offered-wrong-token-Hj5tY7uI"
SECRETS = {
    "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
    "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "SSH_PASSWORD": SSH_PASSWORD,
    "SSH_KEY_PASSPHRASE": SSH_KEY_PASSPHRASE,
}


def mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def attack(url: str) -> list[int]:
    """The hostile requests of the issue, each one answered; the statuses, in order."""
    body = alert_body(61).encode()
    basic = base64.b64encode(f"librenms:{OFFERED}".encode()).decode()
    raws = [
        post("/alert", body, ""),
        post("/alert", body, f"Authorization: Bearer {OFFERED}\r\n"),
        post("/alert", body, f"X-Auth-Token: {OFFERED}\r\n"),
        post("/alert", body, f"Authorization: Basic {basic}\r\n"),
        post("/alert", body, f"Authorization: Bearer {WEBHOOK_TOKEN[:-1]}\r\n"),
        post(f"/alert?token={OFFERED}", body, ""),
        post("/alert", b'{"device_id": "61; rm -rf /"}'),
        post("/alert", b'{"device_id": "61\\n"}'),
        post("/alert", b'{"device_id": [61]}'),
        post("/alert", b"[" * 50000),
        post("/alert", b"", length=10_000_000),
        b"GET /health HTTP/1.0\r\n" + b"X-Flood: 1\r\n" * 200 + b"\r\n",
        b"GET /health HTTP/1.0\r\nX-Evil: \x1b[2J\x00\r\n\r\n",
        post("/devices/61;reboot/release", b""),
    ]
    return [exchange(url, raw).status for raw in raws]


def test_no_secret_is_ever_logged_or_answered(sim: Simulator, tmp_path: Path) -> None:
    """1. `alert-handler serve` runs with every secret set (API token, webhook token, SSH
       password, key passphrase) against the simulator, whose device rows carry an SNMP
       community.
    2. A CPE is forced down; meanwhile the issue's attacks arrive (wrong tokens in every
       position, hostile ids, deep JSON, an oversized body, a header flood, control bytes); one
       API call fails; /health, /devices and /metrics are read; the port comes back and the
       device is restored; SIGTERM.
    3. No secret, no offered token and no community string appears in any log line (file or
       stderr) or reply, and the redactor never had to mask anything ("***" appears nowhere).
    4. The state file and its lock are 0600 and the log file is not readable by others."""
    sim.add_device(61, "cpe-61", overwrite_ip="198.51.100.61", ports={"port2": "down"})
    port = free_port()
    env = base_env(
        sim,
        tmp_path,
        LISTEN_PORT=str(port),
        RECOVERY_INTERVAL_SEC="0.5",
        SSH_PASSWORD=SSH_PASSWORD,
        SSH_KEY_PASSPHRASE=SSH_KEY_PASSPHRASE,
    )
    daemon = DaemonProcess(tmp_path, env, port)
    replies: list[str] = []
    try:
        auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        assert sim.send_alert(daemon.url + "/alert", 61, headers=auth) == 202
        wait_for(lambda: sim.device(61)["overwrite_ip"] == UNSUP, what="forced down")
        statuses = attack(daemon.url)
        assert statuses == [401] * 6 + [400] * 4 + [413, 431, 200, 400]
        sim.inject("PATCH", r"^/devices/61$", status=500, times=1)
        sim.set_link(61, "port2", "up")
        for path in ("/health", "/devices", "/metrics"):
            reply = requests.get(daemon.url + path, headers=auth, timeout=10)
            assert reply.status_code == 200
            replies.append(reply.text)
        wait_for(lambda: sim.device(61)["overwrite_ip"] == "198.51.100.61", what="restored")
        assert daemon.terminate() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()
    log_text = Path(env["LOG_FILE"]).read_text()
    stderr = daemon.output()
    assert "device=61" in log_text and "missing or wrong webhook token" in log_text
    assert "HTTP 500" in log_text  # the failed call was logged
    for where, text in (("log file", log_text), ("stderr", stderr), ("replies", "".join(replies))):
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name} in {where}"
        assert OFFERED not in text and WEBHOOK_TOKEN[:-1] not in text, f"offered token in {where}"
        assert COMMUNITY not in text, f"a device row in {where}"
        assert "***" not in text, f"the redactor had to mask a secret in {where}"
    assert mode(Path(env["STATE_FILE"])) == 0o600
    assert mode(Path(env["STATE_FILE"] + ".lock")) == 0o600
    assert mode(Path(env["LOG_FILE"])) & 0o007 == 0


def test_secrets_stay_out_of_repr(sim: Simulator, tmp_path: Path) -> None:
    """repr() of the config and of every part of a built daemon names no secret."""
    cfg = parse(
        base_env(
            sim,
            tmp_path,
            POLL_COMMAND="true {device_id}",  # the tests' usual one passes the API token
            SSH_PASSWORD=SSH_PASSWORD,
            SSH_KEY_PASSPHRASE=SSH_KEY_PASSPHRASE,
        )
    )
    running = RunningDaemon(cfg)
    try:
        built = running.daemon
        parts = [cfg, built, built.api, built.poller, built.server.auth, built.app, built.scheduler]
        text = "".join(repr(part) for part in parts)
        for name, secret in SECRETS.items():
            assert secret not in text, name
    finally:
        assert running.stop() == 0


def test_unsafe_settings_are_warned_about_at_start(tmp_path: Path) -> None:
    """1. No WEBHOOK_TOKEN, a .env readable by everyone, LIBRENMS_VERIFY_TLS=false towards an
       https LibreNMS: the daemon starts and logs one warning for each.
    2. /health says "auth": "disabled" and an alert without credentials is accepted."""
    certs: Certs = make_certs(tmp_path)
    with HTTPSLibreNMS(certs) as librenms:
        port = free_port()
        settings = {
            "LIBRENMS_URL": librenms.url,
            "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
            "LIBRENMS_VERIFY_TLS": "false",
            "POLL_METHOD": "local",
            "POLL_COMMAND": "true {device_id}",
            "STATE_FILE": "device_state.json",
            "LOG_FILE": "alert_handler.log",
            "LISTEN_HOST": "127.0.0.1",
            "LISTEN_PORT": str(port),
            "RECOVERY_INTERVAL_SEC": "60",
            "DRY_RUN": "true",
        }
        env_file = tmp_path / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        env_file.chmod(0o644)
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
        clean.pop("WEBHOOK_TOKEN", None)
        out = (tmp_path / "stdio.log").open("wb")
        on_teardown(out.close)
        proc = spawn([*installed_cli(), "serve"], cwd=tmp_path, env=clean, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _health(url, proc), what="the daemon to answer /health")
        health = requests.get(url + "/health", timeout=10).json()
        assert health["auth"] == "disabled"
        reply = requests.post(url + "/alert", data=alert_body(42), timeout=10)
        assert reply.status_code == 202
        proc.terminate()
        assert proc.wait(30) == 0
    log_text = (tmp_path / "alert_handler.log").read_text()
    warnings = [line for line in log_text.splitlines() if " WARNING " in line]
    assert any("WEBHOOK_TOKEN is not set" in line for line in warnings), log_text
    assert any(".env is readable by other users" in line for line in warnings), log_text
    assert any("LIBRENMS_VERIFY_TLS=false" in line for line in warnings), log_text
    assert DEFAULT_TOKEN not in log_text


def _health(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the daemon exited with {proc.returncode}")
    try:
        return requests.get(url + "/health", timeout=10).status_code == 200
    except requests.RequestException:  # not listening yet, or too busy to answer in time
        return False


def test_state_file_is_0600_even_with_a_permissive_umask(sim: Simulator, tmp_path: Path) -> None:
    """Under umask 000 the state file and its lock are still created 0600 (secrets-adjacent:
    device ids and original addresses) by an in-process daemon."""
    old = os.umask(0)
    try:
        running = RunningDaemon(parse(base_env(sim, tmp_path)))
        try:
            sim.add_device(7, "cpe-7", ports={"port2": "down"})
            assert running.post(alert_body(7)).status_code == 202
        finally:
            assert running.stop() == 0
    finally:
        os.umask(old)
    state = Path(running.cfg.state_file)
    assert json.loads(state.read_text())["devices"]
    assert mode(state) == 0o600
    assert mode(state.with_name(state.name + ".lock")) == 0o600
