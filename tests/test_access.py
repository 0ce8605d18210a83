"""Tokens, roles and jurisdictions against a real region gateway, a real Redis and real video files.

What a control room depends on: a county token at the region sees its county and nothing else, on
every endpoint and every stream (history, WebSocket, SSE with `since`, single events, snapshots,
the audit trail), and cannot create cameras or tokens outside it; a viewer sees the catalog but no
event or picture; an operator watches but changes nothing; a revoked token is refused at its very
next request, by every gateway process sharing the Redis, and its open streams are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import pytest

from gateway import keys
from registry.tokens import token_hash
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, Gateway, closed_by_server, until

CLIP = "file:moving_objects.mp4"  # moves all the time: motion events with snapshots, no model needed
HOME, OTHER = "450102", "450103"  # two counties of Nanning, under the region "45"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Region:
    """A region gateway with one camera in each of two counties, events in both, and county tokens."""

    gw: Gateway
    home_cam: str
    other_cam: str
    tokens: dict[str, str]  # role name -> raw token over HOME (+ "other_admin" over OTHER)
    ids: dict[str, str]  # same keys -> token id
    home_event: dict  # a motion event with a snapshot, per county
    other_event: dict

    async def call(self, who: str, method: str, path: str, **kw):
        token = TOKEN if who == "bootstrap" else self.tokens[who]
        return await self.gw.request(method, path, headers=auth(token), **kw)


async def new_token(gw: Gateway, name: str, role: str, node: str, by: str = TOKEN) -> dict:
    status, body = await gw.request("POST", "/api/v1/tokens", headers=auth(by),
                                    json={"name": name, "role": role, "node": node})
    assert status == 201, body
    return body


async def setup_region(gw: Gateway) -> Region:
    home = await gw.add_camera(name="Minzu Avenue", node=HOME, url=CLIP, analytics={"fps": 5})
    other = await gw.add_camera(name="Jiangnan bridge", node=OTHER, url=CLIP, analytics={"fps": 5})
    tokens, ids = {}, {}
    for key, role, node in (("admin", "admin", HOME), ("operator", "operator", HOME), ("viewer", "viewer", HOME),
                            ("other_admin", "admin", OTHER)):
        t = await new_token(gw, f"{key} {node}", role, node)
        tokens[key], ids[key] = t["token"], t["id"]
        assert t["token"].startswith("se_") and len(t["token"]) > 40 and t["role"] == role and t["node"] == node

    async def motion_with_snapshot(cid: str):
        _, body = await gw.request("GET", f"/api/v1/events?camera={cid}&type=motion&limit=50")
        return next((e for e in body["events"] if e.get("snapshot")), None)

    home_event = await until(lambda: motion_with_snapshot(home["id"]), 60, "a motion event in the home county")
    other_event = await until(lambda: motion_with_snapshot(other["id"]), 60, "a motion event in the other county")
    return Region(gw, home["id"], other["id"], tokens, ids, home_event, other_event)


async def sse_events(gw: Gateway, token: str, params: dict, want: int, timeout: float = 30) -> list[dict]:
    """Read `want` events from the SSE endpoint (or all until `timeout`)."""
    got: list[dict] = []
    async with aiohttp.ClientSession(headers=auth(token)) as s:
        async with s.get(gw.url("/api/v1/events/stream"), params=params) as r:
            assert r.status == 200, await r.text()
            try:
                async with asyncio.timeout(timeout):
                    async for raw in r.content:
                        line = raw.decode().rstrip("\r\n")
                        if line.startswith("data:"):
                            got.append(json.loads(line[5:]))
                            if len(got) >= want:
                                break
            except TimeoutError:
                pass
    return got


# ---- a county token sees its county and nothing else -------------------------------------------------
async def test_county_token_sees_only_its_county_everywhere(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        r = await setup_region(gw)
        # Events of both counties exist: the bootstrap (region) admin sees both.
        _, everything = await r.call("bootstrap", "GET", "/api/v1/events?limit=1000")
        assert {e["node"] for e in everything["events"]} == {HOME, OTHER}

        for who in ("admin", "operator", "viewer"):
            # Catalog: list (with no filter, with the region as filter: narrowed) and get.
            for query in ("", "?node=45", f"?node={HOME}", "?node=450100"):
                status, body = await r.call(who, "GET", f"/api/v1/cameras{query}")
                assert status == 200, body
                assert [c["id"] for c in body["cameras"]] == [r.home_cam] and body["total"] == 1, (who, query)
            status, body = await r.call(who, "GET", f"/api/v1/cameras?node={OTHER}")
            assert status == 403 and OTHER in body["error"]["message"], body
            assert (await r.call(who, "GET", f"/api/v1/cameras/{r.home_cam}"))[0] == 200
            # The other county's camera does not exist for this token: the same answer as a camera that never did.
            status, body = await r.call(who, "GET", f"/api/v1/cameras/{r.other_cam}")
            _, never = await r.call(who, "GET", "/api/v1/cameras/45010300001310999999")
            assert status == 404 and body["error"]["message"] == never["error"]["message"].replace(
                "45010300001310999999", r.other_cam)

        for who in ("admin", "operator"):
            # History: only the home county, with or without filters that reach above or beside it.
            status, body = await r.call(who, "GET", "/api/v1/events?limit=1000")
            assert status == 200 and body["events"], body
            assert {e["node"] for e in body["events"]} == {HOME}
            _, body = await r.call(who, "GET", "/api/v1/events?node=45&limit=1000")
            assert {e["node"] for e in body["events"]} == {HOME}
            _, body = await r.call(who, "GET", f"/api/v1/events?camera={r.other_cam}&limit=1000")
            assert body["events"] == []
            status, body = await r.call(who, "GET", f"/api/v1/events?node={OTHER}")
            assert status == 403, body
            # One event, and its snapshot.
            assert (await r.call(who, "GET", f"/api/v1/events/{r.home_event['id']}"))[0] == 200
            status, jpeg = await r.call(who, "GET", r.home_event["snapshot"])
            assert status == 200 and jpeg[:2] == b"\xff\xd8"
            status, body = await r.call(who, "GET", f"/api/v1/events/{r.other_event['id']}")
            assert status == 404, body
            status, body = await r.call(who, "GET", r.other_event["snapshot"])
            assert status == 404, body
            # With the token in the query, as an <img> tag sends it.
            async with aiohttp.ClientSession() as anon:
                async with anon.get(gw.url(r.other_event["snapshot"]), params={"token": r.tokens[who]}) as resp:
                    assert resp.status == 404
                async with anon.get(gw.url(r.home_event["snapshot"]), params={"token": r.tokens[who]}) as resp:
                    assert resp.status == 200

        # WebSocket from the start of the stream: the whole home history, then live; home county only.
        _, home_history = await r.call("operator", "GET", "/api/v1/events?limit=1000")
        n_home = len(home_history["events"])
        ws = await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": "45-0-0"},
                                         headers=auth(r.tokens["operator"]))
        seen: list[dict] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(n_home and 30):
                while True:  # until the timeout: live events keep coming from both cameras meanwhile
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    seen.append(json.loads(msg.data))
                    if len(seen) >= n_home:
                        break
            async with asyncio.timeout(3):  # and a little live time
                while True:
                    msg = await ws.receive()
                    seen.append(json.loads(msg.data))
        await ws.close()
        assert len(seen) >= n_home > 0 and {e["node"] for e in seen} == {HOME}
        assert [e["id"] for e in seen[:n_home]] == [e["id"] for e in reversed(home_history["events"])]
        # A subscription asking for the other county is refused before it opens.
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"node": OTHER},
                                        headers=auth(r.tokens["operator"]))
        assert exc.value.status == 403

        # SSE with since (and with the region as node filter): home county only.
        got = await sse_events(gw, r.tokens["operator"], {"since": "45-0-0", "node": "45"}, want=n_home)
        assert len(got) == n_home and {e["node"] for e in got} == {HOME}
        async with aiohttp.ClientSession(headers=auth(r.tokens["operator"])) as s:
            async with s.get(gw.url("/api/v1/events/stream"), params={"node": OTHER}) as resp:
                assert resp.status == 403

        # The audit trail: the county admin sees entries of its county (camera, its token), none of the other.
        status, body = await r.call("admin", "GET", "/api/v1/audit?limit=1000")
        assert status == 200, body
        assert body["entries"] and {e["node"][:6] for e in body["entries"]} == {HOME}
        targets = {e["target"] for e in body["entries"]}
        assert r.home_cam in targets and r.ids["admin"] in targets and r.other_cam not in targets
        assert (await r.call("admin", "GET", f"/api/v1/audit?node={OTHER}"))[0] == 403

        # Tokens: the county admin lists its county's tokens only, and cannot read the other's.
        _, body = await r.call("admin", "GET", "/api/v1/tokens")
        assert {t["id"] for t in body["tokens"]} == {r.ids[k] for k in ("admin", "operator", "viewer")}
        assert all("hash" not in t and "token" not in t for t in body["tokens"])
        assert (await r.call("admin", "GET", f"/api/v1/tokens/{r.ids['other_admin']}"))[0] == 404
        assert (await r.call("admin", "DELETE", f"/api/v1/tokens/{r.ids['other_admin']}"))[0] == 404
        assert (await r.call("other_admin", "GET", "/api/v1/whoami"))[1]["node"] == OTHER


async def test_county_admin_cannot_create_or_change_outside_its_county(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        other = await gw.add_camera(name="bridge", node=OTHER, url="rtsp://127.0.0.1:1/x", enabled=False)
        admin = (await new_token(gw, "county admin", "admin", HOME))["token"]
        h = auth(admin)

        # Cameras: created only inside; the refusal says why.
        for node in (OTHER, "45", "4501", "450103001"):
            status, body = await gw.request("POST", "/api/v1/cameras", headers=h, json={
                "name": "outside", "node": node, "url": "rtsp://127.0.0.1:1/y", "enabled": False})
            assert status == 403 and "jurisdiction" in body["error"]["message"] and HOME in body["error"]["message"]
        status, mine = await gw.request("POST", "/api/v1/cameras", headers=h, json={
            "name": "inside", "node": "450102001", "url": "rtsp://127.0.0.1:1/z", "enabled": False})
        assert status == 201, mine

        # Bulk: rows outside fail one by one, the others are created.
        status, res = await gw.request("POST", "/api/v1/cameras/bulk", headers=h, json=[
            {"name": "b1", "node": HOME, "url": "rtsp://127.0.0.1:1/b1", "enabled": False},
            {"name": "b2", "node": OTHER, "url": "rtsp://127.0.0.1:1/b2", "enabled": False},
            {"name": "b3", "node": "450102003", "url": "rtsp://127.0.0.1:1/b3", "enabled": False}])
        assert status == 200 and res["created"] == 2, res
        assert [x["status"] for x in res["results"]] == [201, 403, 201]
        assert "jurisdiction" in res["results"][1]["error"]
        status, csv = await gw.request("POST", "/api/v1/cameras/bulk", headers={**h, "Content-Type": "text/csv"},
                                       data=f"name,node,url,enabled\nc1,{OTHER},rtsp://127.0.0.1:1/c1,false\n")
        assert status == 200 and csv["results"][0]["status"] == 403, csv

        # Moving its camera out of the county is refused; the other county's camera is not there to change.
        status, body = await gw.request("PATCH", f"/api/v1/cameras/{mine['id']}", headers=h, json={"node": OTHER})
        assert status == 403 and "jurisdiction" in body["error"]["message"], body
        assert (await gw.camera(mine["id"]))["node"] == "450102001"
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{mine['id']}", headers=h, json={"node": HOME})
        assert status == 200
        for method, body in (("PATCH", {"name": "hacked"}), ("DELETE", None)):
            status, resp = await gw.request(method, f"/api/v1/cameras/{other['id']}", headers=h, json=body)
            assert status == 404, resp
        assert (await gw.camera(other["id"]))["name"] == "bridge"

        # Tokens: only inside its county; an admin may make admins, operators, viewers there.
        for node in (OTHER, "45", "4501"):
            status, body = await gw.request("POST", "/api/v1/tokens", headers=h,
                                            json={"name": "x", "role": "viewer", "node": node})
            assert status == 403 and "jurisdiction" in body["error"]["message"], body
        for role in ("admin", "operator", "viewer"):
            t = await new_token(gw, f"town {role}", role, "450102001", by=admin)
            assert t["created_by"] != "bootstrap" and t["node"] == "450102001"
        # No node given: the creator's own.
        status, t = await gw.request("POST", "/api/v1/tokens", headers=h, json={"name": "same", "role": "viewer"})
        assert status == 201 and t["node"] == HOME
        # Bad bodies: the reason, not a 500.
        for body, field in (({"name": "", "role": "viewer"}, "name"), ({"name": "x", "role": "root"}, "role"),
                            ({"name": "x", "role": "viewer", "node": "123"}, "node"),
                            ({"name": "x", "role": "viewer", "colour": "red"}, "unknown")):
            status, resp = await gw.request("POST", "/api/v1/tokens", headers=h, json=body)
            assert status == 422 and field in resp["error"]["message"], (body, resp)

        # A township admin made by the county admin sees the township only.
        town_admin = (await new_token(gw, "township admin", "admin", "450102001", by=admin))["token"]
        _, body = await gw.request("GET", "/api/v1/cameras", headers=auth(town_admin))
        assert {c["node"] for c in body["cameras"]} == set()  # its one camera moved back to the county
        status, _ = await gw.request("POST", "/api/v1/tokens", headers=auth(town_admin),
                                     json={"name": "up", "role": "admin", "node": HOME})
        assert status == 403


async def test_roles_viewer_sees_catalog_operator_watches_admin_manages(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        cam = await gw.add_camera(name="square", node=HOME, url=CLIP, analytics={"fps": 5})

        async def motion():
            _, body = await gw.request("GET", "/api/v1/events?type=motion&limit=50")
            return next((e for e in body["events"] if e.get("snapshot")), None)

        ev = await until(motion, 60, "a motion event with a snapshot")
        viewer = (await new_token(gw, "wall screen", "viewer", HOME))["token"]
        operator = (await new_token(gw, "duty officer", "operator", HOME))["token"]

        # The viewer: catalog and status only.
        assert (await gw.request("GET", "/api/v1/cameras", headers=auth(viewer)))[0] == 200
        status, body = await gw.request("GET", f"/api/v1/cameras/{cam['id']}", headers=auth(viewer))
        assert status == 200 and body["status"]["state"] in ("connecting", "online")
        for path in ("/api/v1/events", f"/api/v1/events/{ev['id']}", ev["snapshot"], "/api/v1/events/stream",
                     "/api/v1/tokens", "/api/v1/audit"):
            status, body = await gw.request("GET", path, headers=auth(viewer))
            assert status == 403 and "role" in body["error"]["message"], (path, body)
        async with aiohttp.ClientSession() as anon:  # the snapshot by <img> query token: refused too
            async with anon.get(gw.url(ev["snapshot"]), params={"token": viewer}) as r:
                assert r.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await gw.session.ws_connect(gw.url("/api/v1/events/ws"), headers=auth(viewer))
        assert exc.value.status == 403

        # The operator: events, snapshots; no changes to cameras or tokens, no audit.
        for path in ("/api/v1/events", f"/api/v1/events/{ev['id']}", ev["snapshot"]):
            assert (await gw.request("GET", path, headers=auth(operator)))[0] == 200, path
        ws = await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": "45-0-0"},
                                         headers=auth(operator))
        assert json.loads((await ws.receive(timeout=30)).data)["node"] == HOME
        await ws.close()
        refused = [
            ("POST", "/api/v1/cameras", {"name": "x", "node": HOME, "url": "rtsp://127.0.0.1:1/x"}),
            ("PATCH", f"/api/v1/cameras/{cam['id']}", {"name": "renamed"}),
            ("DELETE", f"/api/v1/cameras/{cam['id']}", None),
            ("POST", "/api/v1/cameras/bulk", [{"name": "x", "node": HOME, "url": "rtsp://127.0.0.1:1/x"}]),
            ("POST", "/api/v1/tokens", {"name": "x", "role": "viewer", "node": HOME}),
            ("GET", "/api/v1/tokens", None), ("GET", "/api/v1/audit", None),
        ]
        for who in (viewer, operator):
            for method, path, body in refused:
                status, resp = await gw.request(method, path, headers=auth(who), json=body)
                assert status == 403 and "admin" in resp["error"]["message"], (method, path, resp)
        # Nothing the refused calls asked for happened.
        after = await gw.camera(cam["id"])
        assert after["name"] == "square"
        _, listing = await gw.request("GET", "/api/v1/cameras")
        assert listing["total"] == 1
        _, tokens = await gw.request("GET", "/api/v1/tokens")
        assert len(tokens["tokens"]) == 2


# ---- revocation --------------------------------------------------------------------------------------
async def test_revoked_token_is_refused_at_once_and_its_streams_close(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw, \
            make_gateway(redis_url, node="45") as peer:  # a second gateway process on the same Redis
        await gw.add_camera(name="square", node=HOME, url=CLIP, analytics={"fps": 5})
        admin = (await new_token(gw, "county admin", "admin", HOME))["token"]
        t = await new_token(gw, "duty officer", "operator", HOME, by=admin)
        op = t["token"]
        for g in (gw, peer):
            assert (await g.request("GET", "/api/v1/events", headers=auth(op)))[0] == 200

        ws = await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": "45-0-0"}, headers=auth(op))
        assert (await ws.receive(timeout=30)).type == aiohttp.WSMsgType.TEXT
        sse_session = aiohttp.ClientSession(headers=auth(op))
        sse = await sse_session.get(gw.url("/api/v1/events/stream"), params={"since": "45-0-0"})
        assert sse.status == 200
        assert gw.app[keys.REVOCATIONS].watched == 2

        status, body = await gw.request("DELETE", f"/api/v1/tokens/{t['id']}", headers=auth(admin))
        assert status == 200 and body["revoked"] == t["id"] and body["token"]["active"] is False
        revoked_at = time.monotonic()
        # The very next request, on this process and on the other one, is refused.
        for g in (gw, peer):
            for path in ("/api/v1/events", "/api/v1/cameras", "/api/v1/whoami"):
                status, body = await g.request("GET", path, headers=auth(op))
                assert status == 401 and "revoked" in body["error"]["message"], (path, body)

        # The open WebSocket is closed by the server (policy violation), within a few seconds.
        await closed_by_server(ws)
        # The SSE stream ends too.
        async with asyncio.timeout(20):
            while await sse.content.readany():
                pass
        closed_after = time.monotonic() - revoked_at
        sse.release()
        await sse_session.close()
        assert gw.app[keys.REVOCATIONS].watched == 0
        print(f"streams closed {closed_after:.1f}s after the revocation")

        # Revoking again is harmless; the record stays, listed as revoked.
        status, body = await gw.request("DELETE", f"/api/v1/tokens/{t['id']}", headers=auth(admin))
        assert status == 200 and body["token"]["revoked_by"] == (await _whoami(gw, admin))["id"]
        _, listing = await gw.request("GET", "/api/v1/tokens?active=false", headers=auth(admin))
        assert [x["id"] for x in listing["tokens"]] == [t["id"]]
        # Only the hash was ever stored.
        dump = b""
        async for key in gw.app[keys.REDIS].scan_iter("se:tok*"):
            dump += key + b" " + await _dump(gw, key) + b"\n"
        assert op.encode() not in dump and admin.encode() not in dump and token_hash(op).encode() in dump


async def _whoami(gw: Gateway, token: str) -> dict:
    status, body = await gw.request("GET", "/api/v1/whoami", headers=auth(token))
    assert status == 200, body
    return body


async def _dump(gw: Gateway, key: bytes) -> bytes:
    r = gw.app[keys.REDIS]
    kind = await r.type(key)
    if kind == b"string":
        return await r.get(key)
    if kind == b"zset":
        return b" ".join(await r.zrange(key, 0, -1))
    return b""


async def test_redis_down_is_503_not_401(redis_server, make_gateway):
    async with make_gateway(redis_server.url, node="45") as gw:
        viewer = (await new_token(gw, "wall", "viewer", HOME))["token"]
        redis_server.stop()
        try:
            status, body = await gw.request("GET", "/api/v1/whoami", headers=auth(viewer))
            assert status == 503 and "Redis" in body["error"]["message"], body
            # The bootstrap token needs no lookup; an unknown token of the wrong shape is still a 401.
            status, body = await gw.request("GET", "/api/v1/whoami")
            assert status == 200 and body["id"] == "bootstrap" and body["node"] == "45"
            assert (await gw.request("GET", "/api/v1/whoami", headers=auth("nope")))[0] == 401
        finally:
            redis_server.start()

        async def back():
            return (await gw.request("GET", "/api/v1/whoami", headers=auth(viewer)))[0] == 200

        await until(back, 30, "the token to work again once Redis is back")


# ---- command line ------------------------------------------------------------------------------------
async def cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_tokens_cli_create_list_revoke(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        conn = ("--url", gw.base, "--token", TOKEN)
        rc, out, err = await cli("tokens", "create", *conn, "--name", "county admin", "--role", "admin",
                                 "--node", HOME)
        assert rc == 0, (out, err)
        raw = next(line.split()[1] for line in out.splitlines() if line.startswith("token: "))
        tid = out.split()[0]
        assert raw.startswith("se_") and "cannot be shown again" in err
        county = ("--url", gw.base, "--token", raw)
        rc, out, err = await cli("tokens", "create", *county, "--name", "duty", "--role", "operator")
        assert rc == 0 and f"node {HOME}" in out, (out, err)
        op_id = out.split()[0]
        rc, out, err = await cli("tokens", "create", *county, "--name", "x", "--role", "viewer", "--node", OTHER)
        assert rc == 1 and "403" in err and "jurisdiction" in err, (out, err)

        rc, out, err = await cli("tokens", "list", *county)
        assert rc == 0, err
        assert {line.split()[0] for line in out.splitlines()} == {tid, op_id}
        assert raw not in out

        rc, out, err = await cli("tokens", "revoke", *county, op_id)
        assert rc == 0 and f"revoked {op_id}" in out, (out, err)
        rc, out, err = await cli("tokens", "list", *county)
        assert {line.split()[0] for line in out.splitlines()} == {tid}
        rc, out, err = await cli("tokens", "list", *county, "--all")
        assert op_id in out and "revoked" in out
        rc, out, err = await cli("tokens", "revoke", *county, "0000000000000000")
        assert rc == 1 and "404" in err
        # A token for a day: the lifetime is shown at creation and in the list.
        rc, out, err = await cli("tokens", "create", *county, "--name", "contractor", "--role", "viewer",
                                 "--expires-in", "1d")
        assert rc == 0 and "expires 20" in out, (out, err)
        day_id = out.split()[0]
        rc, out, err = await cli("tokens", "list", *county)
        line = next(x for x in out.splitlines() if x.startswith(day_id))
        assert "active until 20" in line, line
        rc, out, err = await cli("tokens", "create", *county, "--name", "x", "--role", "viewer", "--expires-in", "soon")
        assert rc == 2 and "duration" in err, (out, err)


async def test_a_token_with_a_lifetime_ends_by_itself_and_its_streams_close(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        await gw.add_camera(name="square", node=HOME, url=CLIP, analytics={"fps": 5})
        admin = (await new_token(gw, "county admin", "admin", HOME))["token"]
        status, t = await gw.request("POST", "/api/v1/tokens", headers=auth(admin), json={
            "name": "contractor", "role": "operator", "node": HOME, "expires_in_s": 4})
        assert status == 201, t
        created = time.time()
        expires = datetime.fromisoformat(t["expires_at"].replace("Z", "+00:00")).timestamp()
        assert 3.5 <= expires - created <= 4.5 and t["active"] and not t["expired"]
        op = t["token"]
        assert (await gw.request("GET", "/api/v1/events", headers=auth(op)))[0] == 200
        ws = await gw.session.ws_connect(gw.url("/api/v1/events/ws"), params={"since": "45-0-0"}, headers=auth(op))
        assert (await ws.receive(timeout=30)).type == aiohttp.WSMsgType.TEXT

        # At its time the token stops working, and the open WebSocket is closed, with no one revoking it.
        async with asyncio.timeout(20):
            while True:
                msg = await ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    break
        closed = time.time()
        assert ws.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION, ws.close_code
        assert expires <= closed <= expires + 5, (closed - expires)
        status, body = await gw.request("GET", "/api/v1/whoami", headers=auth(op))
        assert status == 401 and "expired" in body["error"]["message"], body

        # Listed as expired (not revoked); revoking it afterwards is still recorded.
        _, listing = await gw.request("GET", "/api/v1/tokens?active=false", headers=auth(admin))
        (rec,) = listing["tokens"]
        assert rec["id"] == t["id"] and rec["expired"] and not rec["active"] and rec["revoked_at"] is None
        status, body = await gw.request("DELETE", f"/api/v1/tokens/{t['id']}", headers=auth(admin))
        assert status == 200 and body["token"]["revoked_at"] is not None

        # Lifetimes out of bounds, or not numbers, are refused naming the field.
        for bad in (0, -5, "1h", True, 10 * 366 * 86400):
            status, body = await gw.request("POST", "/api/v1/tokens", headers=auth(admin), json={
                "name": "x", "role": "viewer", "expires_in_s": bad})
            assert status == 422 and "expires_in_s" in body["error"]["message"], (bad, body)
        # Without one, a token lasts until revoked.
        forever = await new_token(gw, "wall", "viewer", HOME, by=admin)
        assert forever["expires_at"] is None and await gw.app[keys.REDIS].pttl(
            "se:tokh:" + token_hash(forever["token"])) == -1
