"""The operator's commands, run as the installed `alert-handler` in a directory holding a .env,
against a running daemon (in-process or a real process) and the LibreNMS simulator."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import requests

from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import (
    AUTH,
    UNSUP,
    WEBHOOK_TOKEN,
    DaemonProcess,
    RunningDaemon,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    wait_for,
)

COMMANDS = ("serve", "check", "status", "release", "track", "pause", "resume", "demo")
_KEEP_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")


def write_env(workdir: Path, env: dict[str, str]) -> None:
    """The .env the commands read from their working directory."""
    path = workdir / ".env"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    path.chmod(0o600)


def cli(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`alert-handler <args>` in `workdir`; `env` are real environment variables (they win)."""
    clean = {k: v for k, v in os.environ.items() if k in _KEEP_ENV}
    clean.update(PYTHONIOENCODING="utf-8", **env)
    return subprocess.run(
        [*installed_cli(), *args],
        cwd=workdir,
        env=clean,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def start_with_env(
    start_daemon: StartDaemon, sim: Simulator, workdir: Path, **extra: str
) -> RunningDaemon:
    """An in-process daemon on a fixed port, and a .env in `workdir` that points the CLI at it."""
    settings = {**extra, "LISTEN_PORT": str(free_port())}
    daemon = start_daemon(**settings)
    write_env(workdir, base_env(sim, workdir, **settings))
    return daemon


def phase(d: RunningDaemon, device_id: int) -> str | None:
    record = d.daemon.store.get(device_id)
    return None if record is None else record.phase.value


def test_help_on_every_command_and_usage_errors_exit_2(tmp_path: Path) -> None:
    """1. `alert-handler <command> --help` prints that command's usage, exit 0.
    2. A missing or malformed argument is a usage error: one line naming the command's help,
    exit 2, nothing else runs."""
    for command in COMMANDS:
        result = cli(tmp_path, command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: alert-handler {command}" in result.stdout
    for args in (["release"], ["release", "0"], ["track", "42; rm -rf /"], ["status", "--x"]):
        result = cli(tmp_path, *args)
        assert result.returncode == 2, args
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"alert-handler {args[0]}: "), result.stderr
        assert result.stderr.rstrip().endswith(f"see `alert-handler {args[0]} --help`")
    assert not (tmp_path / "device_state.json").exists()


def test_bad_config_exits_2_naming_the_key(sim: Simulator, tmp_path: Path) -> None:
    """1. A bad value in .env: every command exits 2 with one line naming the key, and
    `check` says so as its ✘ line.
    2. A missing --env-file is a configuration error too. No secret is printed."""
    write_env(tmp_path, base_env(sim, tmp_path, LISTEN_PORT="99999"))
    for command in ("status", "pause", "resume", "release 5", "track 5"):
        result = cli(tmp_path, *command.split())
        assert result.returncode == 2, command
        assert "LISTEN_PORT: must be a port number, got '99999'" in result.stderr
    check = cli(tmp_path, "check")
    assert check.returncode == 2
    assert check.stdout.startswith("\u2718 configuration: LISTEN_PORT: must be a port number")
    missing = cli(tmp_path, "status", "--env-file", str(tmp_path / "nope.env"))
    assert missing.returncode == 2 and "--env-file" in missing.stderr
    for result in (check, missing):
        assert DEFAULT_TOKEN not in result.stdout + result.stderr
        assert WEBHOOK_TOKEN not in result.stdout + result.stderr


def test_status_from_the_daemon_then_from_the_state_file(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. A device is forced down; `status` reads the running daemon's /devices and says so.
    2. /devices needs the webhook token (`status` with another token: exit 1); `status --json`
    shows the same rows.
    3. The daemon stops: `status` reads the state file and says the daemon is not running."""
    sim.add_device(42, "cpe-42", overwrite_ip="198.51.100.42", ports={"port2": "down"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    assert d.post(alert_body(42)).status_code == 202
    wait_for(lambda: phase(d, 42) == "down", what="forced down")

    live = cli(tmp_path, "status")
    assert live.returncode == 0, live.stderr
    lines = live.stdout.splitlines()
    assert lines[0] == f"1 device tracked, from the running daemon at {d.url}"
    assert lines[1].startswith("health ok; recovery thread alive"), lines[1]
    headers = ["device", "hostname", "phase", "attempts", "first seen", "next attempt"]
    assert re.split(r"\s{2,}", lines[2]) == [*headers, "last error"]
    assert lines[3].split()[:4] == ["42", "cpe-42", "down", "0"]

    assert requests.get(d.url + "/devices", timeout=5).status_code == 401
    rows = requests.get(d.url + "/devices", headers=AUTH, timeout=5).json()["devices"]
    as_json = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert as_json["devices"] == rows
    row = rows[0]
    assert {k: row[k] for k in ("device_id", "hostname", "phase", "attempts", "last_error")} == {
        "device_id": 42,
        "hostname": "cpe-42",
        "phase": "down",
        "attempts": 0,
        "last_error": None,
    }
    assert row["first_seen"] < row["next_attempt"]
    wrong = cli(tmp_path, "status", WEBHOOK_TOKEN="not-the-daemons-token-0123")
    assert wrong.returncode == 1
    assert "the daemon answered 401" in wrong.stderr and "WEBHOOK_TOKEN" in wrong.stderr

    assert d.stop() == 0
    offline = cli(tmp_path, "status")
    assert offline.returncode == 0, offline.stderr
    lines = offline.stdout.splitlines()
    state_file = tmp_path / "device_state.json"
    assert (
        lines[0]
        == f"1 device tracked, from the state file {state_file} (the daemon is not running)"
    )
    assert lines[2].split()[:4] == ["42", "cpe-42", "down", "0"]


def test_release_restores_the_original_and_forgets(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. A device whose overwrite_ip was 198.51.100.7 is forced down (long interval).
    2. `release 7`: exit 0 once the daemon has put 198.51.100.7 back and forgotten it.
    3. `release 7` again: not tracked, exit 1. With no daemon running: exit 1, file untouched."""
    sim.add_device(7, "cpe-7", overwrite_ip="198.51.100.7", ports={"port2": "down"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    assert d.post(alert_body(7)).status_code == 202
    wait_for(lambda: phase(d, 7) == "down", what="forced down")
    assert sim.device(7)["overwrite_ip"] == UNSUP

    result = cli(tmp_path, "release", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "device 7: released, overwrite_ip restored to 198.51.100.7; no longer tracked"
    )
    assert sim.device(7)["overwrite_ip"] == "198.51.100.7"
    assert sim.patches(7) == [(7, UNSUP), (7, "198.51.100.7")]
    assert d.daemon.store.get(7) is None

    again = cli(tmp_path, "release", "7")
    assert again.returncode == 1 and "device 7 is not tracked" in again.stderr
    assert d.stop() == 0
    state_before = (tmp_path / "device_state.json").read_bytes()
    offline = cli(tmp_path, "release", "7")
    assert offline.returncode == 1 and "no daemon answers" in offline.stderr
    assert (tmp_path / "device_state.json").read_bytes() == state_before


def test_track_by_hand_handles_the_device_as_an_alert_would(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. No alert came for device 8 (port2 down): `track 8` makes the daemon take it.
    2. It reads the original and forces the device down, as for an alert.
    3. `track 8` again only says it is already tracked."""
    sim.add_device(8, "cpe-8", ports={"port2": "down"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    result = cli(tmp_path, "track", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device 8: tracked, handled as if an alert had arrived"
    wait_for(lambda: phase(d, 8) == "down", what="forced down")
    assert sim.patches(8) == [(8, UNSUP)]
    record = d.daemon.store.get(8)
    assert record is not None and record.original_recorded and record.original_overwrite_ip is None
    again = cli(tmp_path, "track", "8")
    assert again.returncode == 0 and again.stdout.strip() == "device 8: already tracked"


def test_track_of_a_device_on_unsupervised_ip_is_not_held_by_the_gate(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. CONFIRM_ABOVE=1 and three alerts: the gate holds (one passed, two held).
    2. Device 9, left on UNSUPERVISED_IP by the old script, appears after the first
       reconciliation; `track 9` reads LibreNMS first and says so to the daemon, so the gate
       does not hold it (it is changed already): its port is up, it is restored and forgotten.
    3. The held devices stay held; a body whose overwrite_ip is not text is refused 400."""
    for device_id in (1, 2, 3):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    d = start_with_env(
        start_daemon, sim, tmp_path, CONFIRM_ABOVE="1", RECONCILE_INTERVAL_SEC="86400"
    )
    wait_for(lambda: any(r.path == "/alerts" for r in sim.requests), what="the first reconcile")
    for device_id in (1, 2, 3):
        assert d.post(alert_body(device_id)).status_code == 202

    def held() -> list[int]:
        return sorted(i for i, r in d.daemon.store.records().items() if r.held)

    wait_for(lambda: held() == [2, 3], what="two devices held")
    sim.add_device(9, "cpe-9", overwrite_ip=UNSUP, ports={"port2": "up"})
    result = cli(tmp_path, "track", "9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "device 9: tracked, handled as if an alert had arrived"
    wait_for(lambda: d.daemon.store.get(9) is None, what="device 9 restored and forgotten")
    assert [data for _, data in sim.patches(9)] == [None]  # the original: unknown, so null
    assert held() == [2, 3]
    bad = requests.post(
        d.url + "/devices/4/track", data='{"overwrite_ip": 5}', headers=AUTH, timeout=10
    )
    assert bad.status_code == 400 and bad.json()["error"] == "overwrite_ip must be text or null"
    assert d.daemon.store.get(4) is None


def metric(url: str, name: str) -> float:
    """One unlabelled sample of the daemon's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    raise AssertionError(f"{name} not in /metrics")


def test_pause_and_resume_persist_across_restarts(sim: Simulator, tmp_path: Path) -> None:
    """1. `alert-handler serve` forces device 61 down; `pause`: /health, /metrics and `status`
    show it.
    2. An alert for device 62 is recorded (202) but nothing is done with it. `release 61` still
    runs while paused, so the scheduler has passed over 62 by the time 61 is restored.
    3. The daemon restarts: still paused, 62 still untouched. `resume`: 62 is forced down.
    4. With the daemon stopped, `pause` writes the state file; `status` reads it back."""
    sim.add_device(61, "cpe-61", ports={"port2": "down"})
    sim.add_device(62, "cpe-62", overwrite_ip="198.51.100.62", ports={"port2": "down"})
    port = free_port()
    env = base_env(sim, tmp_path, LISTEN_PORT=str(port), RECOVERY_INTERVAL_SEC="60")
    first = DaemonProcess(tmp_path, env, port)
    try:
        assert first.post(alert_body(61)).status_code == 202
        wait_for(lambda: sim.device(61)["overwrite_ip"] == UNSUP, what="61 forced down")
        paused = cli(tmp_path, "pause")
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.startswith("paused: alerts are recorded")
        assert requests.get(first.url + "/health", timeout=5).json()["paused"] is True
        assert metric(first.url, "alert_handler_paused") == 1
        assert first.post(alert_body(62)).status_code == 202
        release = cli(tmp_path, "release", "61")
        assert release.returncode == 0, release.stderr
        assert sim.device(61)["overwrite_ip"] is None
        status = cli(tmp_path, "status")
        assert "PAUSED" in status.stdout and "62" in status.stdout
        assert first.terminate() == 0
    finally:
        if first.proc.poll() is None:
            first.kill()
    assert not any(r.path.startswith("/devices/62") for r in sim.requests)
    state = json.loads((tmp_path / "device_state.json").read_text())
    assert state["paused"] is True and list(state["devices"]) == ["62"]

    second = DaemonProcess(tmp_path, env, port)
    try:
        assert requests.get(second.url + "/health", timeout=5).json()["paused"] is True
        assert metric(second.url, "alert_handler_paused") == 1
        resumed = cli(tmp_path, "resume")
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: sim.device(62)["overwrite_ip"] == UNSUP, what="62 forced down")
        assert requests.get(second.url + "/health", timeout=5).json()["paused"] is False
        assert metric(second.url, "alert_handler_paused") == 0
        assert second.terminate() == 0
    finally:
        if second.proc.poll() is None:
            second.kill()
    assert sim.patches(62) == [(62, UNSUP)]

    offline = cli(tmp_path, "pause")
    assert offline.returncode == 0, offline.stderr
    assert "no daemon running" in offline.stdout
    assert json.loads((tmp_path / "device_state.json").read_text())["paused"] is True
    status = cli(tmp_path, "status")
    assert "(the daemon is not running)" in status.stdout and "PAUSED" in status.stdout


@pytest.fixture
def check_env(sim: Simulator, tmp_path: Path) -> dict[str, str]:
    """Settings for `check` against `sim`; no daemon needed."""
    return base_env(sim, tmp_path)


def check_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    lines = result.stdout.splitlines()
    assert lines and all(line[0] in "\u2714\u2718" for line in lines), result.stdout
    return lines


def _dark_failure(line: str) -> bool:
    """check's ✘ line for UNSUPERVISED_IP 127.0.0.50 pinged from the local poller: it answers
    (or, without fping on this host, cannot be proven dark); either way with the fix."""
    return line.startswith(f"\u2718 UNSUPERVISED_IP {UNSUP} ") and (
        ("ANSWERS ping from poller local" in line and "ip route add blackhole" in line)
        or "cannot" in line
    )


def test_check_with_an_admin_token_and_a_device(
    sim: Simulator, tmp_path: Path, check_env: dict[str, str]
) -> None:
    """1. `check 42`: config, state file, API, admin rights (PATCH of an ignored field on
    device 0 answers 404 to an admin), the poll command, a poll of device 42: all ✔, exit 0.
    2. `check 43` of a forced-down device: exit 6 ("device down") is what it should answer.
    3. With DRY_RUN=true the rights probe is skipped: no PATCH reaches LibreNMS at all.
    4. The component rights: one line each for create, edit and delete, the probe removed."""
    sim.add_device(42, "cpe-42", ports={"port2": "up"})
    sim.add_device(43, "cpe-43", overwrite_ip=UNSUP, ports={"port2": "down"})
    write_env(tmp_path, check_env)
    result = cli(tmp_path, "check", "42")
    # The default UNSUPERVISED_IP is loopback: it answers LibreNMS's fping on this host (the
    # poller here), which fails the check with the fix (issue 21); every other line is ✔.
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in check_lines(result) if not _dark_failure(line)]
    assert len(lines) == len(check_lines(result)) - 1
    state_file = tmp_path / "device_state.json"
    assert all(line.startswith("\u2714") or line.endswith("(warning only)") for line in lines)
    # The default UNSUPERVISED_IP is loopback: it may answer, which check says (issue 11).
    assert [line for line in lines if line.endswith("(warning only)")] == [
        line for line in lines if "UNSUPERVISED_IP 127.0.0.50 is a loopback address" in line
    ]
    lines = [line for line in lines if not line.endswith("(warning only)")]
    assert lines[0].startswith("\u2714 configuration is valid")
    assert lines[1] == f"\u2714 state file {state_file}: none yet (created at the first alert)"
    journal = tmp_path / "device_state.events.jsonl"  # named after STATE_FILE
    assert lines.pop(2) == f"\u2714 event journal {journal}: writable"  # issue 13
    assert lines[2] == f"\u2714 LibreNMS API at {sim.url} answers: 2 devices"
    assert lines[3] == "\u2714 API token has admin rights"
    # Issue 20: a probe component is created, edited and deleted on the device.
    assert lines[4:7] == [
        "\u2714 API token may create device components (POST /devices/{id}/components/{type})",
        "\u2714 API token may edit device components (PUT /devices/{id}/components)",
        "\u2714 API token may delete device components (DELETE /devices/{id}/components/{id})",
    ]
    assert sim.components() == {}
    assert lines[7].startswith("\u2714 poll method local: local command ")
    assert lines[8].startswith("\u2714 poll of device 42: exit 0 (polled)")
    probes = [r for r in sim.requests if r.method == "PATCH"]
    assert [(r.path, r.status) for r in probes] == [("/devices/0", 404)]
    assert sim.patches() == []
    assert DEFAULT_TOKEN not in result.stdout + result.stderr

    forced = cli(tmp_path, "check", "43")
    assert [line for line in check_lines(forced) if line.startswith("\u2718")] == [
        line for line in check_lines(forced) if _dark_failure(line) or "(warning only)" in line
    ]
    expected = (
        f"\u2714 poll of device 43: exit 6 (device down) (expected: it is forced down on {UNSUP})"
    )
    assert any(line.startswith(expected) for line in check_lines(forced))

    sim.clear_requests()
    dry = cli(tmp_path, "check", DRY_RUN="true")
    assert dry.returncode == 1 and sum(map(_dark_failure, check_lines(dry))) == 1, dry.stdout
    assert "\u2714 DRY_RUN=true: token rights not probed (that needs a PATCH)" in check_lines(dry)
    assert not any(r.method in ("PATCH", "POST", "PUT", "DELETE") for r in sim.requests)


def test_check_with_a_read_only_token(tmp_path: Path) -> None:
    """1. A read-only token can list devices but LibreNMS refuses its PATCH with 403: that check
    is ✘ and the exit status 1.
    2. A POLL_COMMAND whose program does not exist is ✘ too."""
    read_only = "fedcba9876543210fedcba9876543210"
    with Simulator(read_only_token=read_only) as sim:
        env = base_env(sim, tmp_path, LIBRENMS_API_TOKEN=read_only)
        env["POLL_COMMAND"] = "/nonexistent/lnms device:poll {device_id}"
        write_env(tmp_path, env)
        result = cli(tmp_path, "check")
        probes = [(r.method, r.path, r.status) for r in sim.requests if r.method == "PATCH"]
        url = sim.url
    assert result.returncode == 1
    lines = check_lines(result)
    assert f"\u2714 LibreNMS API at {url} answers: 0 devices" in lines
    assert "\u2718 API token is read-only: LibreNMS will refuse every PATCH (403)" in lines
    assert "\u2718 poll method local: POLL_COMMAND: /nonexistent/lnms not found" in lines
    assert probes == [("PATCH", "/devices/0", 403)]
    assert read_only not in result.stdout + result.stderr


def test_check_with_a_wrong_token_and_an_unknown_device(
    sim: Simulator, tmp_path: Path, check_env: dict[str, str]
) -> None:
    """A token LibreNMS does not know (401) and a poll of a device that does not exist (exit 1):
    both ✘, exit 1, and the token is not printed."""
    wrong = "00000000000000000000000000000000"
    write_env(tmp_path, {**check_env, "LIBRENMS_API_TOKEN": wrong})
    result = cli(tmp_path, "check", "4242")
    assert result.returncode == 1
    lines = check_lines(result)
    assert any(
        line.startswith(f"\u2718 LibreNMS API at {sim.url}: GET /devices: HTTP 401")
        and "check LIBRENMS_API_TOKEN" in line
        for line in lines
    ), lines
    assert any(line.startswith("\u2718 poll of device 4242: exit 1") for line in lines), lines
    assert wrong not in result.stdout + result.stderr
