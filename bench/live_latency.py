"""Live view latency of live.mp4 in Chromium (issue 11): capture (or gateway receipt) to screen, median and p95.

Each run starts a gateway (private redis-server, a real RTSP camera: GStreamer's server playing the clip in real
time, no model) and a headless Chromium on the control-room page's camera view, which plays live.mp4 through
Media Source Extensions. For every frame shown, the page takes video.requestVideoFrameCallback's mediaTime and
expectedDisplayTime, and the gateway's X-Live-Wall-Offset: latency = shown at - (mediaTime + offset). The
offset's clock (X-Live-Clock) is "capture" when the RTSP source's sender reports (RTCP SR) tie its RTP
timestamps to its wall clock consistently: then it is capture (here: the test server's send of the frame; a
real camera's capture instant) to screen. A clip with B-frames served from a file is sent reordered ahead of
the instants the server stamps, which the gateway does not believe: then it is gateway receipt to screen
(the RTSP server's send and the loopback hop not in it). The clock of each run is printed.

    .venv/bin/python -m bench.live_latency [--runs 3] [--seconds 20] [--clip ../shared/media/street_720p.mp4]
    .venv/bin/python -m bench.live_latency --clip sample_streams/clips/moving_objects.mp4   # no B-frames: capture

Prints one table (per run: frames, median, p95; then the median over runs). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from gateway.app import build_app
from gateway.config import load_settings
from sample_streams.rtsp import RtspServer
from tests.servers import RedisServer, free_port
from tests.test_recording_api import _looped

DEFAULT_CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "street_720p.mp4"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # DESIGN §8
TOKEN = "bench-admin-token-0123456789abcdef"
NODE = "450102001"
WARMUP_S = 3.0  # samples of the first seconds (the jump to the live edge) are left out
START_TIMEOUT_MS = 60_000


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(0.95 * len(s)) - 1))]


async def _camera_page(browser, base: str, cid: str):
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-US")
    page = await ctx.new_page()
    await page.goto(f"{base}/")
    await page.fill("#token-input", TOKEN)
    await page.click("#login-button")
    await page.wait_for_selector("#app", state="visible")
    await page.goto(f"{base}/#/camera/{cid}")
    await page.wait_for_selector("#live-frame[data-mode='mp4']", timeout=START_TIMEOUT_MS)
    await page.wait_for_function("() => (document.querySelector('#live-video').liveLatencies || []).length > 0",
                                 timeout=START_TIMEOUT_MS)
    return ctx, page


async def run_once(browser, redis_url: str, rtsp_url: str, workdir: Path, seconds: float) -> tuple[list[float], str]:
    """One gateway, one page: the latency samples (s) of `seconds` after the warm-up, and their clock."""
    settings = load_settings(None, node="450102", redis=redis_url, data_dir=workdir, model=None, media_dirs=[],
                             admin_token=TOKEN, gateway_id="bench-gw")
    server = TestServer(build_app(settings, TOKEN), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            async with s.post(f"{base}/api/v1/cameras", json={"name": "street", "node": NODE, "url": rtsp_url,
                                                              "analytics": {"fps": 1}}) as r:
                assert r.status == 201, await r.text()
                cid = (await r.json())["id"]
        ctx, page = await _camera_page(browser, base, cid)
        try:
            await page.wait_for_timeout(WARMUP_S * 1000)
            skip = len(await page.eval_on_selector("#live-video", "v => v.liveLatencies"))
            await page.wait_for_timeout(seconds * 1000)
            samples = await page.eval_on_selector("#live-video", "v => [...v.liveLatencies]")
            clock = await page.eval_on_selector("#live-video", "v => v.dataset.clock || '?'")
            return (samples[skip:] if len(samples) > skip else samples), clock
        finally:
            await ctx.close()
    finally:
        await server.close()


async def main_async(args: argparse.Namespace) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        redis = RedisServer(Path(tmp) / "redis")
        redis.start()
        # Looped to outlast every run: the server ends the stream at the file's end, and a reopened stream ends
        # live.mp4 (the page reconnects, and its start would be measured again).
        clip = _looped(Path(args.clip), Path(tmp) / "clip.mp4", args.runs * (args.seconds + WARMUP_S + 30))
        rtsp = RtspServer().start(free_port(), {"street": clip})
        rows: list[tuple[int, int, float, float, str]] = []
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    for i in range(args.runs):
                        progress(f"run {i + 1}/{args.runs}")
                        samples, clock = await run_once(browser, redis.url, rtsp.url("street"), Path(tmp) / f"gw{i}",
                                                        args.seconds)
                        rows.append((i + 1, len(samples), statistics.median(samples), p95(samples), clock))
                finally:
                    await browser.close()
        finally:
            rtsp.stop()
            redis.stop()
    print(f"live.mp4 in Chromium, to screen from the clock shown ({Path(args.clip).name}, {args.seconds:g} s per run)")
    print(f"{'run':>4} {'frames':>7} {'median s':>9} {'p95 s':>7} {'clock':>8}")
    for run, n, med, hi, clock in rows:
        print(f"{run:>4} {n:>7} {med:>9.3f} {hi:>7.3f} {clock:>8}")
    print(f"{'all':>4} {sum(r[1] for r in rows):>7} {statistics.median(r[2] for r in rows):>9.3f} "
          f"{statistics.median(r[3] for r in rows):>7.3f}   (median over runs)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run (after a warm-up)")
    ap.add_argument("--clip", default=str(DEFAULT_CLIP))
    args = ap.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
