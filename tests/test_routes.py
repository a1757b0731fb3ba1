"""The one route table (alert_handler/http/routes.py): what the handler, the Allow header, the
404's listing and the metrics' endpoint labels all read."""

from __future__ import annotations

from alert_handler.http import routes
from alert_handler.http.routes import Answer


def test_every_answer_has_a_route_and_paths_match_exactly() -> None:
    assert {r.answer for r in routes.ROUTES} == set(Answer)
    assert routes.match("POST", "/devices/42/release").device_id == "42"
    assert routes.match("POST", "/devices/42/release/x").route is None
    assert routes.match("GET", "/devicesX").allow == ()


def test_alert_deliveries_have_no_label_and_operator_endpoints_do() -> None:
    for method in ("POST", "PUT", "GET"):
        assert routes.match(method, "/alert").label is None
    assert routes.match("POST", "/").label is None
    assert routes.match("GET", "/").label == "index"
    assert routes.match("HEAD", "/").label == "index"
    assert routes.match("DELETE", "/nowhere").label == routes.OTHER
    labels = routes.endpoint_labels()
    assert len(labels) == len(set(labels)) and labels[-1] == routes.OTHER
    assert {r.label for r in routes.ROUTES if r.label} | {routes.OTHER} == set(labels)


def test_allow_lists_the_methods_of_a_path_in_one_order() -> None:
    assert routes.match("HEAD", "/alert").route is None  # no HEAD of a delivery
    assert routes.match("HEAD", "/alert").allow == ("GET", "POST", "PUT")
    assert routes.match("DELETE", "/").allow == ("GET", "HEAD", "POST", "PUT")
    assert routes.match("PUT", "/silences").allow == ("GET", "HEAD", "POST")
    assert all(row["path"] for row in routes.listing())
