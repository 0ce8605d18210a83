"""Trust between tiers, with real tiers: each child's own Redis ACL credential, the parent's intake checks,
grants over HTTP, and the uplink over TLS to the embedded Redis's listener with a self-signed CA.

The attacks are the ones a security review tried: a village box's uplink used to write the parent's token
table (an admin token of the city), a sibling writing another county's cameras, status, events and names.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, ConnectionError as RedisConnectionError, NoPermissionError, ResponseError

from gateway import keys
from tests.gateway_fixtures import until
from tests.servers import free_port
from tiers.contract import RCAT_REFUSED, TierKeys, encode_request

CITY, COUNTY, SIBLING = "4501", "450102", "450103"
CLOSED = "rtsp://127.0.0.1:9/closed"  # nothing answers there: catalog entries only


def _cam(node: str, n: int) -> dict:
    return {"id": f"{node}0000132{n:07d}", "name": f"cam {n}", "node": node, "url": CLOSED, "enabled": False}


async def _known_at(tier, cid: str) -> dict | None:
    code, body = await tier.gw.request("GET", f"/api/v1/cameras/{cid}")
    return body if code == 200 else None


class ChildLink:
    """A raw client holding one child's granted uplink credential: what an attacker with the box has."""

    def __init__(self, url: str, node: str) -> None:
        self.node = node
        self.r = aioredis.Redis.from_url(url, socket_timeout=10)
        self.k = TierKeys()

    async def call(self, ops: list, blobs: list[bytes] | None = None, epoch: str = "") -> dict:
        """One intake request through this child's own inbox, as a (possibly hostile) bridge would send it."""
        rid = uuid.uuid4().hex
        async with self.r.pipeline(transaction=False) as p:
            p.delete(self.k.child_inbox(self.node))
            p.rpush(self.k.child_inbox(self.node), encode_request(rid, epoch, ops, blobs or []))
            p.blpop([self.k.child_reply(self.node, rid)], timeout=8)
            res = await p.execute()
        assert res[2] is not None, "the parent's intake did not answer"
        return json.loads(res[2][1])

    async def raw(self, request: bytes, rid: str) -> dict:
        async with self.r.pipeline(transaction=False) as p:
            p.rpush(self.k.child_inbox(self.node), request)
            p.blpop([self.k.child_reply(self.node, rid)], timeout=8)
            res = await p.execute()
        assert res[1] is not None, "the parent's intake did not answer"
        return json.loads(res[1][1])


async def test_a_granted_uplink_reaches_its_own_inbox_and_nothing_of_the_parent(tier_chain):
    async with tier_chain((CITY, COUNTY)) as chain:
        city = chain[CITY]
        link = ChildLink(chain[COUNTY].settings["uplink"], COUNTY)
        try:
            # The review's attack: a token hash planted in the parent's token table, made admin of the city.
            token = "planted-admin-token-0123456789"
            digest = hashlib.sha256(token.encode()).hexdigest()
            with pytest.raises(NoPermissionError):
                await link.r.set(f"se:tokh:{digest}", json.dumps({"role": "admin", "node": CITY}))
            async with aiohttp.ClientSession() as s:
                async with s.get(city.gw.url("/api/v1/whoami"), headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == 401
            # Nothing else of the parent either: catalog, status, events, audit, names, epoch, another child's inbox.
            attempts = [
                link.r.hset("se:status", "45010200001320000001", "{}"),
                link.r.xadd("se:events", {"e": "{}"}),
                link.r.hgetall("se:tokens"),
                link.r.xrange("se:audit"),
                link.r.hset("se:rcat", "45010200001320000001", "{}"),
                link.r.get("se:epoch"),
                link.r.keys("*"),
                link.r.rpush(f"se:child:{SIBLING}:in", b"x"),
                link.r.eval("return redis.call('SET', 'se:x', '1')", 0),
                link.r.execute_command("ACL", "SETUSER", "evil", "on", "nopass", "~*", "+@all"),
                link.r.config_get("*"),
                link.r.flushall(),
            ]
            for attempt in attempts:
                with pytest.raises(NoPermissionError):
                    await attempt
            # Its own inbox, the one thing it may write, still works.
            assert await link.r.rpush(f"se:child:{COUNTY}:x", b"1") == 1
        finally:
            await link.r.aclose()


async def test_the_parent_takes_from_a_child_only_what_lies_in_its_subtree(tier_chain):
    async with tier_chain((CITY, COUNTY, SIBLING)) as chain:
        city, county = chain[CITY], chain[COUNTY]
        victim = (await county.gw.request("POST", "/api/v1/cameras", json=_cam(COUNTY, 1)))[1]
        await until(lambda: _known_at(city, victim["id"]), 20, "the county's camera at the city")
        sib_cam = (await chain[SIBLING].gw.request("POST", "/api/v1/cameras", json=_cam(SIBLING, 1)))[1]
        await until(lambda: _known_at(city, sib_cam["id"]), 20, "the sibling's own camera at the city")
        before = await city.redis().hget("se:status", victim["id"])
        link = ChildLink(chain[SIBLING].settings["uplink"], SIBLING)
        try:
            now = time.time()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))
            forged_camera = json.dumps({**_cam(COUNTY, 1), "name": "impostor", "url": CLOSED})
            ops = [
                # the county's camera re-registered by the sibling, under the county's node and under its own
                ["rcat", {"op": "upsert", "id": victim["id"], "node": COUNTY, "owner": SIBLING, "camera": forged_camera}],
                ["rcat", {"op": "upsert", "id": victim["id"], "node": SIBLING, "owner": SIBLING,
                          "camera": json.dumps({**_cam(SIBLING, 1), "id": victim["id"], "name": "impostor"})}],
                ["rcat", {"op": "delete", "id": victim["id"], "node": COUNTY, "owner": COUNTY, "camera": ""}],
                # the county's camera's status and an event of it; names of the county's nodes; its audit
                ["status", {"entries": [[victim["id"], json.dumps({"camera_id": victim["id"], "node": SIBLING,
                                                                    "state": "offline"})]]}],
                ["event", {"event": json.dumps({"id": f"{SIBLING}-{int(now * 1000)}-0", "type": "motion",
                                                "camera_id": victim["id"], "node": SIBLING, "ts": stamp}),
                           "blob": -1}],
                ["event", {"event": json.dumps({"id": f"{COUNTY}-{int(now * 1000)}-0", "type": "motion",
                                                "camera_id": sib_cam["id"], "node": COUNTY, "ts": stamp}),
                           "blob": -1}],
                ["names", {"names": {COUNTY: "假的县"}}],
                ["audit", {"entry": json.dumps({"id": f"{COUNTY}-1-0", "tier": COUNTY, "action": "camera.delete",
                                                "target": victim["id"], "node": COUNTY, "ts": stamp})}],
                # sizes are bounded: an event of 100 KB
                ["event", {"event": json.dumps({"id": f"{SIBLING}-{int(now * 1000)}-1", "type": "motion",
                                                "camera_id": sib_cam["id"], "node": SIBLING, "ts": stamp,
                                                "pad": "x" * 100_000}), "blob": -1}],
            ]
            # Its own camera's event with a "snapshot" that is no JPEG: the event is kept, the picture is not.
            own_event = f"{SIBLING}-{int(now * 1000)}-2"
            ops.append(["event", {"event": json.dumps({"id": own_event, "type": "motion", "camera_id": sib_cam["id"],
                                                       "node": SIBLING, "ts": stamp, "phase": "start",
                                                       "origin": {"node": SIBLING, "gateway": "gw"}}),
                                  "blob": 0}])
            # An event that breaks the wire schema (a score that is text) would break every reader: refused.
            ops.append(["event", {"event": json.dumps({"id": f"{SIBLING}-{int(now * 1000)}-3", "type": "detection",
                                                       "camera_id": sib_cam["id"], "node": SIBLING, "ts": stamp,
                                                       "label": "person", "score": "high",
                                                       "origin": {"node": SIBLING, "gateway": "gw"}}),
                                  "blob": -1}])
            reply = await link.call(ops, [b"<script>alert(1)</script>"])
            r = reply["results"]
            # outside its subtree (refused by the intake); the county's id (held by the county: -3)
            assert r[0] == RCAT_REFUSED and r[1] == -3 and r[2] == RCAT_REFUSED, r
            assert r[3] == 0, r  # no status of a camera it did not forward
            assert r[4] == ["", -1] and r[5] == ["", -1] and r[8] == ["", -1], r
            assert r[6] == 0 and r[7] == ["", -1], r
            assert r[9][1] == 1 and r[10] == ["", -1], r
            code, ev = await city.gw.request("GET", f"/api/v1/events/{own_event}")
            assert code == 200 and ev["camera_id"] == sib_cam["id"] and not ev.get("snapshot"), ev
            assert (await city.gw.request("GET", f"/api/v1/events/{own_event}/snapshot.jpg"))[0] == 404
            # A request that is not one: refused as a whole, and said so.
            rid = uuid.uuid4().hex
            bad = await link.raw(b'{"v":1,"id":"' + rid.encode() + b'","epoch":"","ops":5,"blobs":[]}\n', rid)
            assert bad["error"].startswith("BAD"), bad

            # The city's truth is unchanged: the camera is the county's, its status the county's.
            cam = await _known_at(city, victim["id"])
            assert cam["owner"] == COUNTY and cam["name"] == victim["name"], cam
            assert await city.redis().hget("se:status", victim["id"]) == before
            code, events = await city.gw.request("GET", f"/api/v1/events?camera={victim['id']}")
            assert code == 200 and not any(e["type"] == "motion" for e in events["events"]), events
            code, names = await city.gw.request("GET", f"/api/v1/nodes/{COUNTY}")
            assert code == 200 and names.get("name") != "假的县", names
            code, audit = await city.gw.request("GET", "/api/v1/audit", params={"node": COUNTY})
            assert code == 200 and not any(e.get("target") == victim["id"] and e.get("action") == "camera.delete"
                                           for e in audit["entries"]), audit
            # ...and the refusals are counted for the sibling, where the city's admins look.
            code, kids = await city.gw.request("GET", "/api/v1/tiers/children")
            assert code == 200, kids
            sib = next(c for c in kids["children"] if c["node"] == SIBLING)
            assert sib["granted"] and sum(sib["intake"]["refused"].values()) >= 10, sib
            assert sib["intake"]["refused"].get("snapshot") == 1, sib
        finally:
            await link.r.aclose()


async def test_grants_over_http_replace_and_revoke_at_once(tier_chain):
    async with tier_chain((CITY,)) as chain:
        city = chain[CITY]
        code, g = await city.gw.request("POST", "/api/v1/tiers/children", json={"node": COUNTY})
        assert code == 201, g
        assert g["node"] == COUNTY and g["user"] == f"se-child-{COUNTY}" and "password" not in g
        assert g["uplink"].startswith(f"redis://se-child-{COUNTY}:") and g["uplink"].endswith(
            f"@127.0.0.1:{city.server.port}/0")
        r = aioredis.Redis.from_url(g["uplink"], socket_timeout=5)
        assert await r.ping()
        code, listed = await city.gw.request("GET", "/api/v1/tiers/children")
        assert code == 200 and [c["node"] for c in listed["children"]] == [COUNTY]
        assert listed["children"][0]["granted"] and "uplink" not in listed["children"][0]

        # Granting again replaces the credential: the old one stops working, its connection is closed.
        code, g2 = await city.gw.request("POST", "/api/v1/tiers/children", json={"node": COUNTY})
        assert code == 201 and g2["uplink"] != g["uplink"]
        with pytest.raises((RedisConnectionError, AuthenticationError)):
            await r.ping()
        await r.aclose()
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(g["uplink"], socket_timeout=5).ping()

        # Revoking takes effect at once: an open connection is dropped and no new one is let in.
        r2 = aioredis.Redis.from_url(g2["uplink"], socket_timeout=5)
        assert await r2.ping()
        code, _ = await city.gw.request("DELETE", f"/api/v1/tiers/children/{COUNTY}")
        assert code == 204
        with pytest.raises((RedisConnectionError, AuthenticationError)):
            await r2.ping()
        await r2.aclose()
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(g2["uplink"], socket_timeout=5).ping()
        code, listed = await city.gw.request("GET", "/api/v1/tiers/children")
        assert listed["children"] == []
        assert (await city.gw.request("DELETE", f"/api/v1/tiers/children/{COUNTY}"))[0] == 404

        # Only below this tier; only its admins; both audited.
        for node in (CITY, "4502", "45", "abc"):
            code, body = await city.gw.request("POST", "/api/v1/tiers/children", json={"node": node})
            assert code == 422 and "node" in body["error"]["message"], (node, body)
        code, tok = await city.gw.request("POST", "/api/v1/tokens", json={"name": "op", "role": "operator"})
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {tok['token']}"}) as s:
            async with s.post(city.gw.url("/api/v1/tiers/children"), json={"node": COUNTY}) as resp:
                assert resp.status == 403
        code, audit = await city.gw.request("GET", "/api/v1/audit")
        actions = [e["action"] for e in audit["entries"]]
        assert actions.count("tier.grant") == 2 and actions.count("tier.revoke") == 1, actions


async def test_granted_users_come_back_after_the_parents_redis_restarts(tier_chain):
    async with tier_chain((CITY, COUNTY)) as chain:
        city, county = chain[CITY], chain[COUNTY]
        cam = (await county.gw.request("POST", "/api/v1/cameras", json=_cam(COUNTY, 2)))[1]
        await until(lambda: _known_at(city, cam["id"]), 20, "the county's camera at the city")
        await chain.stop_redis(CITY)  # its data stays (AOF); ACL users live in memory and are gone
        await chain.start_redis(CITY)
        moved = (await county.gw.request("PATCH", f"/api/v1/cameras/{cam['id']}", json={"name": "renamed"}))[1]
        assert moved["name"] == "renamed"

        async def renamed() -> bool:
            got = await _known_at(city, cam["id"])
            return bool(got and got["name"] == "renamed")

        await until(renamed, 30, "the rename at the city after its Redis restarted")


# ---- TLS: the embedded Redis listening for children, with a self-signed CA ---------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _self_signed(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test tier CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=folder)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


FAST_BRIDGE = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "heartbeat_s": 1.0, "timeout_s": 3.0}


async def test_an_uplink_over_tls_to_the_embedded_redis_with_a_self_signed_ca(tmp_path, redis_url, make_gateway,
                                                                             caplog):
    if subprocess.run(["redis-server", "--version"], capture_output=True).returncode != 0:
        pytest.skip("no system redis-server (built with TLS)")
    ca, cert, key = await asyncio.to_thread(_self_signed, tmp_path / "pki")
    port = free_port()
    async with make_gateway(None, node=CITY, redis_listen=f"127.0.0.1:{port}", redis_tls_cert=cert,
                            redis_tls_key=key) as city:
        # The listener speaks TLS only, and its default user has a password: no way in without a grant.
        with pytest.raises((RedisConnectionError, ResponseError)):
            await aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=3).ping()
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(ca),
                                          socket_timeout=3).ping()
        # The default user's password is in a 0600 file, not on redis-server's command line (ps).
        default_pw = (tmp_path / "gw-data" / "redis" / "default-user.password").read_text().strip()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert default_pw.encode() not in cmdline.read_bytes(), cmdline
            except OSError:
                continue  # a process that ended meanwhile
        code, g = await city.request("POST", "/api/v1/tiers/children", json={"node": COUNTY})
        assert code == 201 and g["uplink"].startswith("rediss://") and g["uplink"].endswith(f"@127.0.0.1:{port}/0"), g
        password = g["uplink"].split(":")[2].split("@")[0]

        # A child with the parent's CA forwards over TLS; its catalog arrives at the city.
        async with make_gateway(redis_url, node=COUNTY, uplink=g["uplink"],
                                bridge={**FAST_BRIDGE, "ca_file": str(ca)}) as county:
            code, cam = await county.request("POST", "/api/v1/cameras", json=_cam(COUNTY, 3))
            assert code == 201, cam

            async def arrived() -> dict | None:
                c, body = await city.request("GET", f"/api/v1/cameras/{cam['id']}")
                return body if c == 200 else None

            got = await until(arrived, 30, "the county's camera at the city, over TLS")
            assert got["owner"] == COUNTY
            assert county.app[keys.BRIDGE].connected

        # Without the CA the certificate is refused, and the error says so without the password.
        async with make_gateway(redis_url, node=COUNTY, uplink=g["uplink"], bridge=FAST_BRIDGE) as county2:
            async def failing() -> str | None:
                code, rep = await county2.request("GET", "/api/v1/bridge")
                return rep["bridge"]["last_error"] if code == 200 and rep["bridge"]["last_error"] else None

            error = await until(failing, 20, "the uplink failing for want of the CA")
            assert "certificate" in error.lower() or "ssl" in error.lower(), error
            assert password not in error
    assert password not in caplog.text
