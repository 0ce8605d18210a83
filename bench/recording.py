"""CPU and disk cost of recording a camera (issue 11), against the cost of decoding the same video.

Feeds the clip's packets (looped `--passes` times) to the library as the demuxer thread does, with a
driven clock (no waiting: the times are thread CPU, not wall time), and prints per second of video:

* decode: PyAV decoding every frame on one thread (as a DecodePool thread does) — the yardstick;
* the demuxer thread's share of recording: `CameraRecorder.packet` (stamp + queue hand-over);
* the writer's share: remux into fragmented MP4 segments, rotation, the index (`store.flush`);
* the alternative measured for the design choice: muxing in the demuxer thread itself, per packet;
* live fMP4: one muxer with 1 and with 10 viewers (the fan-out), nobody reading slowly;
* disk: bytes of segments per camera-hour, and their overhead over the packets' own bytes;
* export: seconds of CPU to write a one-minute window (fast start).

    .venv/bin/python -m bench.recording [--clip /work/shared/media/street_720p.mp4] [--passes 4]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path

import av

from gateway.recording import LiveMuxer, Mode, RecordingSettings, RecordingStore, export_window
from tests.media_rec import CAMERA, T0, FakeClock, feed

DEFAULT_CLIP = Path(__file__).resolve().parent.parent.parent / "shared" / "media" / "street_720p.mp4"


def _decode_cpu(clip: Path) -> tuple[float, float]:
    """(thread CPU s, video s) of decoding every frame on one thread."""
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        t0 = time.thread_time()
        n = sum(1 for _ in c.decode(s))
        cpu = time.thread_time() - t0
        return cpu, n / float(s.average_rate or 25)


class _Timed:
    """Times each call of a sink's packet() in this thread."""

    def __init__(self, sink, after=None) -> None:
        self.sink, self.after, self.cpu = sink, after, 0.0

    def stream_opened(self, s) -> None:
        self.sink.stream_opened(s)

    def stream_ended(self, r) -> None:
        self.sink.stream_ended(r)

    def packet(self, p) -> None:
        t0 = time.thread_time()
        self.sink.packet(p)
        if self.after is not None:
            self.after()
        self.cpu += time.thread_time() - t0


def _record(clip: Path, passes: int, root: Path) -> dict[str, float]:
    clock = FakeClock()
    store = RecordingStore(root, clock=clock, writer_threads=0, min_free_bytes=0, segment_s=60)
    store.open()
    rec = store.recorder(CAMERA, RecordingSettings(mode=Mode.CONTINUOUS))
    handover = _Timed(rec)
    writer_cpu = 0.0

    def flush() -> None:  # the writer's pass, every 25 packets (its tick is 0.1 s: 2-3 packets at 25 fps)
        nonlocal writer_cpu
        if rec.packets % 25 == 0:
            t0 = time.thread_time()
            store.flush()
            writer_cpu += time.thread_time() - t0

    feed([handover], clip, clock, passes=passes, each=lambda p, t: flush(), end_stream="end")
    t0 = time.thread_time()
    store.flush()
    writer_cpu += time.thread_time() - t0
    video_s = clock() - T0
    seg_bytes = sum(f.stat().st_size for f in root.rglob("*.mp4"))
    payload = rec.status().bytes_written
    t0 = time.thread_time()
    export_window(store, CAMERA, T0 + 1, T0 + min(61, video_s - 1), root / "export.mp4")
    export_cpu = time.thread_time() - t0
    store.close()

    # The alternative: the same muxing done inside the demuxer thread, packet by packet.
    shutil.rmtree(root)
    clock = FakeClock()
    store = RecordingStore(root, clock=clock, writer_threads=0, min_free_bytes=0, segment_s=60)
    store.open()
    rec = store.recorder(CAMERA, RecordingSettings(mode=Mode.CONTINUOUS))
    inline = _Timed(rec, after=store.flush)
    feed([inline], clip, clock, passes=passes, end_stream="end")
    store.close()
    return {"video_s": video_s, "handover": handover.cpu, "writer": writer_cpu, "inline": inline.cpu,
            "packets": rec.packets, "bytes": seg_bytes, "payload": payload, "export": export_cpu}


def _live(clip: Path, passes: int, viewers: int) -> tuple[float, float]:
    """(thread CPU s of LiveMuxer.packet, video s) with `viewers` readers on a loop in another thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = threading.Thread(target=lambda: (asyncio.set_event_loop(loop), ready.set(), loop.run_forever()),
                              daemon=True)
    runner.start()
    ready.wait()
    muxer = LiveMuxer(CAMERA, loop)

    async def watch() -> None:
        v = muxer.subscribe()
        async for _ in v:
            pass

    tasks = [asyncio.run_coroutine_threadsafe(watch(), loop) for _ in range(viewers)]
    time.sleep(0.1)
    clock = FakeClock()
    timed = _Timed(muxer)
    feed([timed], clip, clock, passes=passes, end_stream="end")
    for t in tasks:
        t.result(10)
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    return timed.cpu, clock() - T0


def main(argv: list[str] | None = None) -> int:
    """Print CPU per second of video of each part, and disk bytes per camera-hour."""
    p = argparse.ArgumentParser(prog="bench.recording", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    p.add_argument("--passes", type=int, default=4, help="times the clip is looped (4: 64 s of the street clip)")
    a = p.parse_args(argv)
    dec_cpu, dec_s = _decode_cpu(a.clip)
    decode = dec_cpu / dec_s
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        r = _record(a.clip, a.passes, Path(tmp) / "rec")
    live1, live_s = _live(a.clip, a.passes, 1)
    live10, _ = _live(a.clip, a.passes, 10)
    v = r["video_s"]

    def row(name: str, cpu: float, per_packet: bool = True) -> str:
        ms = cpu / v * 1000
        us = cpu / r["packets"] * 1e6
        return f"| {name} | {ms:.2f} | {100 * ms / (decode * 1000):.2f} % | {us:.1f} |" if per_packet else ""

    print(f"recording cost, {a.clip.name} looped {a.passes}x ({v:.0f} s of video, {r['packets']} packets)")
    print("| part | CPU ms per video s | of decoding it | us per packet |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| yardstick: decode every frame (1 thread) | {decode * 1000:.1f} | 100 % | "
          f"{dec_cpu / (dec_s * 25) * 1e6:.0f} |")
    print(row("demuxer thread: packet() hand-over", r["handover"]))
    print(row("writer thread: remux to fMP4 segments + index", r["writer"]))
    print(row("recording total (hand-over + writer)", r["handover"] + r["writer"]))
    print(row("alternative: muxing inside the demuxer thread", r["inline"]))
    print(row("live fMP4, 1 viewer (demuxer thread)", live1 * v / live_s))
    print(row("live fMP4, 10 viewers (demuxer thread)", live10 * v / live_s))
    hour = r["bytes"] / v * 3600
    print(f"\ndisk: {hour / 1e6:.0f} MB per camera-hour ({r['bytes'] * 8 / v / 1e6:.2f} Mbit/s); "
          f"container overhead {100 * (r['bytes'] / r['payload'] - 1):.2f} % over the packets' own bytes")
    print(f"export of a {min(60, v - 2):.0f} s window (fast start): {r['export'] * 1000:.0f} ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
