"""The state file's JSON form of device records (one device per line) and of the whole state,
including the original single script's flat format; pure (no clock, no files)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from alert_handler.core.alerts import plain
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.core.times import from_iso, iso

STATE_VERSION = 1


_SECONDS: dict[int, str] = {}  # whole second -> "YYYY-MM-DDTHH:MM:SS.", a bounded cache


def _iso(ts: float | None) -> str | None:
    """`times.iso`, with the date and time of each second formatted once: a storm's records
    carry a handful of distinct seconds, and formatting dates was the largest part of
    serialising a record for the journal."""
    if ts is None:
        return None
    if not 0.0 <= ts < 253402300800.0:  # NaN and out of range: iso() raises as it should
        return iso(ts)
    second = int(ts)
    micros = round((ts - second) * 1e6)  # as datetime.fromtimestamp rounds (half to even)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    head = _SECONDS.get(second)
    if head is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        head = _SECONDS[second] = str(iso(float(second)))[:-4]  # without "000Z"
    return f"{head}{micros // 1000:03d}Z"


def record_to_dict(rec: DeviceRecord) -> dict[str, Any]:
    """The JSON object stored for one device."""
    return {
        "hostname": rec.hostname,
        "phase": rec.phase.value,
        "original_overwrite_ip": rec.original_overwrite_ip,
        "original_recorded": rec.original_recorded,
        "adopted": rec.adopted,
        "port_id": rec.port_id,
        "poller_group": rec.poller_group,
        "attempts": rec.attempts,
        "first_seen": _iso(rec.first_seen),
        "next_attempt_at": _iso(rec.next_attempt_at),
        "attempt_started_at": _iso(rec.attempt_started_at),
        "forced_down_at": _iso(rec.forced_down_at),
        "last_forced_at": _iso(rec.last_forced_at),
        "last_error": rec.last_error,
        "acked": rec.acked,
        "held": rec.held,
        "confirmed": rec.confirmed,
        "found_unsupervised": rec.found_unsupervised,
        "acked_ids": list(rec.acked_ids),
        "alerts": rec.alerts,
        "last_alert": _iso(rec.last_alert),
        "last_rule": rec.last_rule,
        "last_ip": rec.last_ip,
        "recheck_at": _iso(rec.recheck_at),
        "release_requested": rec.release_requested,
        "episode": rec.episode,
        # {"value": ...} when the journal knows a last original (its value may be null).
        "known_original": {"value": rec.known_original} if rec.knows_original else None,
    }


def record_to_json(rec: DeviceRecord) -> str:
    """One device as a compact JSON object (the state file keeps one device per line)."""
    return json.dumps(record_to_dict(rec), separators=(", ", ": "))


def _opt_str(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a string or null")


def _phase(value: Any) -> Phase:
    try:
        return Phase(value)
    except ValueError:  # its message is a Python repr
        raise ValueError(f"phase {plain(value)} is not a phase") from None


def _int(value: Any, name: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value


def _ids(value: Any, name: str) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of integers")
    return tuple(_int(v, name) for v in value)


def record_from_dict(device_id: int, obj: Any, now: float) -> DeviceRecord:
    """Read one stored device; raises ValueError for anything that is not a record."""
    if not isinstance(obj, dict):
        raise ValueError(f"device {device_id}: not an object")
    port_id = obj.get("port_id")
    known = obj.get("known_original")
    if known is not None and not isinstance(known, dict):
        raise ValueError("known_original must be an object or null")
    return DeviceRecord(
        device_id=device_id,
        phase=_phase(obj.get("phase", "new")),
        hostname=_opt_str(obj.get("hostname"), "hostname"),
        original_recorded=bool(obj.get("original_recorded", False)),
        original_overwrite_ip=_opt_str(obj.get("original_overwrite_ip"), "original_overwrite_ip"),
        adopted=bool(obj.get("adopted", False)),
        port_id=None if port_id is None else _int(port_id, "port_id"),
        poller_group=_int(obj.get("poller_group"), "poller_group", 0),
        attempts=_int(obj.get("attempts"), "attempts", 0),
        first_seen=from_iso(obj.get("first_seen")) or now,
        next_attempt_at=from_iso(obj.get("next_attempt_at")) or now,
        attempt_started_at=from_iso(obj.get("attempt_started_at")),
        forced_down_at=from_iso(obj.get("forced_down_at")),
        last_forced_at=from_iso(obj.get("last_forced_at")),
        last_error=_opt_str(obj.get("last_error"), "last_error"),
        acked=bool(obj.get("acked", False)),
        held=bool(obj.get("held", False)),
        confirmed=bool(obj.get("confirmed", False)),
        found_unsupervised=bool(obj.get("found_unsupervised", False)),
        acked_ids=_ids(obj.get("acked_ids"), "acked_ids"),
        alerts=_int(obj.get("alerts"), "alerts", 1),
        last_alert=from_iso(obj.get("last_alert")) or now,
        last_rule=_opt_str(obj.get("last_rule"), "last_rule"),
        last_ip=_opt_str(obj.get("last_ip"), "last_ip"),
        recheck_at=from_iso(obj.get("recheck_at")),
        release_requested=bool(obj.get("release_requested", False)),
        episode=_opt_str(obj.get("episode"), "episode"),
        knows_original=known is not None,
        known_original=None if known is None else _opt_str(known.get("value"), "known_original"),
    )


@dataclass(frozen=True)
class Snapshot:
    """The whole persisted state."""

    devices: dict[int, DeviceRecord]
    paused: bool = False
    migrated_from_legacy: bool = False
    # The last journal line this state includes (`journal`): bookkeeping, not state, so two
    # snapshots of the same devices compare equal whatever their numbers.
    seq: int = field(default=0, compare=False)


def _legacy_record(device_id: int, obj: Any, now: float) -> DeviceRecord:
    """A device from the original script's flat file: {"42": {hostname, ip, port_id, added_at}}.

    The old `ip` came from the alert, which after a poll is UNSUPERVISED_IP: it is kept only as
    `last_ip`, never as the original. The device restarts at NEW, so the original is read from
    LibreNMS before anything changes (and adopted as null if the old script had forced it down).
    The old script was handling it already: the confirmation gate does not hold it
    (`found_unsupervised`), so an upgrade with many devices down needs no `confirm`.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"device {device_id}: not an object")
    added = obj.get("added_at")
    try:
        first_seen = from_iso(added) or now
    except ValueError:
        first_seen = now
    port_id = obj.get("port_id")
    if isinstance(port_id, str) and port_id.isdigit():
        port_id = int(port_id)
    return DeviceRecord(
        device_id=device_id,
        hostname=_opt_str(obj.get("hostname"), "hostname"),
        port_id=port_id if isinstance(port_id, int) and not isinstance(port_id, bool) else None,
        first_seen=first_seen,
        next_attempt_at=now,
        last_alert=first_seen,
        last_ip=_opt_str(obj.get("ip"), "ip"),
        found_unsupervised=True,
    )


def _device_key(key: Any) -> int:
    if not isinstance(key, str) or not key.isascii() or not key.isdigit() or int(key) <= 0:
        raise ValueError(f"device key {plain(key)} is not a positive integer")
    return int(key)


def snapshot_from_json(text: str, now: float) -> Snapshot:
    """Parse the state file's text (empty means no devices); ValueError if it is corrupt."""
    if not text.strip():
        return Snapshot(devices={})
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("state file is not a JSON object")
    if "version" in data and "devices" in data:
        if data["version"] != STATE_VERSION:
            raise ValueError(f"unknown state file version {plain(data['version'])}")
        devices = data["devices"]
        if not isinstance(devices, dict):
            raise ValueError("devices is not an object")
        seq = data.get("seq", 0)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError("seq must be a non-negative integer")
        records = {
            _device_key(k): record_from_dict(_device_key(k), v, now) for k, v in devices.items()
        }
        return Snapshot(devices=records, paused=bool(data.get("paused", False)), seq=seq)
    records = {_device_key(k): _legacy_record(_device_key(k), v, now) for k, v in data.items()}
    return Snapshot(devices=records, migrated_from_legacy=True)


def snapshot_head(paused: bool, seq: int | None = None) -> str:
    """The state file's text before its first device."""
    flag = "true" if paused else "false"
    journal = "" if seq is None else f' "seq": {seq},'
    return f'{{"version": {STATE_VERSION}, "paused": {flag},{journal} "devices": {{'


def snapshot_to_json(fragments: list[tuple[int, str]], paused: bool, seq: int | None = None) -> str:
    """The state file's text from per-device JSON fragments, one device per line; `seq` is the
    last journal line it includes (written by the daemon's checkpoints)."""
    head = snapshot_head(paused, seq)
    if not fragments:
        return head + "}}\n"
    body = ",\n".join(f'"{device_id}": {fragment}' for device_id, fragment in fragments)
    return head + "\n" + body + "\n}}\n"
