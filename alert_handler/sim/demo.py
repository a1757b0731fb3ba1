"""`alert-handler demo`: the daemon against the built-in LibreNMS simulator, on loopback.

Four CPEs: 101 (overwrite_ip null) and 102 (overwrite_ip set) lose port2 and get it back,
103's alert is stale (port2 already up), 104 stays down for one more round. The log shows each
device forced down, the self-inflicted "Device Down" alert counted as a repeat, and every device
restored to exactly its original overwrite_ip. Its files live in a temporary folder, removed
at the end unless `--keep` is given.
"""

from __future__ import annotations

import logging
import queue
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from alert_handler import daemon as daemon_mod
from alert_handler.config.table import Config, ConfigError, parse
from alert_handler.ops.logs import setup_logging, stop_logging
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator, demo_fleet


def _say(text: str) -> None:
    print(f"\n=== {text}", file=sys.stderr, flush=True)


def shortest(interval: float) -> float:
    """The shortest `--seconds` that can show a recovery: start-up, a force-down and three
    recovery attempts (the last two bring the CPEs back), with a margin."""
    return 4 * interval + 5


class _ForcedDown(logging.Handler):
    """Brings a CPE's port back at the right moment of the story: just after the log line of
    its Nth force-down, in the thread that wrote it, before that thread goes on. Its next
    check is then RECOVERY_INTERVAL_SEC away and certain to see the port up, and the narration
    ("port2 of CPE 104 comes back") is written between that line and the check's, never
    before a line about an earlier check, however busy the machine."""

    def __init__(self, sim: Simulator) -> None:
        super().__init__(logging.INFO)
        self.sim = sim
        self.counts: dict[int, int] = {}
        self.plan: dict[int, int] = {}  # device -> the force-down after which its port is up
        self.flipped: set[int] = set()
        self._guard = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        """As logging.Handler.handle, without holding the handler's lock around `emit`: the
        simulator may log while it holds its own lock, which `emit` takes to flip a port."""
        if self.filter(record):
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not (text.startswith("device=") and "-> forced down " in text):
            return
        device = int(text.split(" ", 1)[0].removeprefix("device="))
        with self._guard:
            self.counts[device] = self.counts.get(device, 0) + 1
            due = self.plan.get(device) == self.counts[device]
            if due:
                self.flipped.add(device)
        if due:
            self.sim.set_link(device, "port2", "up")
            _say(f"port2 of CPE {device} comes back")

    def bring_back(self, device_id: int, after: int | None = None) -> None:
        """Bring the port up after the device's `after`th force-down (None: its next one)."""
        with self._guard:
            self.plan[device_id] = self.counts.get(device_id, 0) + 1 if after is None else after


class _Clock:
    """The demo's deadline (`--seconds`): every wait ends by then."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def wait(self, condition: Callable[[], bool]) -> bool:
        while time.monotonic() < self.deadline:
            if condition():
                return True
            time.sleep(0.05)
        return condition()


def _null(value: str | None) -> str:
    """A value as the state file and the log show it: null, or the bare string."""
    return "null" if value is None else value


def run_demo(
    seconds: float = 90.0, interval: float = 5.0, workdir: str | None = None, keep: bool = False
) -> int:
    """Run the scripted demo; 0 when every device ends on its original overwrite_ip, 1 when
    `seconds` ran out first (`shortest(interval)` is enough on an idle machine). The
    temporary folder (not a given `workdir`) is removed at the end unless `keep`."""
    folder = Path(workdir or tempfile.mkdtemp(prefix="alert-handler-demo-"))
    with term_like_ctrl_c():
        try:
            return _run(folder, seconds, interval, keep or workdir is not None)
        finally:
            with signals_held():
                _close_log_files()
                if workdir is None and not keep:
                    shutil.rmtree(folder, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def term_like_ctrl_c() -> Iterator[None]:
    """Within the block SIGTERM ends a demo as Ctrl-C does, by unwinding through the caller's
    `finally` (killed outright, a demo left its files, and `demo --lab` its namespaces, links
    and blackhole routes). A demo's main thread runs the story itself: there is no loop that
    could act on a recorded signal."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_held() -> Iterator[None]:
    """No SIGTERM or Ctrl-C cuts the block (a teardown) short."""
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def demo_env(sim: Simulator, folder: Path, interval: float, token: str) -> dict[str, str]:
    """The daemon's settings for a demo: `sim`'s API and poll command, files in `folder`, any
    free port on loopback, `token` for the webhook."""
    poll = f"{shlex.quote(sys.executable)} -m alert_handler.sim poll --url {sim.url}"
    return {
        "LIBRENMS_URL": sim.url,
        "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
        "POLL_METHOD": "local",
        "POLL_COMMAND": f"{poll} --token {DEFAULT_TOKEN} {{device_id}}",
        "RECOVERY_INTERVAL_SEC": str(interval),
        "STATE_FILE": str(folder / "device_state.json"),
        "LOG_FILE": str(folder / "alert_handler.log"),
        "LISTEN_HOST": "127.0.0.1",
        "LISTEN_PORT": "0",
        "WEBHOOK_TOKEN": token,
    }


class InThread:
    """The daemon built from `cfg` and run in a thread of this process, as `serve` runs it;
    `stop()` ends it as SIGTERM would."""

    def __init__(self, cfg: Config) -> None:
        self.daemon = daemon_mod.build(cfg)
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._runner = threading.Thread(
            target=daemon_mod.run, args=(self.daemon, self._signals), daemon=True
        )
        self._runner.start()
        host, port = self.daemon.address
        self.webhook = f"http://{host}:{port}/alert"

    def stop(self) -> None:
        self._signals.put(signal.SIGTERM)
        self._runner.join(30)


def _close_log_files() -> None:
    """Close the demo's log handlers (the file is in the folder about to be removed)."""
    stop_logging()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def _run(folder: Path, seconds: float, interval: float, kept: bool) -> int:
    clock = _Clock(seconds)
    print(
        "=== alert-handler demo: a stand-in LibreNMS with four CPEs and the daemon, both on this "
        f"machine; it ends within {seconds:g} s (--seconds)",
        file=sys.stderr,
        flush=True,
    )
    sim = Simulator()
    demo_fleet(sim)
    sim.set_link(102, "port2", "down")
    sim.poll(102)  # LibreNMS learns that 102's port2 is down
    sim.start()
    token = secrets.token_hex(16)
    # the table simulator has no agent cache: one read is fresh
    env = {**demo_env(sim, folder, interval, token), "CHECK_REPOLL_SEC": "0"}
    try:
        cfg = parse(env)
    except ConfigError as exc:
        sim.stop()
        print(f"alert-handler demo: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg)
    forced = _ForcedDown(sim)
    for device_id in (101, 102):  # each just after its first attempt forced it down again
        forced.bring_back(device_id, after=2)
    logging.getLogger().addHandler(forced)  # after the writers: it sees a line once written
    originals = {d: sim.device(d)["overwrite_ip"] for d in (101, 102, 103, 104)}
    running = InThread(cfg)
    daemon, webhook = running.daemon, running.webhook
    auth = {"Authorization": f"Bearer {token}"}
    unsup = cfg.unsupervised_ip
    ok = False
    try:
        removed = "" if kept else " (removed at the end; --keep keeps them)"
        _say(f"LibreNMS simulator at {sim.url}; daemon at {webhook}; files in {folder}{removed}")
        _say('LibreNMS posts "Port2 down" alerts for CPEs 101, 102, 103 (stale), 104')
        for device_id in (101, 102, 103, 104):
            sim.send_alert(webhook, device_id, headers=auth)
        clock.wait(lambda: all(sim.device(d)["overwrite_ip"] == unsup for d in (101, 102, 104)))
        _say('LibreNMS polls the forced-down CPEs: they go down and it alerts "Device Down"')
        for device_id in (101, 102, 104):
            sim.poll(device_id)
            sim.send_alert(
                webhook, device_id, rule="Device Down! Due to no ICMP response.", headers=auth
            )
        _say("the CPEs are still down: the first recovery attempt forces them down again")
        clock.wait(lambda: daemon.store.get(101) is None and daemon.store.get(102) is None)
        forced.bring_back(104)  # one round later
        clock.wait(lambda: daemon.store.count() == 0)
        ok = daemon.store.count() == 0
        if ok:
            _say("Result: every CPE back on its own overwrite_ip")
        else:
            _say(f"Result: time is up after {clock.seconds:g} s (--seconds), not every CPE is back")
        for device_id, original in originals.items():
            final = sim.device(device_id)["overwrite_ip"]
            good = final == original
            ok &= good
            verdict = "OK" if good else ("still down" if final == unsup else "WRONG")
            print(
                f"  device {device_id}: original overwrite_ip {_null(original):14} "
                f"now {_null(final):14} {verdict}",
                file=sys.stderr,
            )
        count = len(sim.patches())
        where = f"log: {cfg.log_file}" if kept else "its files are removed (--keep keeps them)"
        calls = "1 PATCH call" if count == 1 else f"{count} PATCH calls"
        print(f"  {calls} sent to LibreNMS; {where}", file=sys.stderr)
    finally:
        running.stop()
        logging.getLogger().removeHandler(forced)
        sim.stop()
    _say("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1
