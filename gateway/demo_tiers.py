"""`sharp-eyes demo --tiers`: a five-tier chain on one machine, in one process.

Region 45, city 4501, county 450102, township 450102001 and village 450102001001, each a tier
deployment of its own: an embedded redis-server in its own data folder, its own HTTP port, and
its parent's Redis as its uplink, so what the village sees flows up hop by hop to the region.
Sample clips play as cameras at the county, the township and the village.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aiohttp import web

from gateway.config import Settings, load_settings
from gateway.embedded_redis import EmbeddedRedis
from gateway.private import private_dir

log = logging.getLogger("sharp_eyes.demo")

DEMO_NODES_FILE = "demo_nodes.csv"  # names of the made-up township and village


@dataclass(frozen=True, slots=True)
class DemoCamera:
    """A sample clip played as a camera of a tier."""

    clip: str
    name: str


@dataclass(frozen=True, slots=True)
class DemoTier:
    """One tier of the demo chain."""

    node: str
    tier: str
    cameras: tuple[DemoCamera, ...] = ()


CHAIN = (
    DemoTier("45", "region"),
    DemoTier("4501", "city"),
    DemoTier("450102", "county", (DemoCamera("moving_objects.mp4", "county road"),)),
    DemoTier("450102001", "township", (DemoCamera("day_night.mp4", "township square"),)),
    DemoTier("450102001001", "village", (DemoCamera("moving_objects.mp4", "village gate"),)),
)


@dataclass(slots=True)
class _Running:
    """A started tier: its Redis, its web runner, its admin token, and what it runs."""

    spec: DemoTier
    settings: Settings
    redis: EmbeddedRedis
    token: str = ""
    runner: web.AppRunner | None = None
    camera_ids: list[str] = field(default_factory=list)
    name: str | None = None


def _say(what: str) -> None:
    print(f"  - {what}", flush=True)


def _base_http(args: argparse.Namespace) -> tuple[str, int]:
    http = args.http or os.environ.get("SHARP_EYES_HTTP") or "127.0.0.1:8080"
    host, _, port = http.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65531:
        raise SystemExit(f"sharp-eyes demo --tiers: --http {http!r}: expected HOST:PORT with 4 ports free above it")
    return host, int(port)


def _settings(args: argparse.Namespace, spec: DemoTier, http: str, redis_url: str, uplink: str | None,
              data_dir: Path) -> Settings:
    from sample_streams import CLIPS_DIR

    flags: dict = dict(node=spec.node, http=http, redis=redis_url, uplink=uplink, data_dir=data_dir,
                       media_dirs=[CLIPS_DIR], gateway_id=f"demo-{spec.tier}",
                       # The township and the village share the county's centre code: own base units.
                       id_base_unit={"township": "01", "village": "02"}.get(spec.tier, "00"))
    if args.log_level:
        flags["log_level"] = args.log_level
    if args.model is not None and spec.cameras:
        # Only tiers with cameras load the detector; one session each keeps five tiers on a small machine.
        flags["model"] = args.model
        flags["detector"] = {"workers": 1}
    return load_settings(getattr(args, "config", None), **flags)


async def _start_tier(run: _Running, serial_base: int) -> None:
    from gateway import keys
    from gateway.app import build_app
    from gateway.server import make_runner
    from gateway.cli import _admin_token
    from registry.ids import generate_camera_id
    from registry.models import Camera, CameraCreate
    from registry.store import CameraExists
    from sample_streams import CLIPS_DIR
    from tiers.names import load_node_file

    s, spec = run.settings, run.spec
    token, _ = _admin_token(s)
    run.token = token
    if s.model is not None:
        _say(f"{spec.tier} {spec.node}: loading the detector {s.model.name}")
    app = build_app(s, token)
    runner = make_runner(app, s)
    await runner.setup()
    run.runner = runner
    await web.TCPSite(runner, s.http_host, s.http_port).start()
    _say(f"{spec.tier} {spec.node}: gateway listening on http://{s.http}"
         + (f", forwarding up to its parent's Redis ({s.uplink})" if s.uplink else " (top tier)"))
    names = app[keys.NODE_NAMES]
    demo_names = load_node_file(Path(str(resources.files("tiers") / "data" / DEMO_NODES_FILE)))
    await names.put(demo_names)
    run.name = await names.get(spec.node)
    store = app[keys.STORE]
    for n, cam_spec in enumerate(spec.cameras, start=1):
        # Ids fixed per tier, so a restarted demo finds its cameras again.
        cid = generate_camera_id(spec.node, serial_base + n, base_unit=s.id_base_unit)
        cam = Camera.from_create(CameraCreate(name=f"demo {cam_spec.name}", node=spec.node,
                                              url=f"file:{CLIPS_DIR / cam_spec.clip}"), camera_id=cid)
        try:
            await store.create(cam)
        except CameraExists:
            cam = await store.get(cid) or cam
        _say(f"{spec.tier} {spec.node}: starting camera {cid} ({cam_spec.name}, file:{cam_spec.clip})")
        await app[keys.SUPERVISOR].apply(cam)
        app[keys.PLACEMENT].changed()
        run.camera_ids.append(cid)


async def _stop(started: list[_Running]) -> None:
    # Bottom up: each tier's last forwarding step still finds its parent's Redis running.
    for run in reversed(started):
        try:
            if run.runner is not None:
                await run.runner.cleanup()
        except Exception:  # one tier failing to stop must not leave the others' redis-servers running
            log.exception("%s %s did not stop cleanly", run.spec.tier, run.spec.node)
        await run.redis.stop()


def _banner(started: list[_Running], self_cmd: str) -> str:
    lines = ["", "Sharp Eyes five-tier demo is running: village -> township -> county -> city -> region, "
                 "one Redis and one gateway each.", ""]
    for i, run in enumerate(started):
        s = run.settings
        below = sum(len(r.camera_ids) for r in started[i:])
        own = len(run.camera_ids)
        sees = f"{below} camera{'' if below == 1 else 's'} of its subtree" + (f" ({own} its own)" if own else "")
        lines.append(f"  {run.spec.tier:<9}{s.node:<13}{run.name or '':<10} http://{s.http}/")
        lines.append(f"           admin token {run.token}")
        lines.append(f"           sees {sees}; data in {s.data_dir.resolve()}")
    region, village = started[0], started[-1]
    base = f"http://{region.settings.http}"
    auth = f"'Authorization: Bearer {region.token}'"
    lines += [
        "",
        "The region's node tree, all five tiers rolled up (cameras by state, online rate, events of the last hour):",
        f"  curl -H {auth} '{base}/api/v1/nodes'",
        "The village camera's events, as the region holds them (forwarded hop by hop):",
        f"  curl -H {auth} '{base}/api/v1/events?camera={village.camera_ids[0]}&limit=5'",
        "Watch every event of the region's subtree arrive:",
        f"  {self_cmd} events tail --url {base} --token {region.token}",
        "Stop with Ctrl-C.",
        "",
    ]
    return "\n".join(lines)


async def run_chain(args: argparse.Namespace, self_cmd: str) -> None:
    """Start the five tiers top down, print where each control room is, run until SIGINT/SIGTERM."""
    host, port = _base_http(args)
    # Like the single demo: --data-dir, else SHARP_EYES_DATA_DIR, else ./sharp-eyes-data.
    root = Path(args.data_dir or os.environ.get("SHARP_EYES_DATA_DIR") or "sharp-eyes-data") / "tiers"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started: list[_Running] = []
    uplink: str | None = None
    try:
        for i, spec in enumerate(CHAIN):
            if stop.is_set():
                return
            data = root / spec.node
            _say(f"{spec.tier} {spec.node}: starting Redis "
                 f"(embedded redis-server, data in {(data / 'redis').resolve()})")
            for folder in (root.parent, root, data):  # 0700 each: the AOFs hold camera passwords
                private_dir(folder)
            redis = EmbeddedRedis(data / "redis", own_session=True)
            url = await redis.start()
            run = _Running(spec, _settings(args, spec, f"{host}:{port + i}", url, uplink, data), redis)
            started.append(run)
            await _start_tier(run, serial_base=100 * (i + 1))
            uplink = url
        print(_banner(started, self_cmd), flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        _say("stopping the five tiers, village first")
        await _stop(started)
