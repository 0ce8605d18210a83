"""Exports kept for a player's seeks (gateway/exports.py) against a gateway recording a real file camera.

A Range request after a full one is served from the export already written (same bytes, same ETag, 206); requests
for the same window at once make one export; the kept bytes stay under a bound set small here, the least recently
used going first; an export unused past keep_s is removed from disk by the cleaner task (a clock the test drives);
a window still being recorded is not kept, so a later request includes the newer footage; the relay's path (the
stream another tier reads) uses the kept file without deleting it; retention deleting the footage drops it.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from multidict import CIMultiDict

from gateway import keys
from gateway.api.recordings import local_opener
from sample_streams import CLIPS_DIR
from tests.gateway_fixtures import until
from tests.test_recording_api import _iso, _list, _ts, recording_file_camera
from tiers.relay import StreamRequest

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

NODE = "450102001"


async def _get(gw, cid: str, window: dict, **headers) -> tuple[int, bytes, dict]:
    async with gw.session.get(gw.url(f"/api/v1/cameras/{cid}/recording.mp4"), params=window, headers=headers) as r:
        return r.status, await r.read(), CIMultiDict(r.headers)


def _files(recs) -> set[str]:
    return {p.name for p in recs.exports.folder.glob("*.mp4")}


async def test_exports_are_kept_for_seeks_bounded_expired_and_never_stale(make_gateway, redis_url):
    async with make_gateway(redis_url, media_dirs=[CLIPS_DIR],
                            recordings={"segment_s": 2, "min_free_bytes": 0, "export_keep_s": 10}) as gw:
        recs = gw.app[keys.RECORDINGS]
        cache = recs.exports
        skew = [0.0]
        cache.clock = lambda: time.monotonic() + skew[0]  # the test moves time on for the cleaner
        t0 = time.time()
        cid, s = await recording_file_camera(gw, 3, 40)
        a = {"start": s[0]["start"], "end": s[1]["end"]}
        b = {"start": s[1]["start"], "end": s[2]["end"]}
        c = {"start": s[2]["start"], "end": s[2]["end"]}

        # A full request, then a player's seek: the same file (bytes, ETag), 206, no second export.
        status, whole, h = await _get(gw, cid, a)
        assert status == 200 and cache.stats().misses == 1 and cache.stats().entries == 1
        status, part, h2 = await _get(gw, cid, a, Range="bytes=100-199", **{"If-Range": h["ETag"]})
        assert status == 206 and part == whole[100:200], status
        assert h2["Content-Range"] == f"bytes 100-199/{len(whole)}" and h2["ETag"] == h["ETag"]
        status, again, _ = await _get(gw, cid, a)
        assert status == 200 and again == whole
        st = cache.stats()
        assert (st.misses, st.hits, st.entries, st.kept_bytes) == (1, 2, 1, len(whole)), st

        # Three requests for one window at once: one export, the others wait for it.
        answers = await asyncio.gather(*(_get(gw, cid, b) for _ in range(3)))
        assert {r[0] for r in answers} == {200} and len({r[1] for r in answers}) == 1
        st = cache.stats()
        assert st.misses == 2 and st.joined + st.hits == 2 + 2, st
        size_b = len(answers[0][1])

        # The bound (set small): a and b fit; a used again, so b is the least recently used and goes for c.
        cache.max_bytes = len(whole) + size_b
        assert (await _get(gw, cid, a, Range="bytes=0-9"))[0] == 206
        b_file = {p for p in _files(recs)}
        status, clip_c, _ = await _get(gw, cid, c)
        assert status == 200 and len(clip_c) <= size_b
        st = cache.stats()
        assert st.evictions == 1 and st.entries == 2 and st.kept_bytes == len(whole) + len(clip_c), st
        assert st.kept_bytes <= cache.max_bytes
        await until(lambda: _async(len(_files(recs)) == 2), 5, "the evicted export removed from disk")
        assert len(b_file - _files(recs)) == 1
        misses = st.misses
        assert (await _get(gw, cid, a, Range="bytes=0-9"))[1] == whole[:10]  # a is still kept
        assert cache.stats().misses == misses

        # The relay's path (what another tier or gateway reads): the kept file, left in place when closed.
        stream = await local_opener(gw.app)(StreamRequest("recording", cid, start=_ts(a["start"]), end=_ts(a["end"])))
        body = b"".join([chunk async for chunk in stream])
        await stream.aclose()
        assert body == whole and cache.stats().misses == misses and len(_files(recs)) == 2

        # A window still being recorded (it ends in the future) is served, not kept: a later request sees more.
        live = {"start": s[2]["start"], "end": _iso(time.time() + 60)}
        status, first, h = await _get(gw, cid, live)
        assert status == 200 and cache.stats().not_kept == 1 and cache.stats().entries == 2
        end1 = _ts(h["X-Recording-End"])

        async def recorded_past():
            return (await _list(gw, cid, t0, time.time() + 1))["segments"][-1]["end"] > _iso(end1 + 2)

        await until(recorded_past, 20, "two more seconds recorded")
        status, second, h = await _get(gw, cid, live)
        assert status == 200 and _ts(h["X-Recording-End"]) >= end1 + 2 and len(second) > len(first)
        await until(lambda: _async(len(_files(recs)) == 2), 5, "the exports not kept removed once sent")

        # /healthz shows the cleaner and the counters; past keep_s the cleaner empties the folder.
        status, health = await gw.request("GET", "/healthz")
        ex = health["recordings"]["exports"]
        assert ex["cleaner_running"] and ex["entries"] == 2 and ex["hits"] >= 3, ex
        skew[0] = 11.0
        await until(lambda: _async(not _files(recs)), 10, "expired exports removed by the cleaner")
        st = cache.stats()
        assert st.entries == 0 and st.kept_bytes == 0 and st.expired == 2, st

        # Retention deleting the footage drops an export of it, but not the file under a reader (a relayed stream
        # holding it open): that goes once the reader is done.
        assert (await _get(gw, cid, a))[0] == 200 and cache.stats().entries == 1
        held = await local_opener(gw.app)(StreamRequest("recording", cid, start=_ts(a["start"]), end=_ts(a["end"])))
        await asyncio.to_thread(recs.store.sweep, time.time() + 30 * 86400)  # every closed segment is past retention
        assert await recs.drop_deleted_exports() == 1
        assert cache.stats().entries == 0 and len(_files(recs)) == 1
        assert b"".join([chunk async for chunk in held]) == whole
        await held.aclose()
        await until(lambda: _async(not _files(recs)), 5, "the dropped export removed once its reader closed")
        assert (await _get(gw, cid, a))[0] == 404


async def _async(value):
    return value
