"""One accepted connection as the listener's event loop sees it, and when its request is
complete.

The loop reads without parsing: it only finds where the head ends (the first empty line) and how
many body bytes follow (one plain `Content-Length` of at most MAX_BODY, else none), so it knows
when to hand the bytes to a request thread. Everything is then parsed, bounded and judged by
http.server's parser in `handler` (a request the loop misjudges is still refused there); a head
too long to end within the limits is handed over as it is, to be answered 414 or 431.
"""

from __future__ import annotations

import socket
import time
from enum import Enum

from alert_handler.core.alerts import MAX_BODY
from alert_handler.http.handler import (
    LINGER_BYTES,
    LINGER_SECONDS,
    MAX_HEADER_BYTES,
    MAX_REQUEST_LINE,
    Peer,
)

# Beyond this many bytes without the end of the head, the parser has something to refuse.
_HEAD_LIMIT = MAX_REQUEST_LINE + 1 + MAX_HEADER_BYTES + 4


class Stage(Enum):
    """Where a connection is."""

    HANDSHAKE = "handshake"  # TLS, before the first byte of the request
    READING = "reading"  # until the request is complete (the reaper's deadline applies)
    HANDLING = "handling"  # with a request thread
    LINGERING = "lingering"  # answered; the unread body is drained for a moment, then closed


class Conn(Peer):
    """An accepted socket (TLS-wrapped or not), its peer, and what it sent so far."""

    __slots__ = ("address", "buf", "head_len", "left", "need", "scanned", "sock", "stage", "until")

    def __init__(self, sock: socket.socket, address: tuple[str, int]) -> None:
        super().__init__(str(address[0]))
        self.sock = sock
        self.address = address
        self.stage = Stage.READING
        self.buf = bytearray()
        self.scanned = 0  # where to look for the end of the head next
        self.head_len = -1  # bytes of the head, once its end is known
        self.need = 0  # body bytes expected after it
        self.until = 0.0  # lingering: when to give up
        self.left = 0  # lingering: bytes still drained at most

    def feed(self, data: bytes) -> bool:
        """Add received bytes; True once the request is complete (or must be refused)."""
        self.buf += data
        if self.head_len < 0 and not self._find_head():
            return len(self.buf) > _HEAD_LIMIT
        return len(self.buf) >= self.head_len + self.need

    def start_lingering(self) -> None:
        """After a refusal that left the body unread: half-close, drain for a moment (OSError if
        the socket is gone)."""
        self.stage = Stage.LINGERING
        self.until = time.monotonic() + LINGER_SECONDS
        self.left = LINGER_BYTES
        self.sock.setblocking(False)
        socket.socket.shutdown(self.sock, socket.SHUT_WR)  # the raw socket, TLS or not

    def drain(self) -> bool:
        """Discard what arrived; True when done (EOF, enough, or an error): close it then."""
        while self.left > 0:
            try:
                data = socket.socket.recv(self.sock, min(65536, self.left))
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            self.left -= len(data)
        return True

    def _find_head(self) -> bool:
        """Look for the end of the head; set head_len and need when found."""
        buf = self.buf
        first = buf.find(b"\n")
        if first < 0:
            return len(buf) > MAX_REQUEST_LINE  # 414 from the parser
        if first > MAX_REQUEST_LINE or len(buf[:first].split()) < 3:
            self.head_len = first + 1  # 414, or HTTP/0.9 and junk: no headers follow
            return True
        start = max(first, self.scanned - 2)
        ends = [i for i in (buf.find(b"\n\r\n", start), buf.find(b"\n\n", start)) if i >= 0]
        if not ends:
            self.scanned = len(buf)
            return False
        end = min(ends)
        self.head_len = end + (3 if buf[end + 1 : end + 2] == b"\r" else 2)
        self.need = body_length(bytes(buf[: self.head_len]))
        return True


def body_length(head: bytes) -> int:
    """How many body bytes the loop reads: the value of a single Content-Length of plain digits
    up to MAX_BODY and no Transfer-Encoding, else 0 (the handler answers 400, 411 or 413 from
    the headers alone, and a refused body is drained after the answer)."""
    lengths = []
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return 0
        if name == b"content-length":
            lengths.append(value.strip())
    if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 15:
        return 0
    length = int(lengths[0])
    return length if length <= MAX_BODY else 0
