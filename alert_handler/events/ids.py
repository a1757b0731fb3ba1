"""Unique, time-sortable ids: `<prefix>_` and 26 Crockford base32 characters, ULID-like (48 bits
of milliseconds, 80 random bits); strictly increasing within a process, even when the wall
clock steps back."""

from __future__ import annotations

import secrets
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _decode(text: str) -> int | None:
    value = 0
    for char in text:
        digit = _ALPHABET.find(char)
        if digit < 0:
            return None
        value = (value << 5) | digit
    return value


class IdSource:
    """Makes ids that sort in the order they were made; thread-safe."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._last = 0

    def seen(self, last_id: str | None) -> None:
        """Never make an id at or below `last_id` (the newest one a file already holds)."""
        if not last_id or not last_id.startswith(self.prefix + "_"):
            return
        value = _decode(last_id[len(self.prefix) + 1 :])
        if value is not None:
            with self._lock:
                self._last = max(self._last, value)

    def new(self) -> str:
        """A fresh id, greater than every id made or seen before."""
        millis = time.time_ns() // 1_000_000
        value = (millis << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
        with self._lock:
            if value <= self._last:
                value = self._last + 1  # same millisecond, or the clock stepped back
            self._last = value
        return f"{self.prefix}_{_encode(value)}"
