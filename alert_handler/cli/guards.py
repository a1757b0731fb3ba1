"""What `status` and `silences` show of the guards: the storm guard (MAX_FORCED_DOWN) line and
the new devices it keeps waiting, and the silences read from their file when no daemon runs."""

from __future__ import annotations

import json
import time
from typing import Any

from alert_handler.cli.output import plural
from alert_handler.config.table import Config
from alert_handler.core.records import FORCED_PHASES, Phase
from alert_handler.core.times import from_iso, iso
from alert_handler.core.verdict import ControlError, parse_target
from alert_handler.steering.controls import SILENCES_VERSION, silences_path


def offline_silences(cfg: Config) -> list[dict[str, Any]] | str:
    """The active silences as the silences file beside the state file holds them (no daemon
    needed; the file is only read), or why it cannot be read."""
    path = silences_path(cfg.state_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        return f"cannot read the silences file {path}: {exc.strerror or exc}"
    except ValueError as exc:
        return f"the silences file {path} is not JSON ({exc}); it is left as it is"
    rows = []
    try:
        if not isinstance(data, dict) or data.get("version") != SILENCES_VERSION:
            raise ValueError(f"not a silences file of version {SILENCES_VERSION}")
        for obj in data.get("silences") or []:
            until = from_iso(obj.get("until"))
            if until is None:
                raise ValueError("a silence has no end")
            if until > time.time():
                target = parse_target(str(obj.get("target", "")), allow_group=False)
                rows.append(
                    {
                        "target": str(target),
                        "until": iso(until),
                        "reason": str(obj.get("reason") or ""),
                        "by": str(obj.get("by") or "-"),
                        "created": iso(from_iso(obj.get("created"))),
                    }
                )
    except (ValueError, ControlError, AttributeError) as exc:
        return f"the silences file {path} is unreadable ({exc}); it is left as it is"
    return rows


def storm_guard(
    limit: int, rows: list[dict[str, Any]], engaged: bool | None = None
) -> dict[str, Any]:
    """The storm guard (MAX_FORCED_DOWN) as `status` shows it; marks the rows of the new
    devices it keeps waiting (phase `new (storm guard)`). `engaged` is the daemon's word;
    None (no daemon): engaged when the limit is reached and a new device waits."""
    forced = sum(1 for r in rows if str(r.get("phase")).split(" ")[0] in _FORCED)
    waiting = [r for r in rows if r.get("phase") == Phase.NEW.value and not r.get("held")]
    if engaged is None:
        engaged = bool(limit) and forced >= limit and bool(waiting)
    if limit and engaged:
        for r in waiting:
            r["phase"] = f"{Phase.NEW.value} (storm guard)"
            r["storm_held"] = True
    held = len(waiting) if limit and engaged else 0
    return {"max_forced_down": limit, "forced_down": forced, "engaged": engaged, "held": held}


def storm_line(storm: dict[str, Any]) -> str:
    """`status`'s storm-guard line."""
    limit = storm["max_forced_down"]
    if not limit:
        return "storm guard: off (MAX_FORCED_DOWN=0)"
    line = f"storm guard: {storm['forced_down']} of MAX_FORCED_DOWN={limit} forced down"
    if storm["engaged"]:
        waits = plural(storm["held"], "new device waits", "new devices wait")
        line += f"; ENGAGED: {waits} until fewer are forced down"
    return line


_FORCED = {p.value for p in FORCED_PHASES}
