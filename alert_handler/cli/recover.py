"""`alert-handler recover-from-librenms`: for the day the daemon will not come back.

From any host with the settings, no daemon and no state file needed: lists the devices on
UNSUPERVISED_IP with the original LibreNMS holds for each (its `alert-handler` component), and
with `--restore` puts each back on it and removes the component. It refuses rather than guesses:
a device whose original LibreNMS does not hold is left alone unless `--unknown-as-null`; a
daemon running on this host owns its devices, so `--restore` refuses while one runs.
Exit status: 0 done, 1 refused or failed (some device left as it was), 2 usage or settings.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alert_handler.cli.env import load_config
from alert_handler.core.facts import DeviceInfo, LibreNMSError
from alert_handler.core.times import iso
from alert_handler.store.files import read_lock

if TYPE_CHECKING:
    from alert_handler.librenms.components import Components, Held

NAME = "recover-from-librenms"


@dataclass
class _Row:
    device: DeviceInfo
    held: Held | None = None
    error: str | None = None

    def original(self) -> str:
        if self.error is not None:
            return "error"
        if self.held is None:
            return "unknown"
        return "null" if self.held.original is None else self.held.original


def add_recover_command(sub: Any, common: argparse.ArgumentParser) -> set[str]:
    """Register the command; returns its name."""
    p = sub.add_parser(
        NAME,
        parents=[common],
        help="list (and --restore) devices on UNSUPERVISED_IP from the originals LibreNMS holds",
        description="For the day the daemon will not come back: from any host with the "
        "settings, no daemon needed. Lists the devices on UNSUPERVISED_IP and the original "
        "overwrite_ip each one's LibreNMS component holds ('unknown' where none). With "
        "--restore, puts each back on its original and removes the component.",
    )
    p.add_argument(
        "--restore",
        action="store_true",
        help="restore every device listed and remove its component",
    )
    p.add_argument(
        "--unknown-as-null",
        action="store_true",
        help="with --restore: restore null (the hostname) where LibreNMS holds no original",
    )
    p.set_defaults(func=cmd_recover)
    return {NAME}


def _say(text: str) -> None:
    print(text, flush=True)


def _error(text: str) -> int:
    print(f"alert-handler: {text}", file=sys.stderr)
    return 1


def cmd_recover(args: argparse.Namespace) -> int:
    """List, or with --restore restore, the devices on UNSUPERVISED_IP from LibreNMS alone."""
    if args.unknown_as_null and not args.restore:
        print(f"alert-handler {NAME}: --unknown-as-null needs --restore", file=sys.stderr)
        return 2
    cfg = load_config(args)
    if args.restore:
        holder = read_lock(Path(cfg.state_file))
        if holder is not None:
            return _error(
                f"a daemon runs on this host (pid {holder.pid}) and owns its devices: stop it "
                "first, or let it go of a device with `alert-handler release <id>`"
            )
        from alert_handler.ha.lease import lease_holder

        ha_holder, ha_error = lease_holder(cfg)  # HA: a daemon on another host may own them
        if ha_holder is not None:
            return _error(
                f"the daemon {ha_holder} holds the HA lease and owns the devices: stop it first"
            )
        if ha_error is not None:
            print(f"alert-handler: HA lease not checked (Redis: {ha_error})", file=sys.stderr)
    # Imported when run: requests and the daemon's parts, which the other commands do without.
    from alert_handler.daemon import make_api
    from alert_handler.librenms.components import Components

    api = make_api(cfg)
    try:
        return _run(args, Components(api), cfg.unsupervised_ip, cfg.dry_run)
    finally:
        api.close()


def _run(args: argparse.Namespace, comps: Components, unsupervised: str, dry: bool) -> int:
    try:
        found = [d for d in comps.api.list_devices() if d.overwrite_ip == unsupervised]
    except LibreNMSError as exc:
        return _error(f"LibreNMS: {exc}")
    rows = []
    for device in sorted(found, key=lambda d: d.device_id):
        try:
            rows.append(_Row(device, comps.lookup(device.device_id)))
        except LibreNMSError as exc:
            rows.append(_Row(device, error=str(exc)))
    _table(rows)
    known = sum(1 for r in rows if r.held is not None)
    _say(
        f"{len(rows)} device(s) on UNSUPERVISED_IP {unsupervised}: {known} with an original "
        f"in LibreNMS, {len(rows) - known} without"
    )
    if not args.restore:
        if rows:
            _say(f"`alert-handler {NAME} --restore` puts them back on their originals")
        return 0
    failed = refused = 0
    for row in rows:
        outcome = _restore(row, comps, unsupervised, args.unknown_as_null, dry)
        refused += outcome == "refused"
        failed += outcome == "failed"
    if refused:
        _say(
            f"{refused} device(s) left on UNSUPERVISED_IP: LibreNMS holds no original for them "
            "(--unknown-as-null restores null, the hostname)"
        )
    return 1 if refused or failed else 0


def _table(rows: list[_Row]) -> None:
    head = ("device", "hostname", "original", "forced down", "by", "episode")
    lines = [head]
    for r in rows:
        held = r.held
        lines.append(
            (
                str(r.device.device_id),
                r.device.hostname or "-",
                r.original(),
                (iso(held.forced_down_at) if held else None) or "-",
                (held.daemon if held else None) or "-",
                (held.episode if held else None) or "-",
            )
        )
    if not rows:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        _say("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r.error is not None:
            _say(f"device {r.device.device_id}: its components could not be read: {r.error}")


def _restore(row: _Row, comps: Components, unsupervised: str, as_null: bool, dry: bool) -> str:
    """One device back on its original: "restored", "refused" or "failed" (said why)."""
    device_id = row.device.device_id
    if row.error is not None:
        _say(f"device {device_id}: not restored: its original could not be read")
        return "failed"
    if row.held is None and not as_null:
        _say(f"device {device_id}: not restored: LibreNMS holds no original for it")
        return "refused"
    value = row.held.original if row.held is not None else None
    source = "from its LibreNMS component" if row.held is not None else "unknown: null"
    shown = "null" if value is None else value
    if dry:
        _say(f"device {device_id}: DRY_RUN would restore overwrite_ip {shown} ({source})")
        return "restored"
    try:
        if comps.api.get_device(device_id).overwrite_ip != unsupervised:
            _say(f"device {device_id}: not restored: no longer on UNSUPERVISED_IP")
            return "failed"
        comps.api.set_overwrite_ip(device_id, value)
        comps.api.discover(device_id)
    except LibreNMSError as exc:
        _say(f"device {device_id}: not restored: {exc}")
        return "failed"
    try:
        comps.remove(device_id)
    except LibreNMSError as exc:
        _say(f"device {device_id}: restored overwrite_ip {shown} ({source}); component left: {exc}")
        return "failed"
    _say(f"device {device_id}: restored overwrite_ip {shown} ({source}), component removed")
    return "restored"
