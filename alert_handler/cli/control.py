"""The commands that act through the running daemon: status, release, track, pause, resume.

They go through its HTTP API (found by `link`), so the state file keeps one writer; `status`
reads the state file when no daemon answers, and `pause`/`resume` write it (under the daemon's
lock) so that maintenance mode can be set before a start. No command here throws a tracked
device away: a state file that cannot be read is refused, never set aside.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from alert_handler.cli.env import load_config
from alert_handler.cli.guards import offline_silences, storm_guard, storm_line
from alert_handler.cli.link import DaemonDown, DaemonLink
from alert_handler.cli.lookup import Lookup, lookup
from alert_handler.cli.output import format_table, plural
from alert_handler.config.table import Config
from alert_handler.http.views import device_row
from alert_handler.store.codec import Snapshot
from alert_handler.store.files import (
    CorruptState,
    StateLock,
    StateLocked,
    quarantine_name,
    read_state,
)
from alert_handler.store.state import StateStore

_RELEASE_POLL = 0.2  # seconds between looks at /devices while `release` waits


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


def request(
    link: DaemonLink, method: str, path: str, body: dict[str, Any] | None = None
) -> dict[str, Any] | int:
    """The running daemon's answer (2xx), or the exit status after one line on stderr saying
    why there is none: no daemon answers, or it refused (with what to look at)."""
    try:
        code, answer = link.call(method, path, body)
    except DaemonDown:
        return _no_daemon(link)
    if code >= 400:
        return _refused(code, answer)
    return answer


def _no_daemon(link: DaemonLink) -> int:
    return _error(f"no daemon answers at {link.where()}; start it first (alert-handler serve)")


def _null(value: str | None) -> str:
    return "null" if value is None else value


def _read_snapshot(cfg: Config) -> Snapshot | None:
    """The state file as it is; None (after one line on stderr) when it cannot be read."""
    path = Path(cfg.state_file)
    try:
        return read_state(path, time.time())
    except CorruptState as exc:
        aside = quarantine_name(path, time.time()).name
        _error(
            f"the state file {path} is corrupt ({exc}); it is left as it is. "
            f"`alert-handler serve` would move it to {aside} and start with no device tracked"
        )
    except OSError as exc:
        _error(f"cannot read the state file {path}: {exc.strerror or exc}")
    return None


# -- status -----------------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    """Print the tracked devices, from the daemon or else from the state file (saying which)."""
    cfg = load_config(args)
    link = DaemonLink(cfg)
    health: dict[str, Any] | None = None
    try:
        code, body = link.call("GET", "/devices")
        if code != 200:
            return _refused(code, body)
        _, health = link.call("GET", "/health")
        source = f"from the running daemon at {link.url}"
        rows, paused = list(body.get("devices", [])), bool(body.get("paused"))
        silences = list(body.get("silences") or [])
        engaged = body.get("storm_engaged")
    except DaemonDown:
        snap = _read_snapshot(cfg)
        if snap is None:
            return 1
        offline = offline_silences(cfg)
        if isinstance(offline, str):
            return _error(offline)
        silences = offline
        rows = [device_row(r) for _, r in sorted(snap.devices.items())]
        paused = snap.paused
        source = f"from the state file {cfg.state_file} (the daemon is not running)"
        engaged = None
    storm = storm_guard(cfg.max_forced_down, rows, engaged)
    if args.json:
        out = {
            "source": source,
            "paused": paused,
            "daemon": health,
            "storm_guard": storm,
            "devices": rows,
            "silences": silences,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"{plural(len(rows), 'device')} tracked, {source}")
    if paused:
        print("PAUSED: maintenance mode, no device is changed until `alert-handler resume`")
    if health is not None:
        facts = [f"health {health.get('status')}"]
        reasons = health.get("reasons") or []
        if reasons:
            facts[0] += f" ({', '.join(str(r) for r in reasons)})"
        facts.append(f"recovery thread {health.get('recovery_thread')}")
        facts.append(f"last cycle {health.get('last_cycle') or 'none yet'}")
        if health.get("dry_run"):
            facts.append("DRY_RUN: no PATCH is sent")
        if health.get("state_file") != "ok":
            facts.append(f"state file {health.get('state_file')}")
        print("; ".join(facts))
        ha = health.get("ha")
        if isinstance(ha, dict):
            print(ha_line(ha))
    if storm["max_forced_down"]:  # MAX_FORCED_DOWN=0: no guard, no line
        print(storm_line(storm))
    held = sum(1 for r in rows if r.get("held"))
    if held:
        print(
            f"HELD: {plural(held, 'new device waits', 'new devices wait')} for a person: "
            "`alert-handler confirm` forces them down, `alert-handler discard` forgets them"
        )
    for s in silences:
        why = f" ({s.get('reason')})" if s.get("reason") else ""
        print(f"silenced: {s.get('target')} until {s.get('until')} by {s.get('by')}{why}")
    if rows:
        print(format_table(rows))
    return 0


def ha_line(ha: dict[str, Any]) -> str:
    """The HA lease as `status` shows it."""
    name = ha.get("instance")
    if ha.get("role") == "holder":
        line = f"HA: {name} holds the lease (renewed every {ha.get('renew_sec')} s"
        line += f", writes stop in {ha.get('deadline_in_sec')} s unless renewed)"
        if ha.get("quiet_for_sec"):
            line += f"; no write for {ha.get('quiet_for_sec')} s more (a Redis new to it)"
    else:
        holder = ha.get("holder") or "nobody"
        line = f"HA: {name} is a standby (holder: {holder}); it changes nothing in LibreNMS"
    if ha.get("redis") != "ok":
        line += f"; {ha.get('redis')}"
    return line


# -- release ----------------------------------------------------------------------------------
def cmd_release(args: argparse.Namespace) -> int:
    """Restore a device's original overwrite_ip now and forget it (through the daemon).

    A device the daemon does not track is released only if LibreNMS shows it on
    UNSUPERVISED_IP (left there by a crash, the old script or a hand edit): its original is
    unknown, so null (the hostname) is restored.
    """
    cfg = load_config(args)
    link = DaemonLink(cfg)
    device_id: int = args.device_id
    listing = request(link, "GET", "/devices")
    if isinstance(listing, int):
        return listing
    before: Lookup | None = None  # LibreNMS's record of an untracked device, before
    if not any(r.get("device_id") == device_id for r in listing.get("devices", [])):
        before = lookup(cfg, device_id)
        refusal = _untracked_refusal(cfg, device_id, before)
        if refusal is not None:
            return _error(refusal)
    body = request(link, "POST", f"/devices/{device_id}/release")
    if isinstance(body, int):
        return body
    if args.wait <= 0:
        print(f"device {device_id}: release requested")
        return 0
    failed = _wait_until_forgotten(link, device_id, str(body.get("first_seen")), args.wait)
    if failed is not None:
        return failed
    if body.get("tracked", True):
        restored = ""  # not inspected yet: the log says what the daemon found and did
        if body.get("original_recorded"):
            restored = f", overwrite_ip restored to {_null(body.get('original_overwrite_ip'))}"
        print(f"device {device_id}: released{restored}; no longer tracked")
        return 0
    after = lookup(cfg, device_id)
    known = bool(body.get("original_recorded") or body.get("journal_original"))
    print(f"device {device_id}: {_untracked_outcome(cfg, before, after, known)}")
    return 0


def _untracked_refusal(cfg: Config, device_id: int, found: Lookup) -> str | None:
    """Why releasing an untracked device makes no sense, or None to go ahead."""
    if found.exists is False:
        return f"device {device_id} is not tracked, and LibreNMS has no such device"
    if found.exists is None:
        print(
            f"alert-handler: device {device_id} is not tracked and LibreNMS cannot be asked "
            f"({found.error}); the daemon restores it only if it finds it on UNSUPERVISED_IP",
            file=sys.stderr,
        )
        return None
    if found.overwrite_ip != cfg.unsupervised_ip:
        return (
            f"device {device_id} is not tracked and not forced down (its overwrite_ip is "
            f"{_null(found.overwrite_ip)}, not UNSUPERVISED_IP {cfg.unsupervised_ip}): "
            "nothing to release"
        )
    return None


def _untracked_outcome(cfg: Config, before: Lookup | None, after: Lookup, known: bool) -> str:
    """What releasing an untracked device did, from LibreNMS before and after, as the log says
    it: "restored overwrite_ip 198.51.100.7 (was 127.0.0.50)", and where the original came from:
    its LibreNMS component (read before), else the event journal's last (`known`), else null."""
    if after.exists is None:
        return f"released (LibreNMS cannot be asked what it holds now: {after.error})"
    if after.exists is False:
        return "LibreNMS has no such device any more; forgotten"
    if after.overwrite_ip == cfg.unsupervised_ip:
        why = " (DRY_RUN: nothing is written)" if cfg.dry_run else ""
        return f"released, but it is still on UNSUPERVISED_IP {cfg.unsupervised_ip}{why}"
    was = before.overwrite_ip if before is not None and before.exists else None
    if was != cfg.unsupervised_ip:  # LibreNMS could not be asked before: say what it holds
        return f"was not tracked; its overwrite_ip is now {_null(after.overwrite_ip)}"
    done = f"was not tracked; restored overwrite_ip {_null(after.overwrite_ip)} (was {was})"
    held = before.held if before is not None else None
    if held is not None and after.overwrite_ip == held[0]:
        return f"{done}, its original from its LibreNMS component"
    if known:
        return f"{done}, its original from the event journal"
    return (
        f"{done}: its original was unknown, so LibreNMS reaches it by its hostname again"
        if after.overwrite_ip is None
        else done
    )


def _wait_until_forgotten(
    link: DaemonLink, device_id: int, first_seen: str, wait: float
) -> int | None:
    """Poll /devices until the record that was asked to release is gone; None when it is,
    else the exit status after one line saying why."""
    deadline = time.monotonic() + wait
    while True:
        try:
            code, listing = link.call("GET", "/devices")
        except DaemonDown:
            return _error(f"device {device_id}: the daemon stopped before the release finished")
        if code != 200:
            return _refused(code, listing)
        row = next((r for r in listing.get("devices", []) if r["device_id"] == device_id), None)
        if row is None or str(row.get("first_seen")) != first_seen:
            return None
        if time.monotonic() > deadline:
            why = f" (last error: {row['last_error']})" if row.get("last_error") else ""
            return _error(
                f"device {device_id}: release not done after {wait:g}s{why}; "
                "the daemon keeps trying"
            )
        time.sleep(_RELEASE_POLL)


# -- track ------------------------------------------------------------------------------------
def cmd_track(args: argparse.Namespace) -> int:
    """Start handling a device as an alert would (through the daemon), once LibreNMS has shown
    that the device exists (`--force`: without asking it)."""
    cfg = load_config(args)
    device_id: int = args.device_id
    seen: dict[str, Any] | None = None  # what LibreNMS shows now: on UNSUPERVISED_IP, never held
    if not args.force:
        found = lookup(cfg, device_id)
        if found.exists is False:
            return _error(f"device {device_id}: LibreNMS has no such device; not tracked")
        if found.exists is None:
            return _error(
                f"device {device_id}: cannot ask LibreNMS whether it exists ({found.error}); "
                f"not tracked (`alert-handler track --force {device_id}` tracks it anyway)"
            )
        seen = {"overwrite_ip": found.overwrite_ip}
    body = request(DaemonLink(cfg), "POST", f"/devices/{device_id}/track", seen)
    if isinstance(body, int):
        return body
    if not body.get("new"):
        print(f"device {device_id}: already tracked")
        return 0
    note = " (paused: nothing happens until `alert-handler resume`)" if body.get("paused") else ""
    print(f"device {device_id}: tracked, handled as if an alert had arrived{note}")
    return 0


# -- pause, resume ----------------------------------------------------------------------------
def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    cfg = load_config(args)
    link = DaemonLink(cfg)
    try:
        code, body = link.call("POST", "/pause" if paused else "/resume")
    except DaemonDown:
        return _set_paused_offline(cfg, link, paused)
    if code >= 400:
        return _refused(code, body)
    if paused:
        print("paused: alerts are recorded, no device is changed until `alert-handler resume`")
    else:
        print("resumed: due devices are handled now")
    return 0


def _set_paused_offline(cfg: Config, link: DaemonLink, paused: bool) -> int:
    """No daemon answers: write maintenance mode into the state file, under the daemon's lock.
    A state file that cannot be read is left alone (its devices are not thrown away)."""
    state_path = Path(cfg.state_file)
    lock = StateLock(state_path)
    try:
        lock.acquire()
    except StateLocked as exc:
        return _error(f"{exc}, but it does not answer at {link.where()}")
    except OSError as exc:
        return _error(f"cannot use {exc.filename or state_path}: {exc.strerror or exc}")
    try:
        snapshot = _read_snapshot(cfg)
        if snapshot is None:
            return _error(f"{'pause' if paused else 'resume'} not written")
        store = StateStore(state_path, snapshot)
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
