"""Where the event journal is: EVENTS_FILE, else `<STATE_FILE stem>.events.jsonl` beside the state
file, so that two daemons with different state files in one folder never share a journal (nor
read each other's last originals).

Upgrading: earlier versions wrote `events.jsonl` beside the state file. When that file is there,
the new name is not, and the folder holds no other daemon's state lock (so the old journal can
only be this daemon's), the daemon renames it (and its rotated files and webhook position) to the
new name at start, under the state lock; the read-only commands read it where it is until then.
With another daemon's lock in the folder the old file is left as it is, and the daemon says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from alert_handler.config.table import Config

LEGACY_NAME = "events.jsonl"


def _legacy(cfg: Config) -> Path | None:
    """The earlier default journal of this daemon, when EVENTS_FILE is unset."""
    if cfg.events_file:
        return None
    return Path(cfg.state_file).with_name(LEGACY_NAME)


def _other_locks(cfg: Config) -> list[Path]:
    """The state locks (`<STATE_FILE>.lock`) of other daemons in the state file's folder."""
    state = Path(cfg.state_file)
    folder = state.parent if str(state.parent) else Path(".")
    mine = state.name + ".lock"
    try:
        return sorted(p for p in folder.glob("*.lock") if p.name != mine)
    except OSError:
        return []


def legacy_journal(cfg: Config) -> tuple[Path | None, list[Path]]:
    """(the earlier `events.jsonl` this daemon should still use, the other daemons' locks that
    make it ambiguous). (None, []) when there is nothing to upgrade."""
    old = _legacy(cfg)
    new = Path(cfg.events_path())
    if old is None or old == new or new.exists() or not old.exists():
        return None, []
    others = _other_locks(cfg)
    return (None, others) if others else (old, [])


def journal_path(cfg: Config) -> Path:
    """The journal to read (the commands): the earlier `events.jsonl` while the daemon has not
    yet renamed it, else EVENTS_FILE or `<stem>.events.jsonl`."""
    old, _ = legacy_journal(cfg)
    return old if old is not None else Path(cfg.events_path())


def _family(path: Path) -> list[Path]:
    """A journal's files that exist: rotated ones (oldest first), the webhook position, the
    journal itself last (its presence says the renaming is not finished)."""
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    position = path.with_name(path.name + ".webhook-position")
    return [*rotated, *([position] if position.exists() else []), path]


def adopt_legacy_journal(cfg: Config) -> str | None:
    """At the daemon's start (the state lock held): rename the earlier `events.jsonl` and its
    files to the new name when it is unambiguously this daemon's. What was done, or why the old
    file is left, for the log; None when there is nothing to say."""
    old, others = legacy_journal(cfg)
    new = Path(cfg.events_path())
    if others:
        names = ", ".join(p.name for p in others)
        return (
            f"{Path(cfg.state_file).with_name(LEGACY_NAME)} is left as it is: other daemons' "
            f"state locks are in the folder ({names}), so it may be theirs; this daemon writes "
            f"{new} (EVENTS_FILE={Path(cfg.state_file).with_name(LEGACY_NAME)} keeps the old one)"
        )
    if old is None:
        return None
    for path in _family(old):
        os.replace(path, new.with_name(new.name + path.name[len(old.name) :]))
    return f"renamed the event journal {old} to {new} (named after STATE_FILE since this version)"
