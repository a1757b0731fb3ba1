"""Shared fixtures: the LibreNMS simulator and the daemon (in-process or as a real process)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from alert_handler import daemon as daemon_mod
from alert_handler.config.table import Config, parse
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator

WEBHOOK_TOKEN = "test-webhook-token-0123456789"
UNSUP = "127.0.0.50"
AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


def overwrite(sim: Simulator, device_id: int) -> Any:
    """The device's overwrite_ip in LibreNMS."""
    return sim.device(device_id)["overwrite_ip"]


def poll_command(sim: Simulator) -> str:
    """POLL_COMMAND that runs the simulator's `lnms device:poll` stand-in as a real process."""
    return (
        f"{shlex.quote(sys.executable)} -m alert_handler.sim poll "
        f"--url {sim.url} --token {DEFAULT_TOKEN} {{device_id}}"
    )


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `condition` until it is truthy; fail the test with `what` after `timeout`.

    The timeout only bounds a wait for something that must happen: it is generous (a busy
    machine is slow, not wrong), and no test asserts how fast something happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# -- processes a test starts ------------------------------------------------------------------
_CLEANUPS: list[Callable[[], None]] = []  # what the running test started, stopped at its teardown


def on_teardown(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` when the current test ends, passed or failed (so only from a test or a
    function-scoped fixture: a module's process would be stopped after its first test)."""
    _CLEANUPS.append(cleanup)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL `proc` if it still runs, reap it and close its pipes (a no-op once it exited)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def spawn(args: list[str], **popen: Any) -> subprocess.Popen[Any]:
    """subprocess.Popen that is stopped (SIGKILL) and reaped when the test ends, failed or not;
    the test stops it gracefully itself where that is what it checks."""
    proc: subprocess.Popen[Any] = subprocess.Popen(args, **popen)
    on_teardown(lambda: stop_process(proc))
    return proc


def simulator_cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None, until: str = "Ctrl-C"
) -> tuple[subprocess.Popen[str], list[str]]:
    """`alert-handler simulator --port 0 ARGS` in `workdir`, stopped when the test ends, and its
    guide read up to the line that starts with `until`."""
    proc = spawn(
        [*installed_cli(), "simulator", "--port", "0", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    guide: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        guide.append(line.rstrip("\n"))
        if line.startswith(until):
            break
    return proc, guide


def interrupt(proc: subprocess.Popen[Any]) -> int:
    """Ctrl-C `proc` and wait for it to end: its exit status."""
    proc.send_signal(signal.SIGINT)
    status = proc.wait(30)
    stop_process(proc)  # closes its pipes
    return status


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    """Every process a test started through `spawn`, `DaemonProcess` or `on_teardown` is
    stopped when the test ends, even when it failed: none outlives its test (a daemon left
    running holds its port and files, and disturbs the tests after it)."""
    yield
    while _CLEANUPS:
        _CLEANUPS.pop()()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A started simulator with no devices."""
    simulator = Simulator()
    simulator.start()
    yield simulator
    simulator.stop()


def base_env(sim: Simulator, tmp: Path, **extra: str) -> dict[str, str]:
    """Settings for a daemon on loopback against `sim`, files under `tmp`."""
    env = {
        "LIBRENMS_URL": sim.url,
        "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
        "POLL_METHOD": "local",
        "POLL_COMMAND": poll_command(sim),
        "RECOVERY_INTERVAL_SEC": "0.5",
        "STATE_FILE": str(tmp / "device_state.json"),
        "LOG_FILE": str(tmp / "alert_handler.log"),
        "LISTEN_HOST": "127.0.0.1",
        "LISTEN_PORT": "0",
        "WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "API_RETRIES": "0",
        "RECONCILE_INTERVAL_SEC": "3600",
        "STOP_TIMEOUT_SEC": "5",
        "CHECK_REPOLL_SEC": "0",  # the table simulator has no agent cache (tests/test_lab.py has)
    }
    env.update(extra)
    return env


class RunningDaemon:
    """The daemon built from a Config and run in this process (signals via a queue)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.daemon = daemon_mod.build(cfg)
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.exit_status: int | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        host, port = self.daemon.address
        self.url = f"http://{host}:{port}"

    def _run(self) -> None:
        self.exit_status = daemon_mod.run(self.daemon, self.signals)

    def post(self, body: str | bytes, *, auth: bool = True, **kw: Any) -> requests.Response:
        """POST /alert like LibreNMS (text/plain)."""
        headers = {"Content-Type": "text/plain"}
        if auth:
            headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
        headers.update(kw.pop("headers", {}))
        return requests.post(self.url + "/alert", data=body, headers=headers, timeout=10, **kw)

    def stop(self) -> int | None:
        """SIGTERM through the queue; waits for the run loop to finish."""
        if self._thread.is_alive():
            self.signals.put(signal.SIGTERM)
            self._thread.join(30)
        return self.exit_status


StartDaemon = Callable[..., RunningDaemon]


@pytest.fixture
def start_daemon(tmp_path: Path, sim: Simulator) -> Iterator[Callable[..., RunningDaemon]]:
    """Factory: start_daemon(**env overrides) -> RunningDaemon; all are stopped at teardown."""
    started: list[RunningDaemon] = []

    def start(**extra: str) -> RunningDaemon:
        running = RunningDaemon(parse(base_env(sim, tmp_path, **extra)))
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def alert_body(
    device_id: int, *, state: int = 1, ip: str = "192.0.2.1", rule: str = "Port2 down"
) -> str:
    """The body LibreNMS sends with the README's template."""
    return (
        f'{{"device_id": {device_id}, "host": "cpe-{device_id}", "ip": "{ip}", '
        f'"state": {state}, "rule": "{rule}", "uid": 1}}'
    )


# -- the daemon as a real process -------------------------------------------------------------
def installed_cli() -> list[str]:
    """The installed console script, or fail (CI) / fall back to `python -m` (a source tree)."""
    script = Path(sys.executable).with_name("alert-handler")
    if script.exists():
        return [str(script)]
    if os.environ.get("CI"):
        pytest.fail("alert-handler is not installed in the test venv (pip install .)")
    return [sys.executable, "-m", "alert_handler"]


class DaemonProcess:
    """`alert-handler serve` as a subprocess in `workdir` with a .env file."""

    def __init__(
        self,
        workdir: Path,
        env_lines: dict[str, str],
        port: int,
        process_env: dict[str, str] | None = None,
    ) -> None:
        """`process_env`: more environment variables for the process (not the .env file)."""
        self.workdir = workdir
        self.port = port
        env_file = workdir / ".env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env_lines.items()))
        env_file.chmod(0o600)
        self.log_path = workdir / "stdio.log"
        self._out = self.log_path.open("wb")
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBRENMS", "SSH_"))}
        clean_env.update(process_env or {})
        self.proc = subprocess.Popen(
            [*installed_cli(), "serve"],
            cwd=workdir,
            env=clean_env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        on_teardown(self.close)  # also when the wait below fails
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._healthy, what="the daemon to answer /health")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"daemon exited {self.proc.returncode}: {self.output()}")
        try:
            return requests.get(self.url + "/health", timeout=10).status_code == 200
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            return False

    def output(self) -> str:
        """Everything the process wrote to stdout/stderr."""
        return self.log_path.read_text(errors="replace")

    def post(self, body: str) -> requests.Response:
        """POST /alert with the webhook token, text/plain."""
        headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        return requests.post(self.url + "/alert", data=body, headers=headers, timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        """SIGKILL and reap."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(30)
        self._out.close()

    def close(self) -> None:
        """Teardown: SIGKILL it if it still runs, reap it, close its output file."""
        stop_process(self.proc)
        self._out.close()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def checkpoint_seq(state_file: Path) -> int:
    """The last journal line the state file on disk includes (0: no checkpoint yet)."""
    try:
        return int(json.loads(state_file.read_text())["seq"] or 0)
    except FileNotFoundError:
        return 0
