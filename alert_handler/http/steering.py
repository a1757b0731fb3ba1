"""The steering endpoints (silences, confirm, discard): what they do, apart from HTTP. Mixed
into `endpoints.App`, whose store, scheduler, controls and journal they use."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from alert_handler.controls import Controls, silence_row
from alert_handler.core import controls as controls_mod
from alert_handler.core.alerts import BadPayload, log_safe
from alert_handler.core.controls import ControlError, parse_duration, parse_target
from alert_handler.core.times import iso
from alert_handler.scheduler import Scheduler
from alert_handler.store.state import StateStore, StateWriteError

log = logging.getLogger("alert_handler.http.endpoints")

Reply = tuple[int, dict[str, Any]]
DURABLE_TIMEOUT = 5.0  # well inside LibreNMS's 30 s transport timeout


class SteeringEndpoints:
    """GET/POST /silences, POST /unsilence, /confirm, /discard."""

    store: StateStore
    scheduler: Scheduler
    controls: Controls | None
    clock: Callable[[], float]

    def _operator(self, what: str, client: str, device_id: int | None = None) -> list[str]:
        raise NotImplementedError  # provided by App

    def _commit(self, version: int, body: dict[str, Any]) -> Reply:
        raise NotImplementedError  # provided by App

    def silences(self) -> Reply:
        """GET /silences: the active silences."""
        controls = self._controls()
        return 200, {"status": "ok", "silences": [silence_row(s) for s in controls.silences()]}

    def silence(self, body: bytes, client: str) -> Reply:
        """POST /silences {"target", "for", "reason"?, "all"?}: keep automation away from a
        device (or hostname glob) for a while; forced-down ones are restored and forgotten."""
        controls = self._controls()
        fields = _json_object(body)
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
            "step=silence %s silenced until %s by %s%s; %d tracked devices let go",
            target,
            iso(silence.until),
            client,
            f" ({reason})" if reason else "",
            len(let_go),
        )
        if let_go:
            self.scheduler.wake()
        return 200, {
            "status": "silenced",
            "silence": silence_row(silence),
            "released": [device_id for device_id, _ in let_go],
        }

    def unsilence(self, body: bytes, client: str) -> Reply:
        """POST /unsilence {"target"}: end a silence now."""
        controls = self._controls()
        try:
            target = parse_target(str(_json_object(body).get("target", "")), allow_group=False)
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
        self._controls()
        now = self.clock()
        ids, version = self.scheduler.admission.decide_held(
            lambda rec: controls_mod.confirm(rec, now), lambda _decision: []
        )
        self._journal(f"confirm {len(ids)} held devices", client)
        log.warning("step=confirm %d held devices confirmed by %s: forcing down", len(ids), client)
        return self._commit(version, {"status": "confirmed", "devices": ids})

    def discard(self, client: str) -> Reply:
        """POST /discard: the held devices are released (restored if LibreNMS shows them on
        UNSUPERVISED_IP all the same, else left as they are) and forgotten."""
        self._controls()
        now = self.clock()
        ids, version = self.scheduler.admission.decide_held(
            lambda rec: controls_mod.discard(rec, now), lambda _decision: []
        )
        self._journal(f"discard {len(ids)} held devices", client)
        log.warning("step=confirm %d held devices discarded by %s", len(ids), client)
        return self._commit(version, {"status": "discarded", "devices": ids})

    def _journal(self, what: str, client: str) -> None:
        """Record an operator's steering action as an event (durable before the reply)."""
        version = self.store.add_events(self._operator(what, client))
        try:
            self.store.wait_durable(version, DURABLE_TIMEOUT)
        except StateWriteError:
            log.error("step=events cannot journal the operator action: %s", what)

    def _controls(self) -> Controls:
        if self.controls is None:
            raise BadPayload("steering is not set up in this daemon")
        return self.controls


def _json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    return data
