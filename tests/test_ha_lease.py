"""The HA lease against a real redis-server: atomic take, renewal, compare-and-extend after a
loss, release, the fencing deadline, a Redis that restarts empty, and the HA_* settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from alert_handler.config.table import ConfigError, parse
from alert_handler.core.facts import PollError, PollResult
from alert_handler.ha.lease import FencedPoller, Lease, Role, Transition, connect
from alert_handler.sim.simulator import Simulator
from tests.conftest import wait_for
from tests.redis_server import RedisServer, SentinelServer, running_redis

KEY = "alert-handler:lease"
LEASE = 10.0
RENEW = 3.0


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free loopback port."""
    with running_redis(tmp_path / "redis") as server:
        yield server


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    server: RedisServer, name: str, clock: FakeClock | None = None, seen: list[str] | None = None
) -> Lease:
    def changed(transition: Transition, why: str) -> None:
        if seen is not None:
            seen.append(transition.value)

    kwargs = {} if clock is None else {"clock": clock}
    return Lease(
        connect(server.url, RENEW),
        key=KEY,
        instance=name,
        lease=LEASE,
        renew=RENEW,
        on_change=changed,
        **kwargs,  # type: ignore[arg-type]
    )


def test_only_one_of_many_takes_the_lease_at_once(redis_server: RedisServer) -> None:
    """1. Twelve daemons try at the same moment: exactly one holds it, Redis names it.
    2. The others are standbys and know who holds it."""
    leases = [make(redis_server, f"d{i}") for i in range(12)]
    start = threading.Barrier(len(leases))

    def go(lease: Lease) -> None:
        start.wait()
        lease.tick()

    threads = [threading.Thread(target=go, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holders = [lease for lease in leases if lease.role is Role.HOLDER]
    assert len(holders) == 1
    with redis_server.client() as client:
        assert client.get(KEY) == holders[0].instance
        assert 0 < client.pttl(KEY) <= LEASE * 1000
    for lease in leases:
        assert lease.status()["holder"] == holders[0].instance


def test_renewal_extends_and_release_hands_over(redis_server: RedisServer) -> None:
    """1. A renewal puts the key's time to live back to the whole lease.
    2. A clean stop deletes the key (an `released` transition); the standby takes it next try."""
    seen: list[str] = []
    a, b = make(redis_server, "a", seen=seen), make(redis_server, "b")
    a.tick()
    b.tick()
    with redis_server.client() as client:
        client.pexpire(KEY, 4000)  # as if time had passed since the last renewal
        a.tick()
        assert client.pttl(KEY) > 4000
        a.stop()
        assert client.get(KEY) is None
    assert seen == ["acquired", "released"]
    b.tick()
    assert b.role is Role.HOLDER


def test_compare_and_extend_refuses_once_another_holds_it(redis_server: RedisServer) -> None:
    """1. The key expired and another daemon took it: the old holder's renewal does not extend
    the other's lease, and it stands by (a `lost` transition).
    2. Its release at stop does not delete the other's lease."""
    seen: list[str] = []
    a = make(redis_server, "a", seen=seen)
    a.tick()
    with redis_server.client() as client:
        client.set(KEY, "b", px=5000)  # expired, then taken by b
        a.tick()
        assert client.get(KEY) == "b"
        assert client.pttl(KEY) <= 5000
        assert a.role is Role.STANDBY
        assert seen == ["acquired", "lost"]
        assert a.refusal() is not None
        a.stop()
        assert client.get(KEY) == "b"


def test_the_fence_closes_at_the_deadline_and_after_a_first_lease(
    redis_server: RedisServer,
) -> None:
    """1. A daemon that just met this Redis holds the lease but writes nothing for one lease.
    2. Renewed, it may write; unrenewed, it may not from the deadline on (lease minus a fifth,
    counted from when the renewal was sent), and each refusal is counted.
    3. A standby that has known the Redis for a whole lease writes at once on taking over."""
    clock = FakeClock()
    a = make(redis_server, "a", clock)
    a.tick()
    assert a.role is Role.HOLDER
    assert "waiting out one lease" in (a.refusal() or "")
    clock.now += RENEW
    a.tick()  # renewed: deadline = now + 10 - 2
    clock.now += LEASE - RENEW + 0.1  # one lease after meeting the Redis
    assert a.refusal() is None
    assert a.may_write()
    clock.now += LEASE - 2 - (LEASE - RENEW + 0.1) - 0.01  # just before the deadline
    assert a.refusal() is None
    clock.now += 0.02
    assert "deadline" in (a.refusal() or "")
    assert a.fenced == 2
    assert a.status()["role"] == "standby"

    b_clock = FakeClock()
    b = make(redis_server, "b", b_clock)
    b.tick()  # standby: a holds it in Redis
    b_clock.now += LEASE + 1
    with redis_server.client() as client:
        client.delete(KEY)  # a died, its key expired
    b.tick()
    assert b.role is Role.HOLDER
    assert b.refusal() is None


def test_a_redis_that_restarts_empty_makes_the_next_holder_wait_a_lease(
    redis_server: RedisServer,
) -> None:
    """1. The holder's renewal after an empty restart fails: it stands by.
    2. The standby that takes the new, empty Redis waits out a whole lease before it writes,
    though it has watched the old Redis for long: the old holder may trust its lease that long."""
    clock = FakeClock()
    a, b = make(redis_server, "a", clock), make(redis_server, "b", clock)
    a.tick()
    b.tick()
    clock.now += LEASE * 3
    for _ in range(2):
        a.tick()
        b.tick()
    assert a.may_write() and not b.may_write()
    redis_server.restart()
    for _ in range(3):  # the first call may only find the old connection closed
        b.tick()
        clock.now += 0.1
    assert b.role is Role.HOLDER
    assert "waiting out one lease" in (b.refusal() or "")
    a.tick()
    a.tick()
    assert a.role is Role.STANDBY
    clock.now += LEASE
    b.tick()
    assert b.refusal() is None


def test_a_holder_that_cannot_reach_redis_stops_writing_at_its_deadline(
    redis_server: RedisServer,
) -> None:
    """1. Redis gone: the holder may still write until its deadline, then not, and it reports
    the Redis error; the poll is fenced like an API write."""
    clock = FakeClock()
    a = make(redis_server, "a", clock)
    a.tick()
    clock.now += LEASE
    a.tick()
    assert a.may_write()
    redis_server.stop()
    a.tick()
    assert a.may_write()
    assert str(a.status()["redis"]).startswith("Redis: ")
    clock.now += LEASE
    a.tick()
    assert a.role is Role.STANDBY

    class Inner:
        def poll(self, device_id: int, poller_group: int = 0) -> PollResult:
            raise AssertionError("a fenced poll ran")

    with pytest.raises(PollError, match="refused by fencing"):
        FencedPoller(Inner(), a).poll(7)


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ({"HA_REDIS_URL": "http://redis"}, "HA_REDIS_URL", "redis://"),
        ({"HA_REDIS_URL": "redis://"}, "HA_REDIS_URL", "host"),
        ({"HA_REDIS_URL": "redis://r:99999"}, "HA_REDIS_URL", "port"),
        ({"HA_LEASE_SEC": "1"}, "HA_LEASE_SEC", "from 2 to 300"),
        ({"HA_RENEW_SEC": "5"}, "HA_RENEW_SEC", "less than half"),
        ({"HA_LEASE_SEC": "4", "HA_RENEW_SEC": "2"}, "HA_RENEW_SEC", "less than half"),
        ({"HA_INSTANCE": "two words"}, "HA_INSTANCE", "letters"),
    ],
)
def test_bad_ha_settings_name_the_variable(extra: dict[str, str], key: str, problem: str) -> None:
    env = {"LIBRENMS_URL": "http://l", "LIBRENMS_API_TOKEN": "abcdefgh1234", "POLL_METHOD": "local"}
    with pytest.raises(ConfigError) as caught:
        parse({**env, **extra})
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_without_ha_redis_is_not_imported(tmp_path: Path) -> None:
    """1. A daemon built without HA_REDIS_URL has no lease and never imports redis."""
    import subprocess
    import sys

    code = (
        "import sys; from alert_handler.config.table import parse; "
        "from alert_handler import daemon;"
        f"cfg = parse({{'LIBRENMS_URL': 'http://127.0.0.1:9', 'LIBRENMS_API_TOKEN': 'abcdefgh1234',"
        f"'POLL_METHOD': 'local', 'LISTEN_PORT': '0', 'LISTEN_HOST': '127.0.0.1',"
        f"'STATE_FILE': {str(tmp_path / 's.json')!r}, 'LOG_FILE': {str(tmp_path / 'l')!r}}});"
        "d = daemon.build(cfg); assert d.lease is None; d.server.server_close(); d.lock.release();"
        "print('redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_status_and_page_show_the_role() -> None:
    """1. `status` says who holds the lease and that a standby changes nothing.
    2. The status page shows a banner on a standby, none on the holder."""
    from alert_handler.cli.control import ha_line
    from alert_handler.events.page import PageData, render_page

    standby: dict[str, object] = {"role": "standby", "instance": "b", "holder": "a", "redis": "ok"}
    holder: dict[str, object] = {
        "role": "holder",
        "instance": "a",
        "renew_sec": 3.0,
        "deadline_in_sec": 7.5,
    }
    assert ha_line(standby) == ("HA: b is a standby (holder: a); it changes nothing in LibreNMS")
    assert ha_line({**holder, "redis": "ok"}).startswith("HA: a holds the lease")
    assert "Redis: ConnectionError" in ha_line({**holder, "redis": "Redis: ConnectionError"})

    def page(ha: dict[str, object]) -> str:
        data = PageData(
            now=0.0, health={"status": "ok", "ha": ha}, devices=[], episodes=[], paused=False
        )
        return render_page(data)

    assert "HA standby (b)" in page(standby)
    assert "HA standby" not in page(holder)


def test_the_lease_through_redis_sentinel(redis_server: RedisServer, tmp_path: Path) -> None:
    """1. With HA_REDIS_URL=redis+sentinel://sentinel/service (LibreNMS's REDIS_SENTINEL and
    REDIS_SENTINEL_SERVICE), the lease lives in the master the sentinel names: one daemon takes
    it, the other stands by, the holder renews and releases it."""
    sentinel = SentinelServer(tmp_path / "sentinel", redis_server).start()
    try:
        cfg = parse(
            {
                "LIBRENMS_URL": "http://l",
                "LIBRENMS_API_TOKEN": "abcdefgh1234",
                "POLL_METHOD": "local",
                "HA_REDIS_URL": sentinel.url,
            }
        )
        assert cfg.ha_redis_url == sentinel.url

        def through_sentinel(name: str) -> Lease:
            client = connect(sentinel.url, RENEW)
            return Lease(client, key=KEY, instance=name, lease=LEASE, renew=RENEW)

        a, b = through_sentinel("a"), through_sentinel("b")
        a.tick()
        b.tick()
        assert (a.role, b.role) == (Role.HOLDER, Role.STANDBY)
        with redis_server.client() as master:
            assert master.get(KEY) == "a"
            master.pexpire(KEY, 2000)
            a.tick()
            assert master.pttl(KEY) > 2000
            a.stop()
            assert master.get(KEY) is None
        a.close()
        b.close()
    finally:
        sentinel.stop()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://127.0.0.1:26379", "master's name"),
        ("redis+sentinel://127.0.0.1:99999/mymaster", "invalid sentinel"),
        ("redis+sentinel://a:1,:2/mymaster", "invalid sentinel"),
        ("redis+sentinel://a/mymaster/x", "database"),
    ],
)
def test_bad_sentinel_urls_are_refused(url: str, problem: str) -> None:
    env = {"LIBRENMS_URL": "http://l", "LIBRENMS_API_TOKEN": "abcdefgh1234", "POLL_METHOD": "local"}
    with pytest.raises(ConfigError) as caught:
        parse({**env, "HA_REDIS_URL": url})
    assert caught.value.key == "HA_REDIS_URL"
    assert problem in caught.value.problem


def test_a_sentinel_url_names_sentinels_service_db_and_password() -> None:
    from alert_handler.config.ha_kinds import sentinel_url

    found = sentinel_url("K", "redis+sentinel://:p%40ss@s1:26380,s2/mymaster/2")
    assert found.sentinels == (("s1", 26380), ("s2", 26379))
    assert (found.service, found.db, found.username, found.password) == (
        "mymaster",
        2,
        None,
        "p@ss",
    )


def test_check_says_whether_redis_answers_and_who_holds_the_lease(
    redis_server: RedisServer,
) -> None:
    """1. `check` has one HA line: Redis answers, the lease is free or held by whom; never the
    URL (it may carry a password).
    2. Redis gone: a failed line."""
    from alert_handler.ha.lease import ha_checks

    env = {"LIBRENMS_URL": "http://l", "LIBRENMS_API_TOKEN": "abcdefgh1234", "POLL_METHOD": "local"}
    assert ha_checks(parse(env)) == []
    url = redis_server.url.replace("redis://", "redis://:Secret0Pass@")
    with redis_server.client() as client:
        client.config_set("requirepass", "Secret0Pass")
    cfg = parse({**env, "HA_REDIS_URL": url, "HA_INSTANCE": "here"})
    [(ok, text)] = ha_checks(cfg)
    assert ok, text
    assert "lease alert-handler:lease is free" in text
    assert "would be here" in text
    with connect(url, RENEW) as other:
        assert other.set(KEY, "there", px=5000)
    [(ok, text)] = ha_checks(cfg)
    assert ok and "held by there" in text
    assert "Secret0Pass" not in text
    redis_server.stop()
    [(ok, text)] = ha_checks(cfg)
    assert not ok and text.startswith("HA: Redis cannot be used: ConnectionError")
    assert "Secret0Pass" not in text


def test_recover_from_librenms_refuses_to_restore_behind_a_lease_holder(
    redis_server: RedisServer, sim: Simulator, tmp_path: Path
) -> None:
    """1. With HA_REDIS_URL and the lease held by a daemon (on another host), `--restore`
    refuses (exit 1) and names it; nothing is changed.
    2. Redis unreachable: it says the lease was not checked and restores (the day nothing
    comes back may have taken Redis too)."""
    from tests.conftest import UNSUP, base_env
    from tests.test_operator_cli import cli, write_env

    sim.add_device(7, "cpe-7", overwrite_ip=UNSUP)
    env = base_env(sim, tmp_path, HA_REDIS_URL=redis_server.url)
    write_env(tmp_path, env)
    with redis_server.client() as client:
        client.set(KEY, "nms-b:812", px=60_000)
    refused = cli(tmp_path, "recover-from-librenms", "--restore", "--unknown-as-null")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "the daemon nms-b:812 holds the HA lease" in refused.stderr
    assert sim.device(7)["overwrite_ip"] == UNSUP and sim.patches() == []
    with redis_server.client() as client:
        client.delete(KEY)
    redis_server.stop()
    done = cli(tmp_path, "recover-from-librenms", "--restore", "--unknown-as-null")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HA lease not checked (Redis: ConnectionError" in done.stderr
    assert sim.device(7)["overwrite_ip"] is None


def test_a_sentinel_failover_keeps_the_holder_and_is_a_new_redis_to_the_standby(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """1. The master dies; the sentinel promotes its replica, which has the lease (replicated):
    the holder renews it there through Sentinel and stays the holder.
    2. The standby sees a new run_id: were it to take the lease now, it would wait one lease."""
    replica = RedisServer(
        tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(redis_server.port))
    ).start()
    sentinel = SentinelServer(tmp_path / "sentinel", redis_server, down_ms=500).start()
    try:
        with replica.client() as client:
            wait_for(lambda: client.info("replication")["master_link_status"] == "up", 30, "sync")
        clock = FakeClock()

        def through_sentinel(name: str) -> Lease:
            client = connect(sentinel.url, RENEW)
            return Lease(client, key=KEY, instance=name, lease=LEASE, renew=RENEW, clock=clock)

        a, b = through_sentinel("a"), through_sentinel("b")
        a.tick()
        b.tick()
        clock.now += LEASE
        a.tick()
        b.tick()
        assert a.may_write() and b.status()["redis_known_sec"] >= LEASE
        with replica.client() as client:
            wait_for(lambda: client.get(KEY) == "a", 30, "the lease replicated")
        redis_server.stop()

        def promoted() -> bool:
            a.tick()
            b.tick()
            try:
                with replica.client() as client:
                    role = client.info("replication")["role"]
            except redis.ConnectionError:
                return False  # the replica drops its clients while it is promoted: not yet
            return role == "master" and not a.status()["redis"].startswith("Redis")

        wait_for(promoted, 60, "the sentinel to promote the replica")
        assert a.role is Role.HOLDER and a.may_write()
        assert b.role is Role.STANDBY
        assert b.status()["redis_known_sec"] < LEASE
        with replica.client() as client:
            assert client.get(KEY) == "a"
        a.close()
        b.close()
    finally:
        sentinel.stop()
        replica.stop()
