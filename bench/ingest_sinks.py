"""What attaching packet sinks (recording, live fMP4) costs a connection's demuxer thread (issue 11).

A file camera analysed at one frame per GOP decodes key frames only; its demuxer used to wake only for
the packets it decodes. With a sink attached every packet is paced to its time (recording a file must not
come in bursts), so the thread wakes per packet. Runs one `Demuxer` on the clip for `--seconds` of wall
time in each of three setups and prints the demuxer thread's CPU (that thread alone) per
second of video (its POSIX thread CPU clock), with the packets read:

* no sink (the pacing path a camera without recording or viewers takes);
* a sink that counts (the pacing cost of a sink, without its own work);
* `--baseline MODULE_FILE`: the same as the first with another ingest.py (e.g. the one before sinks),
  loaded in place of gateway.ingest, for an A/B of the no-sink path.

    .venv/bin/python -m bench.ingest_sinks [--clip PATH] [--seconds 20] [--baseline /tmp/ingest_old.py]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import time
from pathlib import Path

from registry.urls import parse_source

DEFAULT_CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "street_720p.mp4"
CAMERA = "11010000001320000001"
ANALYSIS_FPS = 0.4  # below one frame per 2 s GOP: key frames only


def _thread_cpu(ident: int) -> float:
    """CPU seconds of one thread of this process (its POSIX CPU clock: nanosecond resolution)."""
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def stream_opened(self, stream) -> None:
        pass

    def packet(self, packet) -> None:
        self.n += 1

    def stream_ended(self, reason) -> None:
        pass


async def _run(ingest, clip: Path, seconds: float, sink: bool) -> tuple[float, int]:
    pool = ingest.DecodePool(1)
    pool.start()
    loop = asyncio.get_running_loop()
    source = parse_source(f"file:{clip}", [clip.parent])
    d = ingest.Demuxer(CAMERA, source, ingest.DecodeOptions(ANALYSIS_FPS, 5.0), pool, loop,
                       lambda i: None, lambda s: None, lambda e: None)
    if sink:
        d.sinks = (_Count(),)
    d.start()
    while d.ident is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(2.0)  # opened, mode chosen
    c0, p0, t0 = _thread_cpu(d.ident), d.packets, time.monotonic()
    await asyncio.sleep(seconds)
    c1, p1, t1 = _thread_cpu(d.ident), d.packets, time.monotonic()
    d.quit.set()
    await asyncio.to_thread(d.join, 5)
    pool.stop()
    return (c1 - c0) / (t1 - t0), p1 - p0


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("ingest_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--baseline", type=Path, help="another ingest.py for the no-sink A/B")
    args = ap.parse_args()
    from gateway import ingest
    rows = [("no sink", ingest, False), ("a counting sink", ingest, True)]
    if args.baseline:
        rows.insert(0, (f"no sink, {args.baseline.name}", _load(args.baseline), False))
    print(f"demuxer thread CPU, {args.clip.name} at {ANALYSIS_FPS} analysed frames/s (key frames only), "
          f"{args.seconds:g} s each")
    for label, mod, sink in rows:
        cpu, packets = asyncio.run(_run(mod, args.clip, args.seconds, sink))
        print(f"  {label:<32} {1000 * cpu:7.2f} core-ms per s   {packets / args.seconds:6.1f} packets/s")


if __name__ == "__main__":
    main()
