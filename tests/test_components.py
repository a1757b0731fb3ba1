"""Device components: the simulator as LibreNMS 26.7's source answers (each trap), and the
client (`librenms/components.py`) that keeps each original in one, over a real socket."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from alert_handler.core.facts import LibreNMSError
from alert_handler.core.records import DeviceRecord, Phase
from alert_handler.librenms.client import LibreNMS
from alert_handler.librenms.component_api import ComponentRoutes
from alert_handler.librenms.components import COMPONENT_TYPE, Components, decode
from alert_handler.sim.simulator import DEFAULT_TOKEN, Simulator

T0 = 1_780_000_000.0
LIMITED = "abcdef0123456789abcdef0123456789"
VIEW = frozenset({"device.viewAny"})


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(tokens={LIMITED: VIEW}) as simulator:
        simulator.add_device(5, "cpe-5")
        simulator.add_device(6, "cpe-6")
        yield simulator


def session(token: str = DEFAULT_TOKEN) -> requests.Session:
    s = requests.Session()
    s.headers["X-Auth-Token"] = token
    return s


def client(sim: Simulator, token: str = DEFAULT_TOKEN) -> LibreNMS:
    return LibreNMS(sim.url, token, retries=2, backoff=0.01)


# -- the simulator: each trap as the source has it ------------------------------------------
def test_a_device_with_no_component_answers_without_the_key(sim: Simulator) -> None:
    body = session().get(sim.url + "/devices/5/components").json()
    assert body == {"status": "ok"}
    assert ComponentRoutes(client(sim)).list(5, COMPONENT_TYPE) == {}


def test_post_answers_nulls_and_a_read_shows_the_defaults(sim: Simulator) -> None:
    s = session()
    body = s.post(sim.url + "/devices/5/components/alert-handler").json()
    assert body["components"] == {
        "1": {
            "type": "alert-handler",
            "label": None,
            "status": None,
            "ignore": None,
            "disabled": None,
            "error": None,
        }
    }
    row = s.get(sim.url + "/devices/5/components").json()["components"]["1"]
    assert (row["status"], row["ignore"], row["disabled"], row["label"]) == (0, 0, 0, None)


def test_put_replaces_the_attribute_set_stores_null_as_empty_and_logs_each_change(
    sim: Simulator,
) -> None:
    s = session()
    s.post(sim.url + "/devices/5/components/alert-handler")
    s.put(sim.url + "/devices/5/components", json={"1": {"a": None, "b": "x", "status": 0}})
    s.put(sim.url + "/devices/5/components", json={"1": {"a": "y"}})
    row = sim.components(5)[1]
    assert row["a"] == "y" and "b" not in row  # b was not sent: deleted
    assert sim.eventlog(5) == [
        "Component: alert-handler(1). Attribute: a, was added with value: ",
        "Component: alert-handler(1). Attribute: b, was added with value: x",
        "Component: alert-handler(1). Attribute: a, was modified from: , to: y",
        "Component: alert-handler(1). Attribute: b, was deleted.",
    ]


def test_put_edits_by_id_whatever_device_the_url_names(sim: Simulator) -> None:
    s = session()
    s.post(sim.url + "/devices/5/components/alert-handler")
    answer = s.put(sim.url + "/devices/6/components", json={"1": {"a": "z"}})
    assert answer.json() == {"status": "ok"}
    assert sim.components(5)[1]["a"] == "z"  # device 5's component, edited through device 6


def test_delete_of_a_missing_id_answers_500_and_filters_work(sim: Simulator) -> None:
    s = session()
    s.post(sim.url + "/devices/5/components/alert-handler")
    s.post(sim.url + "/devices/5/components/other")
    s.put(sim.url + "/devices/5/components", json={"2": {"label": "Other Thing"}})
    found = s.get(sim.url + "/devices/5/components", params={"type": "ALERT-handler"}).json()
    assert list(found["components"]) == ["1"]  # `=` under a case-insensitive collation
    found = s.get(sim.url + "/devices/5/components", params={"label": "her th"}).json()
    assert list(found["components"]) == ["2"]  # label is LIKE
    assert s.delete(sim.url + "/devices/9/components/1").json() == {"status": "ok"}
    again = s.delete(sim.url + "/devices/5/components/1")
    assert again.status_code == 500
    assert again.json() == {"status": "error", "message": "Components could not be deleted."}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/devices/5/components/x"),
        ("PUT", "/devices/5/components"),
        ("DELETE", "/devices/5/components/1"),
    ],
)
def test_each_component_route_has_its_own_permission(
    sim: Simulator, method: str, path: str
) -> None:
    answer = session(LIMITED).request(method, sim.url + path, json={})
    assert answer.status_code == 403
    assert session(LIMITED).get(sim.url + "/devices/5/components").status_code == 200


# -- the client ------------------------------------------------------------------------------
def forced(original: str | None, episode: str = "ep_1") -> DeviceRecord:
    return DeviceRecord(
        device_id=5,
        phase=Phase.FORCING_DOWN,
        original_recorded=True,
        original_overwrite_ip=original,
        episode=episode,
    )


@pytest.mark.parametrize("original", [None, "", "10.0.0.1"])
def test_null_empty_and_an_address_come_back_exactly(sim: Simulator, original: str | None) -> None:
    comps = Components(client(sim), daemon="host-a")
    comps.keep(forced(original), T0)
    assert comps.held(5) == (original,)
    found = comps.lookup(5)
    assert found is not None
    assert (found.episode, found.daemon, found.forced_down_at) == ("ep_1", "host-a", T0)
    row = sim.components(5)[found.component_id]
    assert row["status"] == 0 and row["original"] == json.dumps(original)


def test_written_once_per_episode(sim: Simulator) -> None:
    comps = Components(client(sim), daemon="host-a")
    comps.keep(forced(None), T0)
    lines = sim.eventlog(5)
    sim.clear_requests()
    comps.keep(forced(None), T0 + 600)  # a later force-down of the same episode
    assert [r.method for r in sim.requests] == ["GET"]
    assert sim.eventlog(5) == lines
    comps.keep(forced(None, episode="ep_2"), T0 + 900)  # a new episode rewrites it
    assert len(sim.components(5)) == 1
    assert comps.lookup(5) is not None and comps.lookup(5).episode == "ep_2"  # type: ignore[union-attr]


def test_a_lost_post_answer_makes_no_second_component(sim: Simulator) -> None:
    sim.inject("POST", r"/components/", lose_answer=True)
    comps = Components(client(sim), daemon="host-a")
    comps.keep(forced("10.0.0.1"), T0)
    assert len(sim.components(5)) == 1
    assert comps.held(5) == ("10.0.0.1",)


def test_duplicates_are_cleaned_up_keeping_the_one_that_agrees(sim: Simulator) -> None:
    comps = Components(client(sim), daemon="host-a")
    routes = comps.routes
    first = routes.add(5, COMPONENT_TYPE)  # incomplete: its PUT never made
    comps.keep(forced("10.0.0.1"), T0)  # rewrites the oldest, no new one
    assert list(sim.components(5)) == [first]
    extra = routes.add(5, COMPONENT_TYPE)
    routes.edit(5, extra, {"original": '"10.0.0.9"', "episode": "ep_0"})
    other = routes.add(5, "someone-else")
    comps.keep(forced("10.0.0.1"), T0)
    assert sorted(sim.components(5)) == [first, other]  # not ours is never touched


def test_a_stale_component_is_rewritten_whole(sim: Simulator) -> None:
    api = client(sim)
    routes = ComponentRoutes(api)
    cid = routes.add(5, COMPONENT_TYPE)
    routes.edit(5, cid, {"original": "null", "episode": "ep_old", "note": "by hand"})
    Components(api, daemon="host-a").keep(forced("10.0.0.1"), T0)
    row = sim.components(5)[cid]
    assert "note" not in row and row["original"] == '"10.0.0.1"' and row["episode"] == "ep_1"


def test_a_create_that_is_refused_fails_and_leaves_nothing(sim: Simulator) -> None:
    comps = Components(client(sim, LIMITED), daemon="host-a")
    with pytest.raises(LibreNMSError, match="403"):
        comps.keep(forced(None), T0)
    assert sim.components() == {}


def test_a_delete_whose_answer_was_lost_counts_once_a_reread_shows_it_gone(
    sim: Simulator,
) -> None:
    comps = Components(client(sim), daemon="host-a")
    comps.keep(forced(None), T0)
    sim.inject("DELETE", r"/components/", lose_answer=True)
    assert comps.drop(5) is None
    assert sim.components() == {}
    # and a DELETE that answers 500 for an id already gone (the retry of a landed one)
    comps.keep(forced(None), T0)
    cid = next(iter(sim.components(5)))
    session().delete(sim.url + f"/devices/5/components/{cid}")
    comps._delete(5, cid)  # 500, re-read: gone, done


def test_a_failed_removal_is_swept_later(sim: Simulator) -> None:
    comps = Components(client(sim), daemon="host-a")
    comps.keep(forced(None), T0)
    sim.inject("DELETE", r"/components/", status=500, times=10)
    error = comps.drop(5)
    assert error is not None and "500" in error and comps.pending() == {5}
    assert comps.sweep(lambda d: d == 5, unsupervised=set()) == []  # tracked: the steps' own
    assert comps.pending() == set() and len(sim.components(5)) == 1
    sim.inject("DELETE", r"/components/", status=500, times=10)
    comps.drop(5)
    assert comps.sweep(lambda d: False, unsupervised={5}) == []  # adoption will read it
    sim.clear_faults()
    assert comps.sweep(lambda d: False, unsupervised=set()) == [5]
    assert sim.components() == {} and comps.pending() == set()


def test_decode_refuses_what_holds_no_original() -> None:
    assert decode(1, {"original": ""}) is None  # created, never written
    assert decode(1, {"original": "12"}) is None
    assert decode(1, {}) is None
    held = decode(1, {"original": "null", "episode": "", "daemon": "h"})
    assert held is not None and held.original is None and held.episode is None
