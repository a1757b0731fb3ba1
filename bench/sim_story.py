"""The simulator as LibreNMS on its own, with the daemon: how long a flipped port takes to get
its device forced down (the simulator's next poll, its alert, the daemon's inspection and PATCH)
and restored (the daemon's next recovery attempt), over several flips of one CPE.

Both run in this process on loopback (the simulator's poll interval and RECOVERY_INTERVAL_SEC
as given); the daemon polls through POLL_COMMAND, a real process, as in production. The
figures are bounded by the two intervals: up to one poll interval (and the inspection) to be
forced down, about one recovery interval to be restored.
"""

from __future__ import annotations

import argparse
import queue
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alert_handler import daemon as daemon_mod  # noqa: E402
from alert_handler.config.table import parse  # noqa: E402
from alert_handler.sim.runner import AlertRunner, Transport  # noqa: E402
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator  # noqa: E402

TOKEN = "bench-webhook-token-0123456789"


def _until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    raise SystemExit(f"timed out after {timeout}s")


def main() -> int:
    """Print the RESULT lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=5, help="down/up cycles (default 5)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="the simulator's")
    parser.add_argument("--recovery-interval", type=float, default=10.0, help="the daemon's")
    parser.add_argument("--quick", action="store_true", help="2 flips, 0.5 s and 0.5 s")
    args = parser.parse_args()
    if args.quick:
        args.flips, args.poll_interval, args.recovery_interval = 2, 0.5, 0.5
    sim = Simulator()
    sim.add_device(103, "cpe-103.example.net", ports={"ether1": "up", "port2": "up"})
    sim.start()
    folder = Path(tempfile.mkdtemp(prefix="sim-story-"))
    poll = f"{shlex.quote(sys.executable)} -m alert_handler.sim poll --url {sim.url}"
    cfg = parse(
        {
            "LIBRENMS_URL": sim.url,
            "LIBRENMS_API_TOKEN": DEFAULT_TOKEN,
            "POLL_METHOD": "local",
            "POLL_COMMAND": f"{poll} --token {DEFAULT_TOKEN} {{device_id}}",
            "RECOVERY_INTERVAL_SEC": str(args.recovery_interval),
            "STATE_FILE": str(folder / "device_state.json"),
            "LOG_FILE": str(folder / "alert_handler.log"),
            "LISTEN_HOST": "127.0.0.1",
            "LISTEN_PORT": "0",
            "WEBHOOK_TOKEN": TOKEN,
        }
    )
    daemon = daemon_mod.build(cfg)
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    thread = threading.Thread(target=daemon_mod.run, args=(daemon, signals), daemon=True)
    thread.start()
    host, port = daemon.address
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    runner = AlertRunner(
        sim, Transport(f"http://{host}:{port}/alert", auth), interval=args.poll_interval
    )
    runner.start()
    down: list[float] = []
    up: list[float] = []
    limit = 10 * (args.poll_interval + args.recovery_interval) + 30
    try:
        for _ in range(args.flips):
            sim.set_link(103, "port2", "down")
            down.append(
                _until(lambda: sim.device(103)["overwrite_ip"] == cfg.unsupervised_ip, limit)
            )
            sim.set_link(103, "port2", "up")
            up.append(_until(lambda: daemon.store.get(103) is None, limit))
    finally:
        runner.stop()
        signals.put(signal.SIGTERM)
        thread.join(30)
        sim.stop()
    print(
        f"poll interval {args.poll_interval:g} s, RECOVERY_INTERVAL_SEC "
        f"{args.recovery_interval:g}, {args.flips} flips of port2"
    )
    print(
        f"RESULT flip down -> forced down: median {statistics.median(down):.2f} s, "
        f"max {max(down):.2f} s"
    )
    print(
        f"RESULT flip up -> restored and forgotten: median {statistics.median(up):.2f} s, "
        f"max {max(up):.2f} s"
    )
    print(f"RESULT alerts sent by the simulator: {len(runner.sent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
