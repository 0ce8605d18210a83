"""Jurisdiction across tiers: a county token at the region sees that county's share of what came up
the chain — catalog, pictures, events, streams, nodes, metrics, audit — and nothing of the county
beside it, though the region holds both.

Two real tiers (city 4501 -> region 45), each with its own redis-server; the city runs one camera in
each of two counties (real clips, real motion events with snapshots), and everything reaches the
region through the bridge.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until

REGION, CITY = "45", "4501"
HOME, OTHER = "450102", "450103"
CLIP = "file:moving_objects.mp4"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _nodes(tree: dict) -> set[str]:
    return {tree["code"]} | {c for child in tree.get("children", []) for c in _nodes(child)}


async def _ws_events(url: str, token: str, seconds: float) -> list[dict]:
    """Everything a WebSocket subscriber replaying from the start receives in `seconds`."""
    got: list[dict] = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(url, params={"since": f"{REGION}-0-0", "token": token}) as ws:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while (left := end - loop.time()) > 0:
                try:
                    msg = await ws.receive(timeout=left)
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                got.append(json.loads(msg.data))
    return got


async def _sse_events(url: str, token: str, seconds: float) -> list[dict]:
    got: list[dict] = []
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={**auth(token), "Last-Event-ID": f"{REGION}-0-0"}) as r:
            assert r.status == 200
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while (left := end - loop.time()) > 0:
                try:
                    line = await asyncio.wait_for(r.content.readline(), left)
                except asyncio.TimeoutError:
                    break
                if line.startswith(b"data:"):
                    got.append(json.loads(line[5:]))
    return got


async def test_a_county_token_at_the_region_sees_its_county_and_nothing_else(tier_chain):
    async with tier_chain((REGION, CITY), media_dirs=[CLIPS_DIR]) as chain:
        region, city = chain[REGION], chain[CITY]
        home = await city.gw.add_camera(name="home gate", node=HOME, url=CLIP, analytics={"fps": 5})
        other = await city.gw.add_camera(name="other gate", node=OTHER, url=CLIP, analytics={"fps": 5})

        # Both cameras, and motion events with snapshots from both, reach the region.
        async def both_arrived():
            _, body = await region.gw.request("GET", "/api/v1/events?type=motion&limit=200")
            cams = {e["camera_id"] for e in body["events"] if e.get("snapshot")}
            return body["events"] if {home["id"], other["id"]} <= cams else None

        events = await until(both_arrived, 60, "motion events of both counties at the region")
        home_ev = next(e for e in events if e["camera_id"] == home["id"] and e.get("snapshot"))
        other_ev = next(e for e in events if e["camera_id"] == other["id"] and e.get("snapshot"))

        async def online_at_region():
            _, body = await region.gw.request("GET", "/api/v1/cameras")
            states = {c["id"]: c["status"]["state"] for c in body["cameras"]}
            return states.get(home["id"]) == states.get(other["id"]) == "online"

        await until(online_at_region, 60, "both cameras online at the region")

        async def make(role: str) -> str:
            status, body = await region.gw.request("POST", "/api/v1/tokens",
                                                   json={"name": f"county {role}", "role": role, "node": HOME})
            assert status == 201, body
            return body["token"]

        op, admin = await make("operator"), await make("admin")

        async def call(token: str, method: str, path: str, **kw):
            return await region.gw.request(method, path, headers=auth(token), **kw)

        # Catalog: the county's camera (remote, with status), never the other county's.
        status, body = await call(op, "GET", "/api/v1/cameras")
        assert status == 200 and [c["id"] for c in body["cameras"]] == [home["id"]], body
        assert body["cameras"][0]["remote"] is True
        for path in (f"/api/v1/cameras?node={OTHER}",):
            assert (await call(op, "GET", path))[0] == 403
        assert (await call(op, "GET", f"/api/v1/cameras/{other['id']}"))[0] == 404

        # Pictures through the chain: the county's camera yes, the other's as if it did not exist.
        status, jpeg = await call(op, "GET", f"/api/v1/cameras/{home['id']}/snapshot.jpg")
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        for path in (f"/api/v1/cameras/{other['id']}/snapshot.jpg", f"/api/v1/cameras/{other['id']}/live.mjpeg",
                     f"/api/v1/events/{other_ev['id']}", other_ev["snapshot"]):
            assert (await call(op, "GET", path))[0] == 404, path
        status, jpeg = await call(op, "GET", home_ev["snapshot"])
        assert status == 200 and jpeg[:2] == b"\xff\xd8"

        # History and both streams, replayed from the start: only the county's events, and some of them.
        status, body = await call(op, "GET", "/api/v1/events?limit=1000")
        assert status == 200 and body["events"]
        assert {e["node"] for e in body["events"]} == {HOME}
        ws = await _ws_events(region.gw.url("/api/v1/events/ws"), op, 3)
        sse = await _sse_events(region.gw.url("/api/v1/events/stream"), op, 3)
        for got in (ws, sse):
            assert got and {e["node"] for e in got} == {HOME}, got[:3]
            assert home_ev["id"] in {e["id"] for e in got}

        # Nodes and metrics: the county's subtree only.
        status, tree = await call(op, "GET", "/api/v1/nodes")
        assert status == 200 and tree["code"] == HOME and OTHER not in _nodes(tree)
        assert tree["cameras"]["total"] == 1 and tree["cameras"]["online"] == 1
        assert (await call(op, "GET", f"/api/v1/nodes/{OTHER}"))[0] == 404
        async with aiohttp.ClientSession() as s:
            async with s.get(region.gw.url("/metrics"), headers=auth(op)) as r:
                assert r.status == 200
                text = await r.text()
        labels = [s.labels for f in text_string_to_metric_families(text) for s in f.samples]
        assert any(lb.get("node") == HOME for lb in labels)
        assert not any(lb.get("node", "").startswith(OTHER) or lb.get("camera") == other["id"] for lb in labels)

        # Audit, forwarded from the city: the county admin sees the creation of its camera only.
        async def audited():
            _, body = await call(admin, "GET", "/api/v1/audit?action=camera.create&limit=100")
            return body["entries"] if any(e["target"] == home["id"] for e in body["entries"]) else None

        entries = await until(audited, 30, "the city's audit entry at the region")
        assert {e["node"] for e in entries} == {HOME} and all(e["tier"] == CITY for e in entries)
        _, everything = await region.gw.request("GET", "/api/v1/audit?action=camera.create&limit=100")
        assert other["id"] in {e["target"] for e in everything["entries"]}  # the region's own admin sees both

        # Nothing created outside the county, by the county's admin.
        status, _ = await call(admin, "POST", "/api/v1/cameras",
                               json={"name": "x", "node": OTHER, "url": "rtsp://127.0.0.1:1/x"})
        assert status == 403
        status, _ = await call(admin, "POST", "/api/v1/tokens", json={"name": "x", "role": "viewer", "node": OTHER})
        assert status == 403
        assert TOKEN not in (op, admin)
