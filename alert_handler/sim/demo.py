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
from collections.abc import Callable
from pathlib import Path

from alert_handler import daemon as daemon_mod
from alert_handler.cli.logs import setup_logging, stop_logging
from alert_handler.config import parse
from alert_handler.core.records import Phase
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator, demo_fleet


def _say(text: str) -> None:
    print(f"\n=== {text}", file=sys.stderr, flush=True)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _null(value: str | None) -> str:
    """A value as the state file and the log show it: null, or the bare string."""
    return "null" if value is None else value


def run_demo(
    seconds: float = 90.0, interval: float = 5.0, workdir: str | None = None, keep: bool = False
) -> int:
    """Run the scripted demo; 0 when every device ends on its original overwrite_ip. The
    temporary folder (not a given `workdir`) is removed at the end unless `keep`."""
    folder = Path(workdir or tempfile.mkdtemp(prefix="alert-handler-demo-"))
    try:
        return _run(folder, seconds, interval, keep or workdir is not None)
    finally:
        _close_log_files()
        if workdir is None and not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _close_log_files() -> None:
    """Close the demo's log handlers (the file is in the folder about to be removed)."""
    stop_logging()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()


def _run(folder: Path, seconds: float, interval: float, kept: bool) -> int:
    sim = Simulator()
    demo_fleet(sim)
    sim.set_link(102, "port2", "down")
    sim.poll(102)  # LibreNMS learns that 102's port2 is down
    sim.start()
    token = secrets.token_hex(16)
    poll = f"{shlex.quote(sys.executable)} -m alert_handler.sim poll --url {sim.url}"
    env = {
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
    cfg = parse(env)
    setup_logging(cfg)
    originals = {d: sim.device(d)["overwrite_ip"] for d in (101, 102, 103, 104)}
    daemon = daemon_mod.build(cfg)
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    runner = threading.Thread(target=daemon_mod.run, args=(daemon, signals), daemon=True)
    runner.start()
    host, port = daemon.address
    webhook = f"http://{host}:{port}/alert"
    auth = {"Authorization": f"Bearer {token}"}
    unsup = cfg.unsupervised_ip
    ok = False
    try:
        removed = "" if kept else " (removed at the end; --keep keeps them)"
        _say(f"LibreNMS simulator at {sim.url}; daemon at {webhook}; files in {folder}{removed}")
        _say('LibreNMS posts "Port2 down" alerts for CPEs 101, 102, 103 (stale), 104')
        for device_id in (101, 102, 103, 104):
            sim.send_alert(webhook, device_id, headers=auth)
        _wait(lambda: all(sim.device(d)["overwrite_ip"] == unsup for d in (101, 102, 104)), 10)
        _say('LibreNMS polls the forced-down CPEs: they go down and it alerts "Device Down"')
        for device_id in (101, 102, 104):
            sim.poll(device_id)
            sim.send_alert(
                webhook, device_id, rule="Device Down! Due to no ICMP response.", headers=auth
            )
        _say("the CPEs are still down: the first recovery attempt forces them down again")
        _wait(
            lambda: all(
                r.attempts >= 1 and r.phase is Phase.DOWN for r in daemon.store.records().values()
            ),
            interval * 3,
        )
        _say("port2 of CPEs 101 and 102 comes back")
        sim.set_link(101, "port2", "up")
        sim.set_link(102, "port2", "up")
        _wait(lambda: daemon.store.get(101) is None and daemon.store.get(102) is None, interval * 3)
        _say("port2 of CPE 104 comes back")
        sim.set_link(104, "port2", "up")
        _wait(lambda: daemon.store.count() == 0, max(interval * 3, seconds - interval * 6))
        _say("Result: every CPE back on its own overwrite_ip")
        ok = daemon.store.count() == 0
        for device_id, original in originals.items():
            final = sim.device(device_id)["overwrite_ip"]
            good = final == original
            ok &= good
            print(
                f"  device {device_id}: original overwrite_ip {_null(original):14} "
                f"now {_null(final):14} {'OK' if good else 'WRONG'}",
                file=sys.stderr,
            )
        count = len(sim.patches())
        where = f"log: {cfg.log_file}" if kept else "its files are removed (--keep keeps them)"
        calls = "1 PATCH call" if count == 1 else f"{count} PATCH calls"
        print(f"  {calls} sent to LibreNMS; {where}", file=sys.stderr)
    finally:
        signals.put(signal.SIGTERM)
        runner.join(30)
        sim.stop()
    _say("demo " + ("succeeded" if ok else "FAILED"))
    return 0 if ok else 1
