"""The simulator's command lines: `poll` (the stand-in for `lnms device:poll <spec>`, stdlib
only so that it starts fast) and `serve`, run as `python -m alert_handler.sim`; and
`alert-handler simulator` (the demo's four CPEs, with a guide to trying every command against
them) and its `--flip`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import secrets
import shlex
import signal
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import quote, urlencode

from alert_handler.sim.runner import (
    DEFAULT_POLL_INTERVAL,
    AlertRunner,
    RuleExtra,
    Transport,
    default_rules,
)
from alert_handler.sim.simulator import API_PREFIX, DEFAULT_TOKEN, Simulator, demo_fleet
from alert_handler.sim.transport import post

log = logging.getLogger(__name__)


def _poll_command(
    url: str,
    token: str,
    spec: str,
    timeout: float,
    poller: str | None,
    run_as: str,
    agent: str | None = None,
) -> int:
    root = url.rstrip("/")
    root = root[: -len(API_PREFIX)] if root.endswith(API_PREFIX) else root
    query = urlencode({"run_as": run_as, **({"poller": poller} if poller else {})})
    request = urllib.request.Request(  # noqa: S310 (post checks the scheme)
        f"{root}/_sim/poll/{quote(spec, safe='')}?{query}",
        data=b"",
        headers={"X-Auth-Token": token, **({"User-Agent": agent} if agent else {})},
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


def catch_signals() -> queue.SimpleQueue[int]:
    """SIGTERM and SIGINT recorded on a queue from now on (install before saying "Ctrl-C
    stops it": a signal sent as soon as that is read must not be lost, nor kill the process
    half-way, even where SIGINT was ignored when it started)."""
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def record(signum: int, frame: FrameType | None) -> None:
        signals.put(signum)  # only record; the main loop acts

    for which in (signal.SIGTERM, signal.SIGINT):
        signal.signal(which, record)
    return signals


def _wait_for_signal(
    sim: Simulator,
    signals: queue.SimpleQueue[int] | None = None,
    runner: AlertRunner | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT (Ctrl-C), with `runner` (LibreNMS's own polls and alert
    rules) running meanwhile; 0."""
    if signals is None:
        signals = catch_signals()
    if runner is not None:
        runner.start()
    try:
        while True:
            try:
                received = signals.get(timeout=0.5)
            except queue.Empty:
                continue
            log.info("simulator: signal %d, stopping", received)
            return 0
    finally:
        if runner is not None:
            runner.stop()
        sim.stop()


# -- alert-handler simulator ------------------------------------------------------------------
def simulator_env(sim_url: str, token: str, daemon_port: int, folder: Path) -> dict[str, str]:
    """Settings that point a daemon on this host at the simulator at `sim_url`."""
    python = shlex.quote(sys.executable)
    return {
        "LIBRENMS_URL": sim_url,
        "LIBRENMS_API_TOKEN": token,
        "POLL_METHOD": "local",
        "POLL_COMMAND": (
            f"{python} -m alert_handler.sim poll --url {sim_url} --token {token} {{device_id}}"
        ),
        "WEBHOOK_TOKEN": secrets.token_hex(16),
        "LISTEN_HOST": "127.0.0.1",
        "LISTEN_PORT": str(daemon_port),
        "RECOVERY_INTERVAL_SEC": "10",
        "CHECK_REPOLL_SEC": "0",  # the table simulator has no agent cache (--lab: see labdemo)
        "STATE_FILE": str(folder / "simulator-state.json"),
        "LOG_FILE": str(folder / "simulator.log"),
    }


class EnvFileExists(Exception):
    """--write-env names a file that exists, and --force was not given."""


def _write_env(path: Path, env: dict[str, str], *, force: bool = False) -> Path | None:
    """The settings as an env file, mode 0600 (it holds the tokens), written whole or not at
    all. An existing file is refused (EnvFileExists) unless `force`; then it is first copied
    to `<name>.bak-<UTC time>` (mode 0600 too), which is returned."""
    backup = None
    if path.exists() or path.is_symlink():
        if not force:
            raise EnvFileExists(path)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        with path.open("rb") as old:
            data = old.read()
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask or a leftover file said
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("".join(f"{k}={v}\n" for k, v in env.items()))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return backup


def _guide(sim: Simulator, args: argparse.Namespace, token: str, env: dict[str, str]) -> str:
    """What `alert-handler simulator` prints: the devices, the settings, what to try."""
    root = sim.url.removesuffix(API_PREFIX)
    here = f" --port {args.port}" if args.port != 8000 else ""
    here = (f" --host {args.host}" if args.host != "127.0.0.1" else "") + here
    if args.port == 0:
        here = f" --port {root.rsplit(':', 1)[1]}"
    here += f" --token {token}" if token != DEFAULT_TOKEN else ""
    env_file = args.write_env or "simulator.env"
    ah = f"alert-handler --env-file {shlex.quote(env_file)}"
    saved = f"written to {env_file}" if args.write_env else f"to save as {env_file}"
    lines = [f"LibreNMS simulator at {sim.url}", f"API token: {token}", "", "Its devices:"]
    for device_id in (101, 102, 103, 104):
        row = sim.device(device_id)
        ip = row["overwrite_ip"] or "null"
        link = sim.port(device_id, "port2").link
        lines.append(f"  {device_id}  {row['hostname']:20}  overwrite_ip {ip:13}  port2 {link}")
    lines += [
        "",
        f"Settings for a daemon on this host, {saved}:",
        *(f"  {k}={v}" for k, v in env.items()),
        "",
        *_polling_lines(args, here),
        "",
        "Then, each in its own terminal:",
        f"  {ah}                    # the daemon",
        f"  {ah} track 101          # take device 101 as an alert would",
        f"  {ah} status             # 101 forced down (overwrite_ip {sim.unsupervised_ip})",
        f"  alert-handler simulator{here} --flip 101 port2 up",
        f"  {ah} status             # within RECOVERY_INTERVAL_SEC: 101 restored, forgotten",
        "",
        "Flip a port with curl instead (LibreNMS sees it at the device's next poll):",
        f"  curl -X POST -H 'X-Auth-Token: {token}' --data up {root}/_sim/link/101/port2",
        "Post an alert as LibreNMS would:",
        f"  curl -H 'Authorization: Bearer {env['WEBHOOK_TOKEN']}' --data "
        f'\'{{"device_id": 104, "state": 1, "rule": "Port2 down"}}\' '
        f"http://127.0.0.1:{env['LISTEN_PORT']}/alert",
        "",
        "Ctrl-C stops the simulator.",
    ]
    return "\n".join(lines)


def _polling_lines(args: argparse.Namespace, here: str) -> list[str]:
    """What the guide says of the simulator's own polling and alerts."""
    interval = getattr(args, "poll_interval", DEFAULT_POLL_INTERVAL)
    if not interval or interval <= 0:
        return ["It polls only when asked (--poll-interval 0): post the alerts yourself."]
    delay, count = getattr(args, "alert_delay", 0.0), getattr(args, "max_alerts", 1)
    return [
        f"It polls every device every {interval:g} s (LibreNMS: every 300 s), runs its alert "
        "rules after each poll",
        f"(Port2 down, Device Down, SNMP not responding; delay {delay:g} s, max alerts {count}) "
        "and sends alerts",
        "and recovery notices to the daemon at LISTEN_PORT, never retried. 101 and 104 have "
        "port2 down:",
        "a daemon started with these settings picks them up. A flip alone drives the story:",
        f"  alert-handler simulator{here} --flip 103 port2 down   # polled, alerted, forced down",
        f"  alert-handler simulator{here} --flip 103 port2 up     # restored at the next attempt",
    ]


def simulator_command(args: argparse.Namespace) -> int:
    """`alert-handler simulator`: serve the four demo CPEs on loopback, print the guide, run
    until Ctrl-C or SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = args.token or DEFAULT_TOKEN
    sim = Simulator(token)
    demo_fleet(sim)
    try:
        sim.start(args.host, args.port)
    except OSError as exc:
        print(
            f"alert-handler: cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
            "(--port picks another, --port 0 any free one)",
            file=sys.stderr,
        )
        return 1
    env = simulator_env(sim.url, token, args.daemon_port, Path.cwd())
    backup = None
    if args.write_env:
        try:
            backup = _write_env(Path(args.write_env), env, force=args.force)
        except EnvFileExists:
            sim.stop()
            print(
                f"alert-handler: {args.write_env} exists; not overwritten (--force replaces it "
                "and keeps a copy as <name>.bak-<UTC time>)",
                file=sys.stderr,
            )
            return 1
        except OSError as exc:
            sim.stop()
            print(
                f"alert-handler: cannot write {args.write_env}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    runner = _alert_runner(sim, args, env)
    signals = catch_signals()
    print(_guide(sim, args, token, env), flush=True)
    if backup is not None:
        print(f"(the old {args.write_env} is kept as {backup})", flush=True)
    return _wait_for_signal(sim, signals, runner)


def _alert_runner(
    sim: Simulator, args: argparse.Namespace, env: dict[str, str]
) -> AlertRunner | None:
    """LibreNMS's poller and alert runner, posting to the daemon the settings describe (None
    with --poll-interval 0)."""
    interval = getattr(args, "poll_interval", DEFAULT_POLL_INTERVAL)
    if not interval or interval <= 0:
        return None
    extra = RuleExtra(
        delay=getattr(args, "alert_delay", 0.0),
        interval=getattr(args, "alert_interval", 0.0),
        count=getattr(args, "max_alerts", 1),
    )
    transport = Transport(
        f"http://127.0.0.1:{env['LISTEN_PORT']}/alert",
        {"Authorization": f"Bearer {env['WEBHOOK_TOKEN']}", "Content-Type": "application/json"},
    )
    return AlertRunner(sim, transport, interval=interval, rules=default_rules(extra))


def flip_command(args: argparse.Namespace) -> int:
    """`alert-handler simulator --flip ID IFNAME up|down`: POST /_sim/link/... to the running
    simulator; 0 when it took the change."""
    raw_id, ifname, status = args.flip
    if not raw_id.isdigit():
        print(
            f"alert-handler simulator: --flip: the device id must be a number, got {raw_id!r}; "
            "see `alert-handler simulator --help`",
            file=sys.stderr,
        )
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    root = f"http://{host}:{args.port}"
    request = urllib.request.Request(  # noqa: S310 (post checks the scheme)
        f"{root}/_sim/link/{int(raw_id)}/{quote(ifname, safe='')}",
        data=status.encode(),
        headers={"X-Auth-Token": args.token or DEFAULT_TOKEN},
        method="POST",
    )
    try:
        code, body = post(request, 10.0)
    except OSError as exc:
        print(
            f"alert-handler: no simulator answers at {root} ({exc}); start one with "
            "`alert-handler simulator` (give --port as it was started)",
            file=sys.stderr,
        )
        return 1
    if code != 200:
        try:
            why = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            why = ""
        print(f"alert-handler: the simulator answered {code}: {why}".rstrip(": "), file=sys.stderr)
        return 1
    print(f"device {int(raw_id)} {ifname}: link {status} (LibreNMS sees it at the next poll)")
    return 0


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
    try:
        sim.start(args.host, args.port)
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(sim.url, flush=True)
    return _wait_for_signal(sim)


def main(argv: Sequence[str] | None = None) -> int:
    """`poll` (exit code of the simulated lnms device:poll) or `serve` (until SIGTERM/SIGINT)."""
    parser = argparse.ArgumentParser(prog="python -m alert_handler.sim")
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
    poll.add_argument(
        "--user-agent", help="the User-Agent the simulator logs (tests tell pollers apart)"
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
            args.url,
            args.token,
            args.device,
            args.timeout,
            args.poller,
            args.run_as,
            args.user_agent,
        )
    return _serve_command(args)
