"""A DVR's AVI export with B-frames, played as a camera: analysed at the rate asked, media time monotonic."""

from __future__ import annotations

import asyncio

import pytest

from gateway.analysis import CameraAnalysis
from tests.media_gen import write_bframe_avi

ASKED_FPS = 5.0
CLIP_SECONDS = 6.0


async def test_a_bframe_avi_is_analysed_at_the_asked_rate_with_a_monotonic_media_clock(
        make_gateway, redis_url, tmp_path, monkeypatch):
    clip = write_bframe_avi(tmp_path / "dvr_export.avi", seconds=CLIP_SECONDS)
    seen: list[tuple[str, float | None]] = []
    real_apply = CameraAnalysis.apply

    def recording_apply(self, result):
        # Observe what the real pipeline analysed, then let it carry on unchanged.
        seen.append((result.frame.camera_id, result.frame.media_ts))
        real_apply(self, result)

    monkeypatch.setattr(CameraAnalysis, "apply", recording_apply)
    async with make_gateway(redis_url, media_dirs=[tmp_path]) as gw:
        cam = await gw.add_camera(name="dvr export", node="450102", url=f"file:{clip.name}",
                                  analytics={"fps": ASKED_FPS})
        await gw.wait_state(cam["id"], "online", timeout=15)
        # One pass of the file and a little of the next, paced as a live camera sends it.
        deadline = asyncio.get_running_loop().time() + CLIP_SECONDS + 3
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        st = (await gw.camera(cam["id"]))["status"]
    times = [t for cid, t in seen if cid == cam["id"]]
    assert all(t is not None for t in times)
    first_pass = [t for t in times if t < CLIP_SECONDS]
    # The old sampler restarted its grid at every backward timestamp and analysed this file at ~16 fps.
    assert len(first_pass) == pytest.approx(CLIP_SECONDS * ASKED_FPS, abs=2), first_pass
    # Monotonic, across the loop too.
    assert all(b > a for a, b in zip(times, times[1:])), [(a, b) for a, b in zip(times, times[1:]) if not b > a]
    gaps = [b - a for a, b in zip(first_pass, first_pass[1:])]
    assert all(abs(g - 1 / ASKED_FPS) <= 0.05 for g in gaps), gaps  # evenly spaced on the sampling grid
    assert st["decode_errors"] == 0 and st["reconnects"] == 0, st
