"""The simulator's command line: `poll` (the stand-in for `lnms device:poll <spec>`, stdlib
only so that it starts fast) and `serve`. Run as `python -m alert_handler.sim.simulator`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import urllib.request
from collections.abc import Sequence
from types import FrameType
from urllib.parse import quote, urlencode

from alert_handler.sim.simulator import API_PREFIX, DEFAULT_TOKEN, Simulator, demo_fleet
from alert_handler.sim.transport import post

log = logging.getLogger(__name__)


def _poll_command(
    url: str, token: str, spec: str, timeout: float, poller: str | None, run_as: str
) -> int:
    root = url.rstrip("/")
    root = root[: -len(API_PREFIX)] if root.endswith(API_PREFIX) else root
    query = urlencode({"run_as": run_as, **({"poller": poller} if poller else {})})
    request = urllib.request.Request(  # noqa: S310 (post checks the scheme)
        f"{root}/_sim/poll/{quote(spec, safe='')}?{query}",
        data=b"",
        headers={"X-Auth-Token": token},
        method="POST",
    )
    try:
        status, body = post(request, timeout)
    except OSError as exc:
        print(f"simulator poll: cannot reach {root}: {exc}", file=sys.stderr)
        return 1
    try:
        answer = json.loads(body) if status == 200 else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        print(f"simulator poll: HTTP {status} from {root}: {body[:200]!r}", file=sys.stderr)
        return 1
    sys.stdout.write(str(answer.get("output", "")))
    return int(answer.get("exit", 1))


def _serve_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sim = Simulator(
        args.token,
        read_only_token=args.read_only_token,
        unsupervised_ip=args.unsupervised_ip,
        api_latency=args.api_latency,
        poll_latency=args.poll_latency,
        timezone_name=args.timezone,
    )
    if args.devices > 0:
        for n in range(1, args.devices + 1):
            sim.add_device(n, f"cpe-{n:05d}.example.net", ports={"ether1": "up", "port2": "up"})
    else:
        demo_fleet(sim)
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def record(signum: int, frame: FrameType | None) -> None:
        signals.put(signum)  # only record; the main loop acts

    for which in (signal.SIGTERM, signal.SIGINT):
        signal.signal(which, record)
    try:
        sim.start(args.host, args.port)
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(sim.url, flush=True)
    try:
        while True:
            try:
                received = signals.get(timeout=0.5)
            except queue.Empty:
                continue
            log.info("simulator: signal %d, stopping", received)
            return 0
    finally:
        sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """`poll` (exit code of the simulated lnms device:poll) or `serve` (until SIGTERM/SIGINT)."""
    parser = argparse.ArgumentParser(prog="python -m alert_handler.sim.simulator")
    commands = parser.add_subparsers(dest="command", required=True)
    poll = commands.add_parser("poll", help="poll a device like `lnms device:poll <spec>`")
    poll.add_argument("--url", required=True, help="the simulator's API URL, .../api/v0")
    poll.add_argument("--token", default=DEFAULT_TOKEN)
    poll.add_argument("--timeout", type=float, default=60.0)
    poll.add_argument(
        "--poller",
        default=os.environ.get("SIM_POLLER"),
        help="the poller this runs on (default: $SIM_POLLER, else the main LibreNMS host)",
    )
    poll.add_argument(
        "--run-as", default="librenms", help="the user lnms runs as (root and others: exit 1)"
    )
    poll.add_argument("device", help="device_id or hostname")
    serve = commands.add_parser("serve", help="run the simulator until SIGTERM/SIGINT")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", default=DEFAULT_TOKEN)
    serve.add_argument("--read-only-token")
    serve.add_argument("--devices", type=int, default=0, help="N generated devices (0: demo fleet)")
    serve.add_argument("--unsupervised-ip", default="127.0.0.50")
    serve.add_argument("--api-latency", type=float, default=0.0)
    serve.add_argument("--poll-latency", type=float, default=0.0)
    serve.add_argument("--timezone", default="UTC", help="the LibreNMS server's zone (IANA)")
    serve.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "poll":
        return _poll_command(
            args.url, args.token, args.device, args.timeout, args.poller, args.run_as
        )
    return _serve_command(args)
