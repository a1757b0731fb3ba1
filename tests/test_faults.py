"""Issue 7, crash-safe and self-healing: the daemon under kills, restarts, bad state files, a sick
LibreNMS, a broken recovery loop, signals and an unwritable state file.

Every restart test checks the issue's invariant in the simulator: a device on UNSUPERVISED_IP is
tracked with its true original (`assert_safe`, right after each kill), every acknowledged alert's
device is in the state file, and in the end every device is back on its original
(`assert_restored`). The kills run the installed `alert-handler` as a subprocess and time the
SIGKILL on the simulator: a request held open by `inject(delay=..., drop=True)` and seen in
`sim.in_flight()`, or a poll held by the test's POLL_COMMAND wrapper (`HeldPolls`). A held request
is dropped unanswered, so it changes nothing after the kill; one test lets a PATCH land late.
"On disk" is what a restart loads: the state file (a checkpoint at most about a second behind)
with its journal replayed (issue 15).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from alert_handler.ops.systemd import SystemdNotifier
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator
from alert_handler.store.codec import record_to_dict
from alert_handler.store.files import read_state
from tests.conftest import (
    UNSUP,
    WEBHOOK_TOKEN,
    alert_body,
    base_env,
    free_port,
    installed_cli,
    on_teardown,
    overwrite,
    wait_for,
)

HOLD = 10.0  # how long a held request waits before the simulator drops it unanswered
STATE = "device_state.json"


# -- reading the outcome ----------------------------------------------------------------------
def devices_in(path: Path) -> dict[str, dict[str, Any]]:
    """The devices on disk as a restart loads them: the state file (which must parse: an atomic
    write never leaves half) with its journal replayed."""
    if path.exists():
        assert isinstance(json.loads(path.read_text())["devices"], dict)
    snap = read_state(path, time.time())
    return {str(device_id): record_to_dict(rec) for device_id, rec in snap.devices.items()}


def record(path: Path, device_id: int) -> dict[str, Any] | None:
    """One device as stored, or None."""
    return devices_in(path).get(str(device_id))


def phase(path: Path, device_id: int) -> str | None:
    """The stored phase of a device, None when it is not tracked."""
    rec = record(path, device_id)
    return None if rec is None else str(rec["phase"])


def assert_safe(sim: Simulator, path: Path, originals: dict[int, str | None]) -> None:
    """The invariant after a crash: a device on UNSUPERVISED_IP is tracked, with its true original
    recorded (not adopted); no record holds an original the device never had."""
    devices = devices_in(path)
    for device_id, original in originals.items():
        rec = devices.get(str(device_id))
        if overwrite(sim, device_id) == UNSUP:
            assert rec is not None, f"device {device_id} left on {UNSUP} untracked"
            assert rec["original_recorded"] and not rec["adopted"], rec
        if rec is not None and rec["original_recorded"]:
            assert rec["original_overwrite_ip"] == original, (device_id, rec)


def assert_restored(sim: Simulator, originals: dict[int, str | None]) -> None:
    """Every device ends on its original, and only UNSUPERVISED_IP or the original was written."""
    for device_id, original in originals.items():
        assert overwrite(sim, device_id) == original, device_id
        written = {data for _, data in sim.patches(device_id)}
        assert written <= {UNSUP, original}, (device_id, written)


def wait_in_flight(sim: Simulator, method: str, path: str) -> None:
    """Until the simulator is answering `method path` (held by an injected delay)."""
    wait_for(lambda: (method, path) in sim.in_flight(), 60, f"{method} {path} in flight")


def refused(url: str) -> bool:
    """Whether nothing listens at `url` any more."""
    try:
        requests.get(url + "/health", timeout=10)
    except requests.ConnectionError:
        return True
    except requests.Timeout:  # listening, but too busy to answer in time
        return False
    return False


# -- the daemon as a process ------------------------------------------------------------------
_STRIPPED = ("LIBRENMS", "SSH_", "NOTIFY_SOCKET", "WATCHDOG_")


class Proc:
    """`alert-handler serve` in `workdir` with a .env, like conftest's DaemonProcess, plus real
    environment variables (NOTIFY_SOCKET, ...) and its output read through a pipe: RLIMIT_FSIZE,
    which the disk-full test sets on the process, does not apply to a pipe."""

    def __init__(
        self,
        workdir: Path,
        env_lines: dict[str, str],
        port: int,
        environ: dict[str, str] | None = None,
        *,
        wait: bool = True,
    ) -> None:
        env_file = workdir / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env_lines.items()))
        env_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED)}
        env.update(environ or {})
        self.proc = subprocess.Popen(
            [*installed_cli(), "serve"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{port}"
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        on_teardown(self.close)  # killed when the test ends, also if the wait below fails
        if wait:
            wait_for(self.healthy, what="the daemon to answer /health")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.append(raw.decode("utf-8", "replace"))

    def output(self) -> str:
        """Everything the daemon logged to stderr so far."""
        return "".join(list(self._lines))

    def healthy(self) -> bool:
        """/health answers 200 (fails the test if the process exited)."""
        if self.proc.poll() is not None:
            self._finish()
            pytest.fail(f"daemon exited {self.proc.returncode}: {self.output()}")
        try:
            return requests.get(self.url + "/health", timeout=10).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            return False

    def health(self) -> tuple[int, dict[str, Any]]:
        """GET /health: (status, body)."""
        reply = requests.get(self.url + "/health", timeout=5)
        return reply.status_code, reply.json()

    def post(self, body: str) -> requests.Response:
        """POST /alert as LibreNMS does."""
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        return requests.post(self.url + "/alert", data=body, headers=headers, timeout=10)

    def kill(self) -> None:
        """SIGKILL: nothing runs after this, no state is saved."""
        self.proc.kill()
        self.proc.wait(10)
        self._finish()

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        """The exit status, failing the test if the daemon does not exit in time."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon did not exit within {timeout}s: {self.output()}")
        self._finish()
        return status

    def _finish(self) -> None:
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def close(self) -> None:
        """Teardown: kill it if it still runs."""
        if self.proc.poll() is None:
            self.kill()
        else:
            self.proc.wait()
            self._finish()


Launch = Callable[..., Proc]


@pytest.fixture
def launch(sim: Simulator, tmp_path: Path) -> Iterator[Launch]:
    """launch(environ=None, wait=True, **env) -> Proc; every launch uses the same port and
    files, as a restarted daemon does; all are killed at teardown."""
    port = free_port()
    started: list[Proc] = []

    def start(environ: dict[str, str] | None = None, wait: bool = True, **extra: str) -> Proc:
        env = base_env(sim, tmp_path, LISTEN_PORT=str(port), **extra)
        proc = Proc(tmp_path, env, port, environ, wait=wait)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


_WRAPPER = '''\
"""POLL_COMMAND of the fault tests: notes its pid, waits while <dir>/hold-poll exists, then
becomes the simulator's `lnms device:poll` stand-in."""
import os
import sys
import time

directory, url, token, device = sys.argv[1:5]
with open(os.path.join(directory, "polls"), "a") as polls:
    polls.write(f"{os.getpid()} {device}\\n")
while os.path.exists(os.path.join(directory, "hold-poll")):
    time.sleep(0.02)
argv = [sys.executable, "-m", "alert_handler.sim", "poll", "--url", url, "--token", token]
os.execv(sys.executable, [*argv, device])
'''


class HeldPolls:
    """A POLL_COMMAND the test can hold, to act while a poll runs (the slow `lnms device:poll`)."""

    def __init__(self, directory: Path, sim: Simulator) -> None:
        self.directory = directory
        script = directory / "poll_wrapper.py"
        script.write_text(_WRAPPER)
        self.command = (
            f"{shlex.quote(sys.executable)} {script} {directory} {sim.url} {DEFAULT_TOKEN}"
            " {device_id}"
        )
        self._hold = directory / "hold-poll"
        self._log = directory / "polls"

    def hold(self) -> None:
        """Polls started from now on wait until `release`."""
        self._hold.touch()

    def release(self) -> None:
        """Let held polls go on."""
        self._hold.unlink(missing_ok=True)

    def started(self, device_id: int) -> int:
        """How many polls of the device have started."""
        if not self._log.exists():
            return 0
        return sum(
            1 for line in self._log.read_text().splitlines() if line.split()[1:] == [str(device_id)]
        )

    def kill_all(self) -> None:
        """Kill the polls still running, as systemd kills a unit's control group."""
        if not self._log.exists():
            return
        for line in self._log.read_text().splitlines():
            pid = int(line.split()[0])
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"poll_wrapper" in cmdline or b"alert_handler.sim" in cmdline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def polls(tmp_path: Path, sim: Simulator) -> Iterator[HeldPolls]:
    """The holdable POLL_COMMAND; held polls are released and killed at teardown."""
    held = HeldPolls(tmp_path, sim)
    yield held
    held.release()
    held.kill_all()


# -- 1. kill -9 at every phase boundary -------------------------------------------------------
def test_kill_at_every_phase_boundary_resumes_exactly(
    sim: Simulator, tmp_path: Path, launch: Launch, polls: HeldPolls
) -> None:
    """One device (original 198.51.100.7) through a whole cycle, the daemon SIGKILLed at each
    boundary and restarted on the same state file:
    1. alert acknowledged, the inspecting GET in flight: stored NEW, nothing changed;
    2. PATCH to UNSUPERVISED_IP done, discover in flight: FORCING_DOWN with the original;
    3. forced down, the verifying GET in flight: DOWN;
    4. RESTORING stored, the restore PATCH in flight; it lands after the kill;
    5. restored and discovered, the poll running: RESTORING, on the original, still tracked;
    6. the check found port2 down, the PATCH forcing it down again in flight: FORCING_DOWN;
    7. port2 up, polled, the port read in flight: RESTORING;
    8. the last restart finds port2 up: forgotten, on 198.51.100.7; only UNSUPERVISED_IP and
       the original were ever written, and the device was never adopted."""
    original = "198.51.100.7"
    originals: dict[int, str | None] = {1: original}
    sim.add_device(1, "cpe-1", overwrite_ip=original, ports={"port2": "down", "ether1": "up"})
    state = tmp_path / STATE
    env = {"RECOVERY_INTERVAL_SEC": "0.5", "POLL_COMMAND": polls.command}

    def kill(daemon: Proc, expected_phase: str) -> dict[str, Any]:
        daemon.kill()
        sim.clear_faults()
        assert_safe(sim, state, originals)
        rec = record(state, 1)
        assert rec is not None and rec["phase"] == expected_phase, rec
        return rec

    # 1.
    sim.inject("GET", r"^/devices/1$", delay=HOLD, drop=True)
    daemon = launch(**env)
    assert daemon.post(alert_body(1, ip=original)).status_code == 202
    wait_in_flight(sim, "GET", "/devices/1")
    kill(daemon, "new")
    assert sim.patches(1) == []
    # 2.
    sim.inject("GET", r"^/devices/1/discover$", delay=HOLD, drop=True)
    daemon = launch(**env)
    wait_in_flight(sim, "GET", "/devices/1/discover")
    rec = kill(daemon, "forcing_down")
    assert rec["original_overwrite_ip"] == original and overwrite(sim, 1) == UNSUP
    # 3.
    daemon = launch(**env)
    wait_for(lambda: phase(state, 1) == "down", what="forced down again after the restart")
    sim.inject("GET", r"^/devices/1$", delay=HOLD, drop=True)
    wait_in_flight(sim, "GET", "/devices/1")
    kill(daemon, "down")
    # 4.
    sim.inject("PATCH", r"^/devices/1$", status=200, delay=1.0)  # applied after the kill
    daemon = launch(**env)
    wait_in_flight(sim, "PATCH", "/devices/1")
    assert kill(daemon, "restoring")["attempts"] == 1
    wait_for(lambda: overwrite(sim, 1) == original, what="the PATCH sent before the kill")
    # 5.
    polls.hold()
    daemon = launch(**env)
    wait_for(lambda: polls.started(1) == 1, what="the poll to start")
    kill(daemon, "restoring")
    polls.kill_all()
    assert overwrite(sim, 1) == original
    # 6.
    daemon = launch(**env)
    wait_for(lambda: polls.started(1) == 2, what="the second poll to start")
    sim.inject("PATCH", r"^/devices/1$", delay=HOLD, drop=True)
    polls.release()
    wait_in_flight(sim, "PATCH", "/devices/1")
    rec = kill(daemon, "forcing_down")
    assert rec["last_error"] == "port2 is down" and overwrite(sim, 1) == original
    # 7.
    sim.set_link(1, "port2", "up")
    sim.inject("GET", r"^/devices/1/ports$", delay=HOLD, drop=True)  # the port found again
    daemon = launch(**env)
    wait_in_flight(sim, "GET", "/devices/1/ports")
    assert kill(daemon, "restoring")["attempts"] == 2
    # 8.
    daemon = launch(**env)
    wait_for(lambda: record(state, 1) is None, what="recovery after the last restart")
    assert daemon.terminate() == 0
    assert_restored(sim, originals)
    assert devices_in(state) == {}


# -- 2. kill -9 during bursts of alerts ------------------------------------------------------
def _post_status(daemon: Proc, body: str) -> int | None:
    """The HTTP status of one webhook delivery, None when the connection failed."""
    try:
        return daemon.post(body).status_code
    except requests.RequestException:
        return None


def test_kill_during_alert_bursts_loses_no_acknowledged_alert(
    sim: Simulator, tmp_path: Path, launch: Launch
) -> None:
    """1. 30 CPEs lose port2 (originals null or their own IP); each round LibreNMS delivers an
       alert for every one of them, 8 at a time, while the daemon forces devices down and
       checks them (interval 0.3 s); the daemon is SIGKILLed after the 3rd, 12th, 25th 2xx at
       once, and after the 2nd, 7th, 18th 2xx with a random delay of up to 1.5 s while alerts
       keep arriving: before, during and after a checkpoint of the state file and the rotation
       of its journal.
    2. After each kill: every device whose alert was answered 2xx is on disk (state file plus
       journal), and no device is on UNSUPERVISED_IP without its true original recorded.
    3. Port2 comes back everywhere: after a restart every device ends on its original."""
    ids = list(range(101, 131))
    originals: dict[int, str | None] = {i: None if i % 2 else f"198.51.100.{i}" for i in ids}
    for i in ids:
        sim.add_device(i, f"cpe-{i}", overwrite_ip=originals[i], ports={"port2": "down"})
    state = tmp_path / STATE
    acked: set[int] = set()
    shuffle = random.Random(7)
    for kill_after, delay in ((3, 0.0), (2, 1), (12, 0.0), (7, 1), (25, 0.0), (18, 1)):
        daemon = launch(RECOVERY_INTERVAL_SEC="0.3")
        order = ids[:]
        shuffle.shuffle(order)
        ok = 0
        killer: threading.Timer | None = None
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = {pool.submit(_post_slowly, daemon, alert_body(i)): i for i in order}
            for future in concurrent.futures.as_completed(futures):
                status = future.result()
                if status is not None and 200 <= status < 300:
                    acked.add(futures[future])
                    ok += 1
                    if ok == kill_after:
                        killer = threading.Timer(shuffle.uniform(0, 1.5) * delay, daemon.kill)
                        killer.start()
        if killer is not None:
            killer.join()
        if daemon.proc.poll() is None:
            daemon.kill()
        missing = acked - {int(k) for k in devices_in(state)}
        assert not missing, f"acknowledged but not on disk: {sorted(missing)}"
        assert_safe(sim, state, originals)
    for i in ids:
        sim.set_link(i, "port2", "up")
    daemon = launch(RECOVERY_INTERVAL_SEC="0.3")
    wait_for(lambda: devices_in(state) == {}, 60, "every device recovered")
    assert daemon.terminate() == 0
    assert_restored(sim, originals)


def _post_slowly(daemon: Proc, body: str) -> int | None:
    """One delivery after a short pause: a round lasts long enough for a checkpoint."""
    time.sleep(random.uniform(0.0, 0.1))
    return _post_status(daemon, body)


# -- 3. kill -9 during a checkpoint, and while the journal cannot be written ----------------
def _blocked_opening_fifo(pid: int) -> bool:
    """Whether a thread of `pid` waits in open() of a FIFO with no reader."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "wchan").read_text().strip() == "wait_for_partner":
                return True
        except OSError:
            continue
    return False


def test_kill_during_a_checkpoint_write(sim: Simulator, tmp_path: Path, launch: Launch) -> None:
    """1. Device 1 is forced down and its record is in the state file.
    2. The state file's temp file is a FIFO nobody reads: the next checkpoint blocks inside it.
       Alerts for devices 2-5 still get their 2xx at once (each is durable in the journal, the
       checkpoint is not on the ack's path). SIGKILL in the middle of that checkpoint.
    3. The state file is what it was, and every acknowledged device is on disk (journal).
    4. What a kill mid-write leaves, a half-written temp file, is there at the restart: the
       state loads untouched (nothing quarantined) with devices 2-5 replayed from the journal;
       all are forced down, and once port2 is back (and LibreNMS says they recovered) all end
       on their originals."""
    originals: dict[int, str | None] = {
        i: f"198.51.100.{i}" if i % 2 else None for i in range(1, 6)
    }
    for i, original in originals.items():
        sim.add_device(i, f"cpe-{i}", overwrite_ip=original, ports={"port2": "down"})
    state = tmp_path / STATE
    daemon = launch(RECOVERY_INTERVAL_SEC="60")
    assert daemon.post(alert_body(1)).status_code == 202
    wait_for(
        lambda: (
            state.exists()
            and json.loads(state.read_text())["devices"].get("1", {}).get("phase") == "down"
        ),
        what="device 1 forced down, in the state file itself",
    )
    before = state.read_bytes()
    temp = state.with_name(STATE + ".tmp")
    os.mkfifo(temp)
    assert daemon.post(alert_body(2)).status_code == 202
    wait_for(lambda: _blocked_opening_fifo(daemon.pid), what="the checkpoint to block")
    for i in (3, 4, 5):
        assert daemon.post(alert_body(i)).status_code == 202
    daemon.kill()
    assert state.read_bytes() == before
    assert set(devices_in(state)) == {"1", "2", "3", "4", "5"}
    assert_safe(sim, state, originals)
    temp.unlink()
    temp.write_bytes(before[: len(before) // 2])
    daemon = launch(RECOVERY_INTERVAL_SEC="0.5")
    wait_for(lambda: "journal lines replayed" in daemon.output(), what="the replay logged")
    wait_for(lambda: all(phase(state, i) == "down" for i in originals), what="all forced down")
    assert not list(tmp_path.glob(STATE + "*.corrupt-*"))
    assert not temp.exists()
    assert_safe(sim, state, originals)
    for i in originals:
        sim.set_link(i, "port2", "up")
        assert daemon.post(alert_body(i, state=0)).status_code == 200  # LibreNMS: recovered
    wait_for(lambda: devices_in(state) == {}, what="all recovered")
    assert daemon.terminate() == 0
    assert_restored(sim, originals)


def test_kill_while_the_journal_cannot_be_written(
    sim: Simulator, tmp_path: Path, launch: Launch
) -> None:
    """1. Device 1 is forced down (on disk).
    2. The disk fills up (RLIMIT_FSIZE on the process: part of the next line fits, the rest
       fails with EFBIG): an alert for device 2 (LibreNMS also lists it as open) is answered
       503, and the part of its line that fitted is cut off again. SIGKILL.
    3. A kill in the middle of an append (or a power cut) would leave part of a line at the end
       of the journal: one is added by hand. The restart ignores it (and says so), quarantines
       nothing, and the reconcile at start picks up the alert that never reached the state.
    4. Port2 comes back (and LibreNMS says device 1 recovered): both end on their originals."""
    originals: dict[int, str | None] = {1: "198.51.100.1", 2: None}
    for i, original in originals.items():
        sim.add_device(i, f"cpe-{i}", overwrite_ip=original, ports={"port2": "down"})
    state = tmp_path / STATE
    journal = state.with_name(STATE + ".journal")
    daemon = launch(LOG_FILE="/dev/null", RECOVERY_INTERVAL_SEC="60")
    assert daemon.post(alert_body(1)).status_code == 202
    wait_for(lambda: phase(state, 1) == "down", what="device 1 forced down")
    wait_for(
        lambda: (
            state.exists()
            and '"phase": "down"' in state.read_text()
            and not Path(f"{journal}.old").exists()
        ),
        what="the checkpoint done: a quiet journal",
    )
    size = journal.stat().st_size if journal.exists() else 0
    _, hard = resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (size + 100, hard))
    sim.add_alert(2, "Port2 down")
    assert daemon.post(alert_body(2)).status_code == 503
    wait_for(lambda: "File too large" in daemon.output(), what="the write error logged")
    daemon.kill()
    assert (journal.stat().st_size if journal.exists() else 0) == size
    assert "2" not in devices_in(state)
    assert_safe(sim, state, originals)
    with journal.open("ab") as torn:
        torn.write(b'{"seq": 999, "put": 2, "record": {"phase": "do')
    daemon = launch(RECOVERY_INTERVAL_SEC="0.5")
    wait_for(lambda: "incomplete last line ignored" in daemon.output(), what="the torn line")
    wait_for(lambda: phase(state, 2) == "down", what="device 2 picked up and forced down")
    wait_for(lambda: "never reached the daemon" in daemon.output(), what="the pick-up line")
    assert not list(tmp_path.glob(STATE + "*.corrupt-*"))
    assert_safe(sim, state, originals)
    for i in originals:
        sim.set_link(i, "port2", "up")
    assert daemon.post(alert_body(1, state=0)).status_code == 200  # LibreNMS: recovered
    wait_for(lambda: devices_in(state) == {}, what="both recovered")
    assert daemon.terminate() == 0
    assert_restored(sim, originals)


# -- 4. SIGTERM, SIGHUP, one daemon per state file -------------------------------------------
def test_sigterm_lets_the_step_in_flight_finish(
    sim: Simulator, tmp_path: Path, launch: Launch, polls: HeldPolls
) -> None:
    """1. A forced-down device's port comes back; its check is held in the poll.
    2. SIGTERM: the listener closes at once, the process waits for the step.
    3. The poll finishes: the device is restored for good, that outcome is saved, exit 0."""
    sim.add_device(3, "cpe-3", overwrite_ip="198.51.100.3", ports={"port2": "down"})
    state = tmp_path / STATE
    daemon = launch(RECOVERY_INTERVAL_SEC="0.3", POLL_COMMAND=polls.command, STOP_TIMEOUT_SEC="60")
    assert daemon.post(alert_body(3)).status_code == 202
    wait_for(lambda: phase(state, 3) == "down", what="forced down")
    polls.hold()
    sim.set_link(3, "port2", "up")
    wait_for(lambda: polls.started(3) == 1, what="the check's poll")
    daemon.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: refused(daemon.url), what="the listener to close")
    assert daemon.proc.poll() is None  # still finishing the step
    polls.release()
    assert daemon.wait(30) == 0
    assert devices_in(state) == {}
    assert overwrite(sim, 3) == "198.51.100.3"
    assert "state saved" in daemon.output()


def test_step_cut_off_at_the_stop_deadline_resumes_after_restart(
    sim: Simulator, tmp_path: Path, launch: Launch, polls: HeldPolls
) -> None:
    """1. A check is held in its poll; SIGINT (Ctrl-C, handled as SIGTERM), STOP_TIMEOUT_SEC=1.
    2. The daemon exits 0 at the deadline although the step still runs, saying it will resume;
       the state file says RESTORING (the device is on its original, tracked).
    3. Restarted, it checks again and restores the device for good."""
    sim.add_device(4, "cpe-4", overwrite_ip="198.51.100.4", ports={"port2": "down"})
    state = tmp_path / STATE
    env = {"RECOVERY_INTERVAL_SEC": "0.3", "POLL_COMMAND": polls.command, "STOP_TIMEOUT_SEC": "1"}
    daemon = launch(**env)
    assert daemon.post(alert_body(4)).status_code == 202
    wait_for(lambda: phase(state, 4) == "down", what="forced down")
    polls.hold()
    sim.set_link(4, "port2", "up")
    wait_for(lambda: polls.started(4) == 1, what="the check's poll")
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait(30) == 0
    assert "they resume after restart" in daemon.output()
    assert phase(state, 4) == "restoring"
    polls.kill_all()
    polls.release()
    daemon = launch(**env)
    wait_for(lambda: record(state, 4) is None, what="recovery after the restart")
    assert overwrite(sim, 4) == "198.51.100.4"


def test_sighup_reopens_the_log_file(tmp_path: Path, launch: Launch) -> None:
    """1. logrotate moves the log away and sends SIGHUP.
    2. The daemon keeps running and writes to a new file at LOG_FILE."""
    daemon = launch()
    log_file = tmp_path / "alert_handler.log"
    wait_for(lambda: "step=start listening" in log_file.read_text(), what="the start line")
    rotated = log_file.rename(tmp_path / "alert_handler.log.1")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: log_file.exists() and "log reopened on SIGHUP" in log_file.read_text(),
        what="the reopened log",
    )
    assert daemon.healthy()
    assert "log reopened" not in rotated.read_text()
    assert daemon.terminate() == 0


def test_second_daemon_on_the_same_state_file_exits_1(tmp_path: Path, launch: Launch) -> None:
    """A second `alert-handler serve` on the same state file exits 1 at once, naming the file and
    the running daemon's pid; the first one goes on."""
    first = launch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED)}
    second = subprocess.run(
        [*installed_cli(), "serve"],
        cwd=tmp_path,
        env={**env, "LISTEN_PORT": "0"},  # not a port clash: the lock is what stops it
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert str(tmp_path / STATE) in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert first.healthy()
    assert first.terminate() == 0


def test_unusable_state_directory_at_start_exits_1_naming_the_file(
    sim: Simulator, tmp_path: Path
) -> None:
    """The state file's lock cannot be opened (here its path is a directory; a read-only or full
    state directory fails the same way): exit 1 at once with a line naming the file, not a
    misleading bind error."""
    lock = tmp_path / (STATE + ".lock")
    lock.mkdir()
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in base_env(sim, tmp_path).items()))
    env_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED)}
    started = subprocess.run(
        [*installed_cli(), "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert started.returncode == 1
    assert f"cannot use {lock}" in started.stderr
    assert "cannot listen" not in started.stderr


# -- 5. systemd notify ------------------------------------------------------------------------
def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, launch: Launch) -> None:
    """Under Type=notify with WatchdogSec=1: READY=1 once the port accepts connections,
    WATCHDOG=1 while the recovery loop runs, STOPPING=1 on SIGTERM."""
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(30)
        environ = {"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"}
        daemon = launch(environ=environ, wait=False)
        assert sock.recv(256) == b"READY=1"
        assert requests.get(daemon.url + "/health", timeout=5).status_code == 200
        assert [sock.recv(256) for _ in range(3)] == [b"WATCHDOG=1"] * 3
        daemon.proc.send_signal(signal.SIGTERM)
        while (message := sock.recv(256)) == b"WATCHDOG=1":
            pass
        assert message == b"STOPPING=1"
        assert daemon.wait(30) == 0


def test_notifier_without_socket_and_with_abstract_socket() -> None:
    """No NOTIFY_SOCKET: sending is a no-op. An abstract socket ("@name") is reached. The ping
    interval is half of WATCHDOG_USEC, and none when the watchdog is another process's."""
    quiet = SystemdNotifier({})
    assert not quiet.enabled and quiet.watchdog_interval is None
    quiet.send("READY=1")
    name = f"alert-handler-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).send("READY=1")
        assert sock.recv(64) == b"READY=1"
    assert SystemdNotifier({"WATCHDOG_USEC": "3000000"}).watchdog_interval == 1.5
    other = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(other).watchdog_interval is None


# -- 6. disk full -----------------------------------------------------------------------------
def test_unwritable_state_answers_503_changes_nothing_and_recovers(
    sim: Simulator, tmp_path: Path, launch: Launch
) -> None:
    """The disk fills up under a running daemon (RLIMIT_FSIZE lowered on the process: every
    write past 64 bytes fails with EFBIG, as on a full disk; a pipe carries its log, LOG_FILE is
    /dev/null; as root a read-only directory or a full filesystem cannot be had).
    1. Device 51 is forced down; then the limit drops.
    2. An alert for device 52 is answered 503; the state file is intact, no temp file remains;
       /health answers 503 (state_file unwritable).
    3. Nothing is changed in LibreNMS while the state cannot be written, though device 51
       falls due several times.
    4. Space returns: the daemon writes again by itself, /health answers 200, device 52 is
       handled (LibreNMS still lists its alert as open), and both devices recover."""
    originals: dict[int, str | None] = {51: "198.51.100.51", 52: "198.51.100.52"}
    for i, original in originals.items():
        sim.add_device(i, f"cpe-{i}", overwrite_ip=original, ports={"port2": "down"})
    state = tmp_path / STATE
    daemon = launch(LOG_FILE="/dev/null", RECOVERY_INTERVAL_SEC="0.3", RECONCILE_INTERVAL_SEC="1")
    assert daemon.post(alert_body(51)).status_code == 202
    wait_for(lambda: phase(state, 51) == "down", what="device 51 forced down")
    good = devices_in(state)
    patches_before = sim.patches()
    _, hard = resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (64, hard))  # soft: it can go up again
    sim.add_alert(52, "Port2 down")
    reply = daemon.post(alert_body(52))
    assert reply.status_code == 503 and "error" in reply.json()
    status, body = daemon.health()
    assert status == 503 and body["state_file"] == "unwritable" and body["status"] == "critical"
    state_file = body["dependencies"]["state_file"]
    assert state_file["status"] == "failing" and state_file["consecutive_failures"] >= 1
    assert state_file["last_error"] == "File too large" and state_file["last_success"]
    assert devices_in(state) == good
    wait_for(lambda: not list(tmp_path.glob("*.tmp")), what="no temp file left")
    wait_for(lambda: "File too large" in daemon.output(), what="the write error logged")
    # The writer retries every 0.5 s, counted in /health: each retry is the daemon finding the
    # state still unwritable. Four more retries: device 51 fell due (every 0.3 s) several times
    # and the scheduler (which looks at least every second) held it each time.
    failed = state_file["consecutive_failures"]
    wait_for(
        lambda: (
            daemon.health()[1]["dependencies"]["state_file"]["consecutive_failures"] >= failed + 4
        ),
        what="four more failed writes",
    )
    assert sim.patches() == patches_before
    assert daemon.health()[0] == 503
    resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (hard, hard))
    wait_for(daemon.healthy, what="/health 200 once the state can be written")
    wait_for(lambda: "writable again" in daemon.output(), what="the recovery logged")
    wait_for(lambda: phase(state, 52) == "down", what="device 52 handled")
    assert_safe(sim, state, originals)
    for i in originals:
        sim.set_link(i, "port2", "up")
    wait_for(lambda: devices_in(state) == {}, what="both recovered")
    assert daemon.terminate() == 0
    assert_restored(sim, originals)
