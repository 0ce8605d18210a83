"""Recordings, event clips and live.mp4 across tiers (tiers/relay.py): real tiers (one redis-server and gateway
each, children dialling out with their granted ACL credential), a real camera (a file) recorded on the village.

The county plays the village camera's recording window, its event clip and its live.mp4 through two hops; a slow
reader at the top never makes a reply list longer than the window at either hop; a viewer leaving makes the
village unsubscribe; errors keep their status across the hops; a village whose gateway is down is a 504 in
bounded time; jurisdiction and audit are the county's; bad requests in the queue are answered or dropped, and
the bridge goes on. Two gateways of one tier: one plays what its peer records.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from analytics.events import Event, Origin, iso_ms
from gateway import keys
from gateway.app import build_app
from gateway.config import load_settings
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import TOKEN, Gateway, until
from tests.media_rec import decode
from tests.test_recording_api import Fmp4, _audited, _iso, _token, _ts
from gateway import live_share as share_mod
from gateway.recording.mp4 import LiveBoxes, fragment_starts_with_key, trex_default_flags
from tiers import relay as relay_mod
from tiers.relay import StreamRequest

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

COUNTY, TOWNSHIP, VILLAGE = "450102", "450102001", "450102001001"
MOVING = CLIPS_DIR / "moving_objects.mp4"  # 640x360 H.264, 15 fps, key frame every 2 s
RECORDING = {"segment_s": 2, "min_free_bytes": 0}
SMALL_CHUNK, SMALL_WINDOW = 4 * 1024, 4  # many items per window, so the window is what bounds the lists


async def _listing(gw, cid: str, since: float, until_t: float) -> tuple[int, dict, dict]:
    async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/recordings"),
                              params={"since": _iso(since), "until": _iso(until_t)}) as r:
        return r.status, await r.json(), dict(r.headers)


async def _get(gw, path: str, token: str | None = None, **params) -> tuple[int, bytes, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with gw.session.get(gw.url(path), params=params, headers=headers) as r:
        return r.status, await r.read(), dict(r.headers)


async def _recorded(gw, cid: str, t0: float, seconds: float):
    status, body, _ = await _listing(gw, cid, t0 - 60, time.time())
    segs = status == 200 and body["segments"]
    return segs and _ts(segs[-1]["end"]) - _ts(segs[0]["start"]) >= seconds and segs


async def _reply_lengths(r, pattern: str) -> list[int]:
    """Lengths of the reply lists (not the ack lists) matching `pattern`."""
    out = []
    async for k in r.scan_iter(match=pattern, count=1000):
        if not k.endswith(b":ack"):
            out.append(await r.llen(k))
    return out


SHORT_LINGER_S = 1.0  # a share's linger in these tests: the village unsubscribes soon after the last viewer
SHARE_VIEWER_FRAGMENTS = 20  # a share viewer's queue here: a reader that stops skips within ~1.5 s at 15 fps


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    monkeypatch.setattr(share_mod, "LINGER_S", SHORT_LINGER_S)
    monkeypatch.setattr(share_mod, "VIEWER_FRAGMENTS", SHARE_VIEWER_FRAGMENTS)


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(relay_mod, "CHUNK_BYTES", SMALL_CHUNK)
    monkeypatch.setattr(relay_mod, "WINDOW", SMALL_WINDOW)
    monkeypatch.setattr(relay_mod, "ACK_EVERY", SMALL_WINDOW // 2)


async def test_the_county_plays_a_village_cameras_recording_clip_and_live_view_through_two_hops(
        tier_chain, small_window):
    async with tier_chain((COUNTY, TOWNSHIP, VILLAGE), media_dirs=[CLIPS_DIR], recordings=RECORDING) as chain:
        county, township, village = chain[COUNTY], chain[TOWNSHIP], chain[VILLAGE]
        t0 = time.time()
        cam = await village.gw.add_camera(name="gate", node=VILLAGE, url=f"file:{MOVING}", analytics={"fps": 1},
                                          recording={"mode": "continuous", "pre_s": 2, "post_s": 2})
        cid = cam["id"]

        # Bad requests in the township's queue at the county: answered 400 (an id was readable) or dropped.
        cr = county.redis()
        queue = f"se:child:{TOWNSHIP}:st"
        bad = [b"not json", b"x" * 5000, json.dumps({"id": "bad1", "kind": "bogus", "camera_id": cid}),
               json.dumps({"id": "bad2", "kind": "recording", "camera_id": "12"}),
               json.dumps({"id": "../x", "kind": "live", "camera_id": cid}), json.dumps([1, 2])]
        await cr.rpush(queue, *bad)
        for rid in ("bad1", "bad2"):
            got = await cr.blpop([f"se:child:{TOWNSHIP}:st:{rid}"], timeout=5)
            assert got is not None and got[1][:1] == b"H" and json.loads(got[1][1:])["status"] == 400, got
        relay_t = township.app[keys.RELAY]
        await until(lambda: _async(relay_t.stats.malformed >= 5), 5, "the malformed requests counted")

        segs = await until(lambda: _recorded(village.gw, cid, t0, 7), 40, "7 s recorded at the village")
        await until(lambda: _async_get_ok(county.gw, f"/api/v1/cameras/{cid}"), 30, "the camera at the county")

        # The listing, through two hops: the village's own answer.
        a, b = t0 - 60, time.time()
        status, far, headers = await _listing(county.gw, cid, a, b)
        assert status == 200 and headers["X-Relay-Hops"] == "2", far
        _, near, _ = await _listing(village.gw, cid, a, b)
        # The same answer (the open segment, still growing, aside).
        assert far["segments"][:-1] == near["segments"][:-1] and len(far["segments"]) >= 3
        assert (far["since"], far["until"], far["gaps"]) == (near["since"], near["until"], near["gaps"])

        # A window: the same MP4 bytes as the village serves itself.
        w0 = _ts(segs[0]["start"]) + 1
        window = {"start": _iso(w0), "end": _iso(w0 + 5)}
        path = f"/api/v1/cameras/{cid}/recording.mp4"
        status, far, headers = await _get(county.gw, path, **window)
        assert status == 200 and headers["Content-Type"] == "video/mp4", far
        assert headers["X-Relay-Hops"] == "2" and "X-Recording-Start" in headers
        assert headers["Accept-Ranges"] == "none"  # relayed whole: a player seeks in what has arrived
        _, near, _ = await _get(village.gw, path, **window)
        assert far == near and int(headers["Content-Length"]) == len(far)
        d = decode(far)
        assert d.errors == 0 and abs(d.duration - 5.0) <= 1.0 and (d.width, d.height) == (640, 360), d

        # Bytes per hop: what the village served is what the township relayed and the county received.
        served = village.app[keys.RELAY].stats.bytes[("served", "recording")]
        assert served == len(far)
        assert relay_t.stats.bytes[("relayed", "recording")] == served
        assert county.app[keys.RELAY].stats.bytes[("received", "recording")] == served
        status, rep = await township.gw.request("GET", "/api/v1/bridge")
        assert status == 200 and rep["bridge"]["relay"]["bytes"]["relayed"]["recording"] == served, rep

        # A slow reader at the top: neither hop's reply list ever holds more than the window.
        lengths: list[int] = []
        stop = asyncio.Event()

        async def sample() -> None:
            tr = township.redis()
            while not stop.is_set():
                lengths.extend(await _reply_lengths(cr, f"se:child:{TOWNSHIP}:st:*"))
                lengths.extend(await _reply_lengths(tr, f"se:child:{VILLAGE}:st:*"))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample(), name="test:sampler")
        w1 = {"start": _iso(_ts(segs[0]["start"])), "end": _iso(time.time())}
        body = bytearray()
        async with county.gw.session.get(county.gw.url(path), params=w1) as r:
            assert r.status == 200
            while chunk := await r.content.read(SMALL_CHUNK // 2):
                body += chunk
                await asyncio.sleep(0.01)
        stop.set()
        await sampler
        assert decode(bytes(body)).errors == 0
        assert len(body) > 6 * SMALL_CHUNK * SMALL_WINDOW  # many windows' worth went by
        assert lengths and max(lengths) <= SMALL_WINDOW, max(lengths)
        assert max(lengths) >= 2  # the sampler did see the lists filled

        # The event clip: the event travels up with its id; the county's clip is the village's.
        at = _ts(segs[-1]["end"]) - 3
        events = village.app[keys.EVENTS]
        events.publish(Event(type="detection", camera_id=cid, node=VILLAGE, ts=iso_ms(at),
                             origin=Origin(VILLAGE, "test-gw"), label="person", score=0.9, box=(0.1, 0.2, 0.5, 0.9),
                             track_id=1, phase="start"))
        assert await events.flush(timeout=5)

        async def at_county():
            status, page = await county.gw.request("GET", "/api/v1/events", params={"camera": cid,
                                                                                    "type": "detection"})
            return status == 200 and page["events"] and page["events"][0]["id"]

        event_id = await until(at_county, 20, "the event at the county")
        status, far, headers = await _get(county.gw, f"/api/v1/events/{event_id}/clip.mp4")
        assert status == 200 and headers["X-Relay-Hops"] == "2", far
        _, near, _ = await _get(village.gw, f"/api/v1/events/{event_id}/clip.mp4")
        assert far == near
        clip = decode(far)
        assert clip.errors == 0 and abs(clip.duration - 4.0) <= 1.0, clip

        # live.mp4 through two hops, shared: three viewers at the county cost ONE stream on each hop.
        await _live_is_shared(county, township, village, cid)

        # Audit at the county, the asking tier: who watched what, with the bytes and the hops (the village's own
        # entries, of the test's requests there, are forwarded up to the county's trail too).
        rec = await _audited(county.gw, "recording.view", lambda e: e["tier"] == COUNTY and e["target"] == cid
                             and e["detail"].get("start") == window["start"])
        assert rec["detail"]["hops"] == 2 and rec["detail"]["bytes"] > 0
        await _audited(county.gw, "clip.view", lambda e: e["tier"] == COUNTY and e["target"] == event_id
                       and e["detail"]["hops"] == 2)
        await _audited(county.gw, "live.view", lambda e: e["tier"] == COUNTY and e["target"] == cid
                       and e["detail"].get("format") == "mp4" and e["detail"]["hops"] == 2)
        await _audited(county.gw, "live.end", lambda e: e["tier"] == COUNTY and e["target"] == cid
                       and e["detail"].get("format") == "mp4")

        # Jurisdiction: a county operator over another township gets 404, and the county audits the refusal.
        _, elsewhere = await _token(county.gw, "operator", "450102002")
        status, _, _ = await _get(county.gw, path, elsewhere, **window)
        assert status == 404
        await _audited(county.gw, "access.denied", lambda e: e["target"] == path)

        # Errors keep their status across the hops.
        status, body, _ = await _get(county.gw, path, start="2020-01-01T00:00:00Z")
        assert status == 404 and b"no recording" in body, body
        status, body, _ = await _get(county.gw, f"/api/v1/cameras/{cid}/recordings",
                                     since="2020-01-01T00:00:00Z", until=_iso(time.time()))
        assert status == 422 and b"days" in body, body  # the village refused the listing's window
        ghost = cid[:-6] + "999999"
        await cr.hset("se:rcat", ghost, json.dumps({"node": VILLAGE, "via": TOWNSHIP, "owner": VILLAGE}))
        status, body, _ = await _get(county.gw, f"/api/v1/cameras/{ghost}/recordings")
        assert status == 404 and b"no camera" in body, body

        # The village's gateway down: a 504 within the hops' timeouts, never a hang.
        await chain.stop_gateway(VILLAGE)
        started = time.monotonic()
        status, body, _ = await _get(county.gw, path, **window)
        assert status == 504, body
        assert time.monotonic() - started < relay_mod.HEAD_WAIT_S + 2


async def test_a_gateway_plays_what_a_peer_gateway_of_its_tier_records(redis_url, tmp_path):
    node = TOWNSHIP
    gws: dict[str, Gateway] = {}
    try:
        for gid in ("gw-a", "gw-b"):
            settings = load_settings(None, node=node, redis=redis_url, data_dir=tmp_path / gid,
                                     media_dirs=[CLIPS_DIR], admin_token=TOKEN, gateway_id=gid, recordings=RECORDING,
                                     ingest={"stall_timeout_s": 3.0, "backoff_initial_s": 0.5, "open_timeout_s": 3.0})
            server = TestServer(build_app(settings, TOKEN), host="127.0.0.1")
            await server.start_server()
            gws[gid] = Gateway(server, aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}))
        a, b = gws["gw-a"], gws["gw-b"]
        t0 = time.time()
        cam = await a.add_camera(name="gate", node=node, url=f"file:{MOVING}", analytics={"fps": 1},
                                 recording={"mode": "continuous"}, gateway="gw-b")
        cid = cam["id"]
        await until(lambda: _async(cid in b.app[keys.SUPERVISOR].workers), 20, "the camera running on gw-b")
        segs = await until(lambda: _recorded(b, cid, t0, 5), 40, "5 s recorded on gw-b")
        assert cid not in a.app[keys.SUPERVISOR].workers
        w0 = _ts(segs[0]["start"]) + 1
        window = {"start": _iso(w0), "end": _iso(w0 + 3)}
        path = f"/api/v1/cameras/{cid}/recording.mp4"
        status, far, headers = await _get(a, path, **window)
        assert status == 200 and headers["X-Relay-Hops"] == "1", far
        _, near, _ = await _get(b, path, **window)
        assert far == near and decode(far).errors == 0
        async with aiohttp.ClientSession() as s:
            r = await s.get(a.url(f"/api/v1/cameras/{cid}/live.mp4"), headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status == 200, await r.text()
            live = decode(await Fmp4(r).until_fragments(10))
            assert live.errors == 0 and (live.width, live.height) == (640, 360)
            r.close()
        mux = b.app[keys.RECORDINGS].live[cid]
        await until(lambda: _async(mux.viewers == 0), 10, "gw-b's viewer gone")
        assert b.app[keys.RELAY].stats.bytes[("served", "recording")] == len(far)
    finally:
        for gw in gws.values():
            await gw.session.close()
            await gw.server.close()


def _starts_at_key(data: bytes) -> bool:
    """Whether a live.mp4 body is the init segment followed by a fragment that starts with a key frame."""
    units = LiveBoxes(1 << 26).feed(data)
    assert [k for k, _ in units[:2]] == ["init", "fragment"], [k for k, _ in units[:3]]
    init, frag = units[0][1], units[1][1]
    trex = trex_default_flags(init[init.find(b"moov") - 4:])
    return fragment_starts_with_key(frag[:int.from_bytes(frag[:4], "big")], trex)


def _live_streams(app, role: str) -> int:
    return app[keys.RELAY].stats.streams.get((role, "live"), 0)


async def _live_is_shared(county, township, village, cid: str) -> None:
    """Three viewers of a village camera at the county: one live stream served by the village, one relayed by the
    township; each body decodes from a key frame at the camera's size; a late viewer starts at once; a slow one
    skips without stalling the others; all gone, the village unsubscribes after the lingers."""
    served0, relayed0 = _live_streams(village.app, "served"), _live_streams(township.app, "relayed")
    url = county.gw.url(f"/api/v1/cameras/{cid}/live.mp4")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s:
        resps = await asyncio.gather(*(s.get(url, headers=auth) for _ in range(3)))
        for r in resps:
            assert r.status == 200 and r.headers["X-Relay-Hops"] == "2", await r.text()
            # The owner's head crosses the hops and the share: the page asks the browser about the codec, and
            # reads the clock.
            assert r.headers["X-Codecs"].startswith("avc1."), r.headers
            float(r.headers["X-Live-Wall-Offset"])
        readers = [Fmp4(r) for r in resps]
        bodies = await asyncio.gather(*(rd.until_fragments(15) for rd in readers))
        for rd, body in zip(readers, bodies):
            assert rd.kinds[:2] == ["ftyp", "moov"] and _starts_at_key(body)
            live = decode(body)
            assert live.errors == 0 and live.frames >= 15 and (live.width, live.height) == (640, 360), live
        mux = village.app[keys.RECORDINGS].live[cid]
        assert mux.viewers == 1  # the township's one stream
        assert _live_streams(village.app, "served") - served0 == 1
        assert _live_streams(township.app, "relayed") - relayed0 == 1
        shares = county.app[keys.RELAY].report()["live_shares"]
        assert shares["open"] == 1 and shares["viewers"] == 3 and shares["hits"] >= 2, shares
        status, rep = await county.gw.request("GET", "/api/v1/bridge")
        cams = rep["relay"]["live_shares"]["cameras"]
        assert status == 200 and [(c["camera_id"], c["viewers"], c["hops"]) for c in cams] == [(cid, 3, 2)], rep
        status, rep = await township.gw.request("GET", "/api/v1/bridge")
        assert rep["relay"]["live_shares"]["cameras"][0]["viewers"] == 1, rep  # the county's one stream

        # A viewer joining later starts at once: the init segment and the fragments since the last key frame.
        t = time.monotonic()
        late = await s.get(url, headers=auth)
        late_reader = Fmp4(late)
        body = await late_reader.until_fragments(1)
        assert time.monotonic() - t < 2.0 and _starts_at_key(body)
        assert decode(await late_reader.until_fragments(5)).errors == 0

        # A slow viewer (one that stops reading) skips to the next key frame; the others go on meanwhile.
        slow = await county.app[keys.RELAY].open(StreamRequest("live", cid))
        it = slow.__aiter__()
        assert (await asyncio.wait_for(it.__anext__(), 5))[4:8] == b"ftyp"
        shares = county.app[keys.RELAY].report()["live_shares"]
        await until(lambda: _async(county.app[keys.RELAY].report()["live_shares"]["skips"] > shares["skips"]),
                    15, "the slow viewer to skip")
        for rd in readers:
            before = rd.kinds.count("moof")
            await rd.until_fragments(before + 10, timeout=10)  # the others never waited for it
        frag = await asyncio.wait_for(it.__anext__(), 5)  # what it gets next goes on from a key frame
        assert frag[4:8] == b"moof" and fragment_starts_with_key(frag[:int.from_bytes(frag[:4], "big")],
                                                                 trex_default_flags(_moov_of(body)))
        await slow.aclose()
        assert _live_streams(village.app, "served") - served0 == 1  # still one stream from the village
        for r in (*resps, late):
            r.close()
    # Every viewer gone: after the county's and the township's lingers, the village's muxer has none — by the
    # cancel passed down, or at worst by the owner giving up on a stream nobody acknowledges (ACK_TIMEOUT_S).
    # (A fresh CI run under load once took longer than the lingers and 10 s: the cancel may have been missed.)
    await until(lambda: _async(mux.viewers == 0), 4 * SHORT_LINGER_S + relay_mod.ACK_TIMEOUT_S + 10,
                "the village's viewer gone")
    await until(lambda: _async(county.app[keys.RELAY].report()["live_shares"]["open"] == 0), 5,
                "the county's share closed")
    assert village.app[keys.RELAY].stats.bytes[("served", "live")] > 0


def _moov_of(body: bytes) -> bytes:
    init = LiveBoxes(1 << 26).feed(body)[0][1]
    return init[init.find(b"moov") - 4:]


async def _async(value):
    return value


async def _async_get_ok(gw, path: str) -> bool:
    status, _ = await gw.request("GET", path)
    return status == 200
