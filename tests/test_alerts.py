"""alerts.parse_alert: what LibreNMS sends parses; anything hostile is a BadPayload."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_handler.core.alerts import MAX_BODY, Alert, BadPayload, parse_alert

MAX_ID = 2**31 - 1


def body(obj: Any) -> bytes:
    """`obj` as a JSON body."""
    return json.dumps(obj).encode()


# -- shapes LibreNMS sends ---------------------------------------------------------------------
def test_json_body_whatever_the_content_type() -> None:
    # LibreNMS sends the body as text/plain unless told otherwise: the body is always tried as
    # JSON, so nothing about the request but its bytes matters.
    alert = parse_alert(b'{"device_id": 42, "state": 1, "host": "cpe-42", "ip": "192.0.2.1"}')
    assert alert == Alert(device_id=42, state=1, host="cpe-42", ip="192.0.2.1")


def test_json_body_with_leading_whitespace() -> None:
    assert parse_alert(b'\r\n  {"device_id": "42"}\n').device_id == 42


def test_form_body() -> None:
    alert = parse_alert(b"device_id=42&state=0&hostname=cpe-42&name=Port+2+down&uid=9")
    assert alert == Alert(device_id=42, state=0, host="cpe-42", rule="Port 2 down", uid=9)


def test_query_string_only() -> None:
    alert = parse_alert(b"", "device_id=42&state=4&rule=r")
    assert alert == Alert(device_id=42, state=4, rule="r")
    assert parse_alert(b"  \n", "device_id=7").device_id == 7


def test_body_wins_over_query_and_query_fills_the_rest() -> None:
    alert = parse_alert(b'{"device_id": 7, "host": "from-body"}', "device_id=42&state=0&host=q")
    assert (alert.device_id, alert.state, alert.host) == (7, 0, "from-body")
    form = parse_alert(b"device_id=8", "device_id=42&state=3")
    assert (form.device_id, form.state) == (8, 3)


@pytest.mark.parametrize(("value", "expected"), [(42, 42), ("42", 42), (1, 1), (MAX_ID, MAX_ID)])
def test_device_id_as_int_or_digit_string(value: Any, expected: int) -> None:
    assert parse_alert(body({"device_id": value})).device_id == expected
    assert parse_alert(b"", urlencode({"device_id": str(value)})).device_id == expected


def test_unknown_fields_are_ignored() -> None:
    raw = body({"device_id": 42, "extra": {"nested": [1, 2, {"x": None}]}, "sysName": "cpe"})
    assert parse_alert(raw) == Alert(device_id=42)


def test_optional_fields() -> None:
    alert = parse_alert(
        body({"device_id": 42, "hostname": "h", "name": "rule", "title": " t ", "uid": "12"})
    )
    assert (alert.host, alert.rule, alert.title, alert.uid) == ("h", "rule", "t", 12)
    long = parse_alert(body({"device_id": 42, "title": "x" * 1000, "uid": -3, "ip": ["a"]}))
    assert long.title == "x" * 255
    assert long.uid is None
    assert long.ip is None


def render_librenms_template(template: str, variables: dict[str, Any]) -> str:
    """LibreNMS's `{{ $var }}` templating: values inserted raw, `|json_encode` escaped."""

    def one(match: re.Match[str]) -> str:
        name, filt = match.group(1), match.group(2)
        value = variables[name]
        return json.dumps(value) if filt == "json_encode" else str(value)

    return re.sub(r"\{\{ \$(\w+)(?:\|(\w+))? \}\}", one, template)


def test_the_documented_librenms_template_with_quotes_in_the_rule_name() -> None:
    template = (
        '{"device_id": {{ $device_id }}, "host": "{{ $hostname }}", "ip": "{{ $ip }}", '
        '"state": {{ $state }}, "rule": {{ $name|json_encode }}, "uid": {{ $uid }}}'
    )
    rule = 'Port "port2" down \\ on C:\\ and </script>'
    rendered = render_librenms_template(
        template,
        {
            "device_id": 42,
            "hostname": "cpe-42.example",
            "ip": "127.0.0.50",
            "state": 1,
            "name": rule,
            "uid": 1234,
        },
    )
    alert = parse_alert(rendered.encode())
    assert alert == Alert(
        device_id=42, state=1, host="cpe-42.example", ip="127.0.0.50", rule=rule, uid=1234
    )


# -- device_id ---------------------------------------------------------------------------------
HOSTILE_IDS: list[Any] = [
    "",
    "42; rm -rf /",
    "42\n",
    " 42",
    "42 ",
    "-1",
    "0",
    0,
    -1,
    "0x2a",
    "4e2",
    4.2,
    42.0,
    True,
    False,
    [42],
    {"a": 1},
    None,
    "٤٢",  # Arabic-Indic digits
    "\uff11\uff12",  # fullwidth digits
    "12345678901",  # 11 digits
    "99999999999999999999",
    MAX_ID + 1,
    str(MAX_ID + 1),
    2**64,
    "+42",
    "4_2",
]


@pytest.mark.parametrize("value", HOSTILE_IDS, ids=repr)
def test_hostile_device_ids_are_rejected(value: Any) -> None:
    with pytest.raises(BadPayload):
        parse_alert(body({"device_id": value}))


@pytest.mark.parametrize("value", [v for v in HOSTILE_IDS if isinstance(v, str)], ids=repr)
def test_hostile_device_ids_are_rejected_in_forms_and_queries(value: str) -> None:
    with pytest.raises(BadPayload):
        parse_alert(urlencode({"device_id": value}).encode())
    with pytest.raises(BadPayload):
        parse_alert(b"", urlencode({"device_id": value}))


def test_missing_device_id() -> None:
    for raw in (b"{}", b'{"state": 1}', b"state=1", b""):
        with pytest.raises(BadPayload, match="device_id"):
            parse_alert(raw)


# -- state ---------------------------------------------------------------------------------------
def test_state_defaults_to_alert() -> None:
    assert parse_alert(body({"device_id": 42})).state == 1
    assert parse_alert(body({"device_id": 42, "state": None})).state == 1
    assert parse_alert(b"device_id=42&state=").state == 1


@pytest.mark.parametrize("state", range(6))
def test_states_zero_to_five(state: int) -> None:
    assert parse_alert(body({"device_id": 42, "state": state})).state == state
    assert parse_alert(body({"device_id": 42, "state": str(state)})).state == state


@pytest.mark.parametrize(
    "state", [6, -1, "6", "x", True, False, 1.0, "1.0", "٣", "01", [1], {"s": 1}], ids=repr
)
def test_bad_states_are_rejected(state: Any) -> None:
    with pytest.raises(BadPayload, match="state"):
        parse_alert(body({"device_id": 42, "state": state}))


# -- hostile bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        b'{"device_id": 42,',
        b'{"device_id": 42}}',
        b"{device_id: 42}",
        b"[1, 2]",
        b"[]",
        b'"device_id=42"',
        b"42",
        b"null",
        b"true",
        b"just words",
        b'{"device_id": 42, "host": "\xff"}',
        b"\xfe\xff\x00{",
        b'{"device_id": 42, "x": NaN}',
        b'{"device_id": 42, "x": Infinity}',
        b'{"device_id": 42, "x": -Infinity}',
        b'{"device_id": NaN}',
    ],
    ids=repr,
)
def test_malformed_bodies_are_rejected(raw: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_alert(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000,
        b'{"a":' * 10_000,
        b'{"device_id": 42, "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"device_id": 42, "x": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"device_id": 42, "x": ' + b'{"y":' * 900 + b"1" + b"}" * 900 + b"}",
    ],
    ids=["10k-brackets", "10k-objects", "3k-balanced", "900-balanced", "900-objects"],
)
def test_deep_nesting_is_rejected(raw: bytes) -> None:
    """Hostile nesting is one BadPayload ("too deeply nested"), never a RecursionError; how
    fast that is is not asserted here (timings belong in bench/)."""
    with pytest.raises(BadPayload, match="nested"):
        parse_alert(raw)


def nest(depth: int) -> dict[str, Any]:
    """An alert whose total JSON nesting depth (the top object counting 1) is `depth`."""
    inner: Any = 1
    for _ in range(depth - 2):
        inner = [inner]
    return {"device_id": 42, "x": inner}


def test_nesting_limit_is_eight() -> None:
    assert parse_alert(body(nest(8))).device_id == 42
    with pytest.raises(BadPayload, match="nested"):
        parse_alert(body(nest(9)))


def test_body_size_limit() -> None:
    head = b'{"device_id": 42, "pad": "'
    exact = head + b"x" * (MAX_BODY - len(head) - 2) + b'"}'
    assert len(exact) == MAX_BODY == 64 * 1024
    assert parse_alert(exact).device_id == 42
    with pytest.raises(BadPayload, match="64 KiB"):
        parse_alert(head + b"x" * (MAX_BODY - len(head) - 1) + b'"}')


def test_huge_integers_are_rejected() -> None:
    with pytest.raises(BadPayload):
        parse_alert(b'{"device_id": ' + b"9" * 5000 + b"}")
    with pytest.raises(BadPayload):
        parse_alert(b'{"device_id": 1e400}')


# -- property ------------------------------------------------------------------------------------
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
DEVICE_IDS = st.one_of(
    st.integers(min_value=1, max_value=MAX_ID),
    st.integers(min_value=1, max_value=MAX_ID).map(str),
    st.integers(),
    st.sampled_from(HOSTILE_IDS),
    st.text(alphabet="0123456789\u0664\u0662\uff11\uff12 -+x\n", max_size=12),
    JSON_VALUES,
)
STATES = st.one_of(
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=5).map(str),
    st.integers(),
    JSON_VALUES,
)


@st.composite
def alert_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON object with random fields plus, usually, a device_id and a state of any kind."""
    obj: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
    if draw(st.booleans()) or not obj:
        obj["device_id"] = draw(DEVICE_IDS)
    if draw(st.booleans()):
        obj["state"] = draw(STATES)
    for name in ("host", "hostname", "ip", "rule", "name", "title", "uid"):
        if draw(st.integers(0, 5)) == 0:
            obj[name] = draw(JSON_LEAVES)
    return obj


def expected_device_id(value: Any) -> int | None:
    """An independent statement of which device_id values are valid."""
    if type(value) is int:
        return value if 1 <= value <= MAX_ID else None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value, re.ASCII):
        number = int(value)
        return number if 1 <= number <= MAX_ID else None
    return None


def check_outcome(raw: bytes, query: str = "") -> Alert | None:
    """Parse; only Alert (with sane fields) or BadPayload may come out."""
    try:
        alert = parse_alert(raw, query)
    except BadPayload as exc:
        assert str(exc)
        return None
    assert isinstance(alert, Alert)
    assert type(alert.device_id) is int and 1 <= alert.device_id <= MAX_ID
    assert type(alert.state) is int and 0 <= alert.state <= 5
    for text in (alert.host, alert.ip, alert.rule, alert.title):
        assert text is None or (isinstance(text, str) and 0 < len(text) <= 255)
    assert alert.uid is None or (type(alert.uid) is int and alert.uid >= 0)
    return alert


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=40))
def test_any_bytes_give_an_alert_or_bad_payload(raw: bytes, query: str) -> None:
    check_outcome(raw, query)


def expected_state(value: Any) -> int | None:
    """An independent statement of which state values are valid (missing means 1)."""
    if value is None or value == "":
        return 1
    if type(value) is int:
        return value if 0 <= value <= 5 else None
    if isinstance(value, str) and value in ("0", "1", "2", "3", "4", "5"):
        return int(value)
    return None


def too_deep(obj: Any, limit: int = 8) -> bool:
    """Whether `obj` nests deeper than `limit` (the top object counting 1)."""

    def depth(value: Any) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        return 0

    return depth(obj) > limit


@settings(max_examples=200, deadline=None)
@given(alert_objects(), st.sampled_from(["", "device_id=42", "state=0", "device_id=x&state=9"]))
def test_any_json_object_gives_an_alert_or_bad_payload(obj: dict[str, Any], query: str) -> None:
    alert = check_outcome(body(obj), query)
    merged: dict[str, Any] = dict(parse_qsl(query))
    merged.update(obj)  # the body wins
    want_id = expected_device_id(merged.get("device_id"))
    want_state = expected_state(merged.get("state"))
    if want_id is None or want_state is None or too_deep(obj):
        assert alert is None
    else:
        assert alert is not None
        assert (alert.device_id, alert.state) == (want_id, want_state)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["device_id", "state", "host", "x"]), DEVICE_IDS | STATES))
def test_any_form_body_gives_an_alert_or_bad_payload(fields: dict[str, Any]) -> None:
    encoded = urlencode(
        {k: json.dumps(v) if not isinstance(v, str) else v for k, v in fields.items()}
    )
    check_outcome(encoded.encode())
    check_outcome(b"", encoded)


def test_the_rule_name_is_name_never_the_builder_json() -> None:
    """LibreNMS's `{{ $name }}` is the rule name, `{{ $rule }}` the rule's query-builder JSON."""
    builder = '{"condition":"AND","rules":[{"id":"macros.port_down"}],"valid":true}'
    both = json.dumps({"device_id": 4, "rule": builder, "name": "Port2 down"}).encode()
    assert parse_alert(both).rule == "Port2 down"
    assert parse_alert(json.dumps({"device_id": 4, "rule": builder}).encode()).rule is None
    nested = b'{"device_id": 4, "rule": {"condition": "AND", "rules": []}}'
    assert parse_alert(nested).rule is None
    assert parse_alert(b'{"device_id": 4, "rule": "Port2 down"}').rule == "Port2 down"
    assert parse_alert(b'{"device_id": 4, "rule": "{weird} rule"}').rule == "{weird} rule"
    assert parse_alert(b"", urlencode({"device_id": 4, "rule": builder})).rule is None
