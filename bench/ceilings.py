"""Machine ceilings measured alone: PyAV decode of the clip and the detector model (DESIGN §7).

Every measurement runs worker threads for a fixed wall time and counts what they finished;
threads are always stopped and joined, also when the caller is interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from analytics.detector import load_detector


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class ClipInfo:
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    key_frames: int


def clip_info(path: Path) -> ClipInfo:
    """Size, rate and key-frame count of the clip (one demux pass)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or 25)
        frames = keys = 0
        for pkt in c.demux(s):
            if pkt.size == 0:
                continue
            frames += 1
            keys += bool(pkt.is_keyframe)
        return ClipInfo(s.codec_context.width, s.codec_context.height, fps, frames, frames / fps, keys)


def _run_threads(workers: list[Callable[[threading.Event, threading.Barrier], None]], seconds: float) -> float:
    """Start the workers together, let them run `seconds`, stop and join them; the wall time used."""
    stop = threading.Event()
    barrier = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []

    def wrap(fn):
        def target() -> None:
            try:
                fn(stop, barrier)
            except threading.BrokenBarrierError:
                pass
            except BaseException as e:  # reported to the caller below
                errors.append(e)
                barrier.abort()
        return target

    threads = [threading.Thread(target=wrap(fn), name=f"bench-ceiling-{i}", daemon=True)
               for i, fn in enumerate(workers)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
        t0 = time.perf_counter()
        stop.wait(seconds)
        stop.set()
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        barrier.abort()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return elapsed


# ---- decode ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DecodeResult:
    mode: str
    threads: int
    frames_per_s: float  # decoded frames per second, whole machine
    media_s_per_s: float  # seconds of video decoded per wall second = real-time cameras' worth
    converted_per_s: float  # bgr24 conversions per second


def decode_rate(path: Path, *, threads: int, seconds: float, key_only: bool = False,
                convert_every: int = 0, frame_threads: bool = False, demux_only: bool = False) -> DecodeResult:
    """One file per thread, looped; decode as fast as possible (no pacing).

    Decoder settings are the gateway's (DecodeThread, up to 1080p): one FFmpeg thread per decoder;
    `frame_threads=True` lets FFmpeg add its own frame threads per decoder (thread_type AUTO) instead. `convert_every=k`
    converts every k-th decoded frame with to_ndarray("bgr24"), as the gateway does for the
    frames it samples (k = 5: a 5 fps analysis rate of a 25 fps camera). `demux_only=True` reads the
    packets and decodes nothing: what a camera that is watched but not analysed costs at the least
    (frames_per_s then counts packets).
    """
    counts = [[0, 0, 0.0] for _ in range(threads)]  # frames, converted, media seconds

    def demux_worker(i: int):
        def run(stop: threading.Event, barrier: threading.Barrier) -> None:
            c = av.open(str(path))
            try:
                s = c.streams.video[0]
                tb = float(s.time_base) if s.time_base else 0.0
                fps = float(s.average_rate or 25)
                packets = 0
                done_media = 0.0
                last_t = 0.0
                barrier.wait()
                while not stop.is_set():
                    for pkt in c.demux(s):
                        if pkt.size == 0:
                            continue
                        packets += 1
                        last_t = pkt.pts * tb if pkt.pts is not None and tb else last_t + 1 / fps
                        if stop.is_set():
                            break
                    else:  # end of file: loop it
                        done_media += last_t + 1 / fps
                        last_t = 0.0
                        c.seek(0)
                counts[i][:] = [packets, 0, done_media + last_t]
            finally:
                c.close()
        return run

    def worker(i: int):
        if demux_only:
            return demux_worker(i)

        def run(stop: threading.Event, barrier: threading.Barrier) -> None:
            c = av.open(str(path))
            try:
                s = c.streams.video[0]
                if frame_threads:
                    s.thread_type = "AUTO"
                else:
                    s.codec_context.thread_count = 1
                if key_only:
                    s.codec_context.skip_frame = "NONKEY"
                fps = float(s.average_rate or 25)
                clip_s = float(s.duration * s.time_base) if s.duration else None
                frames = conv = 0
                done_media = 0.0
                last_t = 0.0
                barrier.wait()
                while not stop.is_set():
                    for f in c.decode(s):
                        frames += 1
                        last_t = f.time if f.time is not None else last_t + 1 / fps
                        if convert_every and frames % convert_every == 0:
                            f.to_ndarray(format="bgr24")
                            conv += 1
                        if stop.is_set():
                            break
                    else:  # end of file: loop it
                        done_media += clip_s or (last_t + 1 / fps)
                        last_t = 0.0
                        c.seek(0)
                        s.codec_context.flush_buffers()
                counts[i][:] = [frames, conv, done_media + last_t]
            finally:
                c.close()
        return run

    wall = _run_threads([worker(i) for i in range(threads)], seconds)
    frames = sum(c[0] for c in counts)
    conv = sum(c[1] for c in counts)
    media = sum(c[2] for c in counts)
    mode = "demux only" if demux_only else "key frames only" if key_only else "all frames"
    if frame_threads:
        mode += ", FFmpeg frame threads per decoder"
    if convert_every == 1:
        mode += " + bgr24 every frame"
    elif convert_every:
        mode += f" + bgr24 1 in {convert_every}"
    return DecodeResult(mode, threads, frames / wall, media / wall, conv / wall)


def convert_ms(path: Path, *, frames: int = 60, max_width: int = 1280) -> tuple[float, float]:
    """Single-thread cost of one sampled-frame conversion, ms: (to_ndarray bgr24, reformat to 640 wide bgr24)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        decoded = []
        for f in c.decode(s):
            decoded.append(f)
            if len(decoded) >= frames:
                break
    t0 = time.perf_counter()
    for f in decoded:
        if f.width > max_width:
            h = int(round(f.height * max_width / f.width / 2)) * 2
            f.reformat(width=max_width, height=h, format="bgr24").to_ndarray()
        else:
            f.to_ndarray(format="bgr24")
    full = (time.perf_counter() - t0) * 1000 / len(decoded)
    t0 = time.perf_counter()
    for f in decoded:
        f.reformat(width=640, height=360, format="bgr24").to_ndarray()
    scaled = (time.perf_counter() - t0) * 1000 / len(decoded)
    return full, scaled


# ---- inference -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class InferResult:
    layout: str
    sessions: int
    intra_threads: int
    per_s: float  # Detector.detect() calls per second (letterbox + ORT run + NMS), whole machine
    ms: float  # mean wall ms per call, per session


def sample_images(path: Path, count: int = 8) -> list[np.ndarray]:
    """`count` BGR frames spread over the clip (what the detector sees in the gateway)."""
    info = clip_info(path)
    step = max(1, info.frames // count)
    out: list[np.ndarray] = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="bgr24"))
                if len(out) >= count:
                    break
    return out


def clip_frames_cli(prog: str, doc: str, frames: int, argv: list[str] | None,
                    extra: Callable[[argparse.ArgumentParser], None] | None = None
                    ) -> tuple[argparse.Namespace, list[np.ndarray]] | None:
    """Parse `--clip`/`--frames` (plus `extra` options) and sample the clip; None (after saying why) without it."""
    from bench.pipeline import CLIP  # the default clip lives with the pipeline benchmark, which imports this module

    p = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--frames", type=int, default=frames, help=f"frames spread through the clip ({frames})")
    if extra is not None:
        extra(p)
    a = p.parse_args(argv)
    if not a.clip.exists():
        print(f"no clip at {a.clip} (give --clip)", file=sys.stderr)
        return None
    return a, sample_images(a.clip, a.frames)


def infer_rate(model: Path, images: list[np.ndarray], *, sessions: int, intra_threads: int,
               seconds: float) -> InferResult:
    """`sessions` detectors, one Python thread each, calling detect() back to back."""
    dets = [load_detector(model, intra_threads=intra_threads) for _ in range(sessions)]
    for d in dets:  # first runs allocate; keep them out of the timing
        d.detect(images[0])
    counts = [0] * sessions

    def worker(i: int):
        def run(stop: threading.Event, barrier: threading.Barrier) -> None:
            d = dets[i]
            n = 0
            barrier.wait()
            while not stop.is_set():
                d.detect(images[n % len(images)])
                n += 1
            counts[i] = n
        return run

    wall = _run_threads([worker(i) for i in range(sessions)], seconds)
    total = sum(counts)
    layout = f"{sessions} session{'s' if sessions > 1 else ''} x {intra_threads} thread{'s' if intra_threads > 1 else ''}"
    return InferResult(layout, sessions, intra_threads, total / wall,
                       1000 * wall * sessions / total if total else float("nan"))


LAYOUTS = ((1, 1), (2, 1), (1, 2))  # (sessions, intra-op threads)


# ---- per-stage costs -------------------------------------------------------------------------------

def stage_ms(images: list[np.ndarray], *, rounds: int = 40) -> dict[str, float]:
    """Single-thread ms per call of the gateway's other per-frame stages: motion gate and event snapshot."""
    from analytics.motion import MotionGate
    from analytics.snapshot import render_snapshot

    gate = MotionGate()
    gate.update(images[0])
    t0 = time.perf_counter()
    for i in range(rounds):
        gate.update(images[i % len(images)])
    motion = (time.perf_counter() - t0) * 1000 / rounds
    t0 = time.perf_counter()
    for i in range(rounds):
        render_snapshot(images[i % len(images)], (0.4, 0.4, 0.6, 0.8), "person", 0.81)
    snap = (time.perf_counter() - t0) * 1000 / rounds
    return {"motion_ms": motion, "snapshot_ms": snap}
