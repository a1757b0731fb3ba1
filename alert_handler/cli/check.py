"""`alert-handler check`: the config, the state file, the API token and its rights, SSH and the
poll command, then how LibreNMS is run (version, poller groups, each mapped poller host), one
line each."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from alert_handler.cli.check_dark import dark_checks
from alert_handler.cli.check_librenms import check_components, check_librenms
from alert_handler.cli.env import no_env_file_note, read_env, setting_warnings, start_warnings
from alert_handler.cli.notify import events_checks
from alert_handler.cli.output import plural
from alert_handler.config.table import Config, ConfigError, parse
from alert_handler.core.facts import LibreNMSError
from alert_handler.daemon import make_api
from alert_handler.ha.lease import ha_checks
from alert_handler.poll import PollError, make_poller
from alert_handler.store.files import CorruptState, quarantine_name, read_lock, read_state
from alert_handler.store.wal import journal_path

OK, FAIL = "\u2714", "\u2718"


def _state_file_check(cfg: Config) -> tuple[bool, str]:
    """The state file line, saying what `serve` will do with the file as it is."""
    path = Path(cfg.state_file)
    folder = path.parent
    if not folder.is_dir():
        return False, f"state file {path}: the directory {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return False, f"state file {path}: cannot write in {folder.resolve()}"
    if not path.exists() and not journal_path(path).exists():
        return True, f"state file {path}: none yet (created at the first alert)"
    now = time.time()
    try:
        snap = read_state(path, now)
    except CorruptState as exc:
        aside = quarantine_name(path, now).name
        return False, (
            f"state file {path} is corrupt ({exc}): `serve` will move it to {aside} (the time "
            "of the start, UTC) and start with no device tracked"
        )
    except OSError as exc:
        return False, (
            f"state file {path} cannot be read ({exc.strerror or exc}): `serve` will refuse to "
            "start (exit 1)"
        )
    facts = [f"{plural(len(snap.devices), 'device')} tracked"]
    if snap.paused:
        facts.append("PAUSED")
    if snap.migrated_from_legacy:
        facts.append("old single-script format, migrated at the next start")
    holder = read_lock(path)
    if holder is not None:
        facts.append(f"in use by the running daemon (pid {holder.pid})")
    return True, f"state file {path}: {', '.join(facts)}"


def run_check(args: argparse.Namespace) -> int:
    """Config, state file, API token and rights, SSH and the poll command: one line per check."""
    try:
        cfg = parse(read_env(args.env_file))
    except ConfigError as exc:
        print(f"{FAIL} configuration: {exc}{no_env_file_note(args.env_file)}")
        for text in setting_warnings(args.env_file):
            print(f"{FAIL} {text} (warning only)")
        return 2
    failed = False

    def line(ok: bool, text: str) -> None:
        nonlocal failed
        failed |= not ok
        print(f"{OK if ok else FAIL} {text}", flush=True)

    def warn(text: str) -> None:
        print(f"{FAIL} {text} (warning only)", flush=True)

    line(True, f"configuration is valid ({args.env_file or './.env'} and the environment)")
    # The warnings `serve` logs at start, word for word; they do not change the exit status.
    for text in [*start_warnings(cfg, args.env_file), *setting_warnings(args.env_file)]:
        print(f"{FAIL} {text} (warning only)")
    line(*_state_file_check(cfg))
    for ok, text in events_checks(cfg):  # the journal, the webhook, notification URLs
        line(ok, text)
    for ok, text in ha_checks(cfg):  # HA_REDIS_URL: Redis answers, who holds the lease
        line(ok, text)
    forced_down = False  # the device to poll points at UNSUPERVISED_IP now
    group = 0  # the device's poller group: polled where LibreNMS would poll it
    api = make_api(cfg)
    try:
        devices = api.list_devices()
        line(True, f"LibreNMS API at {cfg.librenms_url} answers: {plural(len(devices), 'device')}")
        for device in devices:
            if device.device_id == args.device_id:
                forced_down = device.overwrite_ip == cfg.unsupervised_ip
                group = device.poller_group
        if cfg.dry_run:
            line(True, "DRY_RUN=true: token rights not probed (that needs a PATCH)")
        else:
            try:
                admin = api.has_admin_rights()
                line(
                    admin,
                    "API token has admin rights"
                    if admin
                    else "API token is read-only: LibreNMS will refuse every PATCH (403)",
                )
            except LibreNMSError as exc:
                line(False, f"cannot tell the API token's rights: {exc}")
            probe_on = args.device_id or (devices[0].device_id if devices else None)
            check_components(api, probe_on, line)
    except LibreNMSError as exc:
        line(False, f"LibreNMS API at {cfg.librenms_url}: {exc}")  # the URL, never the token
    poller = make_poller(cfg)
    try:
        try:
            line(True, f"poll method {cfg.poll_method}: {poller.check()}")
        except PollError as exc:
            line(False, f"poll method {cfg.poll_method}: {exc}")
        if args.device_id is not None:
            try:
                result = poller.poll(args.device_id, group)
                tail = " | ".join(result.output_tail[-3:])
                # A forced-down device does not answer: exit 6 shows the command works.
                expected = forced_down and result.exit_status == 6
                note = (
                    f" (expected: it is forced down on {cfg.unsupervised_ip})" if expected else ""
                )
                line(
                    result.exit_status == 0 or expected,
                    f"poll of device {args.device_id}: exit {result.exit_status} "
                    f"({result.meaning}){note} in {result.duration:.1f}s: {tail}",
                )
                if result.config_error is not None:
                    print(f"{FAIL} the fix: {result.config_error}", flush=True)
            except PollError as exc:
                line(False, f"poll of device {args.device_id}: {exc}")
        check_librenms(cfg, api, poller, line, warn)
        for ok, text in dark_checks(cfg, poller):  # UNSUPERVISED_IP pinged from every poller
            line(ok, text)
    finally:
        poller.close()
        api.close()
    return 1 if failed else 0
