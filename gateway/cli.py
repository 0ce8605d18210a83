"""`sharp-eyes` command line: serve, demo, events tail, cameras add|list|rm, samples."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from analytics.detector import ModelError
from gateway.config import ConfigError, Settings, load_settings, new_token
from gateway.embedded_redis import EmbeddedRedis, EmbeddedRedisError
from gateway.private import private_dir, private_file, tighten
from registry.urls import redact_url, url_secrets
from tiers.names import NodeFileError

log = logging.getLogger("sharp_eyes")

DEFAULT_URL = "http://127.0.0.1:8080"
DEMO_NODE = "450102"  # Xingning District, Nanning, Guangxi


# ---- running the gateway -----------------------------------------------------------------------
def _admin_token(settings: Settings) -> tuple[str, str]:
    """The admin token and where it came from: settings/env, or a file in the data folder."""
    if settings.admin_token is not None:
        return settings.admin_token.get_secret_value(), "SHARP_EYES_ADMIN_TOKEN"
    private_dir(settings.data_dir)
    path = settings.data_dir / "admin_token"
    if path.exists():
        tighten(path)  # 0600, also when an earlier version or a person left it readable
        return path.read_text().strip(), str(path)
    token = new_token()
    private_file(path, token + "\n")
    return token, str(path)


async def run_gateway(settings: Settings, on_started: Callable[[web.Application, str], Awaitable[None]] | None = None,
                      stop: asyncio.Event | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM (or `stop`), then shut down in stages."""
    from gateway.app import build_app
    from gateway.server import make_runner

    token, _ = _admin_token(settings)
    app = build_app(settings, token)
    runner = make_runner(app, settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        await site.start()
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("gateway for node %s listening on http://%s", settings.node, settings.http)
        if on_started is not None:
            await on_started(app, token)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def _settings_from(args: argparse.Namespace, **defaults) -> Settings:
    # Command defaults (demo's) rank below SHARP_EYES_* variables; given flags rank above them.
    flags = {k: v for k, v in defaults.items() if f"SHARP_EYES_{k.upper()}" not in os.environ}
    for name in ("node", "http", "redis", "uplink", "data_dir", "model", "gateway_id", "log_level"):
        value = getattr(args, name, None)
        if value is not None:
            flags[name] = value
    if getattr(args, "media_dir", None):
        flags["media_dirs"] = list(flags.get("media_dirs", [])) + [Path(p) for p in args.media_dir]
    if getattr(args, "recordings_dir", None) is not None:
        flags["recordings"] = {"dir": args.recordings_dir}  # merged into the file's and environment's section
    return load_settings(getattr(args, "config", None), **flags)


def cmd_serve(args: argparse.Namespace) -> int:
    if getattr(args, "uplink", None) and url_secrets(args.uplink):
        print("sharp-eyes: warning: the --uplink URL carries a password, which every local user can read in the "
              "process list: give it as SHARP_EYES_UPLINK or `uplink` in the config file", file=sys.stderr)
    settings = _settings_from(args)
    _setup_logging(settings.log_level)
    token, origin = _admin_token(settings)
    print(f"sharp-eyes: node {settings.node}, http://{settings.http}, admin token from {origin}"
          + (f", uplink {redact_url(settings.uplink)}" if settings.uplink else ""), flush=True)
    asyncio.run(run_gateway(settings))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sample_streams import CLIPS_DIR

    if args.tiers:
        from gateway.demo_tiers import run_chain

        _setup_logging(args.log_level or "WARNING")  # five gateways' logs would bury the progress lines
        asyncio.run(run_chain(args, _self_command()))
        return 0

    videos = [Path(v).resolve() for v in args.video or []]
    for v in videos:
        if not v.is_file():
            print(f"sharp-eyes demo: {v} is not a file", file=sys.stderr)
            return 2
    media = [CLIPS_DIR] + sorted({v.parent for v in videos})
    settings = _settings_from(args, node=DEMO_NODE, data_dir=Path("sharp-eyes-data"), media_dirs=media)
    _setup_logging(settings.log_level)
    sources = [(p.stem.replace("_", " "), p) for p in sorted(CLIPS_DIR.glob("*.mp4"))] + \
              [(v.stem, v) for v in videos]

    async def started(app: web.Application, token: str) -> None:
        from gateway import keys
        from registry.ids import generate_camera_id
        from registry.models import Camera, CameraCreate
        from registry.store import CameraExists

        store = app[keys.STORE]
        if keys.POOL in app:
            _say(f"detector {app[keys.POOL].name} ready ({settings.detector.workers} workers)")
        _say(f"gateway for node {settings.node} listening on http://{settings.http}")
        for serial, (name, path) in enumerate(sources, start=1):
            cid = generate_camera_id(settings.node, serial)
            cam = Camera.from_create(CameraCreate(name=f"demo {name}", node=settings.node, url=f"file:{path}"),
                                     camera_id=cid)
            try:
                await store.create(cam)
                print(f"  registered camera {cid}  {name}  (file:{path.name})", flush=True)
            except CameraExists:
                cam = await store.get(cid) or cam
                print(f"  camera {cid}  {name}  already registered", flush=True)
            _say(f"starting camera {cid} ({name})")
            await app[keys.SUPERVISOR].apply(cam)
            app[keys.PLACEMENT].changed()
        base = f"http://{settings.http}"
        detector = app[keys.POOL].name if keys.POOL in app else None
        print(f"""
Sharp Eyes gateway demo is running for node {settings.node}.
  web address : {base}/  (API under {base}/api/v1, health at {base}/healthz)
  admin token : {token}
  detector    : {detector or 'none: raising motion events only. Add a model with --model PATH (a YOLOX or YOLOv8/YOLO11 ONNX file)'}
  data folder : {settings.data_dir.resolve()}  (embedded Redis, AOF persistence)

Watch events arrive (from the first one this demo kept, then live):
  curl -N -H 'Authorization: Bearer {token}' '{base}/api/v1/events/stream?since={settings.node}-0-0'
  {_self_command()} events tail --url {base} --token {token} --since {settings.node}-0-0
Stop with Ctrl-C.
""", flush=True)

    async def main() -> None:
        # Started here rather than inside the app, so the demo can say what it starts as it starts it.
        s = settings
        embedded = None
        if s.redis is None:
            _say(f"starting Redis (embedded redis-server, data in {(s.data_dir / 'redis').resolve()})")
            private_dir(s.data_dir)
            embedded = EmbeddedRedis(s.data_dir / "redis")
            s = s.model_copy(update={"redis": await embedded.start()})
            _say(f"Redis ready at {s.redis}")
        try:
            if s.model is not None:
                _say(f"loading the detector {s.model.name}")
            await run_gateway(s, started)
        finally:
            if embedded is not None:
                await embedded.stop()

    asyncio.run(main())
    return 0


def _say(what: str) -> None:
    """One line of the demo's progress: what it is starting now."""
    print(f"  - {what}", flush=True)


def _self_command() -> str:
    """How the user can run this program again: the console script they used, else `python -m`."""
    exe = sys.argv[0]
    if os.path.basename(exe) == "sharp-eyes":
        rel = os.path.relpath(exe)
        return shlex.quote(rel if not rel.startswith("..") else exe)
    return f"{shlex.quote(sys.executable)} -m gateway.cli"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No level of its own for aiohttp.access: AccessLogger logs each request at the level its status
    # calls for (4xx INFO, 5xx WARNING, the rest DEBUG), so 401s show at the default INFO.


# ---- client commands -----------------------------------------------------------------------------
def _client_token(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get("SHARP_EYES_TOKEN") or os.environ.get("SHARP_EYES_ADMIN_TOKEN")
    if not token:
        raise SystemExit("no token: pass --token or set SHARP_EYES_TOKEN")
    return token


async def _request(args: argparse.Namespace, method: str, path: str, **kw) -> tuple[int, object]:
    headers = {"Authorization": f"Bearer {_client_token(args)}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as s:
        async with s.request(method, args.url.rstrip("/") + path, **kw) as r:
            try:
                body = await r.json(content_type=None)
            except ValueError:
                body = await r.text()
            return r.status, body


def _fail(status: int, body: object) -> int:
    msg = body.get("error", {}).get("message") if isinstance(body, dict) else body
    print(f"error {status}: {msg}", file=sys.stderr)
    return 1


async def _import(args: argparse.Namespace) -> int:
    """POST a CSV or JSON file to the bulk endpoint, showing rows done on stderr as the gateway reports them."""
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        print(f"sharp-eyes: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {_client_token(args)}", "Accept": "application/x-ndjson",
               "Content-Type": "application/json" if path.suffix.lower() == ".json" else "text/csv"}
    tty = sys.stderr.isatty()
    result: dict | None = None
    # No total limit: a large file takes as long as it takes; progress lines keep the socket busy.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async with s.post(args.url.rstrip("/") + "/api/v1/cameras/bulk", data=data, headers=headers) as r:
            if r.status != 200:
                try:
                    body: object = await r.json(content_type=None)
                except ValueError:
                    body = await r.text()
                return _fail(r.status, body)
            if r.content_type != "application/x-ndjson":  # a gateway without progress: one JSON answer
                result = await r.json()
            else:
                async for raw in r.content:
                    msg = json.loads(raw) if raw.strip() else {}
                    if "progress" in msg:
                        p = msg["progress"]
                        line = (f"{path.name}: {p['done']}/{p['total']} rows "
                                f"({p['created']} created, {p['failed']} failed)")
                        print(f"\r{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
                    elif "result" in msg:
                        result = msg["result"]
                    elif "error" in msg:
                        print(("\n" if tty else "") + f"error {msg['error']['status']}: {msg['error']['message']}",
                              file=sys.stderr)
                        return 1
    if tty:
        print(file=sys.stderr)
    if result is None:
        print("error: the gateway ended the import without a result", file=sys.stderr)
        return 1
    for row in result["results"]:
        if row["ok"]:
            print(f"row {row['row']}  {row['id']}")
        else:
            print(f"row {row['row']}  error {row['status']}: {row['error']}")
    print(f"{path.name}: {result['rows']}/{result['rows']} rows ({result['created']} created, "
          f"{result['failed']} failed)", file=sys.stderr)
    return 0 if result["failed"] == 0 else 1


def cmd_cameras(args: argparse.Namespace) -> int:
    if args.action == "import":
        return asyncio.run(_import(args))
    if args.action == "add":
        body: dict = {"name": args.name, "node": args.node, "url": args.camera_url, "enabled": not args.disabled}
        if args.id:
            body["id"] = args.id
        if args.substream_url:
            body["substream_url"] = args.substream_url
        analytics = {}
        if args.fps is not None:
            analytics["fps"] = args.fps
        if args.labels:
            analytics["labels"] = [x for x in args.labels.split(",") if x]
        if args.min_score is not None:
            analytics["min_score"] = args.min_score
        if analytics:
            body["analytics"] = analytics
        status, resp = asyncio.run(_request(args, "POST", "/api/v1/cameras", json=body))
        if status != 201:
            return _fail(status, resp)
        print(f"{resp['id']}  {resp['name']}  node {resp['node']}  {resp['url']}")
        return 0
    if args.action == "list":
        params = {k: v for k, v in (("node", args.node), ("state", args.state)) if v}
        cursor = None
        while True:
            if cursor:
                params["cursor"] = cursor
            status, resp = asyncio.run(_request(args, "GET", "/api/v1/cameras", params=params))
            if status != 200:
                return _fail(status, resp)
            for c in resp["cameras"]:
                st = c["status"]
                print(f"{c['id']}  {st['state']:<10} {c['node']:<12} {c['name']}  {c['url']}"
                      + (f"  [{st['last_error']}]" if st.get("last_error") else ""))
            cursor = resp.get("next_cursor")
            if not cursor:
                return 0
    status, resp = asyncio.run(_request(args, "DELETE", f"/api/v1/cameras/{args.camera_id}"))
    if status != 200:
        return _fail(status, resp)
    print(f"deleted {args.camera_id}")
    return 0


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str) -> float:
    """argparse type: '90m', '12h', '30d' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value.lower())
    if not m or float(m[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 90m, 12h or 30d")
    return float(m[1]) * _UNITS[m[2]]


def cmd_tokens(args: argparse.Namespace) -> int:
    if args.action == "create":
        body = {"name": args.name, "role": args.role}
        if args.node:
            body["node"] = args.node
        if args.expires_in is not None:
            body["expires_in_s"] = args.expires_in
        status, resp = asyncio.run(_request(args, "POST", "/api/v1/tokens", json=body))
        if status != 201:
            return _fail(status, resp)
        until = f"  expires {resp['expires_at']}" if resp.get("expires_at") else ""
        print(f"{resp['id']}  {resp['role']:<8} node {resp['node']}  {resp['name']}{until}")
        if resp.get("expires_capped"):
            print("(its lifetime was shortened: a token ends no later than the token that made it)",
                  file=sys.stderr)
        # The secret is shown here once; the gateway keeps only its hash.
        print(f"token: {resp['token']}")
        print("(store it now: it cannot be shown again)", file=sys.stderr)
        return 0
    if args.action == "list":
        params = {"node": args.node} if args.node else {}
        if not args.all:
            params["active"] = "true"
        status, resp = asyncio.run(_request(args, "GET", "/api/v1/tokens", params=params))
        if status != 200:
            return _fail(status, resp)
        for t in resp["tokens"]:
            if t["revoked_at"]:
                state = f"revoked {t['revoked_at']}"
            elif t.get("expired"):
                state = f"expired {t['expires_at']}"
            else:
                state = f"active until {t['expires_at']}" if t.get("expires_at") else "active"
            print(f"{t['id']}  {t['role']:<8} {t['node']:<12} {state:<8}  {t['name']}  (by {t['created_by_name']})")
        return 0
    status, resp = asyncio.run(_request(args, "DELETE", f"/api/v1/tokens/{args.token_id}"))
    if status != 200:
        return _fail(status, resp)
    print(f"revoked {args.token_id}")
    if resp.get("also_revoked"):
        print(f"and the tokens made with it: {', '.join(resp['also_revoked'])}")
    return 0


def cmd_tiers(args: argparse.Namespace) -> int:
    if args.action == "grant":
        status, resp = asyncio.run(_request(args, "POST", "/api/v1/tiers/children", json={"node": args.node}))
        if status != 201:
            return _fail(status, resp)
        print(f"granted {resp['node']} (Redis user {resp['user']})")
        # The password is in this URL only; the gateway keeps its hash.
        print(f"uplink: {resp['uplink']}")
        print("(give it to the child tier as SHARP_EYES_UPLINK or `uplink` in its config file, not on its command "
              "line; it cannot be shown again)", file=sys.stderr)
        return 0
    if args.action == "list":
        status, resp = asyncio.run(_request(args, "GET", "/api/v1/tiers/children"))
        if status != 200:
            return _fail(status, resp)
        for c in resp["children"]:
            grant = f"granted by {c['granted_by']}" if c["granted"] else "not granted (full-rights uplink)"
            link = "connected" if c["connected"] else "not connected"
            refused = sum((c.get("intake") or {}).get("refused", {}).values())
            print(f"{c['node']:<12} {link:<14} {grant}" + (f"  {refused} refused" if refused else ""))
        return 0
    status, resp = asyncio.run(_request(args, "DELETE", f"/api/v1/tiers/children/{args.node}"))
    if status != 204:
        return _fail(status, resp)
    print(f"revoked {args.node}: its uplink no longer works")
    return 0


async def _tail(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {_client_token(args)}"}
    params = {k: v for k, v in (("node", args.node), ("camera", args.camera), ("type", args.type),
                                ("label", args.label), ("min_score", args.min_score)) if v is not None}
    since = args.since
    count = 0
    delay = 1.0
    async with aiohttp.ClientSession(headers=headers) as s:
        while True:
            q = dict(params)
            if since:
                q["since"] = since
            try:
                async with s.ws_connect(args.url.rstrip("/") + "/api/v1/events/ws", params=q, heartbeat=30) as ws:
                    delay = 1.0
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        ev = json.loads(msg.data)
                        since = ev.get("id", since)
                        print(msg.data if args.json else _line(ev), flush=True)
                        count += 1
                        if args.limit and count >= args.limit:
                            return 0
            except aiohttp.WSServerHandshakeError as e:
                print(f"error {e.status}: {e.message}", file=sys.stderr)
                if e.status in (400, 401, 403, 404):
                    return 1
            except (aiohttp.ClientError, OSError) as e:
                print(f"connection lost ({type(e).__name__}); resuming from {since or 'now'} in {delay:.0f}s",
                      file=sys.stderr)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)


def _line(ev: dict) -> str:
    what = ev.get("label") or ev.get("state") or ev.get("phase") or ""
    score = f" {ev['score']:.2f}" if "score" in ev else ""
    phase = f" [{ev['phase']}]" if "phase" in ev and ev["type"] == "detection" else ""
    media = f" @{ev['media_ts']:.1f}s" if "media_ts" in ev else ""
    reason = f" ({ev['reason']})" if ev.get("reason") else ""
    return f"{ev['ts']}  {ev['type']:<9} {what}{score}{phase}{media}{reason}  camera {ev['camera_id']}  {ev.get('id', '')}"


def cmd_events(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 0


def cmd_samples(args: argparse.Namespace) -> int:
    if args.action == "generate":
        from sample_streams.generate import main as generate_main

        return generate_main(["--out", args.out] if args.out else []) or 0
    from sample_streams.rtsp import RtspServer, find_rtsp_support

    reason = find_rtsp_support()
    if reason:
        print(f"cannot serve RTSP: {reason}", file=sys.stderr)
        return 2
    mounts = {Path(f).stem: Path(f).resolve() for f in args.files}
    server = RtspServer()
    server.start(args.port, mounts)
    for name in mounts:
        print(f"serving {mounts[name].name} at {server.url(name)}", flush=True)
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        server.stop()
    return 0


# ---- argument parsing ------------------------------------------------------------------------------
def _gateway_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file")
    p.add_argument("--http", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
    p.add_argument("--redis", help="Redis URL (redis://, rediss://, unix://, or redis+sentinel://h1:26379,h2:26379/"
                                   "<master>/<db>); absent: an embedded redis-server in the data folder")
    p.add_argument("--uplink", help="the parent tier's Redis URL: forward catalog, status and events up to it "
                                    "(with a password: prefer SHARP_EYES_UPLINK, which ps does not show)")
    p.add_argument("--data-dir", type=Path, help="data folder (embedded Redis AOF, admin token)")
    p.add_argument("--node", help="node code this tier owns, e.g. 450102")
    p.add_argument("--model", type=Path, help="ONNX detector (YOLOX or YOLOv8/YOLO11 export)")
    p.add_argument("--media-dir", action="append", help="folder file: sources may live in (repeatable)")
    p.add_argument("--recordings-dir", type=Path,
                   help="where camera recordings go (default: recordings in the data folder)")
    p.add_argument("--gateway-id", help="this gateway instance's name")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("SHARP_EYES_URL", DEFAULT_URL), help="gateway address")
    p.add_argument("--token", help="bearer token (or SHARP_EYES_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="sharp-eyes", description="Sharp Eyes video-surveillance gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway for one tier node")
    _gateway_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="run a gateway with an embedded Redis and sample cameras")
    _gateway_flags(p)
    p.add_argument("--video", action="append", help="also register this video file as a camera (repeatable)")
    p.add_argument("--tiers", action="store_true",
                   help="run a five-tier chain (region 45 ... village 450102001001), one Redis and HTTP port each "
                        "(--http is the region's; the tiers below take the next four ports)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("events", help="watch events")
    esub = p.add_subparsers(dest="action", required=True)
    t = esub.add_parser("tail", help="print live events (resumes after a dropped connection)")
    _client_flags(t)
    t.add_argument("--node")
    t.add_argument("--camera")
    t.add_argument("--type", help="detection,motion,quality,status")
    t.add_argument("--label")
    t.add_argument("--min-score", dest="min_score")
    t.add_argument("--since", help="event id to resume after")
    t.add_argument("--json", action="store_true", help="print raw JSON events")
    t.add_argument("--limit", type=int, help="stop after this many events")
    t.set_defaults(func=cmd_events)

    p = sub.add_parser("cameras", help="manage cameras")
    csub = p.add_subparsers(dest="action", required=True)
    a = csub.add_parser("add", help="register a camera")
    _client_flags(a)
    a.add_argument("--name", required=True)
    a.add_argument("--node", required=True)
    a.add_argument("--camera-url", required=True, help="rtsp://... or file:PATH")
    a.add_argument("--id", help="GB/T 28181 20-digit id (generated when absent)")
    a.add_argument("--substream-url")
    a.add_argument("--fps", type=float)
    a.add_argument("--labels", help="comma-separated labels to report")
    a.add_argument("--min-score", type=float)
    a.add_argument("--disabled", action="store_true")
    a.set_defaults(func=cmd_cameras)
    ls = csub.add_parser("list", help="list cameras with their state")
    _client_flags(ls)
    ls.add_argument("--node")
    ls.add_argument("--state")
    ls.set_defaults(func=cmd_cameras)
    rm = csub.add_parser("rm", help="delete a camera")
    _client_flags(rm)
    rm.add_argument("camera_id")
    rm.set_defaults(func=cmd_cameras)
    im = csub.add_parser("import", help="register many cameras from a CSV or JSON file, showing progress")
    _client_flags(im)
    im.add_argument("file", help="CSV with a header row (id,name,node,url,...) or a JSON array of cameras")
    im.set_defaults(func=cmd_cameras)

    p = sub.add_parser("tokens", help="manage access tokens (admin)")
    tsub = p.add_subparsers(dest="action", required=True)
    tc = tsub.add_parser("create", help="create a token; prints the secret once")
    _client_flags(tc)
    tc.add_argument("--name", required=True, help="who or what the token is for")
    tc.add_argument("--role", required=True, choices=["admin", "operator", "viewer"])
    tc.add_argument("--node", help="jurisdiction (node code); default: the caller's")
    tc.add_argument("--expires-in", type=_duration, metavar="DURATION",
                    help="lifetime, e.g. 90m, 12h, 30d (seconds without a unit); default: until revoked")
    tc.set_defaults(func=cmd_tokens)
    tl = tsub.add_parser("list", help="list tokens in your jurisdiction")
    _client_flags(tl)
    tl.add_argument("--node")
    tl.add_argument("--all", action="store_true", help="include revoked tokens")
    tl.set_defaults(func=cmd_tokens)
    tr = tsub.add_parser("revoke", help="revoke a token at once")
    _client_flags(tr)
    tr.add_argument("token_id")
    tr.set_defaults(func=cmd_tokens)

    p = sub.add_parser("tiers", help="child tiers' uplink credentials (admin of this tier)")
    tsub = p.add_subparsers(dest="action", required=True)
    tg = tsub.add_parser("grant", help="make (or replace) a child tier's uplink credential; prints the URL once")
    _client_flags(tg)
    tg.add_argument("node", help="the child tier's node code")
    tg.set_defaults(func=cmd_tiers)
    tl = tsub.add_parser("list", help="granted and connected child tiers")
    _client_flags(tl)
    tl.set_defaults(func=cmd_tiers)
    tr = tsub.add_parser("revoke", help="revoke a child tier's uplink credential at once")
    _client_flags(tr)
    tr.add_argument("node")
    tr.set_defaults(func=cmd_tiers)

    p = sub.add_parser("samples", help="sample clips for testers")
    ssub = p.add_subparsers(dest="action", required=True)
    g = ssub.add_parser("generate", help="(re)generate the sample clips")
    g.add_argument("--out")
    g.set_defaults(func=cmd_samples)
    r = ssub.add_parser("rtsp", help="serve video files as RTSP cameras (needs GStreamer's RTSP server)")
    r.add_argument("files", nargs="+")
    r.add_argument("--port", type=int, default=8554)
    r.set_defaults(func=cmd_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sharp-eyes` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ModelError, EmbeddedRedisError, NodeFileError) as e:
        print(f"sharp-eyes: {e}", file=sys.stderr)
        return 2
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        # A client command that cannot reach the gateway: one line, not a traceback.
        where = getattr(args, "url", "the gateway")
        print(f"sharp-eyes: cannot reach {where}: {e or type(e).__name__}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            print(f"sharp-eyes: cannot listen on the HTTP address: {e.strerror}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
