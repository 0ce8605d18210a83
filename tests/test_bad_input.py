"""Untrusted input and broken surroundings: clear 4xx answers or status events, never a 500,
and the gateway keeps serving.

Real gateway, real Redis (stopped and restarted for the outage test), real broken video files
and a real TCP server that never speaks RTSP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway import keys
from sample_streams import CLIPS_DIR
from sample_streams.generate import corrupt_copy, garbage_file, make_clip
from tests.gateway_fixtures import until
from tests.servers import free_port

BASE = {"name": "cam", "node": "450102"}
JSON = {"Content-Type": "application/json"}



def assert_error(status: int, body: Any, expected: int, *words: str) -> str:
    """A JSON error with the expected status whose message names each of `words`."""
    assert status == expected, f"expected {expected}, got {status}: {body!r}"[:600]
    assert isinstance(body, dict) and "error" in body, body
    err = body["error"]
    assert err["status"] == expected
    msg = err["message"]
    assert isinstance(msg, str) and msg.strip()
    for w in words:
        assert w.lower() in msg.lower(), f"{w!r} not in error message {msg!r}"
    return msg


def readable(reason: str | None) -> bool:
    """A one-line, human-sized explanation: not empty, no traceback, no Python repr."""
    return (isinstance(reason, str) and 3 <= len(reason) <= 300 and "\n" not in reason
            and "Traceback" not in reason and not reason.startswith("<"))


async def camera_count(gw) -> int:
    status, body = await gw.request("GET", "/api/v1/cameras?limit=1")
    assert status == 200, body
    return body["total"]


async def still_serving(gw, media_url: str | None = None) -> None:
    status, health = await gw.request("GET", "/healthz")
    assert status == 200 and health["status"] == "ok", health
    status, body = await gw.request("POST", "/api/v1/cameras", json={
        **BASE, "name": "after the storm", "url": media_url or "rtsp://127.0.0.1:1/x", "enabled": False})
    assert status == 201, body
    status, body = await gw.request("DELETE", f"/api/v1/cameras/{body['id']}")
    assert status == 200, body


# ---- bodies -----------------------------------------------------------------------------------------
async def test_malformed_bodies_get_a_clear_4xx_and_change_nothing(redis_url, make_gateway, tmp_path):
    (tmp_path / "ok.mp4").write_bytes(b"")  # file sources need a media folder; content not read here
    async with make_gateway(redis_url, media_dirs=[tmp_path]) as gw:
        cam = await gw.add_camera(**BASE, url="rtsp://127.0.0.1:1/x", enabled=False)
        one = f"/api/v1/cameras/{cam['id']}"

        async def huge_chunks() -> AsyncIterator[bytes]:  # no Content-Length: the server must still stop it
            for _ in range(10):
                yield b" " * (1 << 20)

        cases: list[tuple[str, str, dict, int, tuple[str, ...]]] = [
            ("POST", "/api/v1/cameras", {"data": b"{bad", "headers": JSON}, 400, ("malformed JSON",)),
            ("POST", "/api/v1/cameras", {"data": b"", "headers": JSON}, 400, ("JSON",)),
            ("POST", "/api/v1/cameras", {"data": b"\xff\xfe\x00{", "headers": JSON}, 400, ("JSON",)),
            ("POST", "/api/v1/cameras", {"data": b"[" * 100_000 + b"]" * 100_000, "headers": JSON}, 400, ("JSON",)),
            ("POST", "/api/v1/cameras", {"json": [BASE]}, 400, ("object",)),
            ("POST", "/api/v1/cameras", {"json": "rtsp://h/x"}, 400, ("object",)),
            ("POST", "/api/v1/cameras", {"json": 42}, 400, ("object",)),
            ("POST", "/api/v1/cameras", {"data": b"null", "headers": JSON}, 400, ("object",)),
            ("PATCH", one, {"data": b'{"name": ', "headers": JSON}, 400, ("malformed JSON",)),
            ("PATCH", one, {"json": [{"name": "x"}]}, 400, ("object",)),
            ("PATCH", one, {"json": "x"}, 400, ("object",)),
            # Unknown fields are named, also nested ones.
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "colour": "red"}}, 422, ("colour",)),
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "analytics": {"fsp": 5}}}, 422,
             ("analytics.fsp",)),
            ("PATCH", one, {"json": {"nmae": "typo"}}, 422, ("nmae",)),
            ("PATCH", one, {"json": {"analytics": {"labels": ["car"], "speed": 1}}}, 422, ("analytics.speed",)),
            # Wrong types and ranges are named by their path.
            ("POST", "/api/v1/cameras", {"json": {"name": "x", "node": "450102"}}, 422, ("url",)),
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "name": 5}}, 422, ("name",)),
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "enabled": "maybe"}}, 422, ("enabled",)),
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "analytics": {"fps": 0}}}, 422,
             ("analytics.fps",)),
            ("POST", "/api/v1/cameras", {"data": b'{"name":"x","node":"450102","url":"rtsp://h/x",'
                                                 b'"analytics":{"fps":NaN}}', "headers": JSON}, 422, ("analytics.fps",)),
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "location": {"lat": 200, "lon": 0}}},
             422, ("location.lat",)),
            ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "rtsp://h/x", "id": "12345"}}, 422, ("id",)),
            ("PATCH", one, {"json": {"name": None}}, 422, ("name",)),
            ("PATCH", one, {"json": {"analytics": {"min_score": 5}}}, 422, ("analytics.min_score",)),
            # Too big: refused before it is read into memory.
            ("POST", "/api/v1/cameras", {"data": b"{" + b" " * (2 << 20) + b"}", "headers": JSON}, 413, ()),
            ("PATCH", one, {"data": b"{" + b" " * (2 << 20) + b"}", "headers": JSON}, 413, ()),
            ("POST", "/api/v1/cameras", {"data": huge_chunks(), "headers": JSON}, 413, ()),
            ("POST", "/api/v1/cameras/bulk", {"data": b"[" + b" " * (9 << 20) + b"]", "headers": JSON}, 413, ()),
            ("POST", "/api/v1/cameras/bulk", {"data": b"name\n" + b"x\n" * (5 << 20), "headers":
                                              {"Content-Type": "text/csv"}}, 413, ()),
            # Bulk bodies that are not rows at all.
            ("POST", "/api/v1/cameras/bulk", {"json": {"name": "x"}}, 400, ("array",)),
            ("POST", "/api/v1/cameras/bulk", {"json": [1, 2]}, 400, ("row 1",)),
            ("POST", "/api/v1/cameras/bulk", {"data": b"[" * 100_000, "headers": JSON}, 400, ()),
            ("POST", "/api/v1/cameras/bulk", {"data": b"\xff\xfe,\x00", "headers": {"Content-Type": "text/csv"}},
             400, ()),
            ("POST", "/api/v1/cameras/bulk", {"data": b"name,node,password\n", "headers": {"Content-Type": "text/csv"}},
             400, ("password",)),
        ]
        for method, path, kw, expected, words in cases:
            status, body = await gw.request(method, path, **kw)
            assert status < 500, (method, path, status, body)
            assert_error(status, body, expected, *words)
            if expected == 422 and "json" in kw and isinstance(kw["json"], dict) and "fields" in body["error"]:
                assert all(f["field"] and f["message"] for f in body["error"]["fields"])

        # None of it was half-written: one camera, unchanged.
        assert await camera_count(gw) == 1
        now = await gw.camera(cam["id"])
        assert now["name"] == "cam" and now["analytics"] == cam["analytics"]
        await still_serving(gw)


# ---- ids and node codes -------------------------------------------------------------------------------
async def test_bad_camera_ids_are_400_and_unknown_ids_404(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        for bad in ("abc", "1234567890123456789", "123456789012345678901", "4501020000132000000x",
                    "45010200001110000001", "00010200001320000001", "４５０１０２０００１３２０００００１"):
            for method in ("GET", "PATCH", "DELETE"):
                kw = {"json": {"name": "x"}} if method == "PATCH" else {}
                status, body = await gw.request(method, f"/api/v1/cameras/{bad}", **kw)
                assert_error(status, body, 400, "camera id")
        unknown = "45010200001320009999"
        for method in ("GET", "PATCH", "DELETE"):
            kw = {"json": {"name": "x"}} if method == "PATCH" else {}
            status, body = await gw.request(method, f"/api/v1/cameras/{unknown}", **kw)
            assert_error(status, body, 404, unknown)
        # A PATCH to an unknown camera did not create it.
        assert await camera_count(gw) == 0
        await still_serving(gw)


async def test_bad_node_codes_are_refused_everywhere(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        cam = await gw.add_camera(**BASE, url="rtsp://127.0.0.1:1/x", enabled=False)
        for bad in ("12345", "abc", "00", "", "4501020010011", "45-01", "0045"):
            status, body = await gw.request("POST", "/api/v1/cameras", json={**BASE, "node": bad, "url": "rtsp://h/x"})
            assert_error(status, body, 422, "node")
            status, body = await gw.request("PATCH", f"/api/v1/cameras/{cam['id']}", json={"node": bad})
            assert_error(status, body, 422, "node")
            if bad:
                status, body = await gw.request("GET", f"/api/v1/cameras?node={bad}")
                assert_error(status, body, 400, "node")
                status, body = await gw.request("GET", f"/api/v1/events?node={bad}")
                assert_error(status, body, 400, "node")
        assert (await gw.camera(cam["id"]))["node"] == "450102"
        assert await camera_count(gw) == 1
        await still_serving(gw)


# ---- sources ------------------------------------------------------------------------------------------
async def test_file_sources_outside_the_media_folders_are_refused(redis_url, make_gateway, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "sub").mkdir()
    shutil.copy(CLIPS_DIR / "moving_objects.mp4", media / "inside.mp4")
    secret = tmp_path / "private" / "elsewhere.mp4"
    secret.parent.mkdir()
    shutil.copy(CLIPS_DIR / "moving_objects.mp4", secret)
    os.symlink(secret, media / "link.mp4")  # inside the folder by name, outside by target
    os.symlink(secret.parent, media / "linkdir")
    async with make_gateway(redis_url, media_dirs=[media]) as gw:
        cam = await gw.add_camera(**BASE, url="file:inside.mp4", enabled=False)  # the control: allowed
        refused = [
            "file:../private/elsewhere.mp4", "file:sub/../../private/elsewhere.mp4", f"file:{secret}",
            f"file://{secret}", f"file:{media}/../private/elsewhere.mp4", "file:/etc/passwd",
            "file:link.mp4", "file:linkdir/elsewhere.mp4", "file:%2e%2e/private/elsewhere.mp4",
            "file://otherhost/share/x.mp4", "file:sub", "file:missing.mp4", "file:",
        ]
        for url in refused:
            status, body = await gw.request("POST", "/api/v1/cameras", json={**BASE, "url": url})
            msg = assert_error(status, body, 422, "url")
            assert "Traceback" not in msg
            status, body = await gw.request("POST", "/api/v1/cameras", json={
                **BASE, "url": "file:inside.mp4", "substream_url": url})
            assert_error(status, body, 422, "substream_url")
            status, body = await gw.request("PATCH", f"/api/v1/cameras/{cam['id']}", json={"url": url})
            assert_error(status, body, 422, "url")
        # The reason says why; it does not reveal whether the outside file exists.
        _, body = await gw.request("POST", "/api/v1/cameras", json={**BASE, "url": f"file:{secret}"})
        _, body2 = await gw.request("POST", "/api/v1/cameras", json={**BASE, "url": f"file:{secret}.nope"})
        assert "outside" in body["error"]["message"] and "outside" in body2["error"]["message"]
        assert await camera_count(gw) == 1
        assert (await gw.camera(cam["id"]))["url"] == "file:inside.mp4"
        await still_serving(gw, "file:inside.mp4")


async def test_unknown_url_schemes_are_refused(redis_url, make_gateway, tmp_path):
    async with make_gateway(redis_url, media_dirs=[tmp_path]) as gw:
        for url in ("http://127.0.0.1/stream", "https://127.0.0.1/x", "rtmp://127.0.0.1/live", "javascript:alert(1)",
                    "ftp://127.0.0.1/a.mp4", "data:video/mp4;base64,AAAA", "camera1", "rtsp:/127.0.0.1/x",
                    "rtsp://", "rtsp://127.0.0.1:0/x", "rtsp://127.0.0.1:70000/x", "rtsp://bad host/x", ""):
            status, body = await gw.request("POST", "/api/v1/cameras", json={**BASE, "url": url})
            assert_error(status, body, 422, "url")
        status, body = await gw.request("POST", "/api/v1/cameras", json={**BASE, "url": "rtmp://127.0.0.1/live"})
        assert "rtmp" in body["error"]["message"] and "rtsp" in body["error"]["message"]
        assert await camera_count(gw) == 0
        await still_serving(gw)


# ---- event filters -------------------------------------------------------------------------------------
async def test_bad_event_filters_are_400_on_every_transport(redis_url, make_gateway):
    async with make_gateway(redis_url) as gw:
        bad = {"type=bogus": "type", "type=status,bogus": "type", "min_score=2": "min_score",
               "min_score=-0.1": "min_score", "min_score=abc": "min_score", "min_score=nan": "min_score",
               "since=garbage": "since", "since=450102-1": "since", "node=12345": "node",
               "camera=abc": "camera"}
        history_only = {"before=garbage": "before", "limit=0": "limit", "limit=abc": "limit",
                        "limit=100000": "limit"}
        for q, word in {**bad, **history_only}.items():
            status, body = await gw.request("GET", f"/api/v1/events?{q}")
            assert_error(status, body, 400, word)
        for q, word in bad.items():
            status, body = await gw.request("GET", f"/api/v1/events/stream?{q}")
            assert_error(status, body, 400, word)
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await gw.session.ws_connect(gw.url(f"/api/v1/events/ws?{q}"))
            assert exc.value.status == 400, q
        status, body = await gw.request("GET", "/api/v1/events/stream", headers={"Last-Event-ID": "junk"})
        assert_error(status, body, 400, "since")
        for path in ("/api/v1/events/garbage", "/api/v1/events/garbage/snapshot.jpg"):
            status, body = await gw.request("GET", path)
            assert_error(status, body, 400, "event id")
        status, body = await gw.request("GET", "/api/v1/events/450102-1-0")
        assert_error(status, body, 404)
        # Good filters still work.
        status, body = await gw.request("GET", "/api/v1/events?type=status,motion&min_score=0.5&node=4501&limit=5")
        assert status == 200 and body["events"] == []
        await still_serving(gw)


# ---- broken streams ------------------------------------------------------------------------------------
async def test_broken_sources_go_offline_with_a_reason_and_others_keep_running(redis_url, make_gateway, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(CLIPS_DIR / "moving_objects.mp4", media / "good.mp4")
    garbage_file(media / "garbage.mp4")
    corrupt_copy(CLIPS_DIR / "moving_objects.mp4", media / "bad_header.mp4", start=0.0, length=0.3)
    corrupt_copy(CLIPS_DIR / "moving_objects.mp4", media / "bad_middle.mp4")
    (media / "empty.mp4").write_bytes(b"")

    # A TCP server that accepts connections and never says a word.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_port = silent.getsockname()[1]
    try:
        async with make_gateway(redis_url, media_dirs=[media], ingest={"open_timeout_s": 2.0}) as gw:
            async with gw.subscribe(type="status") as sub:
                good = await gw.add_camera(node="450102", name="good", url="file:good.mp4", analytics={"fps": 5})
                broken = {}
                # Damaged packets in the middle cost frames, not the connection: it stays online.
                patchy = (await gw.add_camera(node="450102", name="bad_middle", url="file:bad_middle.mp4",
                                              analytics={"fps": 5}))["id"]
                for name in ("garbage", "bad_header", "empty"):
                    broken[name] = (await gw.add_camera(node="450102", name=name, url=f"file:{name}.mp4",
                                                        analytics={"fps": 5}))["id"]
                broken["silent"] = (await gw.add_camera(node="450102", name="silent",
                                                        url=f"rtsp://127.0.0.1:{silent_port}/live"))["id"]
                broken["refused"] = (await gw.add_camera(node="450102", name="refused",
                                                         url=f"rtsp://127.0.0.1:{free_port()}/live"))["id"]

                def offline_events(evs, cid):
                    return [e for e in evs if e["camera_id"] == cid and e["state"] == "offline"]

                await sub.wait_for(lambda evs: all(offline_events(evs, cid) for cid in broken.values()),
                                   timeout=20, what="an offline status event from every broken source")
                for name, cid in broken.items():
                    ev = offline_events(sub.events, cid)[0]
                    assert readable(ev.get("reason")), (name, ev)
                    cam = await gw.camera(cid)
                    assert cam["status"]["state"] == "offline", (name, cam["status"])
                    assert readable(cam["status"]["last_error"]), (name, cam["status"])
                reasons = {n: offline_events(sub.events, c)[0]["reason"] for n, c in broken.items()}
                for name in ("garbage", "bad_header"):
                    assert "corrupt" in reasons[name] or "invalid" in reasons[name].lower(), reasons
                assert "refused" in reasons["refused"], reasons
                # Silence is not "corrupt video": the reason says the camera did not answer.
                assert any(w in reasons["silent"] for w in ("no answer", "timed out", "no picture")), reasons

                # The good camera never noticed, and the API kept answering throughout.
                st = (await gw.camera(good["id"]))["status"]
                assert st["state"] == "online" and st["fps_analyzed"] > 0 and st["reconnects"] == 0, st
                assert not offline_events(sub.events, good["id"])
                _, listing = await gw.request("GET", "/api/v1/cameras?state=offline&limit=100")
                assert {v["id"] for v in listing["cameras"]} >= set(broken.values())
                await still_serving(gw)
                # The damaged file played through its bad part (4.8-7.2 s in) and skipped what it could not decode.
                assert await until(lambda: _decode_errors(gw, patchy), 15, "the damaged part to be skipped")
                st = (await gw.camera(patchy))["status"]
                assert st["state"] == "online" and st["reconnects"] == 0, st
                assert not offline_events(sub.events, patchy)
                # Broken cameras keep being retried (with backoff), not given up on.
                assert await until(
                    lambda: _reconnected(gw, broken["garbage"]), 10, "a retry of the garbage file")
    finally:
        silent.close()


async def _decode_errors(gw, cid: str) -> bool:
    return (await gw.camera(cid))["status"]["decode_errors"] > 0


async def _reconnected(gw, cid: str) -> bool:
    return (await gw.camera(cid))["status"]["reconnects"] >= 1


# ---- Redis going away ----------------------------------------------------------------------------------
def _blink_frames():
    """0.5 s still, 1 s of a square crossing, 3.5 s still: a motion start and end every 5 s."""
    for i in range(50):
        img = np.full((240, 320, 3), 90, np.uint8)
        if 5 <= i < 15:
            x = 20 + (i - 5) * 28
            img[100:140, x:x + 40] = 230
        yield img


async def test_redis_outage_answers_503_keeps_running_and_loses_no_events(redis_server, make_gateway, tmp_path):
    media = tmp_path / "media"
    make_clip(media / "blink.mp4", _blink_frames(), 10, 320, 240)

    async def call(method: str, path: str, **kw) -> tuple[int, Any]:
        return await asyncio.wait_for(gw.request(method, path, **kw), 5)  # a hang fails the test

    async with make_gateway(redis_server.url, media_dirs=[media]) as gw:
        cam = await gw.add_camera(node="450102", name="blink", url="file:blink.mp4", analytics={"fps": 5})
        cid = cam["id"]

        async def first_motion():
            _, body = await call("GET", f"/api/v1/events?camera={cid}&type=motion&limit=1")
            return body["events"]

        await until(first_motion, 15, "a motion event before the outage")
        _, body = await call("GET", f"/api/v1/events?camera={cid}&limit=1")
        marker = body["events"][0]["id"]
        worker = gw.app[keys.SUPERVISOR].workers[cid]
        analysed_before = worker.analysis.frames_analyzed

        redis_server.stop()
        outage_start = time.time()
        try:
            for method, path, kw in (("GET", "/api/v1/cameras", {}), ("GET", f"/api/v1/cameras/{cid}", {}),
                                     ("GET", "/api/v1/events", {}),
                                     ("PATCH", f"/api/v1/cameras/{cid}", {"json": {"name": "x"}}),
                                     ("POST", "/api/v1/cameras", {"json": {**BASE, "url": "file:blink.mp4"}})):
                t0 = time.monotonic()
                status, body = await call(method, path, **kw)
                assert_error(status, body, 503, "redis")
                assert time.monotonic() - t0 < 4, f"{method} {path} took {time.monotonic() - t0:.1f}s"

            # Health says degraded; the camera keeps ingesting and the event log buffers.
            peak = 0
            deadline = time.monotonic() + 7
            while time.monotonic() < deadline:
                status, health = await call("GET", "/healthz")
                assert status == 200 and health["status"] == "degraded" and health["redis"] is False, health
                assert health["cameras_running"] == 1
                peak = max(peak, health["events_buffered"])
                await asyncio.sleep(0.5)
            assert peak >= 2, f"only {peak} events buffered in 7 s: the scenario proves nothing"
            assert worker.state.value == "online"
            assert worker.analysis.frames_analyzed - analysed_before >= 20, "ingest stalled while Redis was away"
        finally:
            redis_server.start()
        outage_end = time.time()

        async def api_back():
            status, _ = await call("GET", "/api/v1/cameras")
            return status == 200

        await until(api_back, 10, "the API to answer again after Redis came back", interval=0.2)

        async def flushed():
            _, health = await call("GET", "/healthz")
            return health if health["status"] == "ok" and health["events_buffered"] == 0 else None

        health = await until(flushed, 10, "the event buffer to flush")
        assert health["events_dropped"] == 0
        st = (await gw.camera(cid))["status"]
        assert st["state"] == "online" and st["reconnects"] == 0, st

        # History after the marker: every buffered event, oldest first, in the order they happened.
        status, body = await call("GET", f"/api/v1/events?camera={cid}&since={marker}&limit=1000")
        assert status == 200, body
        after = list(reversed(body["events"]))
        assert after, "no events after the marker"
        during = [e for e in after if outage_start <= _epoch(e["ts"]) <= outage_end]
        assert len(during) >= peak, f"{peak} events were buffered, {len(during)} reached the history"
        ts = [_epoch(e["ts"]) for e in after]
        assert ts == sorted(ts), "events out of order"
        ids = [e["id"] for e in after]
        assert len(set(ids)) == len(ids)
        motion = [e["phase"] for e in after if e["type"] == "motion"]
        # Start and end alternate: a lost or repeated one would break the pattern.
        assert all(a != b for a, b in zip(motion, motion[1:])), motion
        # The events from before the outage survived the restart (AOF).
        status, body = await call("GET", f"/api/v1/events/{marker}")
        assert status == 200 and body["id"] == marker


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
