"""When the listener's event loop hands a request to a request thread (issue 15): the end of the
head and the body it waits for, fed byte by byte as a slow client would send them. The parser
that judges the request is tested over real sockets in test_security_http.py."""

from __future__ import annotations

import socket

import pytest

from alert_handler.core.alerts import MAX_BODY
from alert_handler.http.connection import Conn, body_length
from alert_handler.http.handler import MAX_HEADER_BYTES, MAX_REQUEST_LINE


def complete_at(raw: bytes) -> int | None:
    """After how many bytes, fed one at a time, the request counts as complete (None: never)."""
    a, b = socket.socketpair()
    try:
        conn = Conn(a, ("127.0.0.1", 1))
        for n in range(1, len(raw) + 1):
            if conn.feed(raw[n - 1 : n]):
                return n
        return None
    finally:
        a.close()
        b.close()


def test_a_request_is_complete_with_its_body() -> None:
    head = b"POST /alert HTTP/1.1\r\nContent-Length: 5\r\nX-Auth-Token: t\r\n\r\n"
    assert complete_at(head + b"12345") == len(head) + 5
    assert complete_at(head + b"1234") is None  # the loop waits (or EOF hands it over)
    bare = b"GET /health HTTP/1.0\r\n\r\n"
    assert complete_at(bare) == len(bare)


def test_bare_newlines_and_http09_end_the_head() -> None:
    """http.server accepts LF-only lines, and a request line of fewer than three words has no
    headers (HTTP/0.9, or junk the parser refuses)."""
    lf = b"POST /alert HTTP/1.0\nContent-Length: 2\n\n{}"
    assert complete_at(lf) == len(lf)
    assert complete_at(b"GET /health\r\nignored") == len(b"GET /health\r\n")
    assert complete_at(b"\r\n\r\n") == 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (b"Content-Length: 12\r\n", 12),
        (b"content-length:   7  \r\n", 7),
        (b"Content-Length: 2\r\nContent-Length: 2\r\n", 0),  # two: 400 from the headers
        (b"Content-Length: -1\r\n", 0),
        (b"Content-Length: 0x10\r\n", 0),
        (b"Content-Length: \xb2\r\n", 0),  # a superscript two is not a digit
        (b"Content-Length: " + str(MAX_BODY + 1).encode() + b"\r\n", 0),  # 413 from the headers
        (b"Content-Length: " + b"9" * 300 + b"\r\n", 0),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 0),  # 411
        (b"X-Other: Content-Length: 5\r\n", 0),
    ],
)
def test_the_body_the_loop_waits_for(headers: bytes, expected: int) -> None:
    """Only a single plain Content-Length up to MAX_BODY makes the loop read a body; anything
    else is handed over at the end of the head, for the handler to refuse from the headers."""
    assert body_length(b"POST /alert HTTP/1.1\r\n" + headers + b"\r\n") == expected


def test_heads_that_never_end_are_handed_over_at_the_limits() -> None:
    """A request line or a header block longer than the limits is handed over as it is (the
    parser answers 414 or 431) instead of being buffered without end."""
    line = b"GET /" + b"a" * (MAX_REQUEST_LINE + 10)
    assert complete_at(line) == MAX_REQUEST_LINE + 1
    block = b"GET /health HTTP/1.0\r\n" + b"X: " + b"a" * (MAX_HEADER_BYTES + MAX_REQUEST_LINE)
    at = complete_at(block)
    assert at is not None and at <= MAX_REQUEST_LINE + MAX_HEADER_BYTES + 10
