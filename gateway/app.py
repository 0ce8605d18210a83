"""Application assembly: one cleanup context per long-lived resource, started in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
from aiohttp import web
from redis.exceptions import RedisError

from analytics.pool import DetectorPool
from gateway import __version__, keys
from gateway import web as web_ui
from gateway.api import audit as audit_api
from gateway.api import bridge as bridge_api
from gateway.api import children as children_api
from gateway.api import counts as counts_api
from gateway.api import gateways as gateways_api
from gateway.api import cameras, events, live, metrics, nodes, openapi
from gateway.api import recordings as recordings_api
from gateway.api import tokens as tokens_api
from gateway.api.auth import auth_middleware
from gateway.api.errors import error_middleware, hash_token
from gateway.audit import AuditLog
from gateway.analysis import AnalysisRunner
from gateway.camera import RunContext
from gateway.config import Settings
from gateway.embedded_redis import EmbeddedRedis, Listener
from gateway.events import EventHub, EventLog
from gateway.ingest import DecodePool
from gateway.live_share import LiveShares
from gateway.private import private_dir
from gateway.placement import LocalLoad, Placement
from gateway.recordings import Recordings
from gateway.supervisor import StreamSupervisor
from gateway.status_pub import StatusPublisher
from registry.store import CameraStore
from tiers import intake
from tiers.bridge import Bridge, EventPolicy
from tiers.connect import blocking_client, is_sentinel_url, redis_client, strip_credentials
from tiers.grants import Grants
from tiers.intake import Intake, IntakePolicy
from tiers import relay as relay_mod
from tiers.relay import Relay
from tiers.rpc import FrameFetcher
from registry.tokens import RevocationWatch, TokenStore
from tiers.names import NodeEntry, NodeNames, bundled_node_file, load_node_file

log = logging.getLogger(__name__)

OPENCV_THREADS = 1  # OpenCV runs each call on the calling thread (0 or 1: no worker pool)
CAPACITY_PROBES = 5  # inferences timed at start to measure this gateway's capacity
PROBE_SHAPE = (360, 640, 3)
CAPACITY_NO_MODEL_PER_THREAD = 100  # analysed frames/s per decode thread without a model (motion gate only)
PLACEMENT_STOP_S = 8.0  # shutdown: handing the cameras over gets this long (SIGTERM: within 5 s is the aim)
NAMES_RECHECK_S = 10.0  # how often the node names are checked for, and reloaded into, an emptied Redis


async def _cancel(tasks: list[asyncio.Task], timeout: float = 5.0) -> None:
    """Cancel named background tasks and wait for them, bounded."""
    for t in tasks:
        t.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            log.warning("task %s did not stop within %.0fs", t.get_name(), timeout)


def _listener(settings: Settings) -> Listener | None:
    if settings.redis_listen is None:
        return None
    host, _, port = settings.redis_listen.rpartition(":")
    return Listener(host.strip("[]"), int(port), settings.redis_tls_cert, settings.redis_tls_key)


def _intake_url(settings: Settings, embedded: EmbeddedRedis | None) -> str:
    """Where child tiers reach this tier's Redis (no credentials), or "" when they cannot."""
    if settings.intake_url:
        return settings.intake_url
    if embedded is not None and embedded.listen is not None:
        return embedded.listen.url()
    if settings.redis and settings.redis.startswith(("redis://", "rediss://")):
        u = urlsplit(settings.redis)
        return urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, "", ""))
    if settings.redis and is_sentinel_url(settings.redis):
        return strip_credentials(settings.redis)  # the sentinels' credential too: set intake_url for that
    return ""


def _redis_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        embedded = None
        url = settings.redis
        if url is None:
            private_dir(settings.data_dir)  # 0700: the AOF below holds camera passwords
            embedded = EmbeddedRedis(settings.data_dir / "redis", listen=_listener(settings))
            url = await embedded.start()
        app[keys.INTAKE_URL] = _intake_url(settings, embedded)
        # A redis+sentinel:// URL gives a client that follows failovers; its event batches wait for replicas.
        client = redis_client(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15,
            retry_on_timeout=False,
            wait_replicas=settings.redis_wait_replicas, wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        app[keys.REDIS] = client
        try:
            yield
        finally:
            await client.aclose()
            if embedded is not None:
                await embedded.stop()
    return ctx


def _access_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        a = settings.access
        store = TokenStore(app[keys.REDIS])
        watch = RevocationWatch(store, interval_s=a.stream_recheck_s)
        audit = AuditLog(app[keys.REDIS], settings.node, settings.gateway_id, retention=a.audit_retention,
                         buffer_size=a.audit_buffer, trust_forwarded_for=a.trust_x_forwarded_for,
                         view_window_s=a.thumbnail_audit_window_s)
        app[keys.TOKENS] = store
        app[keys.REVOCATIONS] = watch
        app[keys.AUDIT] = audit
        tasks = [asyncio.create_task(audit.run(), name="audit:writer"),
                 asyncio.create_task(watch.run(), name="tokens:revocations")]
        try:
            yield
        finally:
            await _cancel(tasks[1:])
            with contextlib.suppress(Exception):
                await audit.flush(timeout=3.0)
            if audit.pending:
                log.warning("%d audit entries not written at shutdown (Redis unavailable)", audit.pending)
            await _cancel(tasks[:1])
    return ctx


def _nodes_ctx(path: Path, entries: tuple[NodeEntry, ...]):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        names = NodeNames(app[keys.REDIS])
        app[keys.NODE_NAMES] = names

        async def load(entries: tuple[NodeEntry, ...]) -> None:
            delay, loaded = 0.5, False
            while True:
                try:
                    # Again whenever the tier's Redis comes back empty (wiped, or a new server without AOF).
                    if not loaded or not await app[keys.REDIS].exists(names.version_key):
                        n = await names.put(entries)
                        log.info("%d node names %s from %s", n, "reloaded" if loaded else "loaded", path)
                        loaded = True
                    delay = 0.5
                    await asyncio.sleep(NAMES_RECHECK_S)
                except (RedisError, OSError) as e:
                    log.warning("node names not stored yet (%s); retrying", type(e).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)

        loader = asyncio.create_task(load(entries), name="nodes:load")
        try:
            yield
        finally:
            await _cancel([loader])
    return ctx


def _detector_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.model is None:
            log.info("no model given: raising motion events only (add one with --model PATH)")
            yield
            return
        d = settings.detector
        pool = await asyncio.to_thread(DetectorPool, settings.model, workers=d.workers,
                                       intra_threads=d.intra_threads, providers=d.providers, nice=d.nice)
        app[keys.POOL] = pool
        log.info("detector %s loaded: %d workers", pool.name, d.workers)
        try:
            yield
        finally:
            await asyncio.to_thread(pool.close)
    return ctx


def _analysis_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        # Decoding and analysis are sized to the machine, not to the number of cameras. OpenCV's own pool is
        # off: each resize or conversion spread over its workers only contended with our threads (bench.pipeline
        # at 24 cameras: 0.2 ms less CPU per analysed frame with it off).
        cv2.setNumThreads(OPENCV_THREADS)
        decoders = DecodePool(settings.ingest.decode_threads)
        decoders.start()
        runner = AnalysisRunner(app.get(keys.POOL), threads=decoders.threads)
        app[keys.DECODERS] = decoders
        app[keys.ANALYSIS] = runner
        task = asyncio.create_task(runner.run(), name="analysis:scheduler")
        task.add_done_callback(_log_death)
        app[keys.ANALYSIS_TASK] = task
        log.info("decode pool: %d threads; analysis: %d slots", decoders.threads, runner.scheduler.slots)
        try:
            yield
        finally:
            # Stage 1: stop dispatching and let jobs in flight finish; stage 2: the decode threads.
            await runner.stop(timeout=5.0)
            await _cancel([task])
            await asyncio.to_thread(decoders.stop, 5.0)
    return ctx


def _log_death(task: asyncio.Task) -> None:
    """A background service that ends on its own is a bug: say so (and /healthz shows it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s died", task.get_name(), exc_info=task.exception())


def _events_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        e = settings.events
        log_ = EventLog(app[keys.REDIS], settings.node, retention=e.retention, snapshot_ttl_s=e.snapshot_ttl_s,
                        buffer_size=e.buffer_size)
        hub = EventHub(log_, queue_size=e.subscriber_queue)
        app[keys.EVENTS] = log_
        app[keys.HUB] = hub
        tasks = [asyncio.create_task(log_.run(), name="events:writer"),
                 asyncio.create_task(hub.run(), name="events:hub")]
        try:
            yield
        finally:
            # Stage 1: let the hub's blocking read return, then stop it (subscribers are gone by now);
            # stage 2: give the writer a last flush.
            hub.stop()
            await asyncio.wait(tasks[1:], timeout=hub.block_ms / 1000 + 2)
            await _cancel(tasks[1:])
            with contextlib.suppress(Exception):
                await log_.flush(timeout=3.0)
            if log_.pending:
                log.warning("%d events not written at shutdown (Redis unavailable)", log_.pending)
            await _cancel(tasks[:1])
    return ctx


def _recordings_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        root = settings.recordings_dir
        await asyncio.to_thread(private_dir, root)  # 0700: recordings show what the cameras saw
        recs = Recordings(settings.recordings, root, asyncio.get_running_loop())
        await recs.open()
        app[keys.RECORDINGS] = recs
        task = asyncio.create_task(recs.run_retention(), name="recordings:retention")
        task.add_done_callback(_log_death)
        app[keys.RECORDINGS_TASK] = task
        cleaner = asyncio.create_task(recs.exports.run_cleaner(), name="recordings:exports")
        cleaner.add_done_callback(_log_death)
        app[keys.EXPORTS_TASK] = cleaner
        log.info("recordings in %s (default mode %s)", root, settings.recordings.mode)
        try:
            yield
        finally:
            # After the cameras stopped (the supervisor's context closes first): close what is still open.
            await _cancel([task, cleaner])
            await recs.close()
    return ctx


def _supervisor_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = CameraStore(app[keys.REDIS], base_unit=settings.id_base_unit)
        if len(settings.node) > 6 and settings.id_base_unit == "00":
            log.warning("node %s is below a county and id_base_unit is 00, like the county's own: camera ids "
                        "generated here may clash with the county's; set id_base_unit or give ids", settings.node)
        app[keys.STORE] = store
        run_ctx = RunContext(node=settings.node, gateway_id=settings.gateway_id, ingest=settings.ingest,
                             media_dirs=tuple(p.resolve() for p in settings.media_dirs), events=app[keys.EVENTS],
                             decoders=app[keys.DECODERS], analysis=app[keys.ANALYSIS],
                             snapshot_width=settings.events.snapshot_width, recordings=app[keys.RECORDINGS])
        sup = StreamSupervisor(run_ctx)
        app[keys.SUPERVISOR] = sup
        try:
            yield
        finally:
            await sup.stop_all(timeout=10)
    return ctx


async def _measured_capacity(app: web.Application) -> float:
    """Analysed frames per second this machine can do, measured once at start (stable, for balancing)."""
    pool = app.get(keys.POOL)
    if pool is None:
        # Motion only: conversion and the motion gate, a few milliseconds a frame per decode thread.
        return float(CAPACITY_NO_MODEL_PER_THREAD * app[keys.DECODERS].threads)
    image = np.zeros(PROBE_SHAPE, np.uint8)  # letterboxed to the model's input like any frame
    times = []
    for _ in range(CAPACITY_PROBES):
        t0 = time.perf_counter()
        await pool.detect(image)
        times.append(time.perf_counter() - t0)
    per = sorted(times)[len(times) // 2]
    return float(f"{pool.workers / max(per, 1e-3):.2g}")


def _placement_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        runner, p = app[keys.ANALYSIS], settings.placement
        capacity = p.capacity_fps or await _measured_capacity(app)

        def load() -> LocalLoad:
            return LocalLoad(capacity_fps=capacity, analyzed_fps=runner.scheduler.stats().analyzed_fps)
        placement = Placement(app[keys.REDIS], app[keys.STORE], app[keys.SUPERVISOR], app[keys.EVENTS], p,
                              gateway_id=settings.gateway_id, node=settings.node, version=__version__,
                              address=p.address, load=load)
        app[keys.PLACEMENT] = placement
        app[keys.EVENTS].lease_of = placement.token_of
        app[keys.SUPERVISOR].remote = placement.status_of
        tasks = [asyncio.create_task(placement.run(), name="placement"),
                 asyncio.create_task(placement.listen(), name="placement:listen")]
        for t in tasks:
            t.add_done_callback(_log_death)
        app[keys.PLACEMENT_TASKS] = tasks
        log.info("placement: gateway %s, capacity %g analysed frames/s, leases of %g s", settings.gateway_id,
                 capacity, p.lease_s)
        try:
            yield
        finally:
            # Stage 1: no more passes; stage 2: hand every camera over while the event writer still runs.
            await _cancel(tasks)
            await placement.stop(timeout=PLACEMENT_STOP_S)
    return ctx


def _status_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        e = settings.events
        pub = StatusPublisher(app[keys.REDIS], app[keys.STORE], app[keys.SUPERVISOR], settings.node,
                              info={"retention": e.retention, "audit_retention": settings.access.audit_retention,
                                    "snapshot_ttl_s": e.snapshot_ttl_s, "index_ttl_s": e.index_ttl_s})
        task = asyncio.create_task(pub.run(), name="status:publisher")
        try:
            yield
        finally:
            pub.stop()  # returns within one tick; a pass in flight finishes its round trip
            await asyncio.wait([task], timeout=pub.tick + 3)
            await _cancel([task])
    return ctx


def _intake_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        e = settings.events
        redis = app[keys.REDIS]
        # The blocking pop gets its own connections (own sentinels too), with a socket timeout above the pop's.
        blocking = blocking_client(redis, intake.POP_TIMEOUT_S + 10)
        grants = Grants(redis, settings.node)
        app[keys.GRANTS] = grants
        inbox = Intake(redis, blocking, settings.node, grants=grants, policy=IntakePolicy(
            retention=e.retention, audit_retention=settings.access.audit_retention, snapshot_ttl_s=e.snapshot_ttl_s,
            index_ttl_s=e.index_ttl_s))
        app[keys.INTAKE] = inbox
        task = asyncio.create_task(inbox.run(), name="intake")
        task.add_done_callback(_log_death)
        app[keys.INTAKE_TASK] = task
        try:
            yield
        finally:
            # Stage 1: the loop returns after its pop (≤ POP_TIMEOUT_S) and requests in hand are answered;
            # stage 2: cancel what is left.
            inbox.stop()
            await asyncio.wait([task], timeout=intake.POP_TIMEOUT_S + 2)
            await inbox.wait_handled(timeout=3)
            await _cancel([task])
            await blocking.aclose()
            await blocking.connection_pool.disconnect()
    return ctx


def _bridge_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        fetcher = FrameFetcher(app[keys.REDIS], settings.node, app[keys.STORE], app[keys.SUPERVISOR].workers,
                               render=app[keys.LIVE].jpeg, gateway_id=settings.gateway_id,
                               holder=app[keys.PLACEMENT].holder)
        app[keys.FETCHER] = fetcher  # own cameras' frames are served with or without an uplink
        # The tier's other gateways ask this one for the frames of the cameras it runs (a blocking pop of
        # PEER_POP_S on the app's client, whose socket timeout is longer).
        peers = asyncio.create_task(fetcher.serve_peers(app[keys.REDIS]), name="frames:peers")
        peers.add_done_callback(_log_death)
        # Streams (recordings, clips, live.mp4): the blocking pops get their own connections, with a socket
        # timeout above the longest pop.
        relay_block = blocking_client(app[keys.REDIS], relay_mod.MAX_WAIT_S + 5)
        relay = Relay(app[keys.REDIS], relay_block, settings.node, app[keys.STORE], app[keys.SUPERVISOR].workers,
                      open_local=recordings_api.local_opener(app), gateway_id=settings.gateway_id,
                      holder=app[keys.PLACEMENT].holder, live_share=LiveShares())
        app[keys.RELAY] = relay
        peers_st = asyncio.create_task(relay.serve_peers(), name="relay:peers")
        peers_st.add_done_callback(_log_death)

        async def close_relay() -> None:
            await _cancel([peers, peers_st])
            await relay.close()
            await relay_block.aclose()
            await relay_block.connection_pool.disconnect()

        if settings.uplink is None:
            try:
                yield
            finally:
                await close_relay()
            return
        b = settings.bridge
        bridge = Bridge(
            app[keys.REDIS], settings.uplink, settings.node, settings.gateway_id, store=app[keys.STORE],
            fetcher=fetcher, policy=EventPolicy(frozenset(b.types) if b.types else None,
                                                frozenset(b.labels) if b.labels else None, b.min_score),
            batch=b.batch, backoff_initial_s=b.backoff_initial_s, backoff_max_s=b.backoff_max_s,
            timeout_s=b.timeout_s, heartbeat_s=b.heartbeat_s,
            ca_file=str(b.ca_file) if b.ca_file else None, relay=relay,
        )
        app[keys.BRIDGE] = bridge
        log.info("bridge to the parent tier at %s", bridge.uplink_display)
        tasks = [asyncio.create_task(bridge.run(), name="bridge:forward"),
                 asyncio.create_task(bridge.serve_rpc(), name="bridge:rpc"),
                 asyncio.create_task(bridge.serve_streams(), name="bridge:streams")]
        try:
            yield
        finally:
            # Stage 1: let the loops return after their current step (blocking reads last ≤ 1 s);
            # stage 2: cancel what is left, then drop the uplink connections.
            bridge.stop()
            await asyncio.wait(tasks, timeout=b.timeout_s + 2)
            await _cancel(tasks)
            await close_relay()
            await bridge.close()
    return ctx


async def healthz(request: web.Request) -> web.Response:
    """Liveness and Redis reachability (open: no catalog data in it)."""
    app = request.app
    redis_ok = True
    try:
        await asyncio.wait_for(app[keys.REDIS].ping(), 2)
    except (RedisError, OSError, asyncio.TimeoutError):
        redis_ok = False
    ev = app[keys.EVENTS]
    analysis = analysis_health(app)
    intake_task = app[keys.INTAKE_TASK]
    placement_running = not any(t.done() for t in app[keys.PLACEMENT_TASKS])
    placement = app[keys.PLACEMENT].health()
    recs, recs_task, exports_task = app[keys.RECORDINGS], app[keys.RECORDINGS_TASK], app[keys.EXPORTS_TASK]
    ok = redis_ok and analysis["running"] and not intake_task.done() and placement_running \
        and not placement["duplicate_id"] and not recs_task.done() and not exports_task.done()
    return web.json_response({
        "status": "ok" if ok else "degraded", "node": app[keys.SETTINGS].node, "redis": redis_ok,
        "cameras_running": len(app[keys.SUPERVISOR].workers), "events_buffered": ev.pending,
        "events_dropped": ev.dropped, "detector": app[keys.POOL].name if keys.POOL in app else None,
        "analysis": analysis,
        "bridge": await bridge_api.health(app) if redis_ok else bridge_api.health_offline(app),
        # What children send is checked and applied by the intake: a dead one is a tier that hears nothing.
        "intake": {"running": not intake_task.done(), "children": len(app[keys.INTAKE].children)},
        # Which cameras run here: leases of the tier's cameras (several gateways may share one tier's Redis).
        "placement": {"running": placement_running, **placement},
        # Retention by age runs as a task: a dead one lets recordings fill the disk up to the budget.
        # Kept exports (a player's seeks): a dead cleaner leaves them on disk up to their byte bound.
        "recordings": {"retention_running": not recs_task.done(), "sweeps": recs.sweeps, **recs.disk().to_dict(),
                       "exports": {"cleaner_running": not exports_task.done(), **recs.exports.stats().to_dict()}},
    })


def analysis_health(app: web.Application) -> dict:
    """The analysis load: asked vs analysed rate, capacity, whether frames are being shed."""
    runner = app[keys.ANALYSIS]
    st = runner.scheduler.stats()
    task = app[keys.ANALYSIS_TASK]
    return {
        "running": not task.done(), "slots": st.slots, "decode_threads": app[keys.DECODERS].threads,
        "asked_fps": st.asked_fps, "analyzed_fps": st.analyzed_fps, "capacity_fps": st.capacity_fps,
        "load": st.load, "overloaded": st.overloaded, "skipped": st.skipped,
        "cpu_ms_per_frame": runner.stages.per_frame_ms(),
        "shed_cameras": sorted(cid for cid in runner.cameras if (c := runner.scheduler.camera(cid)) and c.shed),
    }


async def describe(request: web.Request) -> web.Response:
    """What this tier serves and who the caller is (the page checks a token with it)."""
    p = request[keys.PRINCIPAL]
    return web.json_response({
        "service": "sharp-eyes gateway", "node": request.app[keys.SETTINGS].node,
        "you": {"name": p.name, "role": p.role.label, "node": p.node},
        "page": "/", "api": "/api/v1 (Authorization: Bearer <token>)",
        "endpoints": ["/api/v1/cameras", "/api/v1/cameras/{id}/snapshot.jpg", "/api/v1/cameras/{id}/live.mjpeg",
                      "/api/v1/cameras/{id}/live.mp4", "/api/v1/cameras/{id}/recordings",
                      "/api/v1/cameras/{id}/recording.mp4", "/api/v1/events/{id}/clip.mp4",
                      "/api/v1/events", "/api/v1/events/ws", "/api/v1/events/stream", "/api/v1/tokens",
                      "/api/v1/audit", "/api/v1/whoami", openapi.PATH, "/healthz"],
    })


def build_app(settings: Settings, admin_token: str) -> web.Application:
    """The gateway application for one tier node."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=8 << 20)
    app[keys.SETTINGS] = settings
    app[keys.ADMIN_TOKEN_HASH] = hash_token(admin_token)
    # Read here, before anything starts: a bad node file stops the gateway naming its lines (NodeFileError).
    nodes_file = settings.nodes_file or bundled_node_file()
    node_names = load_node_file(nodes_file)
    app.cleanup_ctx.extend([
        _redis_ctx(settings), _access_ctx(settings), _nodes_ctx(nodes_file, node_names), _detector_ctx(settings),
        _analysis_ctx(settings), _events_ctx(settings), _recordings_ctx(settings), _supervisor_ctx(settings),
        _placement_ctx(settings),
        _status_ctx(settings),
        _intake_ctx(settings), _bridge_ctx(settings),
    ])
    web_ui.setup(app)  # the control-room page at /
    app.router.add_get("/api/v1", describe)
    app.router.add_get(openapi.PATH, openapi.handle)
    app.router.add_get("/healthz", healthz)
    live.setup(app)
    recordings_api.setup(app)  # before cameras.routes: /cameras/{id}/... paths of its own
    app.router.add_routes(cameras.routes)
    app.router.add_routes(events.routes)
    app.router.add_routes(bridge_api.routes)
    app.router.add_routes(children_api.routes)
    app.router.add_routes(gateways_api.routes)
    app.router.add_routes(nodes.routes)
    app.router.add_routes(counts_api.routes)
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_routes(tokens_api.routes)
    app.router.add_routes(audit_api.routes)
    return app
