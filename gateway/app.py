"""Application assembly: one cleanup context per long-lived resource, started in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from analytics.pool import DetectorPool
from gateway import keys
from gateway.api import cameras, events
from gateway.api.auth import auth_middleware
from gateway.api.errors import error_middleware, hash_token
from gateway.camera import RunContext
from gateway.config import Settings
from gateway.embedded_redis import EmbeddedRedis
from gateway.events import EventHub, EventLog
from gateway.supervisor import StreamSupervisor
from registry.store import CameraStore

log = logging.getLogger(__name__)


async def _cancel(tasks: list[asyncio.Task], timeout: float = 5.0) -> None:
    """Cancel named background tasks and wait for them, bounded."""
    for t in tasks:
        t.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            log.warning("task %s did not stop within %.0fs", t.get_name(), timeout)


def _redis_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        embedded = None
        url = settings.redis
        if url is None:
            embedded = EmbeddedRedis(settings.data_dir / "redis")
            url = await embedded.start()
        client = aioredis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15,
            retry_on_timeout=False,
        )
        app[keys.REDIS] = client
        try:
            yield
        finally:
            await client.aclose()
            if embedded is not None:
                await embedded.stop()
    return ctx


def _detector_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if settings.model is None:
            log.info("no model given: raising motion events only (add one with --model PATH)")
            yield
            return
        d = settings.detector
        pool = await asyncio.to_thread(DetectorPool, settings.model, workers=d.workers,
                                       intra_threads=d.intra_threads, providers=d.providers)
        app[keys.POOL] = pool
        log.info("detector %s loaded: %d workers", pool.name, d.workers)
        try:
            yield
        finally:
            await asyncio.to_thread(pool.close)
    return ctx


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


def _supervisor_ctx(settings: Settings):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = CameraStore(app[keys.REDIS])
        app[keys.STORE] = store
        run_ctx = RunContext(node=settings.node, gateway_id=settings.gateway_id, ingest=settings.ingest,
                             media_dirs=tuple(p.resolve() for p in settings.media_dirs), events=app[keys.EVENTS],
                             pool=app.get(keys.POOL))
        sup = StreamSupervisor(run_ctx)
        app[keys.SUPERVISOR] = sup

        async def load() -> None:
            delay = 0.5
            while True:
                try:
                    n = await sup.load(store)
                    log.info("started %d cameras from the catalog", n)
                    return
                except (RedisError, OSError) as e:
                    log.warning("catalog not readable yet (%s); retrying", type(e).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)

        loader = asyncio.create_task(load(), name="supervisor:load")
        try:
            yield
        finally:
            await _cancel([loader])
            await sup.stop_all(timeout=10)
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
    return web.json_response({
        "status": "ok" if redis_ok else "degraded", "node": app[keys.SETTINGS].node, "redis": redis_ok,
        "cameras_running": len(app[keys.SUPERVISOR].workers), "events_buffered": ev.pending,
        "events_dropped": ev.dropped, "detector": app[keys.POOL].name if keys.POOL in app else None,
    })


async def index(request: web.Request) -> web.Response:
    """What this address serves (open: no catalog data); the control-room page will live here."""
    node = request.app[keys.SETTINGS].node
    return web.json_response({
        "service": "sharp-eyes gateway", "node": node,
        "api": "/api/v1 (Authorization: Bearer <token>)",
        "endpoints": ["/api/v1/cameras", "/api/v1/events", "/api/v1/events/ws", "/api/v1/events/stream",
                      "/healthz"],
    })


def build_app(settings: Settings, admin_token: str) -> web.Application:
    """The gateway application for one tier node."""
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=8 << 20)
    app[keys.SETTINGS] = settings
    app[keys.ADMIN_TOKEN_HASH] = hash_token(admin_token)
    app.cleanup_ctx.extend([
        _redis_ctx(settings), _detector_ctx(settings), _events_ctx(settings), _supervisor_ctx(settings),
    ])
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_routes(cameras.routes)
    app.router.add_routes(events.routes)
    return app
