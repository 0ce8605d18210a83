"""The audit trail against a real gateway and a real Redis: who did what, to what, when, from where.

Every change to cameras and tokens and every snapshot opened leaves one entry, readable by the
admins of the target's jurisdiction only; secrets never reach it; recording never fails or holds
up a request when Redis is away; forwarded entries keep the id they were given at their origin.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import aiohttp

from gateway import keys
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, Gateway, until
from tiers.access import Principal, Role

CLIP = "file:moving_objects.mp4"
HOME, OTHER = "450102", "450103"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_token(gw: Gateway, name: str, role: str, node: str, by: str = TOKEN) -> dict:
    status, body = await gw.request("POST", "/api/v1/tokens", headers=auth(by),
                                    json={"name": name, "role": role, "node": node})
    assert status == 201, body
    return body


async def audit(gw: Gateway, token: str, query: str = "") -> list[dict]:
    status, body = await gw.request("GET", f"/api/v1/audit?limit=1000{query}", headers=auth(token))
    assert status == 200, body
    return body["entries"]


def parse_ts(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_every_action_leaves_an_entry_seen_only_in_its_jurisdiction(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        started = datetime.now(timezone.utc) - timedelta(seconds=1)
        admin_t = await new_token(gw, "county admin", "admin", HOME)
        admin = admin_t["token"]
        other_admin = (await new_token(gw, "other county admin", "admin", OTHER))["token"]
        h = auth(admin)

        # Cameras: create (with a password in the URL), change, bulk, delete.
        status, cam = await gw.request("POST", "/api/v1/cameras", headers=h, json={
            "name": "square", "node": HOME, "url": "rtsp://admin:Audit-Pw1@127.0.0.1:1/live", "enabled": False})
        assert status == 201, cam
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{cam['id']}", headers=h,
                                     json={"name": "market square", "node": "450102001"})
        assert status == 200
        status, bulk = await gw.request("POST", "/api/v1/cameras/bulk", headers=h, json=[
            {"name": "b1", "node": HOME, "url": "rtsp://u:Audit-Pw2@127.0.0.1:1/b1", "enabled": False},
            {"name": "b2", "node": OTHER, "url": "rtsp://127.0.0.1:1/b2", "enabled": False}])
        assert bulk["created"] == 1, bulk
        b1 = bulk["results"][0]["id"]
        status, _ = await gw.request("DELETE", f"/api/v1/cameras/{b1}", headers=h)
        assert status == 200
        # Tokens: create and revoke.
        op = await new_token(gw, "duty officer", "operator", HOME, by=admin)
        status, _ = await gw.request("DELETE", f"/api/v1/tokens/{op['id']}", headers=h)
        assert status == 200
        # A snapshot opened (from behind a proxy that the gateway does not trust by default).
        live = await gw.add_camera(name="street", node=HOME, url=CLIP, analytics={"fps": 5})

        async def motion():
            _, body = await gw.request("GET", f"/api/v1/events?camera={live['id']}&type=motion&limit=50")
            return next((e for e in body["events"] if e.get("snapshot")), None)

        ev = await until(motion, 60, "a motion event with a snapshot")
        status, _ = await gw.request("GET", ev["snapshot"], headers={**h, "X-Forwarded-For": "203.0.113.9"})
        assert status == 200
        # A refused action changes nothing (its access.denied entry is for the other county's admins).
        status, _ = await gw.request("POST", "/api/v1/cameras", headers=h, json={
            "name": "outside", "node": OTHER, "url": "rtsp://127.0.0.1:1/x", "enabled": False})
        assert status == 403

        async def all_written():
            entries = await audit(gw, admin)
            return entries if len({e["action"] for e in entries}) >= 7 else None

        entries = await until(all_written, 15, "the audit entries to be written")
        admin_id = admin_t["id"]
        by_action: dict[str, list[dict]] = {}
        for e in entries:
            by_action.setdefault(e["action"], []).append(e)
        mine = [e for e in entries if e["actor"]["id"] == admin_id]
        expected = {
            ("camera.create", cam["id"]), ("camera.update", cam["id"]), ("camera.create", b1),
            ("camera.bulk", "2 rows"), ("camera.delete", b1), ("token.create", op["id"]),
            ("token.revoke", op["id"]), ("snapshot.view", ev["id"]),
        }
        assert expected <= {(e["action"], e["target"]) for e in mine}, mine
        assert not any(e["action"] == "camera.create" and e["node"] == OTHER for e in entries)
        now = datetime.now(timezone.utc) + timedelta(seconds=1)
        for e in mine:
            # who, what, when, from where
            assert e["actor"] == {"id": admin_id, "name": "county admin", "role": "admin", "node": HOME}, e
            assert started <= parse_ts(e["ts"]) <= now and e["ts"].endswith("Z")
            assert e["from"] == "127.0.0.1", e  # the socket peer: X-Forwarded-For is not trusted by default
            assert e["id"].startswith("45-") and e["tier"] == "45" and e["gateway"] == "test-gw"
        # Newest first.
        assert [e["id"] for e in entries] == sorted((e["id"] for e in entries),
                                                     key=lambda i: tuple(int(x) for x in i.split("-")[1:]),
                                                     reverse=True)
        update = by_action["camera.update"][0]
        assert update["node"] == "450102001" and update["detail"]["moved_from"] == HOME
        assert set(update["detail"]["fields"]) == {"name", "node"}
        snap = by_action["snapshot.view"][0]
        assert snap["node"] == HOME and snap["detail"]["camera_id"] == live["id"]
        assert by_action["camera.bulk"][0]["detail"] == {"rows": 2, "created": 1, "failed": 1}
        # The bootstrap admin's own actions carry its name.
        boot = [e for e in entries if e["actor"]["id"] == "bootstrap"]
        assert {e["action"] for e in boot} >= {"token.create", "camera.create"}

        # Never a password or a raw token in the trail (the whole stream, as stored).
        raw = b"\n".join(f[b"a"] for _, f in await _stream(gw)).decode()
        assert "Audit-Pw" not in raw and "***" in raw  # the camera URLs are there, redacted
        for secret in ("Audit-Pw1", "Audit-Pw2", admin, op["token"], other_admin):
            assert secret not in raw

        # Filters: action (exact and prefix), actor, since, target.
        got = await audit(gw, admin, "&action=token.*")
        assert {e["action"] for e in got} == {"token.create", "token.revoke"}
        got = await audit(gw, admin, "&action=camera.delete,snapshot.view")
        assert {e["action"] for e in got} == {"camera.delete", "snapshot.view"}
        got = await audit(gw, admin, "&actor=bootstrap")
        assert got and all(e["actor"]["id"] == "bootstrap" for e in got)
        got = await audit(gw, admin, f"&target={cam['id']}")
        assert {e["action"] for e in got} == {"camera.create", "camera.update"}
        got = await audit(gw, admin, "&since=" + (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat())
        assert got == []
        got = await audit(gw, admin, "&since=" + started.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        assert [e["id"] for e in got] == [e["id"] for e in entries]
        got = await audit(gw, admin, f"&since={entries[3]['id']}")
        assert [e["id"] for e in got] == [e["id"] for e in entries[:3]]
        got = await audit(gw, admin, "&node=450102001")
        assert {e["target"] for e in got} == {cam["id"]}
        # Paging with next_before: every entry once.
        paged, cursor = [], None
        for _ in range(50):
            q = "/api/v1/audit?limit=3" + (f"&before={cursor}" if cursor else "")
            status, body = await gw.request("GET", q, headers=h)
            assert status == 200, body
            paged += body["entries"]
            cursor = body["next_before"]
            if not cursor:
                break
        assert [e["id"] for e in paged] == [e["id"] for e in entries]
        for bad in ("&limit=0", "&since=yesterday", "&before=4501-1-0", "&action=DROP TABLE"):
            status, body = await gw.request("GET", f"/api/v1/audit?{bad[1:]}", headers=h)
            assert status == 400, (bad, body)

        # The other county's admin sees none of it; the region (bootstrap) sees both.
        theirs = await audit(gw, other_admin)
        assert all(e["node"].startswith(OTHER) for e in theirs)
        assert not {e["id"] for e in theirs} & {e["id"] for e in entries}
        # Its own token, made by the region's admin; and the home county's attempts to add a camera there
        # (the single request, and the bulk import's row before it).
        assert [e["action"] for e in theirs] == ["access.denied", "access.denied", "token.create"]
        assert all(e["actor"]["id"] == admin_id and e["detail"]["why"] == "jurisdiction" for e in theirs[:2])
        assert theirs[1]["target"] == "/api/v1/cameras/bulk" and theirs[1]["detail"]["refused"] == [2]
        everything = await audit(gw, TOKEN)
        assert {e["id"] for e in entries} <= {e["id"] for e in everything}
        assert any(e["node"] == OTHER for e in everything)


async def test_forwarded_for_is_honoured_only_when_configured(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45", access={"trust_x_forwarded_for": True}) as gw:
        status, _ = await gw.request("POST", "/api/v1/tokens", json={"name": "x", "role": "viewer", "node": HOME},
                                     headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
        assert status == 201

        async def entry():
            return await audit(gw, TOKEN)

        e = (await until(entry, 15, "the token.create entry"))[0]
        # The hop our proxy appended, not the one the client claims.
        assert e["action"] == "token.create" and e["from"] == "203.0.113.9"


async def test_recording_never_waits_for_redis_and_catches_up(redis_server, make_gateway):
    async with make_gateway(redis_server.url, node="45") as gw:
        log = gw.app[keys.AUDIT]
        who = Principal("0123456789abcdef", "night shift", Role.OPERATOR, HOME)
        redis_server.stop()
        try:
            for i in range(200):  # synchronous: it cannot wait on Redis, and it does not raise
                log.record(who, "live.view", f"4501020000131000{i:04d}", HOME, "10.0.0.5", {"seconds": i})
            await until(lambda: asyncio.sleep(0, result=not log.redis_up), 30, "the writer to notice Redis is away")
            assert log.pending == 200
        finally:
            redis_server.start()
        assert await log.flush(timeout=30), f"{log.pending} entries still buffered"
        entries = await audit(gw, TOKEN, "&action=live.view")
        assert len(entries) == 200 and len({e["id"] for e in entries}) == 200  # once each
        assert [e["detail"]["seconds"] for e in entries] == list(range(199, -1, -1))  # in order
        assert entries[0]["actor"]["name"] == "night shift" and entries[0]["from"] == "10.0.0.5"


async def test_forwarded_entries_keep_their_origin_id(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        # What a county's bridge writes at the region: the entry as recorded there, with its id.
        forwarded = {"id": "450102-1700000000000-0", "ts": "2023-11-14T22:13:20.000Z", "action": "live.view",
                     "target": "45010200001310000001", "node": HOME,
                     "actor": {"id": "0123456789abcdef", "name": "county op", "role": "operator", "node": HOME},
                     "from": "10.1.1.1", "tier": HOME, "gateway": "county-gw", "detail": {}}
        await gw.app[keys.REDIS].xadd("se:audit", {"a": json.dumps(forwarded)})
        county_admin = (await new_token(gw, "county admin", "admin", HOME))["token"]
        got = await audit(gw, county_admin, "&action=live.view")
        assert [e["id"] for e in got] == ["450102-1700000000000-0"] and got[0]["tier"] == HOME
        other = (await new_token(gw, "other admin", "admin", OTHER))["token"]
        assert await audit(gw, other, "&action=live.view") == []


async def _stream(gw: Gateway) -> list:
    return await gw.app[keys.REDIS].xrange("se:audit")


async def test_audit_is_for_admins(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        for role in ("operator", "viewer"):
            t = (await new_token(gw, role, role, HOME))["token"]
            status, body = await gw.request("GET", "/api/v1/audit", headers=auth(t))
            assert status == 403 and "admin" in body["error"]["message"]
        async with aiohttp.ClientSession() as anon:
            async with anon.get(gw.url("/api/v1/audit")) as r:
                assert r.status == 401


async def test_refusals_are_audited_for_the_admins_of_the_node_reached_for(redis_url, make_gateway):
    async with make_gateway(redis_url, node="45") as gw:
        theirs = await gw.add_camera(name="elsewhere", node=OTHER, url="rtsp://127.0.0.1:1/x", enabled=False)
        home_admin_t = await new_token(gw, "home admin", "admin", HOME)
        home_admin, other_admin = home_admin_t["token"], (await new_token(gw, "other admin", "admin", OTHER))["token"]
        viewer_t = await new_token(gw, "home viewer", "viewer", HOME)
        viewer = viewer_t["token"]

        # Beyond the role, at home.
        status, _ = await gw.request("POST", "/api/v1/cameras", headers=auth(viewer), json={
            "name": "mine", "node": HOME, "url": "rtsp://127.0.0.1:1/y", "enabled": False})
        assert status == 403
        # Beyond the jurisdiction: a camera elsewhere answers 404 as if it did not exist, yet is recorded.
        status, _ = await gw.request("GET", f"/api/v1/cameras/{theirs['id']}", headers=auth(home_admin))
        assert status == 404
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{theirs['id']}", headers=auth(home_admin),
                                     json={"name": "taken over"})
        assert status == 404
        # A subscription to another county, with the token in the query as browsers send it.
        async with aiohttp.ClientSession() as browser:
            async with browser.get(gw.url(f"/api/v1/events/stream?node={OTHER}&token={home_admin}")) as r:
                assert r.status == 403
        # Really absent, or simply wrong: not a refusal, nothing recorded.
        status, _ = await gw.request("GET", "/api/v1/cameras/45010300001310009999", headers=auth(home_admin))
        assert status == 404
        status, _ = await gw.request("GET", "/api/v1/cameras", headers=auth("se_" + "x" * 43))
        assert status == 401

        async def four_denials():
            got = await audit(gw, TOKEN, "&action=access.denied")
            return got if len(got) >= 4 else None

        everything = await until(four_denials, 15, "four access.denied entries")
        assert len(everything) == 4, everything
        role, get, patch, sub = reversed(everything)  # newest first
        assert role["actor"]["id"] == viewer_t["id"] and role["node"] == HOME
        assert role["target"] == "/api/v1/cameras"
        assert role["detail"] == {"method": "POST", "status": 403, "why": "role",
                                  "reason": "this needs the admin role; the token has viewer"}
        for e in (get, patch):
            assert e["actor"]["id"] == home_admin_t["id"] and e["node"] == OTHER
            assert e["target"] == f"/api/v1/cameras/{theirs['id']}" and e["from"] == "127.0.0.1"
            assert e["detail"]["status"] == 404 and e["detail"]["why"] == "jurisdiction"
        assert (get["detail"]["method"], patch["detail"]["method"]) == ("GET", "PATCH")
        assert sub["actor"]["id"] == home_admin_t["id"] and sub["node"] == OTHER
        assert sub["target"] == "/api/v1/events/stream" and sub["detail"]["status"] == 403
        assert sub["detail"]["why"] == "jurisdiction"

        # The home admin sees its viewer's overreach at home, but not what its probes found elsewhere;
        # the other county's admin sees every attempt on its cameras and events.
        assert [e["id"] for e in await audit(gw, home_admin, "&action=access.denied")] == [role["id"]]
        assert [e["id"] for e in await audit(gw, other_admin, "&action=access.denied")] == [
            sub["id"], patch["id"], get["id"]]
        raw = b"\n".join(f[b"a"] for _, f in await _stream(gw)).decode()
        assert viewer not in raw and home_admin not in raw
        # The camera the PATCH went for is unchanged.
        _, cam = await gw.request("GET", f"/api/v1/cameras/{theirs['id']}")
        assert cam["name"] == "elsewhere"


async def _watch(gw: Gateway, token: str, cid: str, event: dict) -> None:
    """What a control-room page does: thumbnails three times, an event's snapshot twice, a live view."""
    h = auth(token)
    for _ in range(3):
        status, _ = await gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg?width=320", headers=h)
        assert status == 200
    for _ in range(2):
        status, _ = await gw.request("GET", event["snapshot"], headers=h)
        assert status == 200
    async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?fps=2"), headers=h) as r:
        assert r.status == 200
        await r.content.readuntil(b"\r\n\r\n")  # the first part's headers: the view is open


async def _first_motion_with_snapshot(gw: Gateway, cid: str) -> dict:
    async def motion():
        _, body = await gw.request("GET", f"/api/v1/events?camera={cid}&type=motion&limit=50")
        return next((e for e in body["events"] if e.get("snapshot")), None)

    return await until(motion, 60, "a motion event with a snapshot")


async def test_thumbnails_are_recorded_once_per_token_and_camera_per_window(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        cam = await gw.add_camera(name="street", node=HOME, url=CLIP, analytics={"fps": 5})
        await gw.wait_state(cam["id"], "online")
        ev = await _first_motion_with_snapshot(gw, cam["id"])
        ops = [await new_token(gw, f"duty officer {i}", "operator", HOME) for i in (1, 2)]
        for op in ops:
            await _watch(gw, op["token"], cam["id"], ev)

        async def ten_entries():
            got = await audit(gw, TOKEN, "&action=camera.snapshot,snapshot.view,live.*")
            return got if len(got) >= 10 else None

        got = await until(ten_entries, 15, "the views to be recorded")
        await asyncio.sleep(0.5)  # nothing more comes
        got = await audit(gw, TOKEN, "&action=camera.snapshot,snapshot.view,live.*")
        # Per officer: one thumbnail entry for three fetches, each event snapshot opened, the live view
        # opened and closed.
        assert sorted((e["actor"]["id"], e["action"]) for e in got) == sorted(
            (op["id"], a) for op in ops
            for a in ("camera.snapshot", "snapshot.view", "snapshot.view", "live.view", "live.end"))
        for e in got:
            assert e["node"] == HOME and e["from"] == "127.0.0.1"
        thumb = next(e for e in got if e["action"] == "camera.snapshot")
        assert thumb["target"] == cam["id"]
        assert thumb["detail"] == {"width": 320, "camera_id": cam["id"], "window_s": 60.0}
        snap = next(e for e in got if e["action"] == "snapshot.view")
        assert snap["target"] == ev["id"] and snap["detail"]["camera_id"] == cam["id"]
        live = next(e for e in got if e["action"] == "live.view")
        assert live["target"] == cam["id"] and live["detail"] == {"fps": 2.0, "width": 960}
        end = next(e for e in got if e["action"] == "live.end" and e["actor"]["id"] == live["actor"]["id"])
        assert end["target"] == cam["id"] and 0 <= end["detail"]["seconds"] < 10
        assert gw.app[keys.AUDIT].views_coalesced == 4  # 2 thumbnail fetches per officer


async def test_a_zero_thumbnail_window_records_every_fetch(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45", access={"thumbnail_audit_window_s": 0}) as gw:
        cam = await gw.add_camera(name="street", node=HOME, url=CLIP, analytics={"fps": 5})
        await gw.wait_state(cam["id"], "online")
        ev = await _first_motion_with_snapshot(gw, cam["id"])
        await _watch(gw, TOKEN, cam["id"], ev)

        async def seven_entries():
            got = await audit(gw, TOKEN, "&action=camera.snapshot,snapshot.view,live.*")
            return got if len(got) >= 7 else None

        got = await until(seven_entries, 15, "every view to be recorded")
        assert sorted(e["action"] for e in got) == (["camera.snapshot"] * 3 + ["live.end", "live.view"]
                                                    + ["snapshot.view"] * 2)
