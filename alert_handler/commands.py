"""The operator commands: check, status, release, track, pause, resume, demo.

Commands that change state go through the running daemon's HTTP API, so the state file keeps
one writer; `status`, `pause` and `resume` fall back to the state file when no daemon runs.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from alert_handler.config import Config

OK, FAIL = "\u2714", "\u2718"


class DaemonDown(Exception):
    """No daemon answers on the configured address."""


def daemon_url(cfg: Config) -> str:
    """The base URL of the running daemon on this host."""
    host = cfg.listen_host
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if cfg.tls_cert_file else "http"
    return f"{scheme}://{host}:{cfg.listen_port}"


def call_daemon(cfg: Config, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """One request to the running daemon; DaemonDown if nothing listens."""
    data = b"" if method == "POST" else None
    url = daemon_url(cfg) + path  # always http(s): built here, never from input
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310
    if cfg.webhook_token:
        request.add_header("Authorization", f"Bearer {cfg.webhook_token}")
    context = None
    if cfg.tls_cert_file:
        # Our own listener on loopback: the point is reaching it, not authenticating it.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return exc.code, body
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise DaemonDown(str(exc)) from None


def _load(args: argparse.Namespace) -> Config:
    from alert_handler.cli import load_config

    return load_config(args)


# -- status -----------------------------------------------------------------------------------
def format_table(rows: list[dict[str, Any]]) -> str:
    """Devices as an aligned text table."""
    headers = ["device", "hostname", "phase", "attempts", "next attempt", "last error"]
    lines = [
        [
            str(r.get("device_id")),
            str(r.get("hostname") or "-"),
            str(r.get("phase")),
            str(r.get("attempts")),
            str(r.get("next_attempt") or "-"),
            str(r.get("last_error") or "-"),
        ]
        for r in rows
    ]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(s.rstrip() for s in out)


def cmd_status(args: argparse.Namespace) -> int:
    """Print the tracked devices, from the daemon or else from the state file."""
    cfg = _load(args)
    try:
        code, body = call_daemon(cfg, "GET", "/devices")
        if code != 200:
            print(f"alert-handler: daemon answered {code}: {body.get('error')}", file=sys.stderr)
            return 1
        source = f"from the running daemon at {daemon_url(cfg)}"
        rows, paused = body.get("devices", []), bool(body.get("paused"))
    except DaemonDown:
        from alert_handler.app import device_row
        from alert_handler.records import snapshot_from_json

        path = Path(cfg.state_file)
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        try:
            snap = snapshot_from_json(text, time.time())
        except ValueError as exc:
            print(f"alert-handler: {path} is corrupt: {exc}", file=sys.stderr)
            return 1
        source = f"from the state file {path} (the daemon is not running)"
        rows = [device_row(r) for _, r in sorted(snap.devices.items())]
        paused = snap.paused
    if args.json:
        print(json.dumps({"source": source, "paused": paused, "devices": rows}, indent=2))
        return 0
    print(f"{len(rows)} devices tracked, {source}{'; PAUSED' if paused else ''}")
    if rows:
        print(format_table(rows))
    return 0


# -- release, track, pause, resume ------------------------------------------------------------
def _post(args: argparse.Namespace, path: str, done: str) -> int:
    cfg = _load(args)
    try:
        code, body = call_daemon(cfg, "POST", path)
    except DaemonDown:
        return _offline(args, cfg, path)
    if code >= 400:
        print(f"alert-handler: {body.get('error', f'HTTP {code}')}", file=sys.stderr)
        return 1
    print(done)
    return 0


def _offline(args: argparse.Namespace, cfg: Config, path: str) -> int:
    """pause/resume with no daemon: edit the state file under its lock."""
    if path not in ("/pause", "/resume"):
        print(
            f"alert-handler: no daemon answers at {daemon_url(cfg)}; start it first",
            file=sys.stderr,
        )
        return 1
    from alert_handler.state import StateLock, StateLocked, StateStore, load_state

    state_path = Path(cfg.state_file)
    lock = StateLock(state_path)
    try:
        lock.acquire()
    except StateLocked as exc:
        print(f"alert-handler: {exc}, but it does not answer at {daemon_url(cfg)}", file=sys.stderr)
        return 1
    try:
        loaded = load_state(state_path, time.time())
        if loaded.quarantined_to is not None:
            print(f"alert-handler: state file was corrupt, moved to {loaded.quarantined_to}")
        store = StateStore(state_path, loaded.snapshot)
        store.start()
        store.set_paused(path == "/pause")
        store.flush(10)
        store.close()
    finally:
        lock.release()
    word = "paused" if path == "/pause" else "resumed"
    print(f"{word} (written to {state_path}; no daemon running)")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    """Restore a device's original overwrite_ip and forget it."""
    return _post(args, f"/devices/{args.device_id}/release", f"device {args.device_id}: releasing")


def cmd_track(args: argparse.Namespace) -> int:
    """Start handling a device as an alert would."""
    return _post(args, f"/devices/{args.device_id}/track", f"device {args.device_id}: tracked")


def cmd_pause(args: argparse.Namespace) -> int:
    """Maintenance mode on."""
    return _post(args, "/pause", "paused: alerts are recorded, no device is changed")


def cmd_resume(args: argparse.Namespace) -> int:
    """Maintenance mode off."""
    return _post(args, "/resume", "resumed")


# -- check ------------------------------------------------------------------------------------
def cmd_check(args: argparse.Namespace) -> int:
    """Config, API token and rights, SSH and the poll command: one line per check."""
    from alert_handler.daemon import make_api
    from alert_handler.librenms import LibreNMSError
    from alert_handler.poller import PollError, make_poller

    cfg = _load(args)
    failed = False

    def line(ok: bool, text: str) -> None:
        nonlocal failed
        failed |= not ok
        print(f"{OK if ok else FAIL} {text}")

    line(True, f"configuration is valid ({args.env_file or '.env'} and environment)")
    api = make_api(cfg)
    try:
        devices = api.list_devices()
        line(True, f"LibreNMS API at {cfg.librenms_url} answers; {len(devices)} devices")
        try:
            admin = api.has_admin_rights()
            line(
                admin,
                "API token has admin rights"
                if admin
                else "API token is read-only: PATCH will be refused",
            )
        except LibreNMSError as exc:
            line(False, f"cannot tell the token's rights: {exc}")
    except LibreNMSError as exc:
        line(False, f"LibreNMS API: {exc}")
    finally:
        api.close()
    poller = make_poller(cfg)
    try:
        try:
            line(True, f"poll method {cfg.poll_method}: {poller.check()}")
        except PollError as exc:
            line(False, f"poll method {cfg.poll_method}: {exc}")
        if args.device_id is not None:
            try:
                result = poller.poll(args.device_id)
                tail = " | ".join(result.output_tail[-3:])
                line(
                    result.exit_status == 0,
                    f"poll of device {args.device_id}: exit {result.exit_status} "
                    f"({result.meaning}) in {result.duration:.1f}s: {tail}",
                )
            except PollError as exc:
                line(False, f"poll of device {args.device_id}: {exc}")
    finally:
        poller.close()
    if cfg.webhook_token is None:
        print(f"{FAIL} WEBHOOK_TOKEN is not set: the webhook accepts anyone (warning)")
    return 1 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the daemon against the built-in simulator and show a device recovered."""
    from alert_handler.demo import run_demo

    return run_demo(seconds=args.seconds, interval=args.interval)


def _device_id(text: str) -> int:
    from alert_handler.alerts import BadPayload, parse_device_id

    try:
        return parse_device_id(text)
    except BadPayload as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the commands on the `alert-handler` parser; returns their names."""
    p = sub.add_parser("check", parents=[common], help="test config, API, SSH and the poll command")
    p.add_argument("device_id", nargs="?", type=_device_id, help="also poll this device")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("status", parents=[common], help="show tracked devices")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)
    for name, func, text in (
        ("release", cmd_release, "restore a device's original overwrite_ip now and forget it"),
        ("track", cmd_track, "start handling a device by hand, as an alert would"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("device_id", type=_device_id)
        p.set_defaults(func=func)
    sub.add_parser(
        "pause", parents=[common], help="maintenance mode: change no device"
    ).set_defaults(func=cmd_pause)
    sub.add_parser("resume", parents=[common], help="leave maintenance mode").set_defaults(
        func=cmd_resume
    )
    p = sub.add_parser("demo", help="run against the built-in LibreNMS simulator")
    p.add_argument("--seconds", type=float, default=90.0, help="give up after this long")
    p.add_argument("--interval", type=float, default=5.0, help="RECOVERY_INTERVAL_SEC to use")
    p.set_defaults(func=cmd_demo)
    return {"check", "status", "release", "track", "pause", "resume", "demo"}
