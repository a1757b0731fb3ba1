"""The steering endpoints (silences, confirm, discard): what they do, apart from HTTP. A
`Steering` is held by `endpoints.App` and given, explicitly, what it works on."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alert_handler.core import verdict as controls_mod
from alert_handler.core.alerts import BadPayload, counted, json_object, log_safe
from alert_handler.core.machine import Decision
from alert_handler.core.records import DeviceRecord
from alert_handler.core.times import iso
from alert_handler.core.verdict import ControlError, parse_duration, parse_target
from alert_handler.recovery.admission import Admission
from alert_handler.steering.controls import Controls, silence_row
from alert_handler.store.state import ACK_WAIT, StateStore, StateWriteError

log = logging.getLogger("alert_handler.http.endpoints")

Reply = tuple[int, dict[str, Any]]
# The operator event's line(s) for an action: (what, client) -> lines.
OperatorLines = Callable[[str, str], list[str]]
# Wait until `version` is durable, wake the recovery loop, answer `body` (or 503).
Commit = Callable[[int, dict[str, Any]], Reply]


@dataclass(frozen=True)
class Steering:
    """GET/POST /silences, POST /unsilence, /confirm, /discard."""

    store: StateStore
    admission: Admission
    controls: Controls
    clock: Callable[[], float]
    operator: OperatorLines
    commit: Commit
    wake: Callable[[], None]

    def silences(self) -> Reply:
        """GET /silences: the active silences."""
        controls = self.controls
        return 200, {"status": "ok", "silences": [silence_row(s) for s in controls.silences()]}

    def silence(self, body: bytes, client: str) -> Reply:
        """POST /silences {"target", "for", "reason"?, "all"?}: keep automation away from a
        device (or hostname glob) for a while; forced-down ones are restored and forgotten."""
        controls = self.controls
        fields = json_object(body)
        try:
            target = parse_target(str(fields.get("target", "")), allow_group=False)
            seconds = parse_duration(str(fields.get("for", "")))
        except ControlError as exc:
            raise BadPayload(str(exc)) from None
        if target.matches_everything and fields.get("all") is not True:
            raise BadPayload(f"{target} matches every device: say all=true (--all) to mean it")
        reason = log_safe(str(fields.get("reason") or ""), 200)
        try:
            silence = controls.add_silence(target, seconds, reason, client)
        except OSError as exc:
            return 503, {"error": f"cannot save the silence: {exc.strerror or exc}"}
        let_go = controls.sweep(self.store)
        self._journal(f"silence {target} for {fields.get('for')}", client)
        log.warning(
            "step=silence %s silenced until %s by %s%s; %s let go",
            target,
            iso(silence.until),
            client,
            f" ({reason})" if reason else "",
            counted(len(let_go), "tracked device"),
        )
        if let_go:
            self.wake()
        return 200, {
            "status": "silenced",
            "silence": silence_row(silence),
            "released": [device_id for device_id, _ in let_go],
        }

    def unsilence(self, body: bytes, client: str) -> Reply:
        """POST /unsilence {"target"}: end a silence now."""
        controls = self.controls
        try:
            target = parse_target(str(json_object(body).get("target", "")), allow_group=False)
        except ControlError as exc:
            raise BadPayload(str(exc)) from None
        try:
            ended = controls.remove_silence(target)
        except OSError as exc:
            return 503, {"error": f"cannot save the silences: {exc.strerror or exc}"}
        if ended is None:
            return 404, {"error": f"no active silence for {target}"}
        self._journal(f"unsilence {target}", client)
        log.warning("step=silence %s unsilenced by %s", target, client)
        return 200, {"status": "unsilenced", "silence": silence_row(ended)}

    def confirm(self, client: str) -> Reply:
        """POST /confirm: the held devices go ahead and are forced down (under the admission's
        lock: no scheduling pass holds a device in between)."""
        return self._decide_held(
            controls_mod.confirm, "confirm", "confirmed", client, ": forcing down"
        )

    def discard(self, client: str) -> Reply:
        """POST /discard: the held devices are released (restored if LibreNMS shows them on
        UNSUPERVISED_IP all the same, else left as they are) and forgotten."""
        return self._decide_held(controls_mod.discard, "discard", "discarded", client)

    def _decide_held(
        self,
        decide: Callable[[DeviceRecord, float], Decision],
        what: str,
        done: str,
        client: str,
        then: str = "",
    ) -> Reply:
        """`decide` every held device now, journal the operator's action, answer once durable."""
        now = self.clock()
        ids, version = self.admission.decide_held(lambda rec: decide(rec, now))
        if self._decided(what, ids, client):
            log.warning("step=confirm %s %s by %s%s", _held(ids), done, client, then)
        return self.commit(version, {"status": done, "devices": ids})

    def _decided(self, verb: str, ids: list[int], client: str) -> bool:
        """Journal and log a confirm or discard, each device on its own `device=N` line; with
        nothing held, one INFO line and no event (nothing happened). Whether anything was."""
        if not ids:
            log.info("step=confirm %s by %s: no device is held, nothing to do", verb, client)
            return False
        self._journal(f"{verb} {_held(ids)}", client)
        done = "confirmed: forcing down" if verb == "confirm" else "discarded"
        for device_id in ids:
            log.info("device=%d step=confirm %s by %s", device_id, done, client)
        return True

    def _journal(self, what: str, client: str) -> None:
        """Record an operator's steering action as an event (durable before the reply)."""
        version = self.store.add_events(self.operator(what, client))
        try:
            self.store.wait_durable(version, ACK_WAIT)
        except StateWriteError:
            log.error("step=events cannot journal the operator action: %s", what)


def _held(ids: list[int]) -> str:
    """ "1 held device", "3 held devices"."""
    return f"{len(ids)} held device{'' if len(ids) == 1 else 's'}"
