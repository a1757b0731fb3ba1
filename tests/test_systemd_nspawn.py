"""systemd/alert-handler.service run by a real systemd: this machine's root booted as a container.

The unit file is installed unchanged; one drop-in shortens WatchdogSec and RestartSec so the
watchdog test takes seconds. The daemon runs from a venv of the container's /usr/bin/python3
under /opt (ProtectHome= hides /root, where a pyenv Python would live) that imports this source
tree and the test venv's dependencies, both bound read-only into the container. The LibreNMS
simulator runs in the test process on loopback: nspawn without --private-network shares the
host's network, so the daemon reaches it and the test reaches the daemon's webhook. The
container boots once for the module.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from tests.conftest import AUTH, UNSUP, WEBHOOK_TOKEN, free_port, wait_for
from tests.nspawn import Container, ContainerError, missing_prerequisite

SOURCE = Path(__file__).resolve().parent.parent
UNIT = SOURCE / "systemd" / "alert-handler.service"
NAME = "alert-handler.service"
SRC_INSIDE = "/srv/alert-handler/src"
DEPS_INSIDE = "/srv/alert-handler/site-packages"
VENV = "/opt/alert-handler"
STATE = "/var/lib/alert-handler/device_state.json"
LOG = "/var/log/alert-handler/alert_handler.log"
ENV_FILE = "/etc/alert-handler/alert-handler.env"
DROP_IN = f"/etc/systemd/system/{NAME}.d"
WATCHDOG_SEC = 2


@dataclass
class Service:
    """The unit inside the booted container, and the simulator it talks to."""

    container: Container
    sim: Simulator
    url: str

    def systemctl(self, *args: str, check: bool = True) -> str:
        """`systemctl args` in the container; its stdout."""
        return self.container.run("systemctl", "--no-pager", *args, check=check).stdout

    def show(self, *properties: str) -> dict[str, str]:
        """The unit's properties as systemd reports them."""
        text = self.systemctl("show", NAME, *(f"--property={p}" for p in properties))
        return dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)

    def journal(self) -> str:
        """The unit's journal in the container (systemd's lines about it and the daemon's)."""
        result = self.container.run(
            "journalctl", "--no-pager", "--quiet", f"--unit={NAME}", "--output=cat", check=False
        )
        return result.stdout

    def healthy(self) -> bool:
        """Whether the daemon answers /health with 200."""
        try:
            return requests.get(self.url + "/health", timeout=10).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            return False

    def ensure_running(self) -> None:
        """Start the unit unless it is active (a failed run is reset first)."""
        if self.show("ActiveState")["ActiveState"] != "active":
            self.systemctl("reset-failed", NAME, check=False)
            self.systemctl("start", NAME)
        wait_for(self.healthy, 60, "the daemon to answer /health")

    def log(self) -> str:
        """LOG_FILE as the container has it."""
        return self.container.path(LOG).read_text(errors="replace")

    def why(self) -> str:
        """The unit's status and journal, for assertion messages."""
        return self.systemctl("status", NAME, check=False) + "\n" + self.journal()[-4000:]


def dependency_paths() -> list[Path]:
    """The test venv's site-packages (requests, paramiko, ...), given to the container's venv."""
    paths = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    return sorted(p for p in paths if p.is_dir())


HIDDEN_BY_PROTECT_HOME = ("/root", "/home", "/run/user")


def venv_python() -> str:
    """The interpreter for the daemon's venv: /usr/bin/python3 if it is the test venv's Python
    version (the daemon's venv reuses the test venv's compiled dependencies), else the test venv's
    own base interpreter unless ProtectHome= hides it from the service; fails otherwise."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    system = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if system.stdout.strip() == here:
        return "/usr/bin/python3"
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    if not str(base).startswith(HIDDEN_BY_PROTECT_HOME):
        return str(base)
    pytest.fail(
        f"no Python {here} the service can run: /usr/bin/python3 is "
        f"{system.stdout.strip() or 'missing'} and the test venv's {base} is hidden by "
        "ProtectHome=; make the test venv with /usr/bin/python3 -m venv"
    )


def install_daemon(container: Container, deps: list[Path], python: str) -> None:
    """A venv of `python` at VENV that imports this source tree and the test venv's
    dependencies, and /usr/local/bin/alert-handler running it (as the unit's ExecStart= says)."""
    container.run(python, "-m", "venv", "--without-pip", VENV)
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = container.run(f"{VENV}/bin/python", "-c", probe).stdout.strip()
    lines = [SRC_INSIDE, *(f"{DEPS_INSIDE}/{n}" for n in range(len(deps)))]
    container.path(purelib).joinpath("alert_handler_test.pth").write_text("\n".join(lines) + "\n")
    script = container.path("/usr/local/bin/alert-handler")
    script.write_text(
        f"#!{VENV}/bin/python\nimport sys\n\nfrom alert_handler.cli.main import main\n\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)
    container.run("alert-handler", "--version")


def configure(container: Container, sim: Simulator, port: int) -> None:
    """The service user, the env file and the unit with the test's drop-in, as the unit's
    header says to install them."""
    home = "/var/lib/alert-handler"
    nologin = "/usr/sbin/nologin"
    container.run("useradd", "--system", "--home-dir", home, "--shell", nologin, "alert-handler")
    container.run("install", "-d", "-g", "alert-handler", "-m", "0750", "/etc/alert-handler")
    settings = {
        "LIBRENMS_URL": sim.url,
        "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
        "POLL_METHOD": "local",
        "POLL_COMMAND": (
            f"{VENV}/bin/python -m alert_handler.sim poll "
            f"--url {sim.url} --token {DEFAULT_TOKEN} {{device_id}}"
        ),
        "RECOVERY_INTERVAL_SEC": "0.5",
        "LISTEN_HOST": "127.0.0.1",
        "LISTEN_PORT": str(port),
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "API_RETRIES": "0",
        "RECONCILE_INTERVAL_SEC": "3600",
        "STOP_TIMEOUT_SEC": "5",
    }
    env_file = container.path(ENV_FILE)
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    container.run("chown", "alert-handler:alert-handler", ENV_FILE)
    env_file.chmod(0o600)
    container.path(f"/etc/systemd/system/{NAME}").write_bytes(UNIT.read_bytes())
    drop_in = container.path(DROP_IN)
    drop_in.mkdir(parents=True)
    drop_in.joinpath("test.conf").write_text(
        f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\nRestartSec=1s\n"
    )
    container.run("systemctl", "daemon-reload")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The container booted, the daemon installed, its unit loaded (not started)."""
    reason = missing_prerequisite()
    if reason is not None:
        pytest.fail(f"cannot run the unit under systemd: {reason}")
    deps = dependency_paths()
    python = venv_python()
    # The package folder itself is bound, not the checkout: a checkout in a folder only root may
    # enter (mktemp -d makes 0700) would hide it from the unit's user, who walks the mount.
    package = {SOURCE / "alert_handler": f"{SRC_INSIDE}/alert_handler"}
    binds = {**package, **{p: f"{DEPS_INSIDE}/{n}" for n, p in enumerate(deps)}}
    container = Container(tmp_path_factory.mktemp("nspawn"), binds, f"ah-test-{os.getpid()}")
    sim = Simulator()
    sim.start()
    try:
        try:
            container.boot()
            install_daemon(container, deps, python)
            port = free_port()
            configure(container, sim, port)
        except ContainerError as exc:
            pytest.fail(f"cannot run the unit under systemd: {exc}")
        yield Service(container, sim, f"http://127.0.0.1:{port}")
    finally:
        container.shutdown()
        sim.stop()


@pytest.fixture
def running(service: Service) -> Service:
    """The service, started if it was not."""
    service.ensure_running()
    return service


def test_start_returns_once_the_daemon_is_ready(service: Service) -> None:
    """1. `systemctl start` of the Type=notify unit returns (it waits for READY=1).
    2. At once the unit is active/running and the daemon answers /health: no polling needed.
    3. It runs as alert-handler with no capabilities, under seccomp and no_new_privs."""
    assert service.show("ActiveState")["ActiveState"] == "inactive"
    service.systemctl("start", NAME)
    props = service.show("ActiveState", "SubState", "Type", "MainPID")
    assert (props["ActiveState"], props["SubState"], props["Type"]) == (
        "active",
        "running",
        "notify",
    ), service.why()
    assert requests.get(service.url + "/health", timeout=5).status_code == 200
    status = service.container.run("cat", f"/proc/{props['MainPID']}/status").stdout
    uid = service.container.run("id", "-u", "alert-handler").stdout.strip()
    for line in (rf"Uid:\s+{uid}\s", r"CapEff:\s+0+$", r"NoNewPrivs:\s+1$", r"Seccomp:\s+2$"):
        assert re.search(f"^{line}", status, re.M), f"{line} not in\n{status}"
    wait_for(lambda: "step=start listening on 127.0.0.1" in service.log(), what="the start line")


def test_alert_forces_the_device_down_and_recovers_it(running: Service) -> None:
    """1. The simulator posts an alert for a CPE whose port2 is down to the daemon's webhook.
    2. The daemon forces it down (overwrite_ip = UNSUPERVISED_IP).
    3. port2 comes back: the daemon restores the original overwrite_ip (null) and forgets it."""
    sim = running.sim
    sim.add_device(701, "cpe-701", ports={"port2": "down"})
    assert sim.send_alert(running.url + "/alert", 701, headers=AUTH) == 202
    wait_for(lambda: sim.device(701)["overwrite_ip"] == UNSUP, 60, "701 forced down")
    sim.set_link(701, "port2", "up")
    wait_for(lambda: sim.device(701)["overwrite_ip"] is None, 60, "701 restored")
    wait_for(lambda: "701" not in state_devices(running), 60, "701 gone from the state file")
    assert "device=701" in running.log()


def state_devices(service: Service) -> dict[str, dict[str, object]]:
    """The state file's devices (none while it does not exist yet)."""
    path = service.container.path(STATE)
    if not path.exists():
        return {}
    devices = json.loads(path.read_text())["devices"]
    assert isinstance(devices, dict)
    return devices


def test_state_and_log_are_private_files_in_systemds_directories(running: Service) -> None:
    """1. A CPE is forced down, so the state file holds a record.
    2. StateDirectory= and LogsDirectory= exist with the unit's modes, owned by alert-handler;
    the state and log files in them are 0600 (UMask=0077).
    3. Its port2 comes back (the device recovers while the next tests run)."""
    sim = running.sim
    sim.add_device(703, "cpe-703", ports={"port2": "down"})
    assert sim.send_alert(running.url + "/alert", 703, headers=AUTH) == 202
    wait_for(lambda: "703" in state_devices(running), 60, "703 in the state file")
    container = running.container
    uid = int(container.run("id", "-u", "alert-handler").stdout)
    expected = {
        "/var/lib/alert-handler": 0o700,
        "/var/log/alert-handler": 0o750,
        STATE: 0o600,
        LOG: 0o600,
    }
    found = {}
    for inside in expected:
        info = container.path(inside).stat()
        assert info.st_uid == uid, f"{inside} belongs to uid {info.st_uid}"
        found[inside] = stat.S_IMODE(info.st_mode)
    assert {k: oct(v) for k, v in found.items()} == {k: oct(v) for k, v in expected.items()}
    sim.set_link(703, "port2", "up")


def test_watchdog_restarts_a_stopped_daemon(running: Service) -> None:
    """1. The daemon is frozen with SIGSTOP: it no longer sends WATCHDOG=1.
    2. After WatchdogSec systemd kills it and, Restart=on-failure, starts a new one.
    3. The new one is active and answers /health."""
    before = running.show("MainPID", "NRestarts")
    running.container.run("kill", "-STOP", before["MainPID"])

    def restarted() -> bool:
        now = running.show("MainPID", "NRestarts", "ActiveState")
        return (
            int(now["NRestarts"]) > int(before["NRestarts"])
            and now["MainPID"] not in ("0", before["MainPID"])
            and now["ActiveState"] == "active"
        )

    wait_for(restarted, 60, "systemd to restart the frozen daemon")
    assert "Watchdog timeout" in running.journal(), running.why()
    wait_for(running.healthy, 60, "the restarted daemon to answer /health")


def test_reload_reopens_a_rotated_log(running: Service) -> None:
    """1. The log is rotated as systemd/logrotate.conf does: moved aside, a new one created.
    2. `systemctl reload` (ExecReload: SIGHUP) makes the daemon reopen LOG_FILE.
    3. Its lines go to the new file, not the moved one."""
    container = running.container
    container.run("mv", LOG, LOG + ".1")
    owner = ("-o", "alert-handler", "-g", "alert-handler")
    container.run("install", "-m", "0640", *owner, "/dev/null", LOG)
    running.systemctl("reload", NAME)
    wait_for(lambda: "reopened on SIGHUP" in running.log(), 60, "the reopen line in the new log")
    assert "reopened on SIGHUP" not in container.path(LOG + ".1").read_text(errors="replace")


def test_stop_saves_the_state(running: Service) -> None:
    """1. A CPE is forced down and its port2 stays down.
    2. `systemctl stop`: the daemon exits 0 within TimeoutStopSec, the unit is inactive.
    3. It saved the state file: the device is there with its original overwrite_ip.
    4. A new start loads every device of that file."""
    sim = running.sim
    sim.add_device(702, "cpe-702", overwrite_ip="198.51.100.72", ports={"port2": "down"})
    assert sim.send_alert(running.url + "/alert", 702, headers=AUTH) == 202
    wait_for(lambda: sim.device(702)["overwrite_ip"] == UNSUP, 60, "702 forced down")
    running.systemctl("stop", NAME)
    props = running.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, (
        running.why()
    )
    log = running.log()
    assert "step=stop received SIGTERM" in log
    assert f"step=stop state saved to {STATE}" in log
    saved = state_devices(running)
    assert saved["702"]["original_overwrite_ip"] == "198.51.100.72"
    assert not running.container.path(STATE + ".tmp").exists()
    running.systemctl("start", NAME)
    loaded = f"step=start listening on 127.0.0.1:{running.url.rsplit(':', 1)[1]}; {len(saved)} "
    wait_for(lambda: running.log().count(loaded) > log.count(loaded), what="the state loaded")


def test_bad_setting_exits_2_and_is_not_restarted(service: Service) -> None:
    """1. A drop-in sets RECOVERY_INTERVAL_SEC=abc (the environment wins over the env file).
    2. `systemctl start` fails: the daemon exits 2 naming the key, before READY=1.
    3. RestartPreventExitStatus=2: the unit is failed, not waiting to restart."""
    bad = service.container.path(DROP_IN) / "bad.conf"
    service.systemctl("stop", NAME)
    bad.write_text("[Service]\nEnvironment=RECOVERY_INTERVAL_SEC=abc\n")
    try:
        service.systemctl("daemon-reload")
        result = service.container.run("systemctl", "start", NAME, check=False)
        assert result.returncode != 0, service.why()
        props = service.show("ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
        assert props == {
            "ActiveState": "failed",
            "SubState": "failed",
            "Result": "exit-code",
            "ExecMainStatus": "2",
            "NRestarts": "0",
        }, service.why()
        assert "RECOVERY_INTERVAL_SEC: must be a positive number" in service.journal()
    finally:
        bad.unlink()
        service.systemctl("daemon-reload")
        service.systemctl("reset-failed", NAME, check=False)
