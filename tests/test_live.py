"""A camera's picture over HTTP: snapshot.jpg and live.mjpeg against a real gateway, Redis and video files.

What an operator depends on: the thumbnail is the camera's newest frame at the size asked for,
the live view is a multipart JPEG stream that a browser's <img> plays, never faster than asked nor
faster than new frames arrive, with the detections drawn; it needs an operator token within the
camera's jurisdiction; it ends when the camera is removed, the token revoked, or the viewer leaves.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import aiohttp
import cv2
import numpy as np
import pytest

from analytics.types import Detection
from gateway import keys
from gateway.web.frames import label_colour, render_frame
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until
from tests.servers import free_port

CLIP = "file:moving_objects.mp4"  # 640x360, 15 fps, H.264


def _jpeg(body: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, f"not a JPEG: {body[:40]!r}"
    return img


async def _snapshot_ready(gw, cid: str):
    status, body = await gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg")
    return body if status == 200 else None


async def _online_camera(gw, name: str = "gate", **kw) -> str:
    cam = await gw.add_camera(name=name, node=kw.pop("node", "450102001"), url=kw.pop("url", CLIP),
                              analytics=kw.pop("analytics", {"fps": 5}), **kw)
    await gw.wait_state(cam["id"], "online")
    await until(lambda: _snapshot_ready(gw, cam["id"]), 20, "a first frame")
    return cam["id"]


class Mjpeg:
    """Reads a live.mjpeg response part by part with aiohttp's own multipart parser."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.reader = aiohttp.MultipartReader.from_response(resp)

    async def next(self, timeout: float = 20.0) -> tuple[dict[str, str], bytes] | None:
        part = await asyncio.wait_for(self.reader.next(), timeout)
        if part is None:
            return None
        body = await asyncio.wait_for(part.read(), timeout)
        return dict(part.headers), bytes(body)


async def _token(gw, role: str, node: str) -> tuple[str, str]:
    status, body = await gw.request("POST", "/api/v1/tokens", json={"name": f"{role} {node}", "role": role,
                                                                     "node": node})
    assert status == 201, body
    return body["id"], body["token"]


# ---- snapshot.jpg --------------------------------------------------------------------------------
async def test_snapshot_is_the_newest_frame_at_the_width_asked(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        cid = await _online_camera(gw)
        async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/snapshot.jpg")) as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert r.headers["Cache-Control"] == "no-store"
            taken = datetime.fromisoformat(r.headers["X-Captured-At"].replace("Z", "+00:00")).timestamp()
            full = _jpeg(await r.read())
        # The frame is fresh: file sources play in real time, so the newest frame is under a second old.
        assert abs(time.time() - taken) < 5
        assert full.shape == (360, 640, 3)  # the clip's own size: never scaled up to the default 640+
        _, small = await gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg?width=320")
        assert _jpeg(small).shape == (180, 320, 3)
        # Consecutive snapshots follow the video (the clip has moving objects).
        await asyncio.sleep(1.0)
        _, later = await gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg?width=320")
        assert np.abs(_jpeg(later).astype(int) - _jpeg(small).astype(int)).mean() > 0.5

        for bad in ("5000", "10", "wide", "-1"):
            status, body = await gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg?width={bad}")
            assert status == 400 and "width" in body["error"]["message"], (bad, body)


async def test_snapshot_and_live_answer_401_404_400_503(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        cid = await _online_camera(gw)
        dead = await gw.add_camera(name="nothing listening", node="450102",
                                   url=f"rtsp://127.0.0.1:{free_port()}/none")
        off = await gw.add_camera(name="switched off", node="450102", url=CLIP, enabled=False)
        unknown = cid[:-4] + ("9999" if not cid.endswith("9999") else "9998")
        async with aiohttp.ClientSession() as anonymous:
            for path in ("snapshot.jpg", "live.mjpeg"):
                async with anonymous.get(gw.url(f"/api/v1/cameras/{cid}/{path}")) as r:
                    assert r.status == 401, path
                async with anonymous.get(gw.url(f"/api/v1/cameras/{cid}/{path}?token=wrong")) as r:
                    assert r.status == 401, path
            # Browsers' <img> cannot send headers: ?token= is accepted on these GETs.
            async with anonymous.get(gw.url(f"/api/v1/cameras/{cid}/snapshot.jpg?token={TOKEN}")) as r:
                assert r.status == 200 and r.content_type == "image/jpeg"

        for path in ("snapshot.jpg", "live.mjpeg"):
            status, body = await gw.request("GET", f"/api/v1/cameras/{unknown}/{path}")
            assert status == 404, (path, body)
            status, body = await gw.request("GET", f"/api/v1/cameras/not-an-id/{path}")
            assert status == 400, (path, body)
            status, body = await gw.request("GET", f"/api/v1/cameras/{off['id']}/{path}")
            assert status == 503 and "not running" in body["error"]["message"], (path, body)
        # A camera that has not delivered a frame yet: 503 with the reason, and the state it is in.
        status, body = await gw.request("GET", f"/api/v1/cameras/{dead['id']}/snapshot.jpg")
        assert status == 503 and body["error"]["message"] == "no frame from this camera yet", body
        assert body["error"]["state"] in ("connecting", "offline")
        for bad in ("fps=0", "fps=11", "fps=abc", "fps=nan", "width=20"):
            status, body = await gw.request("GET", f"/api/v1/cameras/{cid}/live.mjpeg?{bad}")
            assert status == 400, (bad, body)
        assert gw.app[keys.LIVE].viewers == 0


async def test_roles_and_jurisdiction(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], node="4501") as gw:
        cid = await _online_camera(gw, node="450102001")
        _, viewer = await _token(gw, "viewer", "450102")
        _, here = await _token(gw, "operator", "450102")
        _, elsewhere = await _token(gw, "operator", "450103")
        async with aiohttp.ClientSession() as s:
            async def get(token: str) -> int:
                async with s.get(gw.url(f"/api/v1/cameras/{cid}/snapshot.jpg"),
                                 headers={"Authorization": f"Bearer {token}"}) as r:
                    return r.status

            assert await get(here) == 200
            assert await get(viewer) == 403  # viewers see the catalog, not the pictures
            assert await get(elsewhere) == 404  # outside the jurisdiction it does not exist


# ---- live.mjpeg ----------------------------------------------------------------------------------
async def test_live_view_is_multipart_jpeg_at_a_bounded_rate_of_new_frames(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        cid = await _online_camera(gw, analytics={"fps": 5})
        live = gw.app[keys.LIVE]
        async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?fps=2&width=320")) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
            assert live.viewers == 1
            stream = Mjpeg(r)
            first = await stream.next()
            t0 = time.monotonic()
            parts = [first]
            while time.monotonic() - t0 < 4.0:
                parts.append(await stream.next())
            elapsed = time.monotonic() - t0
        images = [_jpeg(body) for _, body in parts]
        assert all(img.shape == (180, 320, 3) for img in images)
        # Never faster than asked: 2 a second, over ~4 s after the first.
        assert len(parts) - 1 <= 2 * elapsed + 1, (len(parts), elapsed)
        assert len(parts) >= 5
        # Each part is a new frame: capture times strictly increase, and the picture moves.
        taken = [h["X-Captured-At"] for h, _ in parts]
        assert taken == sorted(set(taken)), taken
        assert np.abs(images[-1].astype(int) - images[0].astype(int)).mean() > 0.5
        await until(lambda: _zero(live), 10, "the stream to be released")

        # Asking for more than the camera delivers gets no repeats: at 10 fps asked, 1 fps analysed.
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"analytics": {"fps": 1}})
        assert status == 200
        await asyncio.sleep(1.5)
        async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?fps=10&width=160")) as r:
            stream = Mjpeg(r)
            await stream.next()
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 4.0:
                await stream.next()
                n += 1
            elapsed = time.monotonic() - t0
        assert n <= elapsed * 1 + 2, (n, elapsed)


async def _zero(live) -> bool:
    return live.viewers == 0


async def test_viewer_leaving_frees_the_stream(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        cid = await _online_camera(gw)
        live = gw.app[keys.LIVE]
        async with aiohttp.ClientSession() as s:
            views = []
            for _ in range(3):
                r = await s.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?token={TOKEN}&width=160"))
                assert r.status == 200
                await Mjpeg(r).next()
                views.append(r)
            assert live.viewers == 3
            views[0].close()  # the browser navigates away: the connection drops
            await until(lambda: _count(live, 2), 10, "one stream released")
            sent = live.frames_sent
            await asyncio.sleep(1.0)
            assert live.frames_sent > sent  # the other two go on
            for r in views[1:]:
                r.close()
        await until(lambda: _zero(live), 10, "every stream released")
        sent = live.frames_sent
        await asyncio.sleep(1.0)
        assert live.frames_sent == sent  # nothing is rendered or written for viewers that left


async def _count(live, n: int) -> bool:
    return live.viewers == n


async def test_live_view_ends_when_the_camera_is_removed_or_the_token_revoked(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], access={"stream_recheck_s": 0.5}) as gw:
        cid = await _online_camera(gw)
        live = gw.app[keys.LIVE]
        async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?width=160")) as r:
            stream = Mjpeg(r)
            assert await stream.next()
            status, _ = await gw.request("DELETE", f"/api/v1/cameras/{cid}")
            assert status == 200
            while (await stream.next()) is not None:  # parts already on the way, then the end
                pass
        await until(lambda: _zero(live), 10, "the stream to be released")

        cid = await _online_camera(gw, name="gate 2")
        token_id, raw = await _token(gw, "operator", "450102")
        async with aiohttp.ClientSession() as s:
            async with s.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?width=160&token={raw}")) as r:
                stream = Mjpeg(r)
                assert await stream.next()
                status, _ = await gw.request("DELETE", f"/api/v1/tokens/{token_id}")
                assert status == 200
                t0 = time.monotonic()
                while (await stream.next()) is not None:
                    assert time.monotonic() - t0 < 15, "stream of a revoked token still open"
        await until(lambda: _zero(live), 10, "the stream to be released")


async def test_viewers_of_one_camera_share_each_encode(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR]) as gw:
        cid = await _online_camera(gw, analytics={"fps": 5})
        live = gw.app[keys.LIVE]
        async with aiohttp.ClientSession() as s:
            rs = [await s.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?token={TOKEN}&width=320&fps=5"))
                  for _ in range(4)]
            streams = [Mjpeg(r) for r in rs]
            for st in streams:
                await st.next()
            renders, sent = live.renders, live.frames_sent
            await asyncio.sleep(3.0)
            renders, sent = live.renders - renders, live.frames_sent - sent
            for r in rs:
                r.close()
        # Four viewers of the same camera and size: about one encode per frame, not four.
        assert sent >= 8 and renders <= sent / 2, (renders, sent)


# ---- detections drawn ----------------------------------------------------------------------------
def test_render_draws_each_box_in_its_label_colour_and_leaves_the_frame_alone():
    image = np.full((360, 640, 3), 60, np.uint8)
    before = image.copy()
    dets = (Detection("car", 0.9, (0.25, 0.25, 0.75, 0.75)), Detection("person", 0.6, (0.05, 0.5, 0.15, 0.95)))
    out = _jpeg(render_frame(image, dets, width=640, quality=95))
    assert np.array_equal(image, before)  # the worker's frame is shared: never drawn on
    for d in dets:
        x1, y1, x2, y2 = (int(v * s) for v, s in zip(d.box, (640, 360, 640, 360)))
        edge = out[(y1 + y2) // 2, x1 - 1:x1 + 2].astype(int)  # the box's left edge, halfway down
        colour = np.array(label_colour(d.label))
        assert np.abs(edge - colour).sum(axis=1).min() < 60, (d.label, edge, colour)
    # Scaled down, never up.
    assert _jpeg(render_frame(image, (), width=320)).shape == (180, 320, 3)
    assert _jpeg(render_frame(image, (), width=1280)).shape == (360, 640, 3)


@pytest.mark.model
async def test_live_view_draws_the_models_detections(redis_url, make_gateway, model_path, street_clip):
    async with make_gateway(redis_url, model=model_path, media_dirs=[street_clip.parent]) as gw:
        cid = await _online_camera(gw, url=f"file:{street_clip.name}", analytics={"fps": 5, "min_score": 0.45})
        async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?fps=5&width=640")) as r:
            stream = Mjpeg(r)
            deadline = time.monotonic() + 60
            while True:
                headers, body = await stream.next()
                if int(headers["X-Detections"]) > 0:
                    break
                assert time.monotonic() < deadline, "no frame with detections drawn in 60 s"
        assert _jpeg(body).shape == (360, 640, 3)


# ---- a camera of a tier below --------------------------------------------------------------------
async def _remote_online(tier, cid: str) -> bool:
    code, cam = await tier.gw.request("GET", f"/api/v1/cameras/{cid}")
    return code == 200 and cam["status"]["state"] == "online"


async def test_an_upper_tier_shows_a_lower_tiers_camera(tier_chain):
    async with tier_chain(("4501", "450102"), media_dirs=[CLIPS_DIR]) as chain:
        city, county = chain["4501"], chain["450102"]
        cid = await _online_camera(county.gw, node="450102001")
        await until(lambda: _remote_online(city, cid), 30, "the county's camera online at the city")
        # Its thumbnail, fetched up the chain of bridges and scaled at the city.
        status, body = await city.gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg?width=320")
        assert status == 200, body
        assert _jpeg(body).shape == (180, 320, 3)
        # Its live view, from the city: moving frames, at the rate asked.
        async with city.gw.session.get(city.gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?fps=2&width=160")) as r:
            assert r.status == 200
            stream = Mjpeg(r)
            first = await stream.next()
            parts = [first]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 3.0:
                parts.append(await stream.next())
            elapsed = time.monotonic() - t0
        assert len(parts) - 1 <= 2 * elapsed + 1 and len(parts) >= 3
        images = [_jpeg(b) for _, b in parts]
        assert all(img.shape == (90, 160, 3) for img in images)
        assert np.abs(images[-1].astype(int) - images[0].astype(int)).mean() > 0.5
        await until(lambda: _zero(city.app[keys.LIVE]), 10, "the city's stream to be released")
        status, body = await city.gw.request("GET", "/api/v1/cameras/45010200001320000999/snapshot.jpg")
        assert status == 404, body


CAPTION_PX = 24  # a box's caption is drawn filled above its top edge, about this high at 640 wide


def _clear_edges(dets, width: int, height: int) -> list:
    """Detections with their pixel boxes whose left edge, halfway down, no other box or caption is drawn over
    (where the street's cars overlap, a box drawn later covers an earlier one's edge)."""
    boxes = [tuple(int(v * s) for v, s in zip(d.box, (width, height, width, height))) for d in dets]
    out = []
    for d, (x1, y1, x2, y2) in zip(dets, boxes):
        mid = (y1 + y2) // 2
        if not any(b != (x1, y1, x2, y2) and b[0] - CAPTION_PX <= x1 <= b[2] + CAPTION_PX
                   and b[1] - CAPTION_PX <= mid <= b[3] + CAPTION_PX for b in boxes):
            out.append((d, (x1, y1, x2, y2)))
    return out


@pytest.mark.model
async def test_an_upper_tiers_live_view_shows_the_lower_tiers_detections(tier_chain, model_path, street_clip):
    async with tier_chain(("4501", "450102"), models={"450102": model_path},
                          media_dirs=[street_clip.parent]) as chain:
        city, county = chain["4501"], chain["450102"]
        cid = await _online_camera(county.gw, node="450102001", url=f"file:{street_clip.name}",
                                   analytics={"fps": 5, "min_score": 0.45})
        await until(lambda: _remote_online(city, cid), 30, "the county's camera online at the city")
        county_live = county.app[keys.LIVE]
        async with city.gw.session.get(city.gw.url(f"/api/v1/cameras/{cid}/live.mjpeg?fps=5&width=640")) as r:
            assert r.status == 200
            stream = Mjpeg(r)
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, "no frame from the county with its detections drawn in 60 s"
                headers, body = await stream.next()
                if int(headers.get("X-Detections", 0)) == 0:
                    continue
                # The county rendered this picture at the width the city asked, boxes drawn, and keeps the
                # detections of its newest rendering: when that is this very picture, check the boxes on it.
                cached = county_live._cache.get(next((k for k in county_live._cache
                                                      if k.camera_id == cid and k.width == 640 and k.boxes), None))
                if cached is None or not cached[1].done() or cached[1].result() != body:
                    continue
                dets = cached[0].detections
                if _clear_edges(dets, 640, 360):
                    break
        assert int(headers["X-Detections"]) == len(dets) > 0
        taken = datetime.fromisoformat(headers["X-Captured-At"].replace("Z", "+00:00")).timestamp()
        assert abs(time.time() - taken) < 5
        image = _jpeg(body)
        assert image.shape == (360, 640, 3)  # the street clip is 1280x720: scaled where it runs
        for d, (x1, y1, x2, y2) in _clear_edges(dets, 640, 360):
            edge = image[(y1 + y2) // 2, max(0, x1 - 2):x1 + 3].astype(int)  # the box's left edge, halfway down
            colour = np.array(label_colour(d.label))
            assert np.abs(edge - colour).sum(axis=1).min() < 80, (d.label, edge, colour)
        # A thumbnail from the city carries no boxes and crosses the link at the width asked.
        status, body = await city.gw.request("GET", f"/api/v1/cameras/{cid}/snapshot.jpg?width=320")
        assert status == 200 and _jpeg(body).shape == (180, 320, 3)
        assert any(k.camera_id == cid and k.width == 320 and not k.boxes for k in county_live._cache)


async def test_pictures_from_a_tier_that_predates_widths_are_scaled_here_and_others_passed_through():
    from gateway.api.live import _at_width
    from tiers.rpc import Picture

    full = render_frame(np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8), (), width=1280)
    assert _jpeg(await _at_width(Picture(full), 320)).shape == (180, 320, 3)  # old tier: full frame, scaled here
    assert await _at_width(Picture(full, fitted=True), 320) is full  # rendered below at the width asked: as is
