"""The pipeline on file cameras: substreams, motion events without a model, looping files."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from sample_streams import clip_path
from sample_streams.generate import make_clip
from tests.gateway_fixtures import until


async def test_without_a_model_motion_events_are_raised(make_gateway, redis_url):
    clip = clip_path("moving_objects")
    async with make_gateway(redis_url, media_dirs=[clip.parent]) as gw:
        async with gw.subscribe(type="motion") as sub:
            cam = await gw.add_camera(name="moving", node="450102", url=f"file:{clip.name}")
            await sub.wait_for(lambda ev: any(e["phase"] == "start" for e in ev), timeout=20, what="motion start")
            start = next(e for e in sub.events if e["phase"] == "start")
            code, jpeg = await gw.request("GET", start["snapshot"])
    assert start["camera_id"] == cam["id"] and "model" not in start and "label" not in start
    assert code == 200 and jpeg[:2] == b"\xff\xd8"


async def test_analysis_pulls_the_substream(make_gateway, redis_url, tmp_path):
    clip = clip_path("moving_objects")
    async with make_gateway(redis_url, media_dirs=[clip.parent]) as gw:
        # The main stream is a camera that never answers; analysis must use the substream only.
        cam = await gw.add_camera(name="dual", node="450102", url="rtsp://127.0.0.1:9/main",
                                  substream_url=f"file:{clip.name}")
        online = await gw.wait_state(cam["id"], "online", timeout=15)
    assert online["status"]["source"] == "substream"
    assert (online["status"]["width"], online["status"]["height"]) == (640, 360)
    assert online["url"] == "rtsp://127.0.0.1:9/main"


async def test_a_file_camera_loops_like_a_live_one(make_gateway, redis_url, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    # A 2-second clip: a file camera must run on past its end without going offline.
    frames = (np.full((120, 160, 3), i * 4 % 255, np.uint8) for i in range(20))
    make_clip(media / "short.mp4", frames, fps=10, width=160, height=120)
    async with make_gateway(redis_url, media_dirs=[media]) as gw:
        async with gw.subscribe(type="status") as sub:
            cam = await gw.add_camera(name="short", node="450102", url="file:short.mp4", analytics={"fps": 5})
            await gw.wait_state(cam["id"], "online", timeout=10)
            first = (await gw.camera(cam["id"]))["status"]["frames_analyzed"]
            await asyncio.sleep(5)
            later = await gw.camera(cam["id"])
    assert later["status"]["state"] == "online" and later["status"]["reconnects"] == 0
    # Paced in real time at 5 analysed frames per second, through two and a half loops.
    assert later["status"]["frames_analyzed"] - first >= 20
    assert [e["state"] for e in sub.events] == ["online"]


@pytest.mark.model
async def test_detector_stats_and_health(make_gateway, redis_url, model_path):
    async with make_gateway(redis_url, model=model_path) as gw:
        code, health = await gw.request("GET", "/healthz")
    assert code == 200 and health["redis"] is True and health["detector"] == "yolox:yolox_nano"


async def _status_in_mode(gw, cid: str, *modes: str) -> dict | None:
    st = (await gw.camera(cid))["status"]
    return st if st["decode_mode"] in modes else None


async def test_low_analysis_rates_decode_key_frames_only(make_gateway, redis_url):
    clip = clip_path("moving_objects")  # 15 fps, a key frame every 2 s
    async with make_gateway(redis_url, media_dirs=[clip.parent]) as gw:
        cam = await gw.add_camera(name="slow", node="450102", url=f"file:{clip.name}", analytics={"fps": 0.5})
        cid = cam["id"]
        await gw.wait_state(cid, "online", timeout=10)
        st = await until(lambda: _status_in_mode(gw, cid, "key frames"), 10, "decode mode key frames")
        n0 = st["frames_analyzed"]
        await asyncio.sleep(6.5)
        st = (await gw.camera(cid))["status"]
        # Key frames still arrive at the analysis rate, and the camera's pulse (packets) is unchanged.
        assert 2 <= st["frames_analyzed"] - n0 <= 4, st
        assert st["fps_in"] > 10 and st["state"] == "online", st
        # Raising the rate goes back to decoding every frame (every reference frame where the stream has
        # B-frames), with no reconnect.
        status, _ = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"analytics": {"fps": 5}})
        assert status == 200
        st = await until(lambda: _status_in_mode(gw, cid, "all frames", "reference frames"), 10,
                         "decode mode all or reference frames")
        n1 = st["frames_analyzed"]
        await asyncio.sleep(2)
        st = (await gw.camera(cid))["status"]
    assert st["frames_analyzed"] - n1 >= 7 and st["reconnects"] == 0, st


async def test_page_and_health_answer_without_a_token(make_gateway, redis_url):
    async with make_gateway(redis_url) as gw:
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(gw.url("/")) as r:
                page = (r.status, r.content_type, await r.text())
            async with anonymous.get(gw.url("/healthz")) as r:
                health = (r.status, await r.json())
            async with anonymous.get(gw.url("/api/v1/cameras")) as r:
                denied = r.status
            async with anonymous.get(gw.url("/api/v1")) as r:
                described_anonymously = r.status
        status, about = await gw.request("GET", "/api/v1")
    assert page[0] == 200 and page[1] == "text/html" and "<title>" in page[2]
    assert health[0] == 200 and health[1]["status"] == "ok" and health[1]["detector"] is None
    assert denied == 401 and described_anonymously == 401
    assert status == 200 and about["node"] == "450102" and "/api/v1/events/ws" in about["endpoints"]
    assert about["you"]["role"] == "admin"
