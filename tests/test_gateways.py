"""Several gateways share one tier's cameras: real gateway processes (`sharp-eyes serve`) on one real Redis.

Twelve file cameras of the sample clip at 0.5 fps (key frames only, so three gateways fit on two cores),
no model (motion events). What an operator relies on:
- every enabled camera runs on exactly one gateway, spread by capacity, and its status names it;
- kill -9 a gateway: its cameras run elsewhere within 15 s (default lease 10 s, beat 2 s);
- SIGTERM: it hands its cameras over within 5 s, each open motion event getting its `end` once;
- a gateway that joins takes a share without every camera moving;
- a gateway paused (SIGSTOP) past its leases loses its cameras, and after SIGCONT none of its events for them
  reach the stream (fencing): at no point are a camera's events written by two gateways.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from sample_streams import clip_path
from tests.gateway_fixtures import TOKEN, until
from tests.gateway_procs import NODE, GatewayProc
from tests.servers import RedisServer, missing, redis_binary

pytestmark = [pytest.mark.timeout(300)]

CAMERAS = 12
FPS = 0.5
KILL_TAKEOVER_S = 15.0  # the bound after kill -9
TERM_HANDOVER_S = 5.0  # ... and after SIGTERM


async def _get(session: aiohttp.ClientSession, gw: GatewayProc, path: str):
    async with session.get(gw.base + path, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return r.status, await r.json()


async def _up(session: aiohttp.ClientSession, gw: GatewayProc) -> bool:
    assert gw.proc is not None and gw.proc.poll() is None, f"{gw.id} exited:\n{gw.tail()}"
    try:
        status, _ = await _get(session, gw, "/healthz")
        return status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return False


async def _placement(session, gws: list[GatewayProc], ids: list[str]) -> dict[str, str | None]:
    """Camera id -> the gateway its status names, read through the first live gateway's API."""
    status, body = await _get(session, gws[0], f"/api/v1/cameras?node={NODE}&limit=500")
    assert status == 200, body
    items = body["cameras"]
    out = {c["id"]: (c["status"].get("gateway") if c["status"].get("state") == "online" else None)
           for c in items if c["id"] in ids}
    return out


async def _running(session, gws: list[GatewayProc]) -> dict[str, int]:
    """Gateway id -> cameras its own /healthz says it runs."""
    out = {}
    for gw in gws:
        _, h = await _get(session, gw, "/healthz")
        out[gw.id] = h["cameras_running"]
    return out


async def _events(redis: aioredis.Redis) -> list[tuple[str, dict]]:
    """The tier's event stream, oldest first: (entry id, event)."""
    out = []
    for eid, fields in await redis.xrange("se:events", "-", "+"):
        out.append((eid.decode(), json.loads(fields[b"e"])))
    return out


def _written_after_takeover(events: list[tuple[str, dict]], cameras: list[str], old: str, new: str,
                            since_ms: int) -> list[str]:
    """Events `old` wrote for these cameras after `new` had begun writing for them (from `since_ms` on)."""
    bad = []
    taken: set[str] = set()
    for eid, e in events:
        cid = e["camera_id"]
        if cid not in cameras or int(eid.split("-")[0]) < since_ms:
            continue
        gw = e["origin"]["gateway"]
        if gw == new:
            taken.add(cid)
        elif gw == old and cid in taken:
            bad.append(f"{eid} {cid} {e['type']} {e.get('phase') or e.get('state')}")
    return bad


@pytest.fixture
def tier(tmp_path):
    if not redis_binary():
        missing("no redis-server binary")
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    gws: list[GatewayProc] = []

    def make(gid: str, **kw) -> GatewayProc:
        gw = GatewayProc(gid, srv.url, tmp_path, clip_path("moving_objects.mp4").parent, **kw)
        gws.append(gw)
        gw.start()
        return gw
    try:
        yield srv, make
    finally:
        for gw in gws:
            gw.stop()
        srv.stop()


async def test_gateways_share_cameras_take_over_hand_over_and_are_fenced(tier):
    srv, make = tier
    a, b, c = make("gw-a"), make("gw-b"), make("gw-c")
    redis = aioredis.Redis.from_url(srv.url)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        for gw in (a, b, c):
            await until(lambda gw=gw: _up(s, gw), 60, f"{gw.id} answering")
        rows = [{"name": f"street {i}", "node": NODE, "url": "file:moving_objects.mp4",
                 "analytics": {"fps": FPS}} for i in range(CAMERAS)]
        async with s.post(a.base + "/api/v1/cameras/bulk", json=rows) as r:
            assert r.status == 200, await r.text()
            ids = [x["id"] for x in (await r.json())["results"]]
        assert len(ids) == CAMERAS

        # Every camera online on exactly one gateway, spread over all three by their (equal) capacity.
        async def spread():
            where = await _placement(s, [a], ids)
            return where if all(where.get(i) for i in ids) else None
        where = await until(spread, 60, "every camera online with a gateway named")
        per = {g: list(where.values()).count(g) for g in ("gw-a", "gw-b", "gw-c")}
        assert sum(per.values()) == CAMERAS and min(per.values()) >= 3, per
        assert await _running(s, [a, b, c]) == per  # each gateway runs what the statuses say, no camera twice

        async def listed():  # records are rewritten at each beat: they agree within one
            status, listing = await _get(s, b, "/api/v1/gateways")
            assert status == 200, listing
            return {g["id"]: (g["alive"], g["cameras"]) for g in listing["gateways"]} == \
                {g: (True, n) for g, n in per.items()}
        await until(listed, 10, "GET /api/v1/gateways listing the three with their cameras")
        # A frame of a camera run elsewhere, through any gateway.
        other = next(cid for cid in ids if where[cid] != "gw-a")
        async with s.get(a.base + f"/api/v1/cameras/{other}/snapshot.jpg") as r:
            assert r.status == 200 and (await r.read())[:2] == b"\xff\xd8"
        async with s.get(a.base + f"/api/v1/cameras/{other}/live.mjpeg", params={"fps": "2"}) as r:
            assert r.status == 200 and r.content_type.startswith("multipart/x-mixed-replace")
            head = await asyncio.wait_for(r.content.readuntil(b"\xff\xd8"), 10)  # a first JPEG part arrives
            assert b"Content-Type: image/jpeg" in head

        # A camera pinned to a gateway moves there; unpinned, it is placed like any other again.
        pinned = next(cid for cid in ids if where[cid] == "gw-b")
        async with s.patch(c.base + f"/api/v1/cameras/{pinned}", json={"gateway": "gw-a"}) as r:
            assert r.status == 200, await r.text()

        async def on_a():
            return (await _placement(s, [b], [pinned])).get(pinned) == "gw-a"
        await until(on_a, 15, "the pinned camera running on gw-a")
        async with s.patch(a.base + f"/api/v1/cameras/{pinned}", json={"gateway": None}) as r:
            assert r.status == 200 and (await r.json())["gateway"] is None
        where = await until(spread, 15, "every camera online with a gateway named")

        # kill -9 gw-c: its cameras run elsewhere within 15 s.
        lost = [cid for cid in ids if where[cid] == "gw-c"]
        c.signal(signal.SIGKILL)
        t0 = time.monotonic()

        async def moved_off_c():
            now = await _placement(s, [a], ids)
            return all(now.get(cid) in ("gw-a", "gw-b") for cid in lost)
        await until(moved_off_c, KILL_TAKEOVER_S + 5, "gw-c's cameras online elsewhere")
        took = time.monotonic() - t0
        assert took <= KILL_TAKEOVER_S, f"takeover after kill -9 took {took:.1f} s"

        # SIGTERM gw-b: it hands over within 5 s; each of its open motion events gets its end once.
        await asyncio.sleep(1.0)
        where = await _placement(s, [a], ids)
        b_cams = [cid for cid in ids if where[cid] == "gw-b"]
        assert b_cams
        before = await _events(redis)
        b.signal(signal.SIGTERM)
        t0 = time.monotonic()

        async def moved_off_b():
            now = await _placement(s, [a], ids)
            return all(now.get(cid) == "gw-a" for cid in b_cams)
        await until(moved_off_b, TERM_HANDOVER_S + 10, "gw-b's cameras online on gw-a")
        took = time.monotonic() - t0
        assert took <= TERM_HANDOVER_S, f"handover after SIGTERM took {took:.1f} s"
        assert b.proc.wait(15) == 0, b.tail()
        after = await _events(redis)
        for cid in b_cams:
            mine = [e for _, e in after if e["camera_id"] == cid and e["origin"]["gateway"] == "gw-b"
                    and e["type"] == "motion"]
            starts = sum(e["phase"] == "start" for e in mine)
            ends = sum(e["phase"] == "end" for e in mine)
            assert ends == starts, (cid, starts, ends)  # every motion gw-b opened, it closed, once
        assert len(after) > len(before)

        # A gateway joining takes a share without every camera moving. (gw-d itself never hands cameras over
        # here, so that below every event of gw-a's after gw-d took its cameras is a fencing failure.)
        d = make("gw-d", rebalance_s=3600)
        await until(lambda: _up(s, d), 60, "gw-d answering")

        async def shared_with_d():
            now = await _placement(s, [a], ids)
            n = list(now.values()).count("gw-d")
            return now if n >= CAMERAS // 2 - 1 and all(now.values()) else None
        where = await until(shared_with_d, 30, "gw-d running a fair share")
        assert list(where.values()).count("gw-a") >= CAMERAS // 2 - 1, where

        # Fencing: gw-a paused past its leases (10 s) loses its cameras to gw-d; once it runs again, none of its
        # events for them is written (it finds its leases gone and stops them).
        a_cams = [cid for cid in ids if where[cid] == "gw-a"]
        secs, micros = await redis.time()
        paused_ms = secs * 1000 + micros // 1000
        a.signal(signal.SIGSTOP)
        paused_at = time.monotonic()

        async def d_runs_all():
            now = await _placement(s, [d], ids)
            return all(now.get(cid) == "gw-d" for cid in ids)
        await until(d_runs_all, 30, "gw-d running every camera while gw-a is paused")
        await asyncio.sleep(max(0.0, 15 - (time.monotonic() - paused_at)))
        a.signal(signal.SIGCONT)

        async def a_gave_up():
            _, h = await _get(s, a, "/healthz")
            return h if h["cameras_running"] == 0 and h["placement"]["leases_lost"] >= len(a_cams) else None
        health = await until(a_gave_up, 20, "gw-a stopping the cameras whose leases it lost")
        await asyncio.sleep(2.0)  # anything gw-a still had buffered has been tried by now
        events = await _events(redis)
        assert any(e["origin"]["gateway"] == "gw-d" and e["camera_id"] in a_cams for _, e in events)
        assert _written_after_takeover(events, a_cams, "gw-a", "gw-d", paused_ms) == [], \
            "events of a paused gateway written after another had taken its cameras"
        assert health["placement"]["leases_lost"] >= len(a_cams)
    await redis.aclose()
