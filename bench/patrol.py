"""Patrol benchmark: many cameras at a low analysis rate on one machine, and what an idle camera costs.

    .venv/bin/python -m bench.patrol [--quick] [--cameras 200] [--fps 0.25] [--seconds 60] [--repeats 3]

Measures the ceilings first (decode of all frames, key frames only and demux only; inference), then
for each repeat and each N two trials, each a fresh in-process gateway in its own process (so that
its RSS and peak RSS are the gateway's alone) against one private redis-server, with a WebSocket
subscriber in a third process:

- patrol: N file cameras of the clip asking --fps (0.25) analysis each, registered in one bulk
  request; once they are online (bounded wait: --online-timeout) and a warm-up has passed, a window
  of --seconds: analysed/s against what the cameras ask and against the limit from the ceilings,
  per-camera fairness, CPU, RSS;
- idle: the same N cameras with analysis off, or as near off as the gateway allows (see
  --idle-analytics): CPU and RSS per camera.

Prints one table (medians over repeats) on stdout; progress goes to stderr. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ceilings as C
from bench.pipeline import (ROOT, RedisRef, Trial, _f, _fair, add_common_args, finish_run, _flag_cell, _load_cell, _skipped_cell,
                            _table, add_limit, ceilings_report, check_inputs, log, measure_ceilings, medians,
                            progress, trial_line)
from tests.servers import RedisServer

MODES = ("patrol", "idle")


# ---- the idle cameras' analytics ------------------------------------------------------------------

def _lowest_fps() -> float:
    """The smallest analysis fps the camera model accepts (its `ge`/`gt` bound), 0.1 when it cannot be read."""
    try:
        from registry.models import AnalyticsSettings

        for m in AnalyticsSettings.model_fields["fps"].metadata:
            for attr in ("ge", "gt"):
                v = getattr(m, attr, None)
                if isinstance(v, (int, float)):
                    return float(v)
    except Exception:  # the model is being reworked: fall back to what it is today
        pass
    return 0.1


def idle_analytics(given: str | None) -> tuple[dict[str, Any], str]:
    """The analytics settings of the idle cameras, and a sentence saying what they mean.

    Asked for: analysis off, demux only. When the camera model accepts `fps: 0` that is used; today it does
    not (fps >= 0.1), so the idle cameras ask the lowest rate, with quality diagnosis off and a detection
    score no object reaches (no events, no snapshots): they still decode key frames and run the detector
    once per 1/fps seconds each. `--idle-analytics JSON` replaces this (e.g. once the gateway has a
    demux-only mode)."""
    from pydantic import ValidationError

    from registry.models import AnalyticsSettings

    if given:
        return json.loads(given), f"analytics {given} (--idle-analytics)"
    off = {"fps": 0, "min_score": 0.99, "quality": {"enabled": False}}
    try:
        AnalyticsSettings.model_validate(off)
        return off, "fps 0: analysis off (the gateway accepts it)"
    except ValidationError as e:
        why = e.errors()[0].get("msg", "refused") if e.errors() else "refused"
    low = _lowest_fps()
    return ({"fps": low, "min_score": 0.99, "quality": {"enabled": False}},
            f"fps 0 is refused by the camera model ({why}), so the idle cameras ask the lowest rate, {low:g} fps, "
            f"with quality diagnosis off and min_score 0.99: they still decode key frames and are analysed "
            f"(detector included) once every {1 / low:g} s each; the demux/decode columns are the nearest to "
            f"'demux only'")


# ---- one trial in its own process ------------------------------------------------------------------

def _trial_args(spec: dict[str, Any]) -> argparse.Namespace:
    a = argparse.Namespace(**spec["args"])
    a.model, a.clip = Path(a.model), Path(a.clip)
    return a


async def _child_main(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)  # the parent stops us: clean up (finally blocks), then exit
    args = _trial_args(spec)
    r = spec["redis"]
    trial = Trial(args, RedisRef(r["url"], r["port"], r["pid"]), Path(spec["workdir"]), spec["n"],
                  analytics=spec["analytics"], online_timeout=args.online_timeout, require_all=False)
    return await trial.run()


def child(spec_path: Path) -> int:
    """`--trial SPEC`: run one trial and write its result as JSON to spec["out"]."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(spec_path.read_text())
    try:
        res = asyncio.run(_child_main(spec))
    except asyncio.CancelledError:
        return 130
    Path(spec["out"]).write_text(json.dumps(res, default=str))
    return 0


def run_trial(args: argparse.Namespace, redis_srv: RedisServer, workdir: Path, n: int, mode: str,
              analytics: dict[str, Any]) -> dict[str, Any] | None:
    """Run one trial in a child process (its own session: a terminal's Ctrl-C reaches only us, and we stop it)."""
    stamp = time.monotonic_ns()
    out = workdir / f"trial-{mode}-{n}-{stamp}.json"
    spec = {
        "n": n, "mode": mode, "analytics": analytics, "workdir": str(workdir), "out": str(out),
        "redis": {"url": redis_srv.url, "port": redis_srv.port, "pid": redis_srv.proc.pid},
        "args": {"model": str(args.model), "clip": str(args.clip), "fps": float(analytics.get("fps", args.fps)),
                 "clip_fps": args.clip_fps, "warmup": args.warmup, "seconds": args.seconds, "grace": args.grace,
                 "online_timeout": args.online_timeout, "stagger": args.stagger},
    }
    spec_path = workdir / f"trial-{mode}-{n}-{stamp}.spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.Popen([sys.executable, "-m", "bench.patrol", "--trial", str(spec_path)], cwd=str(ROOT),
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        rc = proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(30)  # it stops its gateway: decode threads joined, cameras stopped
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if rc != 0 or not out.exists():
        progress(f"  {mode} N={n}: trial process failed (exit {rc}); see the log above")
        return None
    return json.loads(out.read_text())


# ---- report ----------------------------------------------------------------------------------------

def report(args: argparse.Namespace, ceil: dict[str, Any] | None, results: list[dict[str, Any]]) -> str:
    out: list[str] = []
    if ceil:
        out += ceilings_report(args, ceil, "sharp-eyes patrol benchmark")
    runs = f"median of {args.repeats} run{'s' if args.repeats > 1 else ''}"
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["n"], r["mode"]), []).append(r)
    done = {f"{mode} N={n}": len(v) for (n, mode), v in groups.items()}
    out.append(f"Patrol: in-process gateway (own process per trial) + redis-server, N file cameras of the clip, "
               f"registered in bulk over {args.stagger:g} s, {args.seconds:g} s window after {args.warmup:g} s warm-up, {runs}"
               + ("" if all(v == args.repeats for v in done.values()) else f" (runs done: {done})"))
    out.append(f"patrol cameras ask {args.fps:g} fps each; idle cameras: {args.idle_why}")
    header = ["mode", "N", "fps/cam", "online", "asked/s", "limit/s", "load", "analysed/s", "an/asked", "ratio",
              "fair", "skipped/s", "gw load", "gw over", "key-frame cams", "read rt", "infer/s", "CPU busy", "machine busy",
              "core-ms/s per cam", "demux", "decode", "analysis", "loop", "executor", "RSS MiB", "peak RSS MiB",
              "RSS/cam MiB", "threads", "loop lag p95", "lat p50 ms", "lat p95 ms", "lat n"]
    rows = []
    meds: dict[tuple[int, str], dict[str, Any]] = {}
    for (n, mode), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], MODES.index(kv[0][1]))):
        m = meds[(n, mode)] = medians(rs)
        worst_online = min(r["online_end"] for r in rs)
        rows.append([
            mode, str(n), _f(m["fps"], 2), f"{worst_online}/{n}", _f(m["target"], 1), _f(m.get("limit"), 1),
            _load_cell(m.get("load"), m["overload"]), _f(m["analysed_fps"], 1),
            _f(100 * m["ach"], 0, "%") if m.get("ach") is not None else "-", _f(m.get("ratio"), 2),
            _fair(m.get("fair_min"), m.get("fair_max")), _skipped_cell(m["skipped_fps"]),
            _f(m.get("gw_load"), 2), _flag_cell(m["gw_overloaded_flags"]), _f(m.get("key_frame_cams"), 0),
            _f(100 * m["decode_rt"], 0, "%") if m.get("decode_rt") is not None else "-",
            _f(m.get("infer_fps"), 1), _f(100 * m["cpu_busy"], 0, "%"), _f(100 * m["machine_busy"], 0, "%"),
            _f(m["cpu_core_ms_per_cam_s"], 2), _f(m.get("cpu_demux_core_ms_per_cam_s"), 2),
            _f(m.get("cpu_decode_core_ms_per_cam_s"), 2), _f(m.get("cpu_analysis_core_ms_per_cam_s"), 2),
            _f(m.get("cpu_loop_core_ms_per_cam_s"), 2), _f(m.get("cpu_executor_core_ms_per_cam_s"), 2),
            _f(m.get("rss_mib"), 0), _f(m.get("hwm_mib"), 0), _f(m.get("rss_per_cam_mib"), 2),
            _f(m.get("threads_n"), 0), _f(m.get("lag_p95_ms"), 0, " ms"),
            _f(m.get("lat_p50_ms"), 0), _f(m.get("lat_p95_ms"), 0), _f(m.get("lat_n"), 0),
        ])
    out.append(_table(header, rows))
    # the figures the issue asks for, in words
    for (n, mode), m in sorted(meds.items()):
        rs = groups[(n, mode)]
        not_online = [r for r in rs if r["online_end"] < n]
        why = ""
        if not_online:
            errs: dict[str, int] = {}
            for r in not_online:
                for k, v in (r.get("errors_end") or {}).items():
                    errs[k] = errs.get(k, 0) + v
                for k, v in (r.get("refused") or {}).items():
                    errs[f"refused: {k}"] = errs.get(f"refused: {k}", 0) + v
            why = (f"; NOT all online in {len(not_online)} of {len(rs)} runs (states "
                   f"{not_online[0].get('states_end')}" + (f", errors {errs}" if errs else "") + ")")
        if mode == "patrol":
            out.append(f"patrol N={n}: {_f(m['analysed_fps'], 1)} of {_f(m['target'], 1)} asked analysed/s "
                       f"({_f(100 * m['ach'], 0, '%') if m.get('ach') is not None else '-'}), fairness "
                       f"{_fair(m.get('fair_min'), m.get('fair_max'))}, gateway RSS {_f(m['rss_mib'] / 1024, 2)} GiB "
                       f"(peak {_f(m['hwm_mib'] / 1024, 2)} GiB; redis-server and subscriber not counted), "
                       f"CPU busy {_f(100 * m['cpu_busy'], 0, '%')}; all online after "
                       f"{_f(m.get('online_wait_s'), 1)} s, bulk import {_f(m.get('register_s'), 1)} s" + why)
        else:
            dm = ceil["decode"].get("demux only") if ceil else None
            out.append(f"idle camera (N={n}): {_f(m['cpu_core_ms_per_cam_s'], 2)} core-ms per second per camera in all "
                       f"(demux threads {_f(m.get('cpu_demux_core_ms_per_cam_s'), 2)}, decode threads "
                       f"{_f(m.get('cpu_decode_core_ms_per_cam_s'), 2)}, analysis "
                       f"{_f(m.get('cpu_analysis_core_ms_per_cam_s'), 2)}, loop {_f(m.get('cpu_loop_core_ms_per_cam_s'), 2)}),"
                       f" RSS {_f(m.get('rss_per_cam_mib'), 2)} MiB per camera"
                       + (f"; PyAV demux alone (ceiling): {1000 * ceil['cores'] / dm['media_s_per_s']:.3f} core-ms "
                          f"per camera-second" if dm else "") + why)
    return "\n".join(out)


# ---- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.patrol", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--quick", action="store_true", help="smoke run: 20 cameras, 1 repeat, short windows")
    p.add_argument("--cameras", help="comma-separated camera counts (default 200; quick 20)")
    p.add_argument("--fps", type=float, default=0.25, help="analysis fps per patrol camera (0.25)")
    p.add_argument("--seconds", type=float,
                   help="measurement window (default 60: 15 analysed frames per camera at 0.25 fps; quick 20)")
    p.add_argument("--repeats", type=int, help="runs of each trial and of each ceiling; medians are reported "
                                               "(default 3; quick 1)")
    p.add_argument("--warmup", type=float, help="seconds after the cameras are online before measuring "
                                                "(default 10; quick 5)")
    p.add_argument("--online-timeout", type=float, default=120.0,
                   help="longest wait for every camera to come online; then the window measures those online (120)")
    p.add_argument("--ceiling-seconds", type=float, help="seconds per ceiling measurement (default 4; quick 2)")
    p.add_argument("--no-idle", action="store_true", help="skip the idle-camera trial")
    p.add_argument("--idle-analytics", metavar="JSON",
                   help="analytics settings of the idle cameras (default: fps 0 if the gateway accepts it, else the "
                        "lowest fps with quality off and min_score 0.99)")
    p.add_argument("--skip-ceilings", action="store_true", help="trials only (no limit, ratio or load columns)")
    p.add_argument("--trial", type=Path, help=argparse.SUPPRESS)  # internal: run one trial (a child process)
    a = p.parse_args(argv)
    if a.trial:
        return a
    q = a.quick
    try:
        a.cameras = [int(x) for x in (a.cameras or ("20" if q else "200")).split(",") if x.strip()]
    except ValueError:
        p.error("--cameras takes comma-separated integers, e.g. 100,200")
    a.seconds = a.seconds if a.seconds is not None else (20.0 if q else 60.0)
    a.repeats = a.repeats if a.repeats is not None else (1 if q else 3)
    a.warmup = a.warmup if a.warmup is not None else (5.0 if q else 10.0)
    a.ceiling_seconds = a.ceiling_seconds if a.ceiling_seconds is not None else (2.0 if q else 4.0)
    if a.repeats < 1 or not a.cameras or min(a.cameras) < 1 or a.seconds <= 0 or a.fps <= 0:
        p.error("need --repeats >= 1, camera counts >= 1, --seconds > 0 and --fps > 0")
    a.model, a.clip = a.model.resolve(), a.clip.resolve()
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.trial:
        return child(args.trial)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not check_inputs(args):
        return 2
    idle, args.idle_why = idle_analytics(args.idle_analytics)
    modes = ("patrol",) if args.no_idle else MODES
    args.clip_fps = C.clip_info(args.clip).fps
    args.load_start = os.getloadavg()
    ceil: dict[str, Any] | None = None
    results: list[dict[str, Any]] = []
    interrupted = failed = False
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sharp-eyes-patrol-") as tmp:
        redis_srv = RedisServer(Path(tmp) / "redis", new_session=True)
        try:
            if not args.skip_ceilings:
                ceil = measure_ceilings(args, full=False)
            redis_srv.start()
            progress(f"redis-server pid {redis_srv.proc.pid} on port {redis_srv.port}")
            for r in range(args.repeats):  # interleaved, as in bench.pipeline: drift spreads over all trials
                for n in args.cameras:
                    for mode in modes:
                        analytics = {"fps": args.fps} if mode == "patrol" else idle
                        progress(f"{mode} repeat {r + 1}/{args.repeats}: N={n} cameras, analytics {json.dumps(analytics)} "
                                 f"(online within {args.online_timeout:g} s, warm-up {args.warmup:g} s, "
                                 f"window {args.seconds:g} s)")
                        res = run_trial(args, redis_srv, Path(tmp), n, mode, analytics)
                        if res is None:
                            failed = True
                            continue
                        add_limit(res, ceil)
                        res.update(mode=mode, repeat=r + 1)
                        results.append(res)
                        progress(f"  {mode} N={n}: {res['online_end']}/{n} online, {trial_line(res)}, "
                                 f"core-ms/s per camera {res['cpu_core_ms_per_cam_s']:.2f}, "
                                 f"RSS/camera {_f(res['rss_per_cam_mib'], 2)} MiB")
        except KeyboardInterrupt:
            interrupted = True
            progress("interrupted: cleaned up; reporting what was measured")
        except Exception:
            log.exception("benchmark failed; reporting what was measured")
            failed = True
        finally:
            redis_srv.stop()
    return finish_run(args, ceil, results, report, t0, interrupted, failed)


if __name__ == "__main__":
    sys.exit(main())
