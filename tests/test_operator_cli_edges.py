"""The command line's rough edges a new operator hit (issue 12, "The CLI"): finding a daemon on
another port, maintenance commands that must not throw devices away, `check` as strict as
`serve`, piped output, odd env files, device ids, plurals, HEAD and GET /, and releasing a device
left on UNSUPERVISED_IP that the daemon does not track. Run as the installed `alert-handler`,
against the simulator and the daemon over real sockets."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import (
    AUTH,
    UNSUP,
    DaemonProcess,
    StartDaemon,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    interrupt,
    simulator_cli,
    spawn,
    wait_for,
)
from tests.test_operator_cli import cli, phase, start_with_env, write_env

OK, FAIL = "\u2714", "\u2718"


def lock_lines(state_file: Path) -> list[str]:
    """The lines of `<STATE_FILE>.lock`."""
    return state_file.with_name(state_file.name + ".lock").read_text().splitlines()


def test_commands_find_the_daemon_through_the_lock_file(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. The daemon runs with LISTEN_PORT=0 (any free port): the lock file holds its pid and
    the address it really listens on.
    2. The env file the commands read says LISTEN_PORT=0 too (or another port): status, track,
    pause, resume and release all reach the daemon at its real address.
    3. Once it has stopped, the lock file names no address and `status` reads the state file."""
    sim.add_device(42, "cpe-42", overwrite_ip="198.51.100.42", ports={"port2": "down"})
    d = start_daemon(RECOVERY_INTERVAL_SEC="60")  # LISTEN_PORT=0
    state_file = tmp_path / "device_state.json"
    assert lock_lines(state_file) == [str(os.getpid()), d.url]
    write_env(tmp_path, base_env(sim, tmp_path, LISTEN_PORT="0", RECOVERY_INTERVAL_SEC="60"))

    status = cli(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == f"0 devices tracked, from the running daemon at {d.url}"
    other_port = cli(tmp_path, "status", LISTEN_PORT=str(free_port()))
    assert other_port.stdout.splitlines()[0].endswith(f"from the running daemon at {d.url}")

    tracked = cli(tmp_path, "track", "42")
    assert tracked.returncode == 0, tracked.stderr
    wait_for(lambda: phase(d, 42) == "down", what="forced down")
    assert cli(tmp_path, "pause").returncode == 0
    assert d.daemon.store.paused
    assert cli(tmp_path, "resume").returncode == 0
    assert not d.daemon.store.paused
    released = cli(tmp_path, "release", "42")
    assert released.returncode == 0, released.stderr
    assert sim.device(42)["overwrite_ip"] == "198.51.100.42"

    assert d.stop() == 0
    assert lock_lines(state_file) == []
    offline = cli(tmp_path, "status")
    assert offline.returncode == 0, offline.stderr
    assert "(the daemon is not running)" in offline.stdout.splitlines()[0]


def test_a_killed_daemons_lock_file_is_not_trusted(sim: Simulator, tmp_path: Path) -> None:
    """1. `alert-handler serve` runs on port A; the env file the commands read says port B.
    `status` finds it on A through the lock file.
    2. It is killed with SIGKILL: the lock file still names its pid and address, but the pid is
    gone, so `status` says the daemon is not running and reads the state file; offline `pause`
    takes the lock and writes the state file."""
    port = free_port()
    daemon = DaemonProcess(tmp_path, base_env(sim, tmp_path, LISTEN_PORT=str(port)), port)
    try:
        write_env(tmp_path, base_env(sim, tmp_path, LISTEN_PORT=str(free_port())))
        state_file = tmp_path / "device_state.json"
        assert lock_lines(state_file) == [str(daemon.proc.pid), daemon.url]
        live = cli(tmp_path, "status")
        assert live.returncode == 0, live.stderr
        assert live.stdout.splitlines()[0].endswith(f"from the running daemon at {daemon.url}")
    finally:
        daemon.kill()
    assert lock_lines(state_file) == [str(daemon.proc.pid), daemon.url]
    offline = cli(tmp_path, "status")
    assert offline.returncode == 0, offline.stderr
    assert "(the daemon is not running)" in offline.stdout
    paused = cli(tmp_path, "pause")
    assert paused.returncode == 0, paused.stderr
    assert "no daemon running" in paused.stdout


def test_pause_and_resume_refuse_a_corrupt_state_file(sim: Simulator, tmp_path: Path) -> None:
    """1. No daemon runs and the state file is corrupt: `pause` and `resume` exit 1, say what
    `serve` would do, and leave the file byte for byte as it was (nothing set aside).
    2. `status` refuses too; `check` says the file is corrupt and that `serve` moves it aside
    under `<name>.corrupt-<UTC time>` and starts with no device tracked."""
    write_env(tmp_path, base_env(sim, tmp_path))
    state_file = tmp_path / "device_state.json"
    garbage = b'{"version": 1, "devices": {"42": {"phase": "down", "orig'
    state_file.write_bytes(garbage)
    for command in ("pause", "resume", "status"):
        result = cli(tmp_path, command)
        assert result.returncode == 1, (command, result.stdout)
        assert f"the state file {state_file} is corrupt" in result.stderr, result.stderr
        assert "device_state.json.corrupt-" in result.stderr
    assert state_file.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == []
    check = cli(tmp_path, "check")
    assert check.returncode == 1
    line = next(x for x in check.stdout.splitlines() if "state file" in x)
    assert re.fullmatch(
        rf"{FAIL} state file {re.escape(str(state_file))} is corrupt \(.+\): `serve` will move "
        r"it to device_state\.json\.corrupt-\d{8}T\d{6} \(the time of the start, UTC\) and "
        r"start with no device tracked",
        line,
    ), line
    assert state_file.read_bytes() == garbage


def test_check_warns_as_serve_does(sim: Simulator, tmp_path: Path) -> None:
    """1. No WEBHOOK_TOKEN, an env file readable by everyone, an unknown name in it, LOG_FILE
    in a directory that does not exist yet.
    2. `check` prints each warning `serve` logs at start, word for word (✘, warning only: the
    exit status stays 0).
    3. `serve` logs them, and logs once that it created the log directory."""
    env = base_env(
        sim,
        tmp_path,
        LOG_FILE=str(tmp_path / "logs" / "alert_handler.log"),
        UNSUPERVISED_IP="203.0.113.254",  # answers nowhere: its warning is another test's
    )
    del env["WEBHOOK_TOKEN"]
    env["RECOVERY_INTERVALL_SEC"] = "5"
    write_env(tmp_path, env)
    (tmp_path / ".env").chmod(0o644)
    check = cli(tmp_path, "check")
    assert check.returncode == 0, check.stdout
    warned = [
        line.removeprefix(f"{FAIL} ").removesuffix(" (warning only)")
        for line in check.stdout.splitlines()
        if line.endswith("(warning only)")
    ]
    assert warned == [
        "WEBHOOK_TOKEN is not set: anyone who can reach the port can post alerts",
        f"{tmp_path / '.env'} is readable by other users (mode 644); chmod 600 it",
        "unknown setting RECOVERY_INTERVALL_SEC in .env: did you mean RECOVERY_INTERVAL_SEC?",
    ]
    assert not (tmp_path / "logs").exists()  # check creates nothing

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
    proc = spawn(
        [*installed_cli(), "serve"],
        cwd=tmp_path,
        env={**clean, "LISTEN_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/health"
    wait_for(lambda: _answers(url), what="the daemon to answer /health")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    log_text = (tmp_path / "logs" / "alert_handler.log").read_text()
    for text in warned:
        assert text in log_text, text
    created = [line for line in log_text.splitlines() if "created the directory" in line]
    assert len(created) == 1
    assert created[0].endswith(f"step=start created the directory {tmp_path / 'logs'} for LOG_FILE")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=10).status_code == 200
    except requests.RequestException:  # not listening yet, or too busy to answer in time
        return False


def test_piped_output_whose_reader_leaves_ends_quietly(sim: Simulator, tmp_path: Path) -> None:
    """`alert-handler status | head -1` where head has already gone: no traceback, nothing on
    stderr; the command ends by SIGPIPE as Unix filters do."""
    write_env(tmp_path, base_env(sim, tmp_path))
    (tmp_path / "device_state.json").write_text(
        json.dumps({"version": 1, "paused": False, "devices": {"42": {"phase": "new"}}})
    )
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    proc = spawn(
        [*installed_cli(), "status"],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader leaves before the first line is written
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(30) == -signal.SIGPIPE
    assert stderr == b""


def test_any_readable_env_file_and_no_dotenv_hint(sim: Simulator, tmp_path: Path) -> None:
    """1. `--env-file /dev/null` is an empty env file: the environment gives the settings.
    2. A pipe (`--env-file <(...)`) is read once, like a file.
    3. With no ./.env and a required name missing, the error says no ./.env was found."""
    settings = base_env(sim, tmp_path)
    devnull = cli(tmp_path, "status", "--env-file", "/dev/null", **settings)
    assert devnull.returncode == 0, devnull.stderr
    assert devnull.stdout.startswith("0 devices tracked, from the state file")

    fifo = tmp_path / "settings.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in settings.items()))

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    piped = cli(tmp_path, "status", "--env-file", str(fifo))
    writer.join(10)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("0 devices tracked, from the state file")

    missing = cli(tmp_path, "status")
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[0] == (
        "alert-handler: configuration error: LIBRENMS_URL: is required "
        f"(e.g. http://librenms.example/api/v0) (no ./.env found in {tmp_path}; "
        "pass --env-file FILE)"
    )
    check = cli(tmp_path, "check")
    assert check.returncode == 2 and f"no ./.env found in {tmp_path}" in check.stdout


def test_track_checks_the_device_in_librenms(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. `track 555`, a device LibreNMS does not have: exit 1, nothing tracked.
    2. LibreNMS unreachable: exit 1, naming --force; `track --force 555` tracks it anyway.
    3. `track 99999999999`: a usage error that says what a device id may be."""
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    unknown = cli(tmp_path, "track", "555")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == (
        "alert-handler: device 555: LibreNMS has no such device; not tracked"
    )
    assert d.daemon.store.get(555) is None

    nowhere = f"http://127.0.0.1:{free_port()}/api/v0"
    offline = cli(tmp_path, "track", "555", LIBRENMS_URL=nowhere)
    assert offline.returncode == 1
    assert "cannot ask LibreNMS whether it exists" in offline.stderr
    assert "`alert-handler track --force 555` tracks it anyway" in offline.stderr
    assert d.daemon.store.get(555) is None
    forced = cli(tmp_path, "track", "--force", "555", LIBRENMS_URL=nowhere)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == "device 555: tracked, handled as if an alert had arrived"
    # The daemon's own LibreNMS is up: its recovery thread finds no such device, forgets it.
    wait_for(lambda: d.daemon.store.get(555) is None, what="555 forgotten")

    too_big = cli(tmp_path, "track", "99999999999")
    assert too_big.returncode == 2
    assert (
        "a device id is a LibreNMS device_id, a whole number from 1 to 2147483647; "
        "got '99999999999'" in too_big.stderr
    )


def test_plurals_in_status_and_check(sim: Simulator, tmp_path: Path) -> None:
    """One device is "1 device", in `status` and in both of `check`'s counts."""
    sim.add_device(42, "cpe-42", ports={"port2": "up"})
    write_env(tmp_path, base_env(sim, tmp_path))
    (tmp_path / "device_state.json").write_text(
        json.dumps({"version": 1, "paused": False, "devices": {"42": {"phase": "new"}}})
    )
    status = cli(tmp_path, "status")
    assert status.stdout.startswith("1 device tracked, from the state file")
    check = cli(tmp_path, "check").stdout
    assert f"{OK} state file {tmp_path / 'device_state.json'}: 1 device tracked\n" in check
    assert f"{OK} LibreNMS API at {sim.url} answers: 1 device\n" in check


def test_head_and_the_status_page_route(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. HEAD on a GET endpoint answers as GET does, without the body (the token still
    applies to /devices and to the status page at GET /).
    2. A wrong method names the allowed ones."""
    d = start_daemon()
    for path, auth in (("/health", {}), ("/metrics", {}), ("/", AUTH)):
        got = requests.get(d.url + path, headers=auth, timeout=5)
        head = requests.head(d.url + path, headers=auth, timeout=5)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["Content-Type"] == got.headers["Content-Type"]
        # Each answer is live (times, counters), so only the form of the length is compared.
        assert head.headers["Content-Length"].isdigit()
    assert requests.head(d.url + "/devices", timeout=5).status_code == 401
    assert requests.head(d.url + "/devices", headers=AUTH, timeout=5).status_code == 200
    page = requests.get(d.url + "/", timeout=5)
    assert page.status_code == 401 and page.headers["WWW-Authenticate"].startswith("Basic")
    assert (
        requests.get(d.url + "/", headers=AUTH, timeout=5)
        .headers["Content-Type"]
        .startswith("text/html")
    )
    wrong = requests.head(d.url + "/alert", timeout=5)
    # GET /alert is a delivery with the fields in the query (the transport's API Method)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET, POST, PUT"
    assert requests.put(d.url + "/health", timeout=5).headers["Allow"] == "GET, HEAD"
    assert requests.delete(d.url + "/", timeout=5).headers["Allow"] == "GET, HEAD, POST, PUT"


def test_release_of_an_untracked_device(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. Device 9 sits on UNSUPERVISED_IP but the daemon does not track it (a crash, the old
    script): `release 9` restores null, says its original was unknown, and it stays untracked.
    2. Device 10 is untracked and not on UNSUPERVISED_IP: `release 10` refuses, no PATCH.
    3. Device 555 does not exist in LibreNMS: `release 555` refuses.
    4. POST /devices/10/release straight to the daemon: recorded, then forgotten untouched."""
    sim.add_device(9, "cpe-9", ports={"port2": "up"})
    sim.add_device(10, "cpe-10", overwrite_ip="198.51.100.10", ports={"port2": "up"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    # After the reconciler's first pass (which would adopt it), someone puts 9 on
    # UNSUPERVISED_IP by hand, as the old script or a daemon with a lost state file left it.
    wait_for(lambda: any(r.path == "/devices" for r in sim.requests), what="reconcile pass")
    patch = requests.patch(
        f"{sim.url}/devices/9",
        json={"field": "overwrite_ip", "data": UNSUP},
        headers={"X-Auth-Token": DEFAULT_TOKEN},
        timeout=5,
    )
    assert patch.status_code == 200

    released = cli(tmp_path, "release", "9")
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == (
        f"device 9: was not tracked; restored overwrite_ip null (was {UNSUP}): its original "
        "was unknown, so LibreNMS reaches it by its hostname again"
    )
    assert sim.patches(9) == [(9, UNSUP), (9, None)]
    assert d.daemon.store.get(9) is None

    refused = cli(tmp_path, "release", "10")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "alert-handler: device 10 is not tracked and not forced down (its overwrite_ip is "
        f"198.51.100.10, not UNSUPERVISED_IP {UNSUP}): nothing to release"
    )
    gone = cli(tmp_path, "release", "555")
    assert gone.returncode == 1
    assert "device 555 is not tracked, and LibreNMS has no such device" in gone.stderr

    reply = requests.post(d.url + "/devices/10/release", headers=AUTH, timeout=5)
    assert reply.status_code == 200 and reply.json()["tracked"] is False
    wait_for(lambda: d.daemon.store.get(10) is None, what="10 forgotten")
    assert sim.patches(10) == []
    assert sim.device(10)["overwrite_ip"] == "198.51.100.10"


def test_the_simulator_command_lets_a_user_try_every_command(tmp_path: Path) -> None:
    """1. `alert-handler simulator --write-env sim.env` serves four CPEs and prints the URL,
    the API token, the settings and how to flip a port.
    2. A daemon started with those settings (a short interval from the environment) takes
    device 101 on `track`, and an alert posted as the guide shows.
    3. `alert-handler simulator --flip 101 port2 up`: 101 is restored and forgotten."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
    daemon_port = free_port()
    sim_proc, guide = simulator_cli(
        tmp_path, "--daemon-port", str(daemon_port), "--write-env", "sim.env", env=clean
    )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        url = guide[0].removeprefix("LibreNMS simulator at ")
        port = url.split(":")[2].split("/")[0]
        assert guide[1] == f"API token: {DEFAULT_TOKEN}"
        assert f"  alert-handler simulator --port {port} --flip 101 port2 up" in guide
        env_lines = (tmp_path / "sim.env").read_text().splitlines()
        assert [f"  {line}" for line in env_lines] == [
            g for g in guide if g.startswith("  ") and "=" in g.split()[0]
        ]
        assert (tmp_path / "sim.env").stat().st_mode & 0o777 == 0o600
        token = next(x for x in env_lines if x.startswith("WEBHOOK_TOKEN=")).split("=", 1)[1]
        curl = next(g for g in guide if g.startswith("  curl -H 'Authorization"))
        body = curl.split("--data '")[1].split("'")[0]

        daemon = spawn(
            [*installed_cli(), "--env-file", "sim.env"],
            cwd=tmp_path,
            env={**clean, "RECOVERY_INTERVAL_SEC": "0.5"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        health = f"http://127.0.0.1:{daemon_port}/health"
        wait_for(lambda: _answers(health), what="the daemon to answer /health")
        ah = ("--env-file", "sim.env")
        assert cli(tmp_path, *ah, "track", "101").returncode == 0
        alert = requests.post(
            f"http://127.0.0.1:{daemon_port}/alert",
            data=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        assert alert.status_code == 202, alert.text

        def forced_down() -> dict[int, bool]:
            """Each tracked device: whether it was forced down (it cycles down, restoring,
            forcing down every 0.5 s: a device seen down, or past an attempt, was)."""
            out = json.loads(cli(tmp_path, *ah, "status", "--json").stdout)
            return {
                r["device_id"]: r["phase"] == "down" or r["attempts"] > 0 for r in out["devices"]
            }

        wait_for(lambda: forced_down() == {101: True, 104: True}, what="101 and 104 forced down")
        flip = cli(tmp_path, "simulator", "--port", port, "--flip", "101", "port2", "up")
        assert flip.returncode == 0, flip.stderr
        assert (
            flip.stdout.strip() == "device 101 port2: link up (LibreNMS sees it at the next poll)"
        )
        wait_for(lambda: set(forced_down()) == {104}, what="101 restored and forgotten")
        bad = cli(tmp_path, "simulator", "--port", port, "--flip", "101", "port2", "sideways")
        assert bad.returncode == 1 and "the simulator answered 400" in bad.stderr
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
    assert interrupt(sim_proc) == 0


# -- every command, bad inputs (issue 22, item 12) ----------------------------------------------
# (arguments, exit status, a part of the one stderr line). Exit 2: a usage mistake, said by the
# command's parser ("alert-handler <command>: ...; see `alert-handler <command> --help`").
# Exit 1: a refusal (here: no daemon answers), "alert-handler: ...".
USAGE_MISTAKES: list[tuple[list[str], str]] = [
    (["stauts"], "unknown command 'stauts' (did you mean status?)"),
    (["stats", "--json"], "unknown command 'stats' (did you mean status?)"),
    (["status", "--jsn"], "unrecognized arguments: --jsn (did you mean --json?)"),
    (["status", "extra"], "unrecognized arguments: extra"),
    (["serve", "now"], "unrecognized arguments: now"),
    (["check", "0"], "a device id is a LibreNMS device_id"),
    (["check", "--verbse"], "(did you mean --verbose?)"),
    (["history", "--since", "yesterday"], "'yesterday': give 7d, 12h, 30m or an ISO 8601 time"),
    (["history", "--since=-5m"], "'-5m': give 7d"),
    (["history", "--since", "2026-13-45"], "'2026-13-45': give 7d"),
    (["history", "--device", "0"], "a device id is a LibreNMS device_id"),
    (["report", "--since", "yesterday"], "'yesterday': give 7d, 12h, 30m or an ISO 8601 time"),
    (["events", "-n", "-3"], "-n/--lines: must be a whole number, 0 or more, got '-3'"),
    (["events", "--lines", "x"], "-n/--lines: must be a whole number, 0 or more, got 'x'"),
    (["events", "--folow"], "(did you mean --follow?)"),
    (["demo", "--interval", "0"], "--interval: must be a number of seconds above 0, got '0'"),
    (["demo", "--interval", "-1"], "--interval: must be a number of seconds above 0"),
    (["demo", "--seconds", "1"], "--seconds 1 is too short to show a recovery"),
    (["demo", "--seconds", "nan"], "--seconds: must be a number of seconds above 0"),
    (["release"], "the following arguments are required: device_id"),
    (["release", "101", "--wait", "-1"], "--wait: must be a number of seconds, 0 or more"),
    (["release", "101", "--wiat", "3"], "(did you mean --wait?)"),
    (["track", "2147483648"], "a device id is a LibreNMS device_id"),
    (["track", "42; rm -rf /"], "a device id is a LibreNMS device_id"),
    (["pause", "now"], "unrecognized arguments: now"),
    (["resume", "--force"], "unrecognized arguments: --force"),
    (["silence", "99999999999", "--for", "1h"], "a device id is a LibreNMS device_id"),
    (["silence", "104", "--for=-5m"], "duration -5m is not like 30m, 2h or 1d"),
    (["silence", "104", "--for", "0h"], "a duration must be positive"),
    (["silence", "104"], "the following arguments are required: --for"),
    (["silence", "*", "--for", "1h"], "* matches every device: add --all to mean it"),
    (["silence", "group:x", "--for", "1h"], "a silence takes a device id or a hostname glob"),
    (["unsilence"], "the following arguments are required: target"),
    (["silences", "--jason"], "(did you mean --json?)"),
    (["confirm", "101"], "unrecognized arguments: 101"),
    (["discard", "--all"], "unrecognized arguments: --all"),
    (["notify-test", "--event", "forced-down"], "invalid choice: 'forced-down' (did you mean"),
    (["webhook-secret", "x"], "unrecognized arguments: x"),
    (["simulator", "--port", "70000"], "--port: must be a port number, 0 to 65535"),
    (["simulator", "--daemon-port", "-1"], "--daemon-port: must be a port number"),
    (["simulator", "--flip", "x", "port2", "up"], "--flip: the device id must be a number"),
    (["simulator", "--flip", "101"], "--flip: expected 3 arguments"),
]
REFUSALS: list[tuple[list[str], str]] = [
    (["release", "101"], "no daemon answers at"),
    (["track", "--force", "101"], "no daemon answers at"),
    (["confirm"], "no daemon answers at"),
    (["discard"], "no daemon answers at"),
    (["unsilence", "101"], "no daemon answers at"),
    (["silence", "101", "--for", "1h", "--force"], "no daemon answers at"),
]


def _run_all(
    workdir: Path, table: list[tuple[list[str], str]], **env: str
) -> list[tuple[list[str], str, subprocess.CompletedProcess[str]]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda row: cli(workdir, *row[0], **env), table))
    return [(args, part, result) for (args, part), result in zip(table, results, strict=True)]


def test_every_command_answers_a_mistake_in_one_line(sim: Simulator, tmp_path: Path) -> None:
    """1. Each usage mistake (misspelt command or option, a bad value, a negative count or
    wait, a missing argument) is one line on stderr naming it, with "did you mean" for a close
    misspelling and where the usage is: exit 2, no traceback, nothing on stdout.
    2. Each refusal (no daemon answers) is one line on stderr: exit 1.
    3. Nothing was written: no state file appears."""
    write_env(tmp_path, base_env(sim, tmp_path))
    for args, part, result in _run_all(tmp_path, USAGE_MISTAKES):
        lines = result.stderr.splitlines()
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert len(lines) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, args
        assert part in lines[0], (args, lines[0])
        assert lines[0].startswith("alert-handler"), (args, lines[0])
        assert lines[0].endswith(" --help`"), (args, lines[0])
        assert result.stdout == "", (args, result.stdout)
    for args, part, result in _run_all(tmp_path, REFUSALS):
        lines = result.stderr.splitlines()
        assert result.returncode == 1, (args, result.returncode, result.stderr)
        assert len(lines) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, args
        assert lines[0].startswith("alert-handler: ") and part in lines[0], (args, lines[0])
    assert not (tmp_path / "device_state.json").exists()
    assert sim.patches() == []


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    """`--help` says what a count or wait is when it is not given."""
    for args, shown in (
        (["release", "--help"], "default: 30)"),
        (["events", "--help"], "default: 20)"),
        (["demo", "--help"], "default: 90)"),
        (["demo", "--help"], "default: 5)"),
        (["simulator", "--help"], "default: 8000)"),
        (["history", "--help"], "default: all)"),
    ):
        result = cli(tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert shown in " ".join(result.stdout.split()), (args, result.stdout)


def test_silences_without_a_daemon_reads_the_silences_file(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. A silence set through the running daemon; the daemon stops.
    2. `silences` (and `status`) without a daemon read the silences file beside the state
    file, saying so; --json prints the same rows. The file is left as it was.
    3. A silences file that cannot be read is refused in one line (exit 1), left as it is."""
    sim.add_device(104, "cpe-104", ports={"port2": "up"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    done = cli(tmp_path, "silence", "104", "--for", "2h", "--reason", "lab work")
    assert done.returncode == 0, done.stderr
    live = cli(tmp_path, "silences")
    assert live.returncode == 0, live.stderr
    assert d.stop() == 0
    silences_file = tmp_path / "device_state.json.silences.json"
    before = silences_file.read_bytes()
    offline = cli(tmp_path, "silences")
    assert offline.returncode == 0, offline.stderr
    lines = offline.stdout.splitlines()
    assert lines[0] == f"1 active silence (from {silences_file}: no daemon runs)"
    assert lines[1:] == live.stdout.splitlines()
    as_json = json.loads(cli(tmp_path, "silences", "--json").stdout)
    assert [s["target"] for s in as_json] == ["104"] and as_json[0]["reason"] == "lab work"
    status = cli(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert any(x.startswith("silenced: 104 until ") for x in status.stdout.splitlines())
    assert silences_file.read_bytes() == before

    silences_file.write_text("{not json")
    for command in ("silences", "status"):
        bad = cli(tmp_path, command)
        assert bad.returncode == 1, bad.stdout
        assert len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr
        assert f"the silences file {silences_file} is not JSON" in bad.stderr
    assert silences_file.read_text() == "{not json"


def test_status_shows_the_storm_guard(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """1. MAX_FORCED_DOWN=1, alerts for two devices whose port is down: one is forced down,
    the other waits. `status` has a storm-guard line saying it is engaged, and shows the
    waiting device as `new (storm guard)`, not plain `new`; --json says the same.
    2. With the daemon stopped, `status` works it out from the state file alike.
    3. MAX_FORCED_DOWN=0 (no guard): no such line, the device is plain `new`."""
    for device_id in (201, 202):
        sim.add_device(device_id, f"cpe-{device_id}", ports={"port2": "down"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60", MAX_FORCED_DOWN="1")
    for device_id in (201, 202):
        assert d.post(alert_body(device_id)).status_code == 202
    engaged = "storm guard: 1 of MAX_FORCED_DOWN=1 forced down; ENGAGED: 1 new device waits"

    def status() -> str:
        return cli(tmp_path, "status").stdout

    def engaged_status() -> str | None:
        text = status()
        return text if engaged in text else None

    text = wait_for(engaged_status, what="the storm guard engaged")
    lines = text.splitlines()
    assert f"{engaged} until fewer are forced down" in lines
    forced = 201 if phase(d, 201) == "down" else 202
    other = 403 - forced
    row = next(x for x in lines if x.startswith(f"{other} "))
    assert " new (storm guard) " in row, row
    as_json = json.loads(cli(tmp_path, "status", "--json").stdout)
    assert as_json["storm_guard"] == {
        "max_forced_down": 1,
        "forced_down": 1,
        "engaged": True,
        "held": 1,
    }
    assert d.stop() == 0
    offline = status().splitlines()
    assert f"{engaged} until fewer are forced down" in offline
    assert " new (storm guard) " in next(x for x in offline if x.startswith(f"{other} "))
    off = cli(tmp_path, "status", MAX_FORCED_DOWN="0").stdout.splitlines()
    assert not any("storm guard" in x for x in off)  # no guard, no line
    assert next(x for x in off if x.startswith(f"{other} ")).split()[2] == "new"


def test_a_second_daemon_on_the_same_state_file_is_refused_in_one_line(
    sim: Simulator, tmp_path: Path
) -> None:
    """`serve` beside a running daemon on the same state file (another LISTEN_PORT): exit 1,
    one line naming the holder's pid and address, the lock file's newline kept out of it; in
    JSON logs one object whose message has no newline (issue 22, item 3)."""
    port = free_port()
    daemon = DaemonProcess(tmp_path, base_env(sim, tmp_path, LISTEN_PORT=str(port)), port)
    try:
        holder = f"(pid {daemon.proc.pid}, listening at {daemon.url})"
        second = cli(tmp_path, "serve", LISTEN_PORT=str(free_port()))
        assert second.returncode == 1, second.stderr
        lines = second.stderr.splitlines()  # start warnings (UNSUPERVISED_IP), then the error
        assert all(re.match(r"\d{4}-\d\d-\d\dT\S+Z [A-Z]+ step=", x) for x in lines), lines
        (error,) = [x for x in lines if " ERROR " in x]
        assert error.endswith(f"is in use by another alert-handler {holder}"), error
        as_json = cli(tmp_path, "serve", LISTEN_PORT=str(free_port()), LOG_FORMAT="json")
        assert as_json.returncode == 1, as_json.stderr
        logged = [json.loads(x) for x in as_json.stderr.splitlines()]  # each line one object
        (message,) = [x["message"] for x in logged if x["level"] == "ERROR"]
        assert "\n" not in message and message.endswith(holder), message
    finally:
        daemon.kill()


def test_write_env_never_overwrites_silently(tmp_path: Path) -> None:
    """1. `simulator --write-env .env` where .env exists: refused in one line (exit 1), the
    file untouched.
    2. With --force: the old file is kept as `.env.bak-<UTC time>` (mode 0600), the new one is
    written with mode 0600 although the old one was 0644; the guide says where the copy is.
    3. A new file is written with mode 0600 (issue 22, item 4)."""
    env_file = tmp_path / ".env"
    env_file.write_text("LIBRENMS_URL=http://mine.example/api/v0\n")
    env_file.chmod(0o644)
    refused = cli(tmp_path, "simulator", "--port", "0", "--write-env", ".env")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.splitlines() == [
        "alert-handler: .env exists; not overwritten (--force replaces it and keeps a copy as "
        "<name>.bak-<UTC time>)"
    ]
    assert env_file.read_text() == "LIBRENMS_URL=http://mine.example/api/v0\n"
    assert env_file.stat().st_mode & 0o777 == 0o644

    proc, guide = simulator_cli(tmp_path, "--write-env", ".env", "--force", until="(the old")
    try:
        (backup,) = [p for p in tmp_path.iterdir() if p.name.startswith(".env.bak-")]
        assert re.fullmatch(r"\.env\.bak-\d{8}T\d{6}Z", backup.name)
        assert guide[-1] == f"(the old .env is kept as {backup.name})"
        assert backup.read_text() == "LIBRENMS_URL=http://mine.example/api/v0\n"
        assert backup.stat().st_mode & 0o777 == 0o600
        assert env_file.stat().st_mode & 0o777 == 0o600
        assert "LIBRENMS_URL=http://127.0.0.1:" in env_file.read_text()
    finally:
        interrupt(proc)
    proc, _ = simulator_cli(tmp_path, "--write-env", "new.env")
    try:
        assert (tmp_path / "new.env").stat().st_mode & 0o777 == 0o600
    finally:
        interrupt(proc)


def test_a_malformed_env_line_is_named_and_refused(sim: Simulator, tmp_path: Path) -> None:
    """1. A line of .env python-dotenv cannot read: `check` fails (exit 2) on one ✘ line naming
    the file and the line number, not dotenv's own message followed by "configuration is
    valid"; `status` and `serve` refuse it the same way (exit 2, one line). The line's text is
    not printed (it may hold a secret).
    2. LibreNMS down: `check`'s API line names the URL it tried (never the token)."""
    settings = base_env(sim, tmp_path)
    env_file = tmp_path / ".env"
    text = "".join(f"{k}={v}\n" for k, v in settings.items()) + "WEBHOOK_SECRET 'hunter2\n"
    env_file.write_text(text)
    env_file.chmod(0o600)
    bad_line = len(settings) + 1
    said = f"{env_file} line {bad_line} cannot be read: each line is NAME=value"
    check = cli(tmp_path, "check")
    assert check.returncode == 2, check.stdout
    assert check.stdout.splitlines() == [
        f"{FAIL} configuration: .env: {said}, a comment (#) or empty"
    ]
    assert "could not parse" not in check.stdout + check.stderr
    assert "configuration is valid" not in check.stdout
    for command in ("status", "serve"):
        result = cli(tmp_path, command)
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.splitlines() == [
            f"alert-handler: configuration error: .env: {said}, a comment (#) or empty"
        ], command
    for result in (check, cli(tmp_path, "status")):
        assert "hunter2" not in result.stdout + result.stderr

    write_env(tmp_path, settings)
    nowhere = f"http://127.0.0.1:{free_port()}/api/v0"
    down = cli(tmp_path, "check", LIBRENMS_URL=nowhere)
    assert down.returncode == 1
    (api,) = [x for x in down.stdout.splitlines() if "LibreNMS API" in x]
    assert api.startswith(f"{FAIL} LibreNMS API at {nowhere}: "), api
    assert "connection failed" in api and DEFAULT_TOKEN not in down.stdout + down.stderr


def test_releasing_an_untracked_device_says_what_was_restored(
    sim: Simulator, start_daemon: StartDaemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Device 102 (overwrite_ip 198.51.100.7) was forced down and released, so the event journal
    holds its original; then someone puts it on UNSUPERVISED_IP by hand. `release 102` restores
    198.51.100.7 and says so, as the log does: "restored overwrite_ip 198.51.100.7 (was
    127.0.0.50)", not "left as it was" (issue 18, item 6)."""
    caplog.set_level(logging.INFO)
    sim.add_device(102, "cpe-102", overwrite_ip="198.51.100.7", ports={"port2": "down"})
    d = start_with_env(start_daemon, sim, tmp_path, RECOVERY_INTERVAL_SEC="60")
    wait_for(lambda: any(r.path == "/devices" for r in sim.requests), what="reconcile pass")
    assert cli(tmp_path, "track", "102").returncode == 0
    wait_for(lambda: phase(d, 102) == "down", what="102 forced down")
    first = cli(tmp_path, "release", "102")
    assert first.returncode == 0, first.stderr
    assert sim.device(102)["overwrite_ip"] == "198.51.100.7"
    patch = requests.patch(
        f"{sim.url}/devices/102",
        json={"field": "overwrite_ip", "data": UNSUP},
        headers={"X-Auth-Token": DEFAULT_TOKEN},
        timeout=5,
    )
    assert patch.status_code == 200
    caplog.clear()
    released = cli(tmp_path, "release", "102")
    assert released.returncode == 0, released.stderr
    assert released.stdout.strip() == (
        f"device 102: was not tracked; restored overwrite_ip 198.51.100.7 (was {UNSUP}), its "
        "original from the event journal"
    )
    assert sim.device(102)["overwrite_ip"] == "198.51.100.7"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device=102 ")]
    assert any("step=release restored overwrite_ip 198.51.100.7 " in x for x in said), said
    assert d.daemon.store.get(102) is None
