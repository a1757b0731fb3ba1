"""Each forced-down device's original kept in LibreNMS itself: one device component of type
`alert-handler` per device, so the original outlives the daemon's host.

What the component holds (attributes are strings in LibreNMS):

    original        the original overwrite_ip as JSON text: `null` or `"10.0.0.1"`
                    (LibreNMS stores null as "", so the JSON keeps null and "" apart)
    forced_down_at  ISO 8601 UTC, the episode's first force-down
    episode         the episode id (events.md), "" when the event journal is off
    daemon          which daemon forced it down (its host name)
    label           a line for people reading LibreNMS; status 0, so no component alert fires

The API's traps, handled here: a device with none sends no `components` key (the client gives
{}); POST answers nulls (the attributes are PUT next); PUT edits an id whatever device its URL
names (only ids just read from this device, or just created on it, are ever PUT) and deletes
every attribute not sent (the full set is always sent); nothing is idempotent (a POST is tried
once and, when it fails, the device is read again: the component may have been made; duplicates
of our type are cleaned up, keeping the one that agrees with the record, else the oldest; a
DELETE that fails counts as done once a re-read shows the id gone).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from alert_handler.core.facts import LibreNMSError
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import from_iso, iso
from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.component_api import ComponentRoutes

log = logging.getLogger(__name__)

COMPONENT_TYPE = "alert-handler"


def daemon_name() -> str:
    """Which daemon wrote a component: this host's name."""
    return socket.gethostname() or "unknown"


@dataclass(frozen=True)
class Held:
    """What one complete component of ours holds."""

    component_id: int
    original: str | None
    forced_down_at: float | None
    episode: str | None
    daemon: str | None


def encode(
    original: str | None, episode: str | None, forced_down_at: float, daemon: str
) -> dict[str, Any]:
    """The whole field set PUT on a component (PUT deletes every attribute it does not send)."""
    shown = "null" if original is None else original
    return {
        "label": f"alert-handler: forced down, original overwrite_ip {shown}"[:255],
        "status": 0,
        "ignore": 0,
        "disabled": 0,
        "error": "",
        "original": json.dumps(original),
        "forced_down_at": iso(forced_down_at) or "",
        "episode": episode or "",
        "daemon": daemon,
    }


def decode(component_id: int, row: dict[str, Any]) -> Held | None:
    """A component row read back; None when it holds no original (just created, its PUT never
    made, or edited by hand into something else)."""
    text = row.get("original")
    if not isinstance(text, str) or not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if value is not None and not isinstance(value, str):
        return None
    episode = row.get("episode")
    daemon = row.get("daemon")
    return Held(
        component_id=component_id,
        original=value,
        forced_down_at=from_iso(row.get("forced_down_at")),
        episode=episode if isinstance(episode, str) and episode else None,
        daemon=daemon if isinstance(daemon, str) and daemon else None,
    )


def newest(found: Collection[Held]) -> Held | None:
    """The component that speaks for the device: the latest force-down, the oldest id on a tie
    (a stale one of an earlier episode loses to the current one)."""
    if not found:
        return None
    return min(found, key=lambda h: (-(h.forced_down_at or 0.0), h.component_id))


class Components:
    """The daemon's components in LibreNMS: read, written once per episode, removed when the
    daemon lets the device go. Thread-safe: one job per device, a lock per device that a
    force-down and a sweep share, and one for the pending set."""

    def __init__(self, api: LibreNMS, daemon: str | None = None, kind: str = COMPONENT_TYPE):
        self.api = api
        self.routes = ComponentRoutes(api)
        self.daemon = daemon or daemon_name()
        self.kind = kind
        self._lock = threading.Lock()
        self._pending: set[int] = set()  # devices whose component could not be removed
        # One per device while in use: a sweep never deletes what a force-down is writing.
        self._devices: dict[int, threading.Lock] = {}

    # -- reading ---------------------------------------------------------------------------
    def read(self, device_id: int) -> dict[int, Held | None]:
        """Every component of our type on the device: id -> what it holds (None: incomplete)."""
        rows = self.routes.list(device_id, self.kind)
        return {cid: decode(cid, row) for cid, row in sorted(rows.items())}

    def lookup(self, device_id: int) -> Held | None:
        """What LibreNMS holds for the device (`newest` complete component), None if nothing."""
        return newest([h for h in self.read(device_id).values() if h is not None])

    def held(self, device_id: int) -> tuple[str | None] | None:
        """`(original,)` LibreNMS holds for the device, None if none; LibreNMSError if it
        cannot be read (the step fails: the journal or null must not win by accident)."""
        found = self.lookup(device_id)
        return None if found is None else (found.original,)

    # -- writing ---------------------------------------------------------------------------
    def keep(self, rec: DeviceRecord, now: float) -> None:
        """Before a force-down: make sure one component holds this episode's original. Written
        once per episode: a later force-down finds it and leaves it. LibreNMSError when it
        cannot be written (the device must then not be forced down)."""
        if not rec.original_recorded:
            raise LibreNMSError(f"device {rec.device_id}: no original recorded to keep")
        at = rec.forced_down_at if rec.forced_down_at is not None else now
        with self._device(rec.device_id):
            self.write(rec.device_id, rec.original_overwrite_ip, rec.episode, at)

    def _device(self, device_id: int) -> threading.Lock:
        with self._lock:
            return self._devices.setdefault(device_id, threading.Lock())

    def write(
        self, device_id: int, original: str | None, episode: str | None, forced_down_at: float
    ) -> int | None:
        """One component of ours holding `original` for `episode`; its id (None in DRY_RUN)."""
        if self.api.dry_run:
            log.info("device=%s step=component DRY_RUN would record the original", device_id)
            return None
        found = self.read(device_id)
        agreeing = [
            cid
            for cid, held in found.items()
            if held is not None and held.original == original and held.episode == episode
        ]
        fields = encode(original, episode, forced_down_at, self.daemon)
        if agreeing:
            keep = agreeing[0]
        elif found:
            # A stale one (an earlier episode, a failed removal) or an incomplete one: rewritten
            # whole. Its id was just read from this device, so the PUT edits this device's.
            keep = min(found)
            self.routes.edit(device_id, keep, fields)
            log.info("device=%s step=component rewrote component %s", device_id, keep)
        else:
            keep, found = self._create(device_id)
            self.routes.edit(device_id, keep, fields)
            log.info(
                "device=%s step=component recorded the original in component %s", device_id, keep
            )
        self._delete_extras(device_id, [cid for cid in found if cid != keep])
        return keep

    def _create(self, device_id: int) -> tuple[int, dict[int, Held | None]]:
        """POST one, tried once; if it fails, read again: a POST whose answer was lost made one.
        Returns its id and what a re-read found (duplicates to clean up), if one was needed."""
        try:
            return self.routes.add(device_id, self.kind), {}
        except LibreNMSError as exc:
            again = self.read(device_id)
            if not again:
                raise
            keep = min(again)
            log.warning(
                "device=%s step=component create failed (%s) but LibreNMS made it: using %s",
                device_id,
                exc,
                keep,
            )
            return keep, again

    def _delete_extras(self, device_id: int, extras: list[int]) -> None:
        """Duplicates of our type (a retried POST): removed, best effort."""
        for cid in extras:
            try:
                self._delete(device_id, cid)
                log.warning("device=%s step=component removed duplicate %s", device_id, cid)
            except LibreNMSError as exc:
                log.warning("device=%s step=component duplicate %s left: %s", device_id, cid, exc)

    # -- removing --------------------------------------------------------------------------
    def remove(self, device_id: int) -> int:
        """Delete every component of our type on the device; how many went. LibreNMSError if
        one is still there."""
        if self.api.dry_run:
            log.info("device=%s step=component DRY_RUN would remove the component", device_id)
            return 0
        found = self.read(device_id)
        for cid in found:
            self._delete(device_id, cid)
        return len(found)

    def _delete(self, device_id: int, component_id: int) -> None:
        try:
            self.routes.delete(device_id, component_id)
        except LibreNMSError:
            # DELETE is not idempotent: a first try that landed but lost its answer makes a
            # retry answer 500. Gone is gone.
            if component_id in self.read(device_id):
                raise

    def drop(self, device_id: int) -> str | None:
        """After the daemon let the device go: remove its component; never raises. A failure
        is remembered and retried by `sweep` (the device is not held back for it); returns
        why it failed, None when done."""
        try:
            gone = self.remove(device_id)
        except LibreNMSError as exc:
            with self._lock:
                self._pending.add(device_id)
            return str(exc)
        with self._lock:
            self._pending.discard(device_id)
        if gone:
            log.info("device=%s step=component removed", device_id)
        return None

    def pending(self) -> set[int]:
        """Devices whose component is still to be removed."""
        with self._lock:
            return set(self._pending)

    def sweep(self, tracked: Callable[[int], bool], unsupervised: Collection[int]) -> list[int]:
        """Retry the removals that failed: a device `tracked` again is the steps' business (the
        next force-down rewrites the component), one on UNSUPERVISED_IP keeps it (adoption
        reads it); any other loses it. The devices cleaned up. Each is decided under the
        device's lock, which a force-down holds while it writes: a device tracked meanwhile
        is either seen tracked here or writes its component after this removal."""
        done = []
        for device_id in sorted(self.pending()):
            with self._device(device_id):
                if tracked(device_id):
                    with self._lock:
                        self._pending.discard(device_id)
                    continue
                if device_id in unsupervised:
                    continue
                if self.drop(device_id) is None:
                    done.append(device_id)
                    with self._lock:
                        self._devices.pop(device_id, None)
        return done


PROBE_TYPE = "alert-handler-check"


@dataclass(frozen=True)
class Right:
    """Whether the token may do one thing to components: `allowed` None when it could not be
    told (the error is in `detail`)."""

    action: str  # "create", "edit", "delete"
    allowed: bool | None
    detail: str = ""
    left: str = ""  # a probe component the token could not delete: to remove by hand


def probe_rights(api: LibreNMS, device_id: int) -> list[Right]:
    """Create a probe component on the device, edit it and delete it (what the daemon does to
    each device it forces down). An edit or delete the token may not do after a refused
    create is probed on id 0, which no component has: LibreNMS answers 200 to the edit and 500
    "could not be deleted" to the delete once the permission check let the call through."""
    routes = ComponentRoutes(api)
    rights = []
    created: int | None = None
    try:
        created = routes.add(device_id, PROBE_TYPE)
        rights.append(Right("create", True))
    except LibreNMSError as exc:
        rights.append(_refused("create", exc))
    try:
        routes.edit(device_id, created or 0, {"probe": "alert-handler check"})
        rights.append(Right("edit", True))
    except LibreNMSError as exc:
        rights.append(_refused("edit", exc))
    try:
        routes.delete(device_id, created or 0)
        rights.append(Right("delete", True))
    except LibreNMSError as exc:
        if created is None and exc.status == 500:
            rights.append(Right("delete", True))  # past the permission check: no id 0
        else:
            left = f"probe component {created} left on device {device_id}" if created else ""
            right = _refused("delete", exc)
            rights.append(Right("delete", right.allowed, right.detail, left))
    return rights


def _refused(action: str, exc: LibreNMSError) -> Right:
    return Right(action, False if exc.status == 403 else None, str(exc))
