"""The commands that act through the running daemon: status, release, track, pause, resume.

They go through its HTTP API, so the state file keeps one writer; `status` reads the state
file when no daemon answers, and `pause`/`resume` write it (under the daemon's lock) so that
maintenance mode can be set before a start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from alert_handler.cli.env import load_config
from alert_handler.config import Config
from alert_handler.http.views import device_row
from alert_handler.store.files import StateLock, StateLocked, load_state, read_state
from alert_handler.store.state import StateStore

_RELEASE_POLL = 0.2  # seconds between looks at /devices while `release` waits


class DaemonDown(Exception):
    """No alert-handler answers on the configured address."""


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


def _opener(cfg: Config) -> urllib.request.OpenerDirector:
    """urllib without proxies: the daemon is on this host, http_proxy must not catch it."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if cfg.tls_cert_file:
        # Our own listener on loopback: the point is reaching it, not authenticating it.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


def call_daemon(cfg: Config, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """One request to the running daemon: (status, JSON body); DaemonDown if none answers."""
    data = b"" if method == "POST" else None
    url = daemon_url(cfg) + path  # always http(s): built here, never from input
    request = urllib.request.Request(url, method=method, data=data)  # noqa: S310
    if cfg.webhook_token:
        request.add_header("Authorization", f"Bearer {cfg.webhook_token}")
    try:
        with _opener(cfg).open(request, timeout=10) as resp:
            status, raw = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonDown(str(exc)) from None
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise DaemonDown(f"{url} answered something that is not alert-handler") from None
    return status, body if isinstance(body, dict) else {}


def _error(text: str) -> int:
    print(f"alert-handler: {text}", file=sys.stderr)
    return 1


_HINTS = {
    401: " (is WEBHOOK_TOKEN here the running daemon's?)",
    403: " (ALLOWED_CLIENTS must include 127.0.0.1 for these commands)",
}


def _refused(code: int, body: dict[str, Any]) -> int:
    """The daemon said no: one line with its reason and, for 401/403, what to look at."""
    return _error(f"the daemon answered {code}: {body.get('error')}{_HINTS.get(code, '')}")


def _no_daemon(cfg: Config) -> int:
    return _error(f"no daemon answers at {daemon_url(cfg)}; start it first (alert-handler serve)")


# -- status -----------------------------------------------------------------------------------
def format_table(rows: list[dict[str, Any]]) -> str:
    """Devices as an aligned text table."""
    headers = [
        "device",
        "hostname",
        "phase",
        "attempts",
        "first seen",
        "next attempt",
        "last error",
    ]
    lines = [
        [
            str(r.get("device_id")),
            str(r.get("hostname") or "-"),
            str(r.get("phase")),
            str(r.get("attempts")),
            str(r.get("first_seen") or "-"),
            str(r.get("next_attempt") or "-"),
            str(r.get("last_error") or "-"),
        ]
        for r in rows
    ]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(s.rstrip() for s in out)


def _from_state_file(cfg: Config) -> tuple[list[dict[str, Any]], bool] | None:
    """(rows, paused) read from the state file and its journal (what a start would load); None
    (after one line on stderr) if corrupt."""
    path = Path(cfg.state_file)
    try:
        snap = read_state(path, time.time())
    except (OSError, ValueError, TypeError, KeyError) as exc:
        _error(f"cannot read the state file {path}: {exc}")
        return None
    return [device_row(r) for _, r in sorted(snap.devices.items())], snap.paused


def cmd_status(args: argparse.Namespace) -> int:
    """Print the tracked devices, from the daemon or else from the state file (saying which)."""
    cfg = load_config(args)
    health: dict[str, Any] | None = None
    try:
        code, body = call_daemon(cfg, "GET", "/devices")
        if code != 200:
            return _refused(code, body)
        _, health = call_daemon(cfg, "GET", "/health")
        source = f"from the running daemon at {daemon_url(cfg)}"
        rows, paused = list(body.get("devices", [])), bool(body.get("paused"))
    except DaemonDown:
        found = _from_state_file(cfg)
        if found is None:
            return 1
        rows, paused = found
        source = f"from the state file {cfg.state_file} (the daemon is not running)"
    if args.json:
        out = {"source": source, "paused": paused, "daemon": health, "devices": rows}
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(rows)} devices tracked, {source}")
    if paused:
        print("PAUSED: maintenance mode, no device is changed until `alert-handler resume`")
    if health is not None:
        facts = [f"recovery thread {health.get('recovery_thread')}"]
        facts.append(f"last cycle {health.get('last_cycle') or 'none yet'}")
        if health.get("dry_run"):
            facts.append("DRY_RUN: no PATCH is sent")
        if health.get("state_file") != "ok":
            facts.append(f"state file {health.get('state_file')}")
        print("; ".join(facts))
    if rows:
        print(format_table(rows))
    return 0


# -- release, track, pause, resume ------------------------------------------------------------
def cmd_release(args: argparse.Namespace) -> int:
    """Restore a device's original overwrite_ip now and forget it (through the daemon)."""
    cfg = load_config(args)
    device_id: int = args.device_id
    try:
        code, body = call_daemon(cfg, "POST", f"/devices/{device_id}/release")
    except DaemonDown:
        return _no_daemon(cfg)
    if code == 404:
        return _error(str(body.get("error")))
    if code >= 400:
        return _refused(code, body)
    original = body.get("original_overwrite_ip")
    restored = ""  # not inspected yet: the log says what the daemon found and did
    if body.get("original_recorded"):
        restored = f", overwrite_ip restored to {'null' if original is None else original}"
    if args.wait <= 0:
        print(f"device {device_id}: release requested")
        return 0
    deadline = time.monotonic() + args.wait
    while True:
        try:
            code, listing = call_daemon(cfg, "GET", "/devices")
        except DaemonDown:
            return _error(f"device {device_id}: the daemon stopped before the release finished")
        if code != 200:
            return _refused(code, listing)
        row = next((r for r in listing.get("devices", []) if r["device_id"] == device_id), None)
        if row is None or row.get("first_seen") != body.get("first_seen"):
            print(f"device {device_id}: released{restored}; no longer tracked")
            return 0
        if time.monotonic() > deadline:
            why = f" (last error: {row['last_error']})" if row.get("last_error") else ""
            return _error(
                f"device {device_id}: release not done after {args.wait:g}s{why}; "
                "the daemon keeps trying"
            )
        time.sleep(_RELEASE_POLL)


def cmd_track(args: argparse.Namespace) -> int:
    """Start handling a device as an alert would (through the daemon)."""
    cfg = load_config(args)
    device_id: int = args.device_id
    try:
        code, body = call_daemon(cfg, "POST", f"/devices/{device_id}/track")
    except DaemonDown:
        return _no_daemon(cfg)
    if code >= 400:
        return _refused(code, body)
    if not body.get("new"):
        print(f"device {device_id}: already tracked")
        return 0
    note = " (paused: nothing happens until `alert-handler resume`)" if body.get("paused") else ""
    print(f"device {device_id}: tracked, handled as if an alert had arrived{note}")
    return 0


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    cfg = load_config(args)
    path = "/pause" if paused else "/resume"
    try:
        code, body = call_daemon(cfg, "POST", path)
    except DaemonDown:
        return _set_paused_offline(cfg, paused)
    if code >= 400:
        return _refused(code, body)
    if paused:
        print("paused: alerts are recorded, no device is changed until `alert-handler resume`")
    else:
        print("resumed: due devices are handled now")
    return 0


def _set_paused_offline(cfg: Config, paused: bool) -> int:
    """No daemon answers: write maintenance mode into the state file, under the daemon's lock."""
    state_path = Path(cfg.state_file)
    lock = StateLock(state_path)
    try:
        lock.acquire()
    except StateLocked as exc:
        return _error(f"{exc}, but it does not answer at {daemon_url(cfg)}")
    try:
        loaded = load_state(state_path, time.time())
        if loaded.quarantined_to is not None:
            print(f"alert-handler: the state file was corrupt, moved to {loaded.quarantined_to}")
        store = StateStore(state_path, loaded.snapshot)
        store.start()
        try:
            store.set_paused(paused)
            store.flush(10)
        finally:
            store.close()
    except OSError as exc:
        return _error(f"cannot write {state_path}: {exc}")
    finally:
        lock.release()
    word = "paused" if paused else "resumed"
    print(f"{word} (no daemon running: written to {state_path}, applies at the next start)")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """Maintenance mode on: alerts are recorded, no device is changed."""
    return _set_paused(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    """Maintenance mode off."""
    return _set_paused(args, False)
