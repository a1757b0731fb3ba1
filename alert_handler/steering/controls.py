"""The steering controls at run time: EXCLUDE (with LibreNMS device-group members read through
the API), silences persisted in `<STATE_FILE>.silences.json`, and the confirmation gate.

`Controls.verdict()` answers from memory, so the webhook's request thread can ask it: the group
members are read by `GroupRefresher`'s own thread, never in a request. The last members read
are kept in `<STATE_FILE>.exclude-groups.json` and used until a read succeeds: a group never
read (no file) fails closed, no device is forced down for the first time until it is read.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from alert_handler.core import machine
from alert_handler.core import verdict as core_controls
from alert_handler.core.facts import LibreNMSError
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import from_iso, iso
from alert_handler.core.verdict import (
    ConfirmGate,
    ControlError,
    Selector,
    Silence,
    Verdict,
    parse_target,
    verdict,
)
from alert_handler.ops.periodic import Periodic
from alert_handler.store.files import write_atomic
from alert_handler.store.state import StateStore, StateWriteError

log = logging.getLogger(__name__)

SILENCES_VERSION = 1
GROUPS_VERSION = 1


class GroupSource(Protocol):
    """Where device-group members come from (the LibreNMS client)."""

    def group_members(self, name: str) -> set[int] | None: ...


def silences_path(state_file: str | Path) -> Path:
    """Where the silences are kept: beside the state file."""
    path = Path(state_file)
    return path.with_name(path.name + ".silences.json")


def groups_path(state_file: str | Path) -> Path:
    """Where the last members read of the EXCLUDE groups are kept: beside the state file."""
    path = Path(state_file)
    return path.with_name(path.name + ".exclude-groups.json")


def load_groups(path: Path) -> dict[str, set[int]]:
    """The members last read of each group (none known: {}); an unreadable file counts as none
    (logged), so the daemon fails closed until the next read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        groups = data["groups"]
        if data.get("version") != GROUPS_VERSION or not isinstance(groups, dict):
            raise ValueError("not an exclude-groups file of version 1")
        return {
            str(name): {int(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)}
            for name, ids in groups.items()
            if isinstance(ids, list)
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("step=exclude %s is unreadable (%s): groups count as not read yet", path, exc)
        return {}


def silence_row(s: Silence) -> dict[str, Any]:
    """A silence as the silences file, /silences, `status` and the status page show it."""
    return {
        "target": str(s.target),
        "until": iso(s.until),
        "reason": s.reason,
        "by": s.by,
        "created": iso(s.created),
    }


def _silence_from(obj: Any) -> Silence:
    if not isinstance(obj, dict):
        raise ValueError("a silence is not an object")
    until, created = from_iso(obj.get("until")), from_iso(obj.get("created"))
    if until is None or created is None:
        raise ValueError("a silence needs until and created")
    return Silence(
        target=parse_target(str(obj.get("target", "")), allow_group=False),
        until=until,
        reason=str(obj.get("reason") or ""),
        by=str(obj.get("by") or "-"),
        created=created,
    )


def load_silences(path: Path, now: float) -> list[Silence]:
    """The persisted silences still active at `now`; a corrupt file is set aside, not lost."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != SILENCES_VERSION:
            raise ValueError("not a silences file of version 1")
        silences = [_silence_from(obj) for obj in data.get("silences") or []]
    except (ValueError, ControlError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(now)}")
        path.rename(aside)
        log.error("step=silence %s is unreadable (%s): moved to %s", path, exc, aside)
        return []
    return [s for s in silences if s.active(now)]


class Controls:
    """Exclusions, silences and the confirmation gate, shared by the webhook and the scheduler;
    thread-safe."""

    def __init__(
        self,
        exclusions: tuple[Selector, ...],
        silences_file: Path,
        clock: Callable[[], float],
        *,
        confirm_above: int = 0,
        confirm_window: float = 300.0,
        groups_file: Path,
    ) -> None:
        self.exclusions = exclusions
        self.path = silences_file
        self.groups_file = groups_file
        self.clock = clock
        self._lock = threading.Lock()
        self._groups_of: dict[int, frozenset[str]] = {}
        self._groups_known = not self.group_names()
        self._silences = load_silences(silences_file, clock())
        self.gate = ConfirmGate(confirm_above, confirm_window)
        if not self._groups_known:
            saved = load_groups(groups_file)
            if set(self.group_names()) <= saved.keys():
                self._apply_groups(saved)
                log.info("step=exclude using the group members last read (%s)", groups_file)

    # -- the decision ------------------------------------------------------------------------
    def verdict(self, device_id: int, hostname: str | None) -> Verdict | None:
        """Why the daemon must not touch this device (or not force it down yet), or None;
        from memory only."""
        now = self.clock()
        with self._lock:
            groups = self._groups_of.get(device_id, frozenset())
            silences = tuple(self._silences)
            known = self._groups_known
        return verdict(
            device_id, hostname, groups, self.exclusions, silences, now, groups_known=known
        )

    @property
    def groups_known(self) -> bool:
        """Whether the EXCLUDE groups' members are known (read now or kept from a read)."""
        with self._lock:
            return self._groups_known

    def group_names(self) -> list[str]:
        """The device groups EXCLUDE names."""
        return [t.group for t in self.exclusions if t.group is not None]

    def set_groups(self, members: dict[str, set[int]]) -> None:
        """The current members of each EXCLUDE group (from GroupRefresher), kept on disk for
        the next start (best effort: a failed write is logged, the members are used)."""
        self._apply_groups(members)
        data = {
            "version": GROUPS_VERSION,
            "read_at": iso(self.clock()),
            "groups": {name: sorted(ids) for name, ids in sorted(members.items())},
        }
        try:
            write_atomic(self.groups_file, json.dumps(data) + "\n")
        except OSError as exc:
            log.warning("step=exclude cannot save the group members: %s", exc.strerror or exc)

    def _apply_groups(self, members: dict[str, set[int]]) -> None:
        groups_of: dict[int, set[str]] = {}
        for name, ids in members.items():
            for device_id in ids:
                groups_of.setdefault(device_id, set()).add(name)
        with self._lock:
            self._groups_of = {d: frozenset(g) for d, g in groups_of.items()}
            self._groups_known = True

    # -- silences ----------------------------------------------------------------------------
    def silences(self) -> list[Silence]:
        """The active silences, soonest to end first (expired ones are dropped)."""
        now = self.clock()
        with self._lock:
            self._silences = [s for s in self._silences if s.active(now)]
            return sorted(self._silences, key=lambda s: s.until)

    def add_silence(self, target: Selector, seconds: float, reason: str, by: str) -> Silence:
        """A new silence (replacing one of the same target), on disk before it returns."""
        now = self.clock()
        silence = Silence(target=target, until=now + seconds, reason=reason, by=by, created=now)
        with self._lock:
            kept = [s for s in self._silences if s.active(now) and s.target != target]
            self._write([*kept, silence])
            self._silences = [*kept, silence]
        return silence

    def remove_silence(self, target: Selector) -> Silence | None:
        """End the silence of `target` now; None if there is none."""
        now = self.clock()
        with self._lock:
            found = [s for s in self._silences if s.target == target and s.active(now)]
            if not found:
                return None
            kept = [s for s in self._silences if s.target != target and s.active(now)]
            self._write(kept)
            self._silences = kept
        return found[0]

    def _write(self, silences: list[Silence]) -> None:
        data = {"version": SILENCES_VERSION, "silences": [silence_row(s) for s in silences]}
        write_atomic(self.path, json.dumps(data, indent=1) + "\n")

    # -- sweeping tracked devices ------------------------------------------------------------
    def sweep(self, store: StateStore) -> list[tuple[int, Verdict]]:
        """Ask every tracked device that must not be forced down (any more) to be restored and
        forgotten; returns those newly let go. Nothing here talks to LibreNMS."""
        let_go: list[tuple[int, Verdict]] = []
        now = self.clock()
        for device_id, rec in store.records().items():
            found = self.verdict(device_id, rec.hostname)
            if found is None or found.waits or rec.release_requested:
                continue

            def change(cur: DeviceRecord | None, why: Verdict = found) -> DeviceRecord | None:
                return None if cur is None else core_controls.let_go(cur, now, str(why)).record

            store.update(device_id, change)
            let_go.append((device_id, found))
            log.warning(
                "device=%s step=steer %s -> %s", device_id, found, machine.Reason.LET_GO.value
            )
        return let_go


class GroupRefresher(Periodic):
    """Reads the EXCLUDE groups' members now and every `interval` seconds, then sweeps."""

    def __init__(
        self,
        controls: Controls,
        api: GroupSource,
        store: StateStore,
        interval: float,
        wake: Callable[[], None],
    ) -> None:
        super().__init__("exclude-groups", self._pass, interval, step="exclude")
        self.controls = controls
        self.api = api
        self.store = store
        self._wake = wake

    def refresh_once(self) -> None:
        """One read of every group, then a sweep; LibreNMSError if LibreNMS cannot be asked (the
        last known members stay)."""
        members: dict[str, set[int]] = {}
        for name in self.controls.group_names():
            found = self.api.group_members(name)
            if found is None:
                log.warning("step=exclude no LibreNMS device group named %s", name)
                found = set()
            members[name] = found
        self.controls.set_groups(members)

    def _pass(self) -> None:
        try:
            if self.controls.group_names():
                self.refresh_once()
            if self.controls.sweep(self.store):
                self._wake()
        except (LibreNMSError, StateWriteError) as exc:
            log.warning("step=exclude refresh failed: %s", exc)
