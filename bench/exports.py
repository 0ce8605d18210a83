"""Time to first byte of a player's seek into a 10-minute recording.mp4 window, the export cache cold vs warm.

Ten minutes of the street clip (looped, remuxed, never re-encoded) are recorded into a store with a driven clock
(no waiting), then served by the gateway's own export path (gateway/api/recordings.py: `_local_window`, the export
cache of gateway/exports.py, aiohttp's FileResponse) on 127.0.0.1. Each sample is a Range request `bytes=N-` into
the middle of the window, abandoned after its first body chunk as a <video> abandons one when it seeks again:

* cold: the cache emptied before each request, so the window is exported first (what every seek cost before the
  cache);
* warm: the same request again, answered from the export kept by the one before.

Auth, jurisdiction and audit are left out (a few ms on every request, the same either way).

    .venv/bin/python -m bench.exports [--clip /work/shared/media/street_720p.mp4] [--minutes 10] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import av
from aiohttp import web

from gateway.api.recordings import READ_CHUNK, _ExportFile, _local_window
from gateway.config import RecordingsConfig
from gateway import keys
from gateway.recording import Mode, RecordingSettings, RecordingStore
from gateway.recordings import Recordings
from tests.media_rec import CAMERA, T0, FakeClock, feed
from tiers.relay import StreamRequest

DEFAULT_CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "street_720p.mp4"


def _record(clip: Path, minutes: float, root: Path) -> float:
    """Record `minutes` of the clip looped into a store at root (driven clock); the seconds recorded."""
    clock = FakeClock()
    store = RecordingStore(root, clock=clock, writer_threads=0, min_free_bytes=0, segment_s=60)
    store.open()
    rec = store.recorder(CAMERA, RecordingSettings(mode=Mode.CONTINUOUS))
    with av.open(str(clip)) as c:
        clip_s = float(c.duration or 0) / av.time_base
    feed([rec], clip, clock, passes=int(minutes * 60 / max(1.0, clip_s)) + 1, seconds=minutes * 60 + 2,
         each=lambda p, t: store.flush() if rec.packets % 25 == 0 else None, end_stream="end")
    store.flush()
    store.close()
    return clock() - T0


async def _serve(root: Path) -> tuple[web.AppRunner, str, Recordings]:
    """An app with the export path only: recording.mp4's local window, sent as _play sends it."""
    app = web.Application()
    recs = Recordings(RecordingsConfig(min_free_bytes=0), root, asyncio.get_running_loop())
    await recs.open()
    app[keys.RECORDINGS] = recs

    async def window(request: web.Request) -> web.StreamResponse:
        q = request.query
        stream = await _local_window(app, StreamRequest("recording", CAMERA, start=float(q["start"]),
                                                        end=float(q["end"])))
        try:
            return _ExportFile(stream.take_lease(), chunk_size=READ_CHUNK,
                               headers={"Content-Type": "video/mp4", **dict(stream.head.headers)})
        finally:
            await stream.aclose()

    app.router.add_get("/recording.mp4", window)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/recording.mp4", recs


async def _seek(s: aiohttp.ClientSession, url: str, params: dict, offset: int) -> float:
    """Seconds from sending a Range request to its first body byte; the rest is abandoned (a seek)."""
    t0 = time.perf_counter()
    async with s.get(url, params=params, headers={"Range": f"bytes={offset}-"}) as r:
        assert r.status == 206, r.status
        await r.content.readany()
        ttfb = time.perf_counter() - t0
        r.close()
    return ttfb


async def _bench(root: Path, seconds: float, runs: int) -> dict:
    runner, url, recs = await _serve(root)
    try:
        params = {"start": str(T0 + 1), "end": str(T0 + seconds - 1)}
        async with aiohttp.ClientSession() as s:
            async with s.get(url, params=params, headers={"Range": "bytes=0-0"}) as r:
                size = int(r.headers["Content-Range"].split("/")[1])
            cold, warm = [], []
            for _ in range(runs):
                await recs.exports.close()  # empties the cache: the next request exports the window
                cold.append(await _seek(s, url, params, size // 2))
                warm.append(await _seek(s, url, params, size // 3))
        return {"size": size, "cold": cold, "warm": warm, "stats": recs.exports.stats()}
    finally:
        await runner.cleanup()
        await recs.close()


def main(argv: list[str] | None = None) -> int:
    """Print the medians of time to first byte of a seek, cache cold and warm."""
    p = argparse.ArgumentParser(prog="bench.exports", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-exports-") as tmp:
        root = Path(tmp) / "rec"
        t0 = time.perf_counter()
        seconds = _record(a.clip, a.minutes, root)
        made = time.perf_counter() - t0
        r = asyncio.run(_bench(root, seconds, a.runs))
    print(f"seek into a {seconds - 2:.0f} s window of {a.clip.name} ({r['size'] / 1e6:.0f} MB export; "
          f"{seconds:.0f} s recorded in {made:.1f} s), time to first byte of `Range: bytes=N-`, {a.runs} runs")
    print("| cache | median ms | min ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("cold", "warm"):
        xs = [x * 1000 for x in r[name]]
        print(f"| {name} | {statistics.median(xs):.1f} | {min(xs):.1f} | {max(xs):.1f} |")
    st = r["stats"]
    print(f"\ncache: {st.misses} exports written, {st.hits} hits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
