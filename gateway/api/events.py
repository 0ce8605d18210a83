"""Events over HTTP: history, WebSocket and Server-Sent Events subscriptions, snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_sse import sse_response
from redis.exceptions import RedisError

from analytics.events import EVENT_TYPES
from gateway import keys
from gateway.api.auth import require, require_node, scope_node, until_revoked
from gateway.api.errors import PAGE_DEFAULT, PAGE_MAX, ApiError, query_int
from gateway.events import EventFilter, EventIdError, parse_csv_set
from registry.ids import CameraIdError, validate_camera_id
from tiers.access import Role

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def parse_filter(request: web.Request) -> EventFilter:
    """Filters shared by history, WebSocket and SSE (operator+); a bad value is a 400 naming it.

    The node filter is narrowed to the caller's jurisdiction: none means the token's subtree, an
    ancestor of it means the subtree too, a node outside it is a 403.
    """
    q = request.query
    node = scope_node(request, q.get("node"), Role.OPERATOR)
    camera = None
    if q.get("camera"):
        try:
            camera = validate_camera_id(q["camera"])
        except CameraIdError as e:
            raise ApiError(400, f"camera: {e}") from None
    types = parse_csv_set(q.getall("type", []))
    if types and not types <= set(EVENT_TYPES):
        raise ApiError(400, f"type must be among {list(EVENT_TYPES)}")
    labels = parse_csv_set(q.getall("label", []))
    zones = parse_csv_set(q.getall("zone", []))
    min_score = None
    if q.get("min_score"):
        try:
            min_score = float(q["min_score"])
        except ValueError:
            raise ApiError(400, "min_score must be a number") from None
        if not 0 <= min_score <= 1:
            raise ApiError(400, "min_score must be between 0 and 1")
    return EventFilter(node=node, camera=camera, types=types, labels=labels, zones=zones, min_score=min_score)


async def _resolve(request: web.Request, value: str, what: str, status: int = 400) -> str:
    """Local stream entry of an event id, own or forwarded from a tier below (400 malformed, `status` unknown)."""
    try:
        entry = await request.app[keys.EVENTS].resolve(value)
    except EventIdError as e:
        raise ApiError(400, f"{what}: {e}") from None
    if entry is None:
        raise ApiError(status, f"{what}: no event {value[:64]} here (or it is past retention)")
    return entry


async def parse_since(request: web.Request) -> str | None:
    """Resume point: ?since=<event id> or the SSE Last-Event-ID header."""
    value = request.query.get("since") or request.headers.get("Last-Event-ID")
    return await _resolve(request, value, "since") if value else None


@routes.get("/api/v1/events")
async def history(request: web.Request) -> web.Response:
    """Past events, newest first, with the subscription filters; `before` pages back, `since` bounds below."""
    flt = parse_filter(request)
    before = request.query.get("before")
    before_entry = await _resolve(request, before, "before") if before else None
    since = request.query.get("since")
    since_entry = await _resolve(request, since, "since") if since else None  # only events after it
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    log_ = request.app[keys.EVENTS]
    events, cursor = await log_.history(flt, before=before_entry, after=since_entry, limit=limit)
    node = request.app[keys.SETTINGS].node
    return web.json_response({"events": [e.to_dict() for e in events],
                              "next_before": f"{node}-{cursor}" if cursor else None})


async def _race(pump, watch, guard) -> None:
    """Run the sender until it ends, the client goes away or the token is revoked, then cancel the others."""
    tasks = {asyncio.create_task(pump, name="subscriber:send"), asyncio.create_task(watch, name="subscriber:watch"),
             asyncio.create_task(guard, name="subscriber:guard")}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RedisError):
                await t


@routes.get("/api/v1/events/ws")
async def subscribe_ws(request: web.Request) -> web.WebSocketResponse:
    """Live events over WebSocket, one JSON event per message, resumable with ?since=."""
    flt = parse_filter(request)
    since = await parse_since(request)
    hub = request.app[keys.HUB]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
    await ws.prepare(request)

    async def pump() -> None:
        async for se in hub.follow(flt, since):
            await ws.send_str(se.event.to_json())

    async def watch() -> None:
        # Clients only listen; reading is what notices a close.
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break

    revoked = asyncio.Event()

    async def guard() -> None:
        await until_revoked(request)
        revoked.set()

    await _race(pump(), watch(), guard())
    if revoked.is_set():
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"token revoked")
    else:
        await ws.close()
    return ws


@routes.get("/api/v1/events/stream")
async def subscribe_sse(request: web.Request) -> web.StreamResponse:
    """Live events as Server-Sent Events; honours Last-Event-ID."""
    flt = parse_filter(request)
    since = await parse_since(request)
    hub = request.app[keys.HUB]
    async with sse_response(request, ping_interval=15) as resp:

        async def pump() -> None:
            async for se in hub.follow(flt, since):
                await resp.send(se.event.to_json(), id=se.event.id, event=se.event.type)

        await _race(pump(), resp.wait(), until_revoked(request))
    return resp


async def _stored(request: web.Request):
    require(request, Role.OPERATOR)
    entry = await _resolve(request, request.match_info["event_id"], "event id", status=404)
    se = await request.app[keys.EVENTS].get(entry)
    missing = "no such event (or it is past retention)"
    if se is None or se.event.id != request.match_info["event_id"]:
        raise ApiError(404, missing)
    require_node(request, se.event.node, Role.OPERATOR, missing=missing)
    return entry, se


@routes.get("/api/v1/events/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    """One event by id."""
    _, se = await _stored(request)
    return web.json_response(se.event.to_dict())


@routes.get("/api/v1/events/{event_id}/snapshot.jpg")
async def snapshot(request: web.Request) -> web.Response:
    """The JPEG kept with an event (box drawn); every opening is audited."""
    entry, se = await _stored(request)
    jpeg = await request.app[keys.EVENTS].snapshot(entry)
    if jpeg is None:
        raise ApiError(404, "this event has no snapshot (or it expired)")
    request.app[keys.AUDIT].record_request(request, "snapshot.view", se.event.id, se.event.node,
                                           {"camera_id": se.event.camera_id, "type": se.event.type})
    return web.Response(body=jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})


