"""Recordings and live.mp4 across tiers (tiers/relay.py): bytes per hop, throughput, CPU per MB relayed per hop,
and live.mp4's added latency per hop.

Three real tiers in this process (county > township > village, each its own redis-server and gateway, children
dialling out with their granted credential, as deployed), a camera on the village recording the 720p street clip.
A recording window is fetched over HTTP from the village itself (local, the baseline), from the township (1 hop)
and from the county (2 hops), alternately, `--runs` times each: medians. Bytes per hop are the relays' own
counters (served at the village, relayed at the township, received at the county) plus the items' framing.
CPU is this process's (all tiers and both Redis clients; the redis-servers are separate processes and not
counted) per MB delivered, minus the local baseline's, per hop. Live latency: a viewer subscribed to the
village's muxer in this process stamps each fragment as it leaves the muxer; the same fragment's arrival at an
HTTP live.mp4 reader of each tier is stamped too; medians over the fragments of `--live-s` seconds.
Live bytes per hop for 1 and 4 viewers at the county of the village camera: with the shared relayed stream
(gateway/live_share.py) and, for comparison, without it (one relayed stream per viewer, as before): each hop's
bytes per second over `--live-s` seconds, from the relays' counters (the village's served = the hop
village -> township, the county's received = the hop township -> county); medians of `--runs`.

    .venv/bin/python -m bench.relay [--clip /work/shared/media/street_720p.mp4] [--window-s 10] [--runs 3]
    .venv/bin/python -m bench.relay --only-viewers   # the viewers table alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from gateway import keys
from gateway import live_share as share_mod
from gateway.app import build_app
from gateway.config import load_settings
from tests.gateway_fixtures import TOKEN
from tests.servers import RedisServer
from tiers import relay as relay_mod
from tiers.grants import Grants, uplink_url

COUNTY, TOWNSHIP, VILLAGE = "450102", "450102001", "450102001001"
NODES = (COUNTY, TOWNSHIP, VILLAGE)
DEFAULT_CLIP = Path("/work/shared/media/street_720p.mp4")
# Live bytes are counted from this long after the viewers opened: each stream's start (the init segment and the
# fragments since the last key frame) is a one-off burst, not the rate a hop carries while viewers watch.
LIVE_SETTLE_S = 3.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Tiers:
    def __init__(self, work: Path, clip: Path) -> None:
        self.work, self.clip = work, clip
        self.servers = {n: RedisServer(work / f"redis-{n}") for n in NODES}
        self.apps: dict[str, TestServer] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        for s in self.servers.values():
            await asyncio.to_thread(s.start)
        parent = {TOWNSHIP: COUNTY, VILLAGE: TOWNSHIP}
        for n in NODES:
            uplink = None
            if n in parent:
                import redis.asyncio as aioredis
                r = aioredis.Redis.from_url(self.servers[parent[n]].url)
                g, pw = await Grants(r, parent[n]).grant(n, by="bench")
                await r.aclose()
                uplink = uplink_url(self.servers[parent[n]].url, g.user, pw)
            settings = load_settings(None, node=n, redis=self.servers[n].url, data_dir=self.work / f"data-{n}",
                                     media_dirs=[self.clip.parent], admin_token=TOKEN, gateway_id=f"gw-{n}",
                                     uplink=uplink, recordings={"segment_s": 4, "min_free_bytes": 0},
                                     bridge={"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "heartbeat_s": 1.0})
            server = TestServer(build_app(settings, TOKEN), host="127.0.0.1")
            await server.start_server()
            self.apps[n] = server
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"},
                                             timeout=aiohttp.ClientTimeout(total=120))

    def url(self, n: str, path: str) -> str:
        return str(self.apps[n].make_url(path))

    def app(self, n: str):
        return self.apps[n].app

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        for n in reversed(NODES):
            if n in self.apps:
                await self.apps[n].close()
        for s in self.servers.values():
            await asyncio.to_thread(s.stop)


async def _fetch(t: _Tiers, n: str, path: str, params: dict) -> tuple[int, float, float]:
    assert t.session is not None
    c0, t0 = time.process_time(), time.perf_counter()
    async with t.session.get(t.url(n, path), params=params) as r:
        assert r.status == 200, (n, r.status, await r.text())
        size = 0
        while chunk := await r.content.read(1 << 20):
            size += len(chunk)
    return size, time.perf_counter() - t0, time.process_time() - c0


async def _live_latency(t: _Tiers, n: str, cid: str, seconds: float) -> tuple[float, int]:
    """Median ms from a fragment leaving the village's muxer to its arrival at a live.mp4 reader of tier n."""
    mux = t.app(VILLAGE)[keys.RECORDINGS].live[cid]
    left: dict[bytes, float] = {}
    viewer = mux.subscribe()

    async def stamp() -> None:
        async for chunk in viewer:
            if chunk[4:8] == b"moof":
                size = int.from_bytes(chunk[:4], "big")
                left.setdefault(chunk[:size], time.perf_counter())

    stamper = asyncio.create_task(stamp(), name="bench:stamp")
    lat: list[float] = []
    assert t.session is not None
    try:
        async with t.session.get(t.url(n, f"/api/v1/cameras/{cid}/live.mp4")) as r:
            assert r.status == 200, await r.text()
            buf = bytearray()
            end = time.perf_counter() + seconds
            settle = time.perf_counter() + 1.0  # the catch-up from the last key frame is not latency
            while time.perf_counter() < end:
                buf += await r.content.readany()
                now = time.perf_counter()
                while len(buf) >= 8:
                    size = int.from_bytes(buf[:4], "big")
                    if len(buf) < size:
                        break
                    box, buf = bytes(buf[:size]), buf[size:]
                    if box[4:8] == b"moof" and now > settle and box in left:
                        lat.append((now - left[box]) * 1000)
    finally:
        viewer.close()
        stamper.cancel()
        await asyncio.gather(stamper, return_exceptions=True)
    return (statistics.median(lat) if lat else float("nan")), len(lat)


async def _wait_known(t: _Tiers, cid: str) -> None:
    assert t.session is not None
    deadline = time.monotonic() + 60
    while True:
        async with t.session.get(t.url(COUNTY, f"/api/v1/cameras/{cid}")) as r:
            if r.status == 200:
                return
        assert time.monotonic() < deadline, "the camera did not reach the county"
        await asyncio.sleep(0.5)


async def _viewers_run(t: _Tiers, cid: str, n: int, seconds: float) -> dict[str, float]:
    """Bytes per second on each hop while n live.mp4 viewers at the county read for `seconds`."""
    assert t.session is not None
    village, county = t.app(VILLAGE)[keys.RELAY].stats, t.app(COUNTY)[keys.RELAY].stats
    mux = t.app(VILLAGE)[keys.RECORDINGS].live[cid]
    s0 = village.streams.get(("served", "live"), 0)
    t0 = time.perf_counter()
    resps = await asyncio.gather(*(t.session.get(t.url(COUNTY, f"/api/v1/cameras/{cid}/live.mp4"))
                                   for _ in range(n)))
    marks: list[tuple[float, int, int]] = []

    async def drain(r: aiohttp.ClientResponse) -> None:
        assert r.status == 200, await r.text()
        end = t0 + LIVE_SETTLE_S + seconds
        while time.perf_counter() < end:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(r.content.readany(), end - time.perf_counter())

    async def mark() -> None:  # the counters once the viewers' catch-up (since the last key frame) is over
        await asyncio.sleep(LIVE_SETTLE_S)
        marks.append((time.perf_counter(), village.bytes.get(("served", "live"), 0),
                      county.bytes.get(("received", "live"), 0), mux.bytes))

    try:
        await asyncio.gather(mark(), *(drain(r) for r in resps))
    finally:
        for r in resps:
            r.close()
    (t1, v1, c1, m1), t2 = marks[0], time.perf_counter()
    camera = max(1, mux.bytes - m1)  # the camera's own live stream meanwhile (its bitrate varies with the scene)
    out = {"village -> township": (village.bytes.get(("served", "live"), 0) - v1) / (t2 - t1),
           "township -> county": (county.bytes.get(("received", "live"), 0) - c1) / (t2 - t1),
           "copies": (county.bytes.get(("received", "live"), 0) - c1) / camera,
           "streams": village.streams.get(("served", "live"), 0) - s0}
    deadline = time.monotonic() + 30
    while mux.viewers:  # every stream closed down the chain before the next run
        assert time.monotonic() < deadline, "the village kept a viewer"
        await asyncio.sleep(0.1)
    return out


async def _viewers_table(t: _Tiers, cid: str, args: argparse.Namespace) -> None:
    share_mod.LINGER_S = 0.5  # runs follow each other: a share must close between them
    relays = [t.app(n)[keys.RELAY] for n in (COUNTY, TOWNSHIP)]
    saved = [r.live_share for r in relays]
    rows = []
    await _viewers_run(t, cid, 1, 1.0)  # warm-up: the village's muxer running
    for shared in (True, False):
        for r, s in zip(relays, saved):
            r.live_share = s if shared else None
        for n in (1, 4):
            runs = [await _viewers_run(t, cid, n, args.viewers_s) for _ in range(args.runs)]
            rows.append((shared, n, {k: statistics.median(x[k] for x in runs) for k in runs[0]}))
    for r, s in zip(relays, saved):
        r.live_share = s
    print(f"live.mp4 bytes per hop, viewers at the county of the village camera, {args.viewers_s:g} s each "
          f"(after {LIVE_SETTLE_S:g} s), medians of {args.runs}; copies: the county hop's bytes / the camera's "
          "live stream meanwhile")
    print("| relayed live | viewers | streams from the village | village -> township kB/s | township -> county "
          "kB/s | copies per hop |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for shared, n, m in rows:
        print(f"| {'shared' if shared else 'one per viewer'} | {n} | {m['streams']:.0f} | "
              f"{m['village -> township'] / 1e3:.0f} | {m['township -> county'] / 1e3:.0f} | {m['copies']:.2f} |")


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        t = _Tiers(Path(tmp), args.clip)
        try:
            await t.start()
            assert t.session is not None
            async with t.session.post(t.url(VILLAGE, "/api/v1/cameras"), json={
                    "name": "street", "node": VILLAGE, "url": f"file:{args.clip}", "analytics": {"fps": 1},
                    "recording": {"mode": "continuous"}}) as r:
                assert r.status == 201, await r.text()
                cid = (await r.json())["id"]
            if args.only_viewers:
                await _wait_known(t, cid)
                await _viewers_table(t, cid, args)
                return 0
            t0 = time.time()
            deadline = time.monotonic() + args.window_s + 60
            while True:  # recorded long enough, and known at the county
                async with t.session.get(t.url(VILLAGE, f"/api/v1/cameras/{cid}/recordings"),
                                         params={"since": _iso(t0 - 60)}) as r:
                    segs = (await r.json())["segments"]
                async with t.session.get(t.url(COUNTY, f"/api/v1/cameras/{cid}")) as r:
                    known = r.status == 200
                if known and segs and time.time() - datetime.fromisoformat(
                        segs[0]["start"].replace("Z", "+00:00")).timestamp() > args.window_s + 2:
                    break
                assert time.monotonic() < deadline, "the camera did not record in time"
                await asyncio.sleep(0.5)
            w0 = datetime.fromisoformat(segs[0]["start"].replace("Z", "+00:00")).timestamp() + 0.5
            params = {"start": _iso(w0), "end": _iso(w0 + args.window_s)}
            path = f"/api/v1/cameras/{cid}/recording.mp4"
            levels = ((VILLAGE, "local (village itself)"), (TOWNSHIP, "1 hop (township)"), (COUNTY, "2 hops (county)"))
            stats = {n: t.app(n)[keys.RELAY].stats for n in NODES}
            results: dict[str, list[tuple[int, float, float]]] = {n: [] for n, _ in levels}
            await _fetch(t, COUNTY, path, params)  # warm-up
            before = {n: dict(stats[n].bytes) for n in NODES}
            for _ in range(args.runs):
                for n, _ in levels:
                    results[n].append(await _fetch(t, n, path, params))
            hop_bytes = {
                "served by the village": stats[VILLAGE].bytes[("served", "recording")]
                - before[VILLAGE].get(("served", "recording"), 0),
                "relayed by the township": stats[TOWNSHIP].bytes[("relayed", "recording")]
                - before[TOWNSHIP].get(("relayed", "recording"), 0),
                "received by the county": stats[COUNTY].bytes[("received", "recording")]
                - before[COUNTY].get(("received", "recording"), 0),
            }
            size = results[VILLAGE][0][0]
            print(f"recording window {args.window_s:g} s of {args.clip.name}: {size:,} bytes; medians of {args.runs}")
            print("| fetched from | MB/s | vs local | CPU ms per MB | CPU ms per MB per hop |")
            print("| --- | ---: | ---: | ---: | ---: |")
            base_rate = base_cpu = 0.0
            for i, (n, name) in enumerate(levels):
                rate = statistics.median(s / w for s, w, _ in results[n]) / 1e6
                cpu = statistics.median(c for _, _, c in results[n]) * 1000 / (size / 1e6)
                if i == 0:
                    base_rate, base_cpu = rate, cpu
                per_hop = "-" if i == 0 else f"{(cpu - base_cpu) / i:.1f}"
                print(f"| {name} | {rate:.1f} | {rate / base_rate:.2f} | {cpu:.1f} | {per_hop} |")
            chunk = relay_mod.CHUNK_BYTES
            items = -(-size // chunk) + 2  # data items, head and end
            print(f"bytes per hop, {args.runs} relayed fetches of each of 1 and 2 hops: " + ", ".join(
                f"{k} {v / (2 * args.runs if 'village' in k else args.runs):,.0f} per fetch"
                for k, v in hop_bytes.items()) + f"; framing {items} items of one tag byte each")
            print()
            print(f"live.mp4 added latency (fragment leaving the village's muxer -> the reader), {args.live_s:g} s "
                  f"each, medians of {args.runs}")
            print("| read from | ms | added per hop ms | fragments |")
            print("| --- | ---: | ---: | ---: |")
            base = 0.0
            for i, (n, name) in enumerate(levels):
                runs = [await _live_latency(t, n, cid, args.live_s) for _ in range(args.runs)]
                ms = statistics.median(m for m, _ in runs)
                if i == 0:
                    base = ms
                print(f"| {name} | {ms:.1f} | {'-' if i == 0 else f'{(ms - base) / i:.1f}'} | "
                      f"{statistics.median(k for _, k in runs):.0f} |")
            live_bytes = {n: {r: stats[n].bytes.get((r, "live"), 0) for r in ("served", "relayed", "received")}
                          for n in NODES}
            print(f"live bytes: village served {live_bytes[VILLAGE]['served']:,}, township relayed "
                  f"{live_bytes[TOWNSHIP]['relayed']:,} (+ served {live_bytes[TOWNSHIP]['served']:,}), county "
                  f"received {live_bytes[COUNTY]['received']:,}")
            print()
            await _viewers_table(t, cid, args)
        finally:
            await t.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.relay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--window-s", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--live-s", type=float, default=5.0)
    p.add_argument("--viewers-s", type=float, default=10.0, help="seconds each viewers run is counted")
    p.add_argument("--only-viewers", action="store_true", help="only the live bytes per hop for 1 and 4 viewers")
    args = p.parse_args(argv)
    if not args.clip.exists():
        print(f"no clip at {args.clip}")
        return 2
    logging.basicConfig(level=logging.ERROR)
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
