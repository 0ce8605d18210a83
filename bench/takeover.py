"""Takeover benchmark: how long a tier's cameras are dark when one of its gateways dies or stops.

    .venv/bin/python -m bench.takeover [--cameras 12,120] [--repeats 3] [--fps 0.25]

For each N and repeat: one private redis-server, two `sharp-eyes serve` processes of the tier (default
placement settings: beat 2 s, lease 8 s; equal advertised capacity), N file cameras of the sample clip at
--fps (patrol rate) registered through the first. Once every camera is online and spread over both:

- kill -9: the gateway running more cameras is killed; the time until every one of its cameras is online
  on the survivor, as the survivor's API shows it (polled every POLL_S);
- SIGTERM: both gateways again, the same N cameras; one is stopped with SIGTERM; the time until its cameras
  are online on the other (the hand-over: ends published, leases released, taken at once).

Prints one table (medians over repeats; min and max beside) on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from sample_streams import clip_path
from tests.gateway_fixtures import TOKEN, until
from tests.gateway_procs import NODE, GatewayProc
from tests.servers import RedisServer, redis_binary

POLL_S = 0.2
ONLINE_TIMEOUT_S = 180.0
TAKEOVER_TIMEOUT_S = 60.0


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def _where(s: aiohttp.ClientSession, gw: GatewayProc) -> dict[str, str | None]:
    """Camera id -> the gateway running it while online (None otherwise), through `gw`'s API."""
    out: dict[str, str | None] = {}
    cursor = None
    while True:
        params = {"node": NODE, "limit": "500", **({"cursor": cursor} if cursor else {})}
        async with s.get(gw.base + "/api/v1/cameras", params=params, timeout=aiohttp.ClientTimeout(total=10)) as r:
            body = await r.json()
        for c in body["cameras"]:
            st = c["status"]
            out[c["id"]] = st.get("gateway") if st.get("state") == "online" else None
        cursor = body.get("next_cursor")
        if not cursor:
            return out


async def _quiet(pred) -> object:
    """The predicate's answer, or None while the gateway does not answer yet (starting, or just killed)."""
    try:
        return await pred()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def _wait(pred, timeout: float, what: str):
    return await until(lambda: _quiet(pred), timeout, what, interval=POLL_S)


async def trial(tmp: Path, n: int, fps: float, sig: int) -> dict:
    """One trial: two gateways, n cameras, one gateway signalled; seconds until its cameras run on the other."""
    srv = RedisServer(tmp / "redis")
    srv.start()
    media = clip_path("moving_objects.mp4").parent
    a, b = GatewayProc("gw-a", srv.url, tmp, media), GatewayProc("gw-b", srv.url, tmp, media)
    try:
        a.start()
        b.start()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            async def up(gw=a):
                async with s.get(gw.base + "/healthz") as r:
                    return r.status == 200
            await _wait(up, 60, "gateway a")
            await _wait(lambda: up(b), 60, "gateway b")
            rows = [{"name": f"patrol {i}", "node": NODE, "url": "file:moving_objects.mp4",
                     "analytics": {"fps": fps}} for i in range(n)]
            async with s.post(a.base + "/api/v1/cameras/bulk", json=rows) as r:
                assert r.status == 200, await r.text()

            async def spread():
                w = await _where(s, a)
                return w if len(w) == n and all(w.values()) and {"gw-a", "gw-b"} <= set(w.values()) else None
            where = await _wait(spread, ONLINE_TIMEOUT_S, f"{n} cameras online on both gateways")
            victim = max((a, b), key=lambda g: list(where.values()).count(g.id))
            survivor = b if victim is a else a
            moved = [cid for cid, g in where.items() if g == victim.id]
            progress(f"  {n} cameras online ({len(moved)} on {victim.id}); {signal.Signals(sig).name} to {victim.id}")
            victim.signal(sig)
            t0 = time.monotonic()

            async def taken():
                w = await _where(s, survivor)
                return all(w.get(cid) == survivor.id for cid in moved)
            await _wait(taken, TAKEOVER_TIMEOUT_S, "the cameras online on the survivor")
            return {"n": n, "moved": len(moved), "seconds": time.monotonic() - t0}
    finally:
        a.stop()
        b.stop()
        srv.stop()


async def main_async(args: argparse.Namespace) -> None:
    rows = []
    for n in args.cameras:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            times, moved = [], []
            for r in range(args.repeats):
                progress(f"N={n}, {signal.Signals(sig).name}, repeat {r + 1}/{args.repeats}")
                with tempfile.TemporaryDirectory(prefix="se-takeover-") as tmp:
                    res = await trial(Path(tmp), n, args.fps, sig)
                progress(f"  {res['moved']} cameras back online in {res['seconds']:.1f} s")
                times.append(res["seconds"])
                moved.append(res["moved"])
            rows.append((n, signal.Signals(sig).name, statistics.median(moved), statistics.median(times),
                         min(times), max(times)))
    print(f"sharp-eyes takeover benchmark — 2 gateways on one Redis, clip moving_objects.mp4 at {args.fps} fps "
          f"per camera, default placement (beat 2 s, lease 8 s), median of {args.repeats} runs")
    print("|   N | signal  | cameras moved | back online s (median) | min s | max s |")
    print("|----:|:--------|--------------:|-----------------------:|------:|------:|")
    for n, name, m, med, lo, hi in rows:
        print(f"| {n:3d} | {name:7s} | {m:13.0f} | {med:22.1f} | {lo:5.1f} | {hi:5.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", default="12,120", help="comma-separated camera counts (12,120)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fps", type=float, default=0.25, help="analysis fps per camera (patrol rate, 0.25)")
    args = p.parse_args()
    args.cameras = [int(x) for x in args.cameras.split(",")]
    if not redis_binary():
        sys.exit("no redis-server binary")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
