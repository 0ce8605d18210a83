"""Cost of counting zone and line events (issue 12) where they are written, and of reading the counts back.

Against a private redis-server, prints:

* the append script (tiers/contract.py EVENT_APPEND) per zone event, pipelined, without and with the
  count argument (tiers/counts.py count_spec, built on the client as EventLog does): the ratio is the
  price of counting (zone and line events are a small share of all events; detections are not counted);
* reading a camera's and a node's counts: the last hour by the minute, and a whole week (the longest
  window) by 10 minutes, from a week of one crossing a minute.

    .venv/bin/python -m bench.counts [--events 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from analytics.events import iso_ms
from tests.servers import RedisServer
from tiers.contract import EVENT_APPEND
from tiers.counts import MAX_WINDOW_S, camera_counts, count_spec, node_counts, window

CAMERA = "45010200001320000001"
WEEK_MIN = MAX_WINDOW_S // 60


def _event(i: int, ts: float, kind: str) -> dict:
    base = {"camera_id": CAMERA, "node": "450102001", "ts": iso_ms(ts), "label": "person", "track_id": i,
            "origin": {"node": "450102", "gateway": "bench"}}
    if kind == "zone":
        return {**base, "type": "zone", "zone": "gate", "phase": "enter" if i % 2 == 0 else "leave", "track_id": i // 2}
    return {**base, "type": "line", "zone": "bridge", "direction": "in"}


async def _append(r: aioredis.Redis, script, events: list[dict], counted: bool, tag: str) -> float:
    t0 = time.perf_counter()
    async with r.pipeline(transaction=False) as pipe:
        for i, e in enumerate(events):
            await script(keys=["se:events", f"se:evtok:{tag}{i}", "se:evcount:0", "se:lease:x", "se:fences"],
                         args=[100_000, "{}", b"", 1, "se:snap:", "", 7200, "", CAMERA,
                               count_spec(e) if counted else ""], client=pipe)
        await pipe.execute()
    return time.perf_counter() - t0


async def _best(f, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        await f()
        best = min(best, time.perf_counter() - t)
    return best


async def main(n: int) -> None:
    server = RedisServer(Path(tempfile.mkdtemp()) / "redis")
    server.start()
    try:
        r = aioredis.Redis.from_url(server.url)
        script = r.register_script(EVENT_APPEND)
        now = time.time()
        zone = [_event(i, now - i % 600, "zone") for i in range(n)]
        rows = []
        plain = await _append(r, script, zone, False, "p")
        counted = await _append(r, script, zone, True, "c")
        rows.append(("append a zone event", f"{plain / n * 1e6:.0f} µs"))
        rows.append(("append + count it", f"{counted / n * 1e6:.0f} µs  (x{counted / plain:.2f})"))
        await _append(r, script, [_event(i, now - i * 60, "line") for i in range(WEEK_MIN)], True, "w")
        hour, week = window(now - 3600, now, 60), window(now - MAX_WINDOW_S + 600, now, 600)
        for what, w in (("last hour by the minute", hour), ("a week by 10 minutes", week)):
            cam = await _best(lambda: camera_counts(r, CAMERA, w, lines=["bridge"], zones=["gate"]))
            node = await _best(lambda: node_counts(r, "45", w))
            rows.append((f"camera counts, {what}", f"{cam * 1000:.1f} ms"))
            rows.append((f"node counts, {what}", f"{node * 1000:.1f} ms"))
        await r.aclose()
    finally:
        server.stop()
    width = max(len(a) for a, _ in rows)
    print(f"{'':{width}}  per event / per query ({n:,} zone events; a week of one crossing a minute)")
    for a, b in rows:
        print(f"{a:{width}}  {b}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000)
    asyncio.run(main(ap.parse_args().events))
