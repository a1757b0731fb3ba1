"""The one table of what this port answers: path, methods, whether the webhook token is needed,
the endpoint's metrics label, and which `App` call answers it.

The handler routes by it, answers 405 with its Allow header, lists it in a 404's body, and the
metrics declare their `endpoint` label set from it (docs/operations.md describes each route).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Answer(str, Enum):
    """How a route's answer is produced (the handler owns the bytes)."""

    ALERT = "alert"  # App.receive(body, query, client): the body is read; GET: the query only
    PAGE = "page"  # the status page, HTML
    HEALTH = "health"
    METRICS = "metrics"  # Prometheus's text format
    DEVICES = "devices"
    SILENCES = "silences"
    SILENCE = "silence"  # POST /silences
    UNSILENCE = "unsilence"
    PAUSE = "pause"
    RESUME = "resume"
    CONFIRM = "confirm"
    DISCARD = "discard"
    RELEASE = "release"  # the device id is in the path
    TRACK = "track"


@dataclass(frozen=True)
class Route:
    """One path and the methods it answers (GET implies HEAD)."""

    path: str  # `<id>` stands for a device id segment
    methods: tuple[str, ...]
    answer: Answer
    token: bool  # the webhook token is needed
    what: str
    label: str | None  # operator_requests_total's endpoint; None: an alert delivery

    @property
    def pattern(self) -> re.Pattern[str]:
        """The path as a regular expression (the id segment captured, validated later)."""
        return re.compile("^" + re.escape(self.path).replace(re.escape("<id>"), "([^/]+)") + "$")


ROUTES: tuple[Route, ...] = (
    Route("/alert", ("POST", "PUT", "GET"), Answer.ALERT, True, "an alert from LibreNMS", None),
    Route("/", ("POST", "PUT"), Answer.ALERT, True, "the same as /alert", None),
    Route("/", ("GET",), Answer.PAGE, True, "the status page (HTML)", "index"),
    Route("/health", ("GET",), Answer.HEALTH, False, "the daemon's health", "health"),
    Route("/metrics", ("GET",), Answer.METRICS, False, "Prometheus metrics", "metrics"),
    Route("/devices", ("GET",), Answer.DEVICES, True, "the tracked devices", "devices"),
    Route("/devices/<id>/release", ("POST",), Answer.RELEASE, True, "release", "release"),
    Route("/devices/<id>/track", ("POST",), Answer.TRACK, True, "track", "track"),
    Route("/pause", ("POST",), Answer.PAUSE, True, "maintenance mode on", "pause"),
    Route("/resume", ("POST",), Answer.RESUME, True, "maintenance mode off", "resume"),
    Route("/silences", ("GET",), Answer.SILENCES, True, "the active silences", "silences"),
    Route("/silences", ("POST",), Answer.SILENCE, True, "silence a device", "silences"),
    Route("/unsilence", ("POST",), Answer.UNSILENCE, True, "end a silence", "unsilence"),
    Route("/confirm", ("POST",), Answer.CONFIRM, True, "force down held devices", "confirm"),
    Route("/discard", ("POST",), Answer.DISCARD, True, "forget held devices", "discard"),
)
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT")
OTHER = "other"  # the label of a request no route answers
_COMPILED = tuple((route, route.pattern) for route in ROUTES)


def endpoint_labels() -> tuple[str, ...]:
    """Every operator endpoint label, in table order, then `other`."""
    labels = dict.fromkeys(route.label for route in ROUTES if route.label is not None)
    return (*labels, OTHER)


@dataclass(frozen=True)
class Match:
    """What a request's method and path found in the table."""

    route: Route | None  # None: the path is known but not for this method, or unknown
    device_id: str | None  # the raw id segment, for release and track
    allow: tuple[str, ...]  # the methods the path answers (empty: no such path)
    label: str | None  # the metrics label (None for an alert delivery)


def match(method: str, path: str) -> Match:
    """The route for `method` on `path` (HEAD where GET, but for an alert), and the path's Allow
    list."""
    allow: set[str] = set()
    found: tuple[Route, str | None] | None = None
    for route, pattern in _COMPILED:
        hit = pattern.match(path)
        if hit is None:
            continue
        methods = set(route.methods)
        if "GET" in methods and route.answer is not Answer.ALERT:  # no HEAD of a delivery
            methods.add("HEAD")
        allow |= methods
        if found is None and method in methods:
            found = (route, hit.group(1) if hit.groups() else None)
    allow_list = tuple(m for m in _METHOD_ORDER if m in allow)
    if found is None:
        label = next((r.label for r, p in _COMPILED if p.match(path) and r.label), OTHER)
        return Match(None, None, allow_list, label)
    route, raw_id = found
    return Match(route, raw_id, allow_list, route.label)


def listing() -> list[dict[str, object]]:
    """The table as a 404's body lists it: method, path, token, what."""
    return [
        {"method": method, "path": route.path, "token": route.token, "what": route.what}
        for route in ROUTES
        for method in route.methods
    ]
