"""LibreNMS as ISPs run it (issue 11), the daemon in-process against the simulator over real
sockets, polls as real processes: re-created ports, maintenance and suppression, unmute, local
alert times, payload forms, the wrong poll user, an UNSUPERVISED_IP that answers."""

from __future__ import annotations

import requests

from alert_handler.sim.simulator import Simulator
from tests.conftest import UNSUP, StartDaemon, alert_body, overwrite, wait_for


def api_get(sim: Simulator, path: str) -> dict[str, object]:
    """GET an API path of the simulator with the admin token; the decoded body."""
    from alert_handler.sim.simulator import DEFAULT_TOKEN

    reply = requests.get(sim.url + path, headers={"X-Auth-Token": DEFAULT_TOKEN}, timeout=5)
    body: dict[str, object] = reply.json()
    return body


# -- ports found again --------------------------------------------------------------------------
def test_a_re_created_port_is_found_again(sim: Simulator, start_daemon: StartDaemon) -> None:
    """1. A CPE is forced down; its port2 is port_id P.
    2. The interface vanishes and comes back with a new ifIndex: LibreNMS marks P deleted=1
       (GET /ports/P still answers, with the stale "down") and creates port_id Q.
    3. The next check finds port2 again as Q (still down) and keeps Q as its hint.
    4. The link comes up: the check reads Q, up: recovered on the original."""
    sim.add_device(31, "cpe-31", overwrite_ip="198.51.100.31", ports={"port2": "down"})
    old_id = sim.port(31, "port2").port_id
    d = start_daemon(RECOVERY_INTERVAL_SEC="0.3")
    assert d.post(alert_body(31)).status_code == 202
    wait_for(lambda: (r := d.daemon.store.get(31)) and r.port_id == old_id, what="forced down")
    new_id = sim.recreate_port(31, "port2")
    stale = api_get(sim, f"/ports/{old_id}")["port"]
    assert isinstance(stale, list) and stale[0]["deleted"] == 1
    assert stale[0]["ifOperStatus"] == "down"
    listing = api_get(sim, "/devices/31/ports?columns=port_id,ifName,deleted")["ports"]
    assert listing == [{"port_id": new_id, "ifName": "port2", "deleted": 0}]
    sim.clear_requests()
    wait_for(
        lambda: (r := d.daemon.store.get(31)) is not None and r.port_id == new_id,
        what="port2 found again under its new port_id",
    )
    sim.set_link(31, "port2", "up")
    wait_for(lambda: d.daemon.store.get(31) is None, what="recovery")
    assert overwrite(sim, 31) == "198.51.100.31"
    assert overwrite(sim, 31) != UNSUP
    # The check never asks for a port by id: that row may be deleted and stale.
    assert not [r for r in sim.requests if r.path.startswith("/ports/")]
