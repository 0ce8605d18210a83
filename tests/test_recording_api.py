"""Recording wired into the gateway (issue 11): real RTSP camera, real files, real Redis, the HTTP endpoints.

The library itself is tested in tests/test_recording.py with a driven clock; here the gateway records what its
cameras send: continuous recording over a minute of a real RTSP stream, a window played back through
recording.mp4 (the camera's own codec, size and bitrate), an RTSP server restart (a gap, no damaged file),
events mode around a real track, a full disk (a small tmpfs) pausing with a status event and resuming,
jurisdiction and audit on every endpoint, and live.mp4's fragmented MP4 decoded by PyAV.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import av
import pytest

from gateway import keys
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, until
from tests.media_rec import boxes, decode

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

NODE = "450102001"
SEGMENT_S = 10.0  # short segments: rotation happens within the test
MOVING = CLIPS_DIR / "moving_objects.mp4"  # 640x360 H.264, 15 fps, key frame every 2 s
DAY_NIGHT = CLIPS_DIR / "day_night.mp4"


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _probe(path: Path) -> dict:
    """Codec, size, key-frame interval and bitrate of a file's video."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        keys_at, nbytes, end = [], 0, 0.0
        for p in c.demux(s):
            if not p.size:
                continue
            nbytes += p.size
            t = float(p.pts * s.time_base)
            end = max(end, t + float((p.duration or 0) * s.time_base))
            if p.is_keyframe:
                keys_at.append(t)
        gop = max(b - a for a, b in zip(keys_at, keys_at[1:]))
        return {"codec": s.codec_context.name, "width": s.codec_context.width, "height": s.codec_context.height,
                "gop_s": gop, "bitrate": nbytes * 8 / end, "seconds": end}


def _looped(src: Path, dst: Path, seconds: float) -> Path:
    """A real file `seconds` long: the source's packets repeated (remuxed, timestamps shifted), as one stream."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        tb = s.time_base
        offset, end = 0, 0
        while offset * tb < seconds:
            inp.seek(0)
            last = 0
            for p in inp.demux(s):
                if p.dts is None or not p.size:
                    continue
                p.pts += offset
                p.dts += offset
                last = max(last, p.pts + (p.duration or 0))
                p.stream = o
                out.mux(p)
            offset = last
            end = last
        assert end * tb >= seconds
    return dst


async def _list(gw, cid: str, since: float, until_t: float) -> dict:
    status, body = await gw.request("GET", f"/api/v1/cameras/{cid}/recordings",
                                    params={"since": _iso(since), "until": _iso(until_t)})
    assert status == 200, body
    return body


async def recording_file_camera(gw, closed: int, timeout: float) -> tuple[str, list[dict]]:
    """A file camera recording continuously in 2 s segments (the gateway's `segment_s`), once `closed` of its
    segments are closed (the last one listed may still grow): its id and those segments."""
    cam = await gw.add_camera(name="gate", node=NODE, url=f"file:{MOVING}", analytics={"fps": 1},
                              recording={"mode": "continuous"})
    cid = cam["id"]
    t0 = time.time()

    async def closed_segments():
        segs = (await _list(gw, cid, t0 - 5, time.time()))["segments"]
        return len(segs) > closed and segs[:closed]

    return cid, await until(closed_segments, timeout, f"{closed} closed segments")


def _covered(segments: list[dict], a: float, b: float) -> float:
    return sum(max(0.0, min(_ts(s["end"]), b) - max(_ts(s["start"]), a)) for s in segments)


def _holes(segments: list[dict], a: float, b: float) -> list[float]:
    """Lengths of the stretches of [a, b] no segment covers."""
    out, cursor = [], a
    for s in sorted(segments, key=lambda s: s["start"]):
        start, end = _ts(s["start"]), _ts(s["end"])
        if start > cursor:
            out.append(min(start, b) - cursor)
        cursor = max(cursor, end)
    if cursor < b:
        out.append(b - cursor)
    return [h for h in out if h > 0]


async def _mp4(gw, path: str, **params) -> tuple[int, bytes | dict, dict]:
    async with gw.session.get(gw.url(path), params=params) as r:
        body = await r.read()
        if r.content_type == "application/json":
            import json
            return r.status, json.loads(body), dict(r.headers)
        return r.status, body, dict(r.headers)


async def _audited(gw, action: str, pred) -> dict:
    """The first audit entry of `action` that `pred` accepts (the trail is written in the background)."""
    async def find():
        status, body = await gw.request("GET", "/api/v1/audit", params={"action": action, "limit": "200"})
        assert status == 200, body
        return next((e for e in body["entries"] if pred(e)), None)
    return await until(find, 10, f"an audit entry {action}")


# ---- continuous recording of a real RTSP camera ---------------------------------------------------------
@pytest.mark.rtsp
async def test_continuous_recording_of_an_rtsp_camera_plays_back_and_survives_a_restart(
        redis_url, make_gateway, rtsp_server, street_clip, tmp_path):
    src = _looped(street_clip, tmp_path / "street_70s.mp4", 70.0)
    info = _probe(src)
    server = rtsp_server({"cam": src})
    # A stall is not what this test is about: on a loaded machine the fixtures' 3 s stall timeout may tear the
    # stream down (the server then replays its file from the start), so it is the production default here.
    async with make_gateway(redis_url, recordings={"segment_s": SEGMENT_S, "min_free_bytes": 0},
                            ingest={"stall_timeout_s": 5.0}) as gw:
        cam = await gw.add_camera(name="street", node=NODE, url=server.url("cam"), analytics={"fps": 1},
                                  recording={"mode": "continuous"})
        cid = cam["id"]
        assert cam["recording"] == {"mode": "continuous", "retain_days": None, "pre_s": None, "post_s": None}
        await gw.wait_state(cid, "online")
        t_first = None

        async def recorded_a_minute():
            nonlocal t_first
            body = await _list(gw, cid, time.time() - 600, time.time())
            if not body["segments"]:
                return False
            t_first = _ts(body["segments"][0]["start"])
            return _ts(body["segments"][-1]["end"]) >= t_first + 61

        await until(recorded_a_minute, 100, "a minute recorded")
        a, b = t_first, t_first + 60.0
        body = await _list(gw, cid, a, b)
        segs = body["segments"]
        # >= 95 % of the minute is in segments, and no hole is longer than one key-frame interval.
        assert _covered(segs, a, b) >= 0.95 * 60, (segs, body["gaps"])
        assert all(h <= info["gop_s"] for h in _holes(segs, a, b)), (_holes(segs, a, b), segs)
        assert len(segs) >= 60 / SEGMENT_S - 1  # rotated into segments
        assert {s["codec"] for s in segs} == {info["codec"]}
        status = (await gw.camera(cid))["status"]["recording"]
        assert status["state"] == "recording" and status["mode"] == "continuous" and status["bytes_written"] > 0
        assert status["disk"]["free_bytes"] > 0 and status["stream"] == "main"

        # A 20 s window through the endpoint: decodes to 20 s +- 1 at the camera's size and codec, at its bitrate.
        w0 = a + 15.0
        status_code, mp4, headers = await _mp4(gw, f"/api/v1/cameras/{cid}/recording.mp4",
                                               start=_iso(w0), end=_iso(w0 + 20.0))
        assert status_code == 200, mp4
        assert headers["Content-Type"] == "video/mp4"
        assert boxes(mp4)[:2] == ["ftyp", "moov"]  # fast start: seekable before the data arrives
        d = decode(mp4)
        assert d.errors == 0
        assert abs(d.duration - 20.0) <= 1.0, d
        assert (d.codec, d.width, d.height) == (info["codec"], info["width"], info["height"])
        rate = d.bytes * 8 / d.duration
        assert 0.75 * info["bitrate"] <= rate <= 1.33 * info["bitrate"], (rate, info["bitrate"])  # not re-encoded

        # The camera hangs up and comes back: the listing shows a gap with its reason, every file stays whole.
        server.kill()
        down_at = time.time()
        await gw.wait_state(cid, "offline", timeout=30)
        await asyncio.sleep(1.0)
        server.restart()
        await gw.wait_state(cid, "online", timeout=60)

        async def recording_again():
            body = await _list(gw, cid, down_at, time.time())
            return [s for s in body["segments"] if _ts(s["start"]) > down_at]

        await until(recording_again, 60, "a segment after the restart")
        body = await _list(gw, cid, a, time.time())
        gaps = [g for g in body["gaps"] if _ts(g["end"]) > down_at - 5]
        assert gaps and gaps[0]["reason"] in ("stream_ended", "source_restart"), body["gaps"]
        assert _ts(gaps[0]["start"]) <= down_at + 6  # noticed within the stall timeout and the socket's
        # Every segment of the whole span, the one cut by the hang-up included, decodes without an error.
        recs = gw.app[keys.RECORDINGS]
        for seg in recs.store.segments(cid, a, time.time()):
            if not seg.open:
                assert decode(recs.store.path_of(seg)).errors == 0, seg
        await _audited(gw, "recording.view", lambda e: e["target"] == cid and e["detail"].get("start") == _iso(w0))


# ---- live.mp4 ----------------------------------------------------------------------------------------
class Fmp4:
    """Reads a live.mp4 response box by box."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.data = bytearray()
        self.kinds: list[str] = []
        self._pos = 0

    async def until_fragments(self, n: int, timeout: float = 30.0) -> bytes:
        """Read until the init segment and n fragments (moof + mdat) came; returns the bytes so far."""
        async with asyncio.timeout(timeout):
            while self.kinds.count("moof") < n or self.kinds.count("mdat") < n:
                chunk = await self.resp.content.readany()
                assert chunk, f"the stream ended after {self.kinds[:6]}..."
                self.data += chunk
                self._parse()
        return bytes(self.data[:self._pos])

    def _parse(self) -> None:
        while len(self.data) - self._pos >= 8:
            size = int.from_bytes(self.data[self._pos:self._pos + 4], "big")
            if len(self.data) - self._pos < size:
                return
            self.kinds.append(self.data[self._pos + 4:self._pos + 8].decode("latin-1"))
            self._pos += size


async def _open_live(s: aiohttp.ClientSession, gw, cid: str, token: str = TOKEN) -> aiohttp.ClientResponse:
    return await s.get(gw.url(f"/api/v1/cameras/{cid}/live.mp4"), headers={"Authorization": f"Bearer {token}"})


async def _token(gw, role: str, node: str) -> tuple[str, str]:
    status, body = await gw.request("POST", "/api/v1/tokens", json={"name": f"{role} {node}", "role": role,
                                                                     "node": node})
    assert status == 201, body
    return body["id"], body["token"]


async def test_live_mp4_is_the_cameras_own_stream_one_pull_for_many_viewers(redis_url, make_gateway):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], live={"max_per_token": 1}) as gw:
        cam = await gw.add_camera(name="gate", node=NODE, url=f"file:{MOVING}", analytics={"fps": 1})
        cid = cam["id"]
        await gw.wait_state(cid, "online")
        _, other = await _token(gw, "operator", NODE)
        info = _probe(MOVING)
        async with aiohttp.ClientSession() as s:
            first = await _open_live(s, gw, cid)
            assert first.status == 200 and first.headers["Content-Type"] == "video/mp4"
            second = await _open_live(s, gw, cid, other)
            assert second.status == 200
            # The limits of live.mjpeg hold: this token's one view is taken.
            refused = await _open_live(s, gw, cid)
            assert refused.status == 429 and "live.max_per_token" in (await refused.json())["error"]["message"]
            one, two = Fmp4(first), Fmp4(second)
            data = await one.until_fragments(30)
            await two.until_fragments(30)
            # Init segment first (ftyp + moov), then one fragment per frame; PyAV decodes it.
            assert one.kinds[:2] == ["ftyp", "moov"] and one.kinds[2] == "moof", one.kinds[:4]
            d = decode(data)
            assert d.errors == 0 and d.frames >= 30
            assert (d.codec, d.width, d.height) == (info["codec"], info["width"], info["height"])
            # Two viewers, one connection to the camera: the analysis connection feeds the one muxer.
            worker = gw.app[keys.SUPERVISOR].workers[cid]
            mux = gw.app[keys.RECORDINGS].live[cid]
            assert mux.viewers == 2 and worker.live_mux is mux
            assert worker._demuxer is not None and mux in worker._demuxer.sinks and worker._main_pull is None
            first.close()
            second.close()
        await _audited(gw, "live.view", lambda e: e["target"] == cid and e["detail"].get("format") == "mp4")
        await _audited(gw, "live.end", lambda e: e["target"] == cid and e["detail"].get("format") == "mp4")


async def test_with_a_substream_live_mp4_and_recording_take_the_main_stream(redis_url, make_gateway, tmp_path):
    from tests.media_rec import write_clip

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(MOVING, media / "main.mp4")
    write_clip(media / "sub.mp4", "libx264", seconds=12, fps=15, gop=30, size=(320, 240))
    async with make_gateway(redis_url, media_dirs=[media], recordings={"segment_s": 2, "min_free_bytes": 0}) as gw:
        cam = await gw.add_camera(name="gate", node=NODE, url=f"file:{media / 'main.mp4'}",
                                  substream_url=f"file:{media / 'sub.mp4'}", analytics={"fps": 1})
        cid = cam["id"]
        online = await gw.wait_state(cid, "online")
        assert (online["status"]["width"], online["status"]["height"]) == (320, 240)  # analysis: the substream
        worker = gw.app[keys.SUPERVISOR].workers[cid]
        assert worker._main_pull is None  # recording off, nobody watching: the main stream is not pulled
        async with aiohttp.ClientSession() as s:
            resp = await _open_live(s, gw, cid)
            assert resp.status == 200
            d = decode(await Fmp4(resp).until_fragments(20))
            assert (d.width, d.height) == (640, 360) and d.errors == 0  # the main stream, as the camera sends it
            resp.close()
        # Recording switched on by a PATCH: it records the main stream too.
        status, body = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"recording": {"mode": "continuous"}})
        assert status == 200 and body["recording"]["mode"] == "continuous", body
        t0 = time.time()

        async def a_segment():
            return [s for s in (await _list(gw, cid, t0 - 5, time.time()))["segments"]
                    if _ts(s["end"]) - _ts(s["start"]) >= 2]

        segs = await until(a_segment, 30, "a segment of the main stream")
        assert (segs[0]["width"], segs[0]["height"]) == (640, 360)
        status, body = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"recording": {"mode": "bogus"}})
        assert status == 422 and "recording.mode" in str(body), body
        status, body = await gw.request("PATCH", f"/api/v1/cameras/{cid}", json={"recording": {"pre_s": 31}})
        assert status == 422 and "recording.pre_s" in str(body), body


# ---- jurisdiction and audit ----------------------------------------------------------------------------
async def test_every_recording_endpoint_is_jurisdiction_scoped_and_audited(redis_url, make_gateway):
    from analytics.events import Event, Origin, iso_ms

    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR], recordings={"segment_s": 2, "min_free_bytes": 0}) as gw:
        cam = await gw.add_camera(name="gate", node=NODE, url=f"file:{MOVING}", analytics={"fps": 1},
                                  recording={"mode": "continuous", "pre_s": 2, "post_s": 2})
        cid = cam["id"]
        await gw.wait_state(cid, "online")
        t_start = time.time()

        async def recorded(seconds: float):
            segs = (await _list(gw, cid, t_start - 60, time.time()))["segments"]
            return segs and _ts(segs[-1]["end"]) - _ts(segs[0]["start"]) >= seconds and segs

        segs = await until(lambda: recorded(7), 40, "7 s recorded")
        # An event 3 s before the recording's end: its clip [at - 2, at + 2] lies wholly in the recording.
        at = _ts(segs[-1]["end"]) - 3
        events = gw.app[keys.EVENTS]
        events.publish(Event(type="detection", camera_id=cid, node=NODE, ts=iso_ms(at), origin=Origin("450102", "test-gw"),
                             label="person", score=0.9, box=(0.1, 0.2, 0.5, 0.9), track_id=1, phase="start"))
        assert await events.flush(timeout=5)
        status, page = await gw.request("GET", "/api/v1/events", params={"camera": cid, "type": "detection"})
        event_id = page["events"][0]["id"]
        w0 = _ts(segs[0]["start"]) + 1
        paths = {
            "list": (f"/api/v1/cameras/{cid}/recordings", {}),
            "window": (f"/api/v1/cameras/{cid}/recording.mp4", {"start": _iso(w0), "end": _iso(w0 + 4)}),
            "clip": (f"/api/v1/events/{event_id}/clip.mp4", {}),
            "live": (f"/api/v1/cameras/{cid}/live.mp4", {}),
        }
        _, own = await _token(gw, "operator", NODE)
        _, elsewhere = await _token(gw, "operator", "450102002")
        _, viewer = await _token(gw, "viewer", NODE)
        async with aiohttp.ClientSession() as s:
            for name, (path, params) in paths.items():
                for token, expected in ((elsewhere, 404), (viewer, 403)):
                    async with s.get(gw.url(path), params=params, headers={"Authorization": f"Bearer {token}"}) as r:
                        assert r.status == expected, (name, token == viewer, r.status, await r.text())
            answers = {}
            for name, (path, params) in paths.items():
                r = await s.get(gw.url(path), params=params, headers={"Authorization": f"Bearer {own}"})
                assert r.status == 200, (name, await r.text())
                answers[name] = await Fmp4(r).until_fragments(5) if name == "live" else await r.read()
                r.close()
        clip = decode(answers["clip"])
        assert abs(clip.duration - 4.0) <= 1.0 and clip.errors == 0, clip
        window = decode(answers["window"])
        assert abs(window.duration - 4.0) <= 1.0, window
        # Nothing recorded there: 404; a window over an hour, reversed, or a time that is none: refused, saying why.
        status, body, _ = await _mp4(gw, f"/api/v1/cameras/{cid}/recording.mp4", start="2020-01-01T00:00:00Z")
        assert status == 404 and "no recording" in body["error"]["message"], body
        status, body, _ = await _mp4(gw, f"/api/v1/cameras/{cid}/recording.mp4", start=_iso(w0),
                                     end=_iso(w0 + 3601))
        assert status == 422 and "one hour" in body["error"]["message"], body
        status, body, _ = await _mp4(gw, f"/api/v1/cameras/{cid}/recording.mp4", start=_iso(w0), end=_iso(w0 - 1))
        assert status == 422 and "after start" in body["error"]["message"], body
        status, body, _ = await _mp4(gw, f"/api/v1/cameras/{cid}/recording.mp4", start="yesterday")
        assert status == 400 and "ISO 8601" in body["error"]["message"], body
        # Every answer is in the trail: the listing and the window, the clip, the live view; refusals too.
        await _audited(gw, "recording.view", lambda e: e["target"] == cid and e["detail"].get("list"))
        await _audited(gw, "recording.view", lambda e: e["target"] == cid and e["detail"].get("start") == _iso(w0))
        await _audited(gw, "clip.view", lambda e: e["target"] == event_id and e["detail"]["camera_id"] == cid)
        await _audited(gw, "live.view", lambda e: e["target"] == cid and e["detail"].get("format") == "mp4")
        for path, _ in paths.values():  # the refusals outside the jurisdiction, by the path reached for
            await _audited(gw, "access.denied", lambda e, path=path: e["target"] == path and e["node"] == NODE)


# ---- events mode around a real track -------------------------------------------------------------------
async def test_events_mode_keeps_pre_and_post_around_a_track(redis_url, make_gateway, model_path, street_clip):
    pre, post = 3.0, 3.0
    async with make_gateway(redis_url, model=model_path, media_dirs=[street_clip.parent],
                            recordings={"segment_s": 10, "min_free_bytes": 0}) as gw:
        async with gw.subscribe(type="detection") as sub:
            cam = await gw.add_camera(name="street", node=NODE, url=f"file:{street_clip}", analytics={"fps": 5},
                                      recording={"mode": "events", "pre_s": pre, "post_s": post})
            cid = cam["id"]
            # A track that appeared once the camera had sent pre_s and a key-frame interval (2 s) of video.
            early = time.time() + pre + 2.0 + 1.0

            def a_track_ended(events):
                starts = {e["track_id"]: e for e in events if e["phase"] == "start" and _ts(e["ts"]) >= early}
                return [(starts[e["track_id"]], e) for e in events if e["phase"] == "end" and e["track_id"] in starts]

            await sub.wait_for(a_track_ended, 90, "a track that starts and ends")
            start_ev, end_ev = a_track_ended(sub.events)[0]
            heard_end = sub.received_at[sub.events.index(end_ev)]
        # An end event shows the object's best sighting: it left after that, and before the end was heard of.
        appeared, left = _ts(start_ev["ts"]), max(_ts(start_ev["ts"]), _ts(end_ev["ts"]))

        async def written_past_post():
            segs = (await _list(gw, cid, appeared - 60, time.time()))["segments"]
            return segs and _ts(segs[-1]["end"]) >= heard_end + post and segs

        await until(written_past_post, 60, "the track's post-roll written")
        segs = (await _list(gw, cid, appeared - 60, left + 60))["segments"]
        # From pre_s before the track appeared (cut at the key frame before) to post_s after it left, unbroken.
        a, b = appeared - pre, left + post - 0.5
        assert _covered(segs, a, b) >= (b - a) - 0.5, (a, b, segs)
        first = min(_ts(s["start"]) for s in segs if _ts(s["end"]) > a)
        assert first <= a + 0.5
        status = (await gw.camera(cid))["status"]["recording"]
        assert status["mode"] == "events"
        # Its clip plays the same stretch.
        status_code, mp4, _ = await _mp4(gw, f"/api/v1/events/{start_ev['id']}/clip.mp4")
        assert status_code == 200
        assert abs(decode(mp4).duration - (pre + post)) <= 1.0


# ---- a full disk ---------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (root only): a disk that really fills up."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        from tests.servers import missing
        missing("a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        from tests.servers import missing
        missing(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


async def test_a_full_disk_pauses_recording_with_a_status_event_and_it_resumes(redis_url, make_gateway, small_disk):
    rec_dir = small_disk / "recordings"
    floor = 2 << 20
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR],
                            recordings={"dir": str(rec_dir), "segment_s": 2, "min_free_bytes": floor}) as gw:
        async with gw.subscribe(type="status") as sub:
            cam = await gw.add_camera(name="gate", node=NODE, url=f"file:{MOVING}", analytics={"fps": 2},
                                      recording={"mode": "continuous"})
            cid = cam["id"]
            await gw.wait_state(cid, "online")
            await until(lambda: _recording_state(gw, cid, "recording"), 20, "recording")
            # Something else fills the disk: free space drops under the floor, and nothing of ours can free it.
            ballast = small_disk / "ballast"
            free = shutil.disk_usage(small_disk).free
            with open(ballast, "wb") as f:
                f.write(b"\0" * max(0, free - (1 << 20)))
            full_at = time.time()

            def paused(events):
                return [e for e in events if e["camera_id"] == cid and e.get("extra", {}).get("recording") == "paused"]

            ev = (await sub.wait_for(paused, 30, "a status event: recording paused"))
            ev = paused(ev)[0]
            assert "disk full" in ev["reason"] and ev["state"] == "online", ev
            st = (await gw.camera(cid))["status"]
            assert st["recording"]["state"] == "paused" and "disk full" in st["recording"]["reason"]
            assert st["recording"]["disk"]["full"] is True
            # Analysis goes on while recording waits for space.
            analysed = st["frames_analyzed"]
            await until(lambda: _analysed_more(gw, cid, analysed), 20, "frames analysed while paused")
            assert (await gw.camera(cid))["status"]["state"] == "online"
            # Space returns: recording resumes (status event), a new segment starts after it.
            ballast.unlink()

            def resumed(events):
                return [e for e in events if e["camera_id"] == cid and e.get("reason") == "recording resumed"]

            ev = resumed(await sub.wait_for(resumed, 30, "a status event: recording resumed"))[0]
            assert ev["extra"]["recording"] in ("waiting", "recording"), ev  # (waiting: for the next key frame)
            await until(lambda: _recording_state(gw, cid, "recording"), 20, "recording again")

        async def a_segment_after_the_gap():
            # The index says: a disk_full gap, then a segment recorded after it. (Judged by the index's own times,
            # not this test's clock: under load the recorder's times lag the wall clock by a second or more.)
            listing = await _list(gw, cid, full_at - 5, time.time() + 5)
            ends = [_ts(g["end"]) for g in listing["gaps"] if g["reason"] == "disk_full"]
            return ends and [s for s in listing["segments"]
                             if _ts(s["start"]) >= max(ends) - 0.5 and _ts(s["end"]) > _ts(s["start"])]

        await until(a_segment_after_the_gap, 30, "a disk_full gap in the index, then a segment after it")

        async def disk_not_full():
            return (await gw.request("GET", "/healthz"))[1]["recordings"]["full"] is False

        await until(disk_not_full, 10, "/healthz: the recordings' disk no longer full")


async def _recording_state(gw, cid: str, state: str) -> bool:
    return (await gw.camera(cid))["status"]["recording"]["state"] == state


async def _analysed_more(gw, cid: str, before: int) -> bool:
    return (await gw.camera(cid))["status"]["frames_analyzed"] > before


async def test_live_mp4_reads_the_cameras_own_clock_from_its_sender_reports(redis_url, make_gateway, rtsp_server,
                                                                             street_clip):
    # RTSP sources send RTCP sender reports that tie their RTP timestamps (capture instants) to their wall clock:
    # once one came, live.mp4's head carries the capture clock (the page's latency is capture to screen). A
    # source whose mapping puts frames after their receipt (the test server sends the street clip's B-frame
    # reordered frames ahead of the "capture" it stamps) is not believed: the clock stays the receipt's.
    server = rtsp_server({"plain": MOVING, "bframes": street_clip})
    async with make_gateway(redis_url) as gw:
        cams = {}
        for name in ("plain", "bframes"):
            cams[name] = (await gw.add_camera(name=name, node=NODE, url=server.url(name), analytics={"fps": 1}))["id"]
        for cid in cams.values():
            await gw.wait_state(cid, "online")
        async with aiohttp.ClientSession() as s:
            keep = {name: await _open_live(s, gw, cid) for name, cid in cams.items()}  # the muxers run from now
            for r in keep.values():
                assert r.status == 200
                await Fmp4(r).until_fragments(5)

            async def clock_of(name: str) -> tuple[str, float]:
                r = await _open_live(s, gw, cams[name])
                try:
                    assert r.status == 200
                    return r.headers["X-Live-Clock"], float(r.headers["X-Live-Wall-Offset"])
                finally:
                    r.close()

            async def plain_on_capture():
                clock, offset = await clock_of("plain")
                return clock == "capture" and offset

            offset = await until(plain_on_capture, 20, "the plain camera's live view on its capture clock")
            assert abs(offset - time.time()) < 3600  # a wall time, not a stream-relative figure
            assert (await clock_of("bframes"))[0] == "receipt"
            for r in keep.values():
                r.close()
