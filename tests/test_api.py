"""Camera catalog HTTP API against a real gateway, a real Redis and real video files.

What an administrator depends on: ids are generated in the GB/T 28181 form, listings filter by
node subtree and state and page without losing or repeating cameras, a change reaches the
running stream at once, a deleted camera's stream stops, bulk imports report every row, every
/api/v1 call needs the token, and camera passwords are never shown or logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from gateway import keys
from registry.ids import node_of_camera_id, validate_camera_id
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until
from tests.servers import free_port

CLIP = "file:moving_objects.mp4"  # 640x360, 15 fps, H.264
STATUS_KEYS = {"state", "fps_in", "fps_analyzed", "last_frame_at", "reconnects", "last_error",
               "width", "height", "codec"}



def assert_status_shape(view: dict) -> None:
    status = view["status"]
    missing = STATUS_KEYS - status.keys()
    assert not missing, f"status lacks {missing}: {status}"
    assert status["state"] in {"connecting", "online", "offline", "disabled"}


def demux_threads(camera_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"demux-{camera_id}" and t.is_alive()]


async def frames_analyzed(gw, cid: str) -> int:
    return (await gw.camera(cid))["status"]["frames_analyzed"]


async def analysed_rate(gw, cid: str, seconds: float) -> float:
    a = await frames_analyzed(gw, cid)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    b = await frames_analyzed(gw, cid)
    return (b - a) / (time.monotonic() - t0)


# ---- create, read -------------------------------------------------------------------------------
async def test_create_generates_gbt28181_id_and_every_read_has_status(redis_url, make_gateway):
    # A region tier: its admin may register cameras in any county and city of it.
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        status, created = await gw.request("POST", "/api/v1/cameras", json={
            "name": "Minzu Avenue east", "node": "450102", "url": CLIP, "analytics": {"fps": 5}})
        assert status == 201, created
        cid = created["id"]
        assert validate_camera_id(cid) == cid and len(cid) == 20 and cid.isdigit()
        assert cid[:8] == "45010200", "centre code must encode the county 450102"
        assert cid[10:13] in {"131", "132"}
        assert node_of_camera_id(cid) == "450102"
        assert created["node"] == "450102" and created["url"] == CLIP
        assert_status_shape(created)

        # A township camera shares its county's centre code; a padded city code is normalised.
        _, town = await gw.request("POST", "/api/v1/cameras", json={
            "name": "village gate", "node": "450102001", "url": "rtsp://127.0.0.1:1/x", "enabled": False})
        assert town["node"] == "450102001" and town["id"][:8] == "45010200" and town["id"] != cid
        status, city = await gw.request("POST", "/api/v1/cameras", json={
            "name": "city hall", "node": "450100", "url": "rtsp://127.0.0.1:1/y", "enabled": False})
        assert status == 201, city
        assert city["node"] == "4501" and city["id"][:8] == "45010000"
        assert node_of_camera_id(city["id"]) == "4501"

        # An id given by the administrator is kept, and cannot be registered twice.
        given = "45010200001310000777"
        status, body = await gw.request("POST", "/api/v1/cameras", json={
            "id": given, "name": "given id", "node": "450102", "url": "rtsp://127.0.0.1:1/z", "enabled": False})
        assert status == 201 and body["id"] == given, body
        status, body = await gw.request("POST", "/api/v1/cameras", json={
            "id": given, "name": "again", "node": "450102", "url": "rtsp://127.0.0.1:1/z", "enabled": False})
        assert status == 409, body
        assert given in body["error"]["message"]

        # GET one: the stored record, with the live status of the running stream.
        cam = await gw.wait_state(cid, "online", timeout=15)
        assert cam["name"] == "Minzu Avenue east" and cam["analytics"]["fps"] == 5
        await asyncio.sleep(1.5)  # let the rate windows fill
        st = (await gw.camera(cid))["status"]
        assert_status_shape({"status": st})
        assert (st["width"], st["height"], st["codec"]) == (640, 360, "h264")
        assert 8 <= st["fps_in"] <= 20, st  # the clip is 15 fps, paced in real time
        assert 2 <= st["fps_analyzed"] <= 7, st
        assert st["reconnects"] == 0 and st["last_error"] is None
        last = datetime.fromisoformat(st["last_frame_at"].replace("Z", "+00:00")).timestamp()
        assert abs(time.time() - last) < 3, st["last_frame_at"]

        # Every read carries the status: list entries too.
        _, listing = await gw.request("GET", "/api/v1/cameras")
        assert listing["total"] == 4 and len(listing["cameras"]) == 4
        for view in listing["cameras"]:
            assert_status_shape(view)
        by_id = {v["id"]: v for v in listing["cameras"]}
        assert by_id[cid]["status"]["state"] == "online"
        assert by_id[given]["status"]["state"] == "disabled"


# ---- list: node subtree, state, cursor ------------------------------------------------------------
async def test_list_filters_by_subtree_and_state_and_pages_with_cursor(redis_url, make_gateway):
    nodes = ["450102", "450102001", "450103", "4502"]
    closed = free_port()  # nothing listens: enabled cameras go offline at once
    async with make_gateway(redis_url, node="45") as gw:
        expected: dict[str, dict[str, Any]] = {}
        for i in range(25):
            enabled = i % 3 == 0
            cam = await gw.add_camera(name=f"cam {i:02d}", node=nodes[i % 4], enabled=enabled,
                                      url=f"rtsp://127.0.0.1:{closed}/cam{i}")
            expected[cam["id"]] = {"node": nodes[i % 4], "enabled": enabled}
        assert len(expected) == 25

        async def pages(query: str, limit: int) -> list[list[dict]]:
            out, cursor = [], None
            for _ in range(50):
                q = f"{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
                status, body = await gw.request("GET", f"/api/v1/cameras?{q}")
                assert status == 200, body
                out.append(body["cameras"])
                for view in body["cameras"]:
                    assert_status_shape(view)
                cursor = body["next_cursor"]
                if not cursor:
                    return out
            raise AssertionError("pagination never ended")

        # 25 cameras, 10 a page: 10, 10, 5, each camera exactly once.
        all_pages = await pages("", 10)
        assert [len(p) for p in all_pages] == [10, 10, 5]
        ids = [v["id"] for p in all_pages for v in p]
        assert len(ids) == len(set(ids)) == 25 and set(ids) == set(expected)
        status, first = await gw.request("GET", "/api/v1/cameras?limit=10")
        assert first["total"] == 25 and first["next_cursor"]

        # Node filter = the subtree; the padded national form means the same node.
        for node, members in {"450102": {"450102", "450102001"}, "450102001": {"450102001"},
                              "4501": {"450102", "450102001", "450103"}, "450100": {"450102", "450102001", "450103"},
                              "4502": {"4502"}, "45": set(nodes), "450104": set()}.items():
            want = {cid for cid, e in expected.items() if e["node"] in members}
            got = [v for p in await pages(f"node={node}", 4) for v in p]
            assert {v["id"] for v in got} == want and len(got) == len(want), node
            status, body = await gw.request("GET", f"/api/v1/cameras?node={node}&limit=1")
            assert body["total"] == len(want), node

        # State filter, with small pages: every matching camera once, no other.
        disabled = {cid for cid, e in expected.items() if not e["enabled"]}
        enabled = set(expected) - disabled

        async def all_offline():
            _, body = await gw.request("GET", "/api/v1/cameras?state=offline&limit=1000")
            return {v["id"] for v in body["cameras"]} == enabled

        await until(all_offline, 15, "enabled cameras on a closed port to go offline")
        for state, want, limit in (("disabled", disabled, 3), ("disabled", disabled, 7),
                                   ("offline", enabled, 2), ("online", set(), 5)):
            got = [v for p in await pages(f"state={state}", limit) for v in p]
            got_ids = [v["id"] for v in got]
            assert len(got_ids) == len(set(got_ids)), f"state={state} limit={limit} repeated a camera"
            assert set(got_ids) == want, f"state={state} limit={limit}: missing {want - set(got_ids)}"
            assert all(v["status"]["state"] == state for v in got)
        # Both filters at once.
        got = [v for p in await pages("node=450102&state=disabled", 2) for v in p]
        assert {v["id"] for v in got} == {c for c in disabled if expected[c]["node"] in ("450102", "450102001")}

        # A cursor from one listing is refused by another.
        _, body = await gw.request("GET", "/api/v1/cameras?node=4502&limit=1")
        status, err = await gw.request("GET", f"/api/v1/cameras?node=450102&cursor={body['next_cursor']}")
        assert status == 400 and "cursor" in err["error"]["message"]


# ---- PATCH: live changes ----------------------------------------------------------------------------
async def test_patch_changes_the_running_stream_without_restart(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        cam = await gw.add_camera(name="square", node="450102", url=CLIP, analytics={"fps": 5})
        cid = cam["id"]
        async with gw.subscribe(camera=cid, type="status") as sub:
            await gw.wait_state(cid, "online", timeout=15)
            before = await analysed_rate(gw, cid, 2.0)
            assert 3.5 <= before <= 6.5, before

            # analytics.fps: the decode thread samples at the new rate at once, same connection.
            status, patched = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"analytics": {"fps": 1}})
            assert status == 200, patched
            assert patched["analytics"]["fps"] == 1 and patched["analytics"]["min_score"] == 0.4
            assert patched["status"]["state"] == "online"
            assert_status_shape(patched)
            await asyncio.sleep(0.3)
            after = await analysed_rate(gw, cid, 3.0)
            assert after <= 1.6, f"fps 1 still analyses {after:.2f} frames/s"
            assert after >= 0.3, f"fps 1 analyses nothing ({after:.2f} frames/s)"

            async def slow_reported():
                st = (await gw.camera(cid))["status"]
                return st if st["fps_analyzed"] <= 1.5 else None

            st = await until(slow_reported, 8, "fps_analyzed to reflect analytics.fps=1")
            assert st["state"] == "online" and st["reconnects"] == 0, "a PATCH of fps must not reconnect"
            assert [e["state"] for e in sub.events] == ["online"], sub.events

            # A plain field: stored and shown at once.
            status, patched = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"name": "renamed"})
            assert status == 200 and patched["name"] == "renamed" and patched["analytics"]["fps"] == 1
            assert (await gw.camera(cid))["name"] == "renamed"

            # enabled=false: stream stopped, state disabled, a status event says so.
            status, patched = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"enabled": False})
            assert status == 200, patched
            assert patched["enabled"] is False and patched["status"]["state"] == "disabled"
            await sub.wait_for(lambda evs: any(e["state"] == "disabled" for e in evs), timeout=10,
                               what="a status event with state disabled")
            assert (await gw.camera(cid))["status"]["state"] == "disabled"
            _, health = await gw.request("GET", "/healthz")
            assert health["cameras_running"] == 0
            await until(lambda: asyncio.sleep(0, result=not demux_threads(cid)), 5, "demux thread to end")

            # enabled=true again: back online, announced too.
            status, patched = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"enabled": True})
            assert status == 200 and patched["enabled"] is True
            await gw.wait_state(cid, "online", timeout=15)
            await sub.wait_for(lambda evs: [e["state"] for e in evs][-1:] == ["online"] and len(evs) >= 3,
                               timeout=10, what="a status event online after re-enabling")
            states = [e["state"] for e in sub.events]
            assert states[:2] == ["online", "disabled"] and states[-1] == "online", states
            assert (await gw.camera(cid))["analytics"]["fps"] == 1, "re-enabling kept the settings"

            # Stored, not just running: the catalog record has every change.
            store = gw.app[keys.STORE]
            rec = await store.get(cid)
            assert rec.name == "renamed" and rec.enabled and rec.analytics.fps == 1

        # A PATCH that fails validation changes nothing.
        status, err = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"name": "x", "analytics": {"fps": 99}})
        assert status == 422 and "analytics.fps" in err["error"]["message"]
        assert (await gw.camera(cid))["name"] == "renamed"


# ---- DELETE ------------------------------------------------------------------------------------------
async def test_delete_removes_the_camera_and_stops_its_worker(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        keep = await gw.add_camera(name="keep", node="450102", url=CLIP, analytics={"fps": 5})
        gone = await gw.add_camera(name="gone", node="450102", url="file:day_night.mp4", analytics={"fps": 5})
        await gw.wait_state(gone["id"], "online", timeout=15)
        await gw.wait_state(keep["id"], "online", timeout=15)
        assert demux_threads(gone["id"])

        status, body = await gw.request("DELETE", f"/api/v1/cameras/{gone['id']}")
        assert status == 200 and body == {"deleted": gone["id"]}
        for method in ("GET", "PATCH", "DELETE"):
            kw = {"json": {"name": "x"}} if method == "PATCH" else {}
            status, err = await gw.request(method, f"/api/v1/cameras/{gone['id']}", **kw)
            assert status == 404, (method, err)
            assert gone["id"] in err["error"]["message"]
        assert gone["id"] not in gw.app[keys.SUPERVISOR].workers
        await until(lambda: asyncio.sleep(0, result=not demux_threads(gone["id"])), 5, "demux thread to end")
        _, health = await gw.request("GET", "/healthz")
        assert health["cameras_running"] == 1
        _, listing = await gw.request("GET", "/api/v1/cameras")
        assert [v["id"] for v in listing["cameras"]] == [keep["id"]] and listing["total"] == 1
        # The other camera did not notice.
        assert (await gw.camera(keep["id"]))["status"]["state"] == "online"


# ---- bulk import ---------------------------------------------------------------------------------------
async def test_bulk_import_json_and_csv_report_every_row(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="45") as gw:
        rows = [
            {"name": "north gate", "node": "450102", "url": "rtsp://127.0.0.1/ch1", "enabled": False},
            {"id": "45010200001320000500", "name": "south gate", "node": "450102001",
             "url": "rtsp://127.0.0.1/ch1", "enabled": False},
            {"name": "bad node", "node": "12345", "url": "rtsp://127.0.0.1/ch1"},
            {"name": "bad scheme", "node": "450102", "url": "http://127.0.0.1/ch1"},
            {"name": "unknown field", "node": "450102", "url": "rtsp://127.0.0.1/ch1", "colour": "red"},
            {"id": "45010200001320000500", "name": "duplicate", "node": "450102", "url": "rtsp://127.0.0.1/ch1"},
            {"name": "outside media", "node": "450102", "url": "file:../../etc/passwd"},
            {"name": "last good", "node": "4501", "url": CLIP, "analytics": {"fps": 2}},
        ]
        status, res = await gw.request("POST", "/api/v1/cameras/bulk", json=rows)
        assert status == 200, res
        assert (res["rows"], res["created"], res["failed"]) == (8, 3, 5)
        results = res["results"]
        assert [r["row"] for r in results] == list(range(1, 9))
        assert [r["ok"] for r in results] == [True, True, False, False, False, False, False, True]
        assert results[1]["id"] == "45010200001320000500"
        for r in results:
            if r["ok"]:
                assert r["status"] == 201 and validate_camera_id(r["id"])
            else:
                assert 400 <= r["status"] < 500 and r["error"], r
        assert "node" in results[2]["error"]
        assert "scheme" in results[3]["error"] and "url" in results[3]["error"]
        assert "colour" in results[4]["error"]
        assert results[5]["status"] == 409
        assert results[6]["status"] == 422 and "outside" in results[6]["error"]
        for r in results:
            if r["ok"]:
                cam = await gw.camera(r["id"])
                assert_status_shape(cam)
        assert (await gw.camera(results[7]["id"]))["node"] == "4501"
        await gw.wait_state(results[7]["id"], "online", timeout=15)

        csv_body = (
            "name,node,url,enabled,fps,labels,lat,lon\n"
            "csv one,450103,rtsp://127.0.0.1/a,false,2,person;car,22.81,108.32\n"
            "csv bad node,45x,rtsp://127.0.0.1/a,false,,,,\n"
            "csv bad fps,450103,rtsp://127.0.0.1/a,false,fast,,,\n"
            "\n"
            "csv two,450103001,rtsp://127.0.0.1/a,no,,,,\n"
            "csv bad lat,450103,rtsp://127.0.0.1/a,false,,,95,0\n"
        )
        status, res = await gw.request("POST", "/api/v1/cameras/bulk", data=csv_body.encode(),
                                       headers={"Content-Type": "text/csv"})
        assert status == 200, res
        assert (res["rows"], res["created"], res["failed"]) == (5, 2, 3)
        ok = {r["row"]: r for r in res["results"]}
        assert [ok[n]["ok"] for n in range(1, 6)] == [True, False, False, True, False]
        assert "node" in ok[2]["error"] and "fps" in ok[3]["error"] and "lat" in ok[5]["error"]
        one = await gw.camera(ok[1]["id"])
        assert one["analytics"]["fps"] == 2 and one["analytics"]["labels"] == ["person", "car"]
        assert one["location"] == {"lat": 22.81, "lon": 108.32} and one["enabled"] is False
        assert (await gw.camera(ok[4]["id"]))["node"] == "450103001"

        _, listing = await gw.request("GET", "/api/v1/cameras?limit=100")
        assert listing["total"] == 5

        # A body that is not rows at all is one clear error, and nothing is half-imported.
        for body, ctype in ((b'{"name": "x"}', "application/json"), (b"[1, 2]", "application/json"),
                            (b"name,node,colour\nx,450102,red\n", "text/csv")):
            status, err = await gw.request("POST", "/api/v1/cameras/bulk", data=body, headers={"Content-Type": ctype})
            assert status == 400, (body, err)
            assert err["error"]["message"]
        _, listing = await gw.request("GET", "/api/v1/cameras?limit=100")
        assert listing["total"] == 5


# ---- auth ------------------------------------------------------------------------------------------------
async def test_every_api_endpoint_needs_the_bearer_token(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        cam = await gw.add_camera(name="secret cam", node="450102", url="rtsp://127.0.0.1:1/x", enabled=False)
        cid = cam["id"]
        endpoints = [
            ("GET", "/api/v1/cameras", None), ("POST", "/api/v1/cameras", {"name": "x", "node": "450102",
                                                                          "url": "rtsp://h/x"}),
            ("GET", f"/api/v1/cameras/{cid}", None), ("PATCH", f"/api/v1/cameras/{cid}", {"name": "hacked"}),
            ("DELETE", f"/api/v1/cameras/{cid}", None),
            ("POST", "/api/v1/cameras/bulk", [{"name": "x", "node": "450102", "url": "rtsp://h/x"}]),
            ("GET", "/api/v1/events", None), ("GET", "/api/v1/events/stream", None),
            ("GET", "/api/v1/events/ws", None), ("GET", "/api/v1/events/450102-1-0", None),
            ("GET", "/api/v1/events/450102-1-0/snapshot.jpg", None), ("GET", "/api/v1/nonexistent", None),
            ("GET", "/api/v1/tokens", None), ("POST", "/api/v1/tokens", {"name": "x", "role": "admin"}),
            ("DELETE", "/api/v1/tokens/0123456789abcdef", None), ("GET", "/api/v1/audit", None),
            ("GET", "/api/v1/whoami", None),
        ]
        bad_headers = [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Bearer "},
                       {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
                       {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer se_" + "A" * 43}]
        async with aiohttp.ClientSession() as anon:
            for method, path, body in endpoints:
                for headers in bad_headers:
                    async with anon.request(method, gw.url(path), json=body, headers=headers) as r:
                        raw = await r.read()
                        assert r.status == 401, (method, path, headers, raw)
                        err = json.loads(raw)["error"]
                        assert err["status"] == 401 and "token" in err["message"]
                        assert b"secret cam" not in raw
            # A token in the query string is honoured only where browsers need it (event GETs) and only if right.
            async with anon.get(gw.url(f"/api/v1/cameras?token={TOKEN}")) as r:
                assert r.status == 401
            async with anon.get(gw.url("/api/v1/events?token=wrong")) as r:
                assert r.status == 401
            async with anon.get(gw.url(f"/api/v1/events?token={TOKEN}")) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await anon.ws_connect(gw.url("/api/v1/events/ws?token=wrong"))
            assert exc.value.status == 401
            async with anon.get(gw.url("/healthz")) as r:  # liveness stays open, and says nothing of cameras
                assert r.status == 200
                assert "secret cam" not in await r.text()

        # Nothing the refused calls asked for happened.
        cam_now = await gw.camera(cid)
        assert cam_now["name"] == "secret cam"
        _, listing = await gw.request("GET", "/api/v1/cameras")
        assert listing["total"] == 1
        _, tokens = await gw.request("GET", "/api/v1/tokens")
        assert tokens["tokens"] == []


# ---- credentials never shown, never logged ------------------------------------------------------------
async def test_camera_passwords_are_never_returned_or_logged(redis_url, make_gateway, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    secrets = ["S3cret-Pw.main", "Tok3n-in-query", "An0ther-Pw.sub", "Bulk-Pw-json", "Bulk-Pw-csv",
               "Patch-Pw-new", "Bad-Pw-row"]
    closed = free_port()
    replies: list[bytes] = []
    events_seen: list[dict] = []

    async with make_gateway(redis_url) as gw:
        async def call(method: str, path: str, **kw) -> tuple[int, Any]:
            async with gw.session.request(method, gw.url(path), **kw) as r:
                raw = await r.read()
                replies.append(raw)
                return r.status, json.loads(raw)

        async with gw.subscribe(type="status") as sub:
            main = f"rtsp://admin:{secrets[0]}@127.0.0.1:{closed}/live?token={secrets[1]}&channel=1"
            sub_url = f"rtsps://viewer:{secrets[2]}@127.0.0.1:{closed}/sub"
            status, cam = await call("POST", "/api/v1/cameras", json={
                "name": "gate", "node": "450102", "url": main, "substream_url": sub_url})
            assert status == 201, cam
            cid = cam["id"]
            assert cam["url"] == f"rtsp://admin:***@127.0.0.1:{closed}/live?token=***&channel=1"
            assert cam["substream_url"] == f"rtsps://viewer:***@127.0.0.1:{closed}/sub"

            # It cannot connect: the failure is reported without the password.
            await gw.wait_state(cid, "offline", timeout=15)
            await sub.wait_for(lambda evs: any(e["camera_id"] == cid and e["state"] == "offline" for e in evs),
                               timeout=10, what="offline status event")
            status, view = await call("GET", f"/api/v1/cameras/{cid}")
            assert view["status"]["last_error"], view["status"]
            assert view["url"].startswith("rtsp://admin:***@")

            status, listing = await call("GET", "/api/v1/cameras")
            assert listing["cameras"][0]["url"] == cam["url"]
            status, patched = await call("PATCH", f"/api/v1/cameras/{cid}", json={"name": "gate 2"})
            assert patched["url"] == cam["url"]
            new_url = f"rtsp://root:{secrets[5]}@127.0.0.1:{closed}/other"
            status, patched = await call("PATCH", f"/api/v1/cameras/{cid}", json={"url": new_url})
            assert status == 200 and patched["url"] == f"rtsp://root:***@127.0.0.1:{closed}/other"
            await gw.wait_state(cid, "offline", timeout=15)

            # Errors that concern a URL with a password.
            status, err = await call("POST", "/api/v1/cameras", json={
                "name": "bad port", "node": "450102", "url": f"rtsp://admin:{secrets[6]}@127.0.0.1:99999/x"})
            assert status == 422, err
            status, err = await call("POST", "/api/v1/cameras", json={
                "id": cid, "name": "dup", "node": "450102", "url": f"rtsp://admin:{secrets[6]}@h/x"})
            assert status == 409, err
            status, err = await call("POST", "/api/v1/cameras", json={
                "name": "bad node", "node": "4x", "url": f"rtsp://admin:{secrets[6]}@h/x"})
            assert status == 422, err
            status, err = await call("PATCH", f"/api/v1/cameras/{cid}", json={
                "url": f"rtsp://admin:{secrets[6]}@h name/x"})
            assert status == 422, err

            # Bulk: results and errors, JSON and CSV.
            status, res = await call("POST", "/api/v1/cameras/bulk", json=[
                {"name": "b1", "node": "450102", "url": f"rtsp://u:{secrets[3]}@127.0.0.1:{closed}/b1", "enabled": False},
                {"name": "b2", "node": "4", "url": f"rtsp://u:{secrets[6]}@127.0.0.1:{closed}/b2"},
            ])
            assert [r["ok"] for r in res["results"]] == [True, False], res
            csv_body = (f"name,node,url,enabled\n"
                        f"c1,450102,rtsp://u:{secrets[4]}@127.0.0.1:{closed}/c1,false\n"
                        f"c2,450102,rtsp://u:{secrets[6]}@127.0.0.1:99999/c2,false\n")
            status, res = await call("POST", "/api/v1/cameras/bulk", data=csv_body.encode(),
                                     headers={"Content-Type": "text/csv"})
            assert [r["ok"] for r in res["results"]] == [True, False], res
            status, listing = await call("GET", "/api/v1/cameras")
            assert listing["total"] == 3
            for v in listing["cameras"]:
                assert ":***@" in v["url"], v["url"]

            status, history = await call("GET", "/api/v1/events?limit=1000")
            events_seen = list(sub.events) + history["events"]
            assert any(e.get("reason") for e in events_seen)

        # Stop the gateway inside the captured scenario: shutdown logs are covered too.

    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    out, err = capfd.readouterr()
    assert len(caplog.records) > 10, "the scenario logged nothing: the check below would prove nothing"
    for secret in secrets:
        for i, raw in enumerate(replies):
            assert secret.encode() not in raw, f"reply {i} shows a password: {raw[:300]!r}"
        assert secret not in logged, f"password {secret} written to the log"
        assert secret not in out + err, f"password {secret} printed to stdout/stderr"
        for e in events_seen:
            assert secret not in json.dumps(e), f"status event shows a password: {e}"
