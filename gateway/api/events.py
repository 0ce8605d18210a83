"""Events over HTTP: history, WebSocket and Server-Sent Events subscriptions, snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response
from redis.exceptions import RedisError

from analytics.events import EVENT_TYPES
from gateway import keys
from gateway.api.errors import ApiError
from gateway.events import EventFilter, EventIdError, parse_csv_set, parse_event_id
from registry.ids import CameraIdError, validate_camera_id
from tiers.nodes import NodeCodeError, normalize_node

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


def parse_filter(request: web.Request) -> EventFilter:
    """Filters shared by history, WebSocket and SSE; a bad value is a 400 naming it."""
    q = request.query
    node = camera = None
    if q.get("node"):
        try:
            node = normalize_node(q["node"])
        except NodeCodeError as e:
            raise ApiError(400, f"node: {e}") from None
    if q.get("camera"):
        try:
            camera = validate_camera_id(q["camera"])
        except CameraIdError as e:
            raise ApiError(400, f"camera: {e}") from None
    types = parse_csv_set(q.getall("type", []))
    if types and not types <= set(EVENT_TYPES):
        raise ApiError(400, f"type must be among {list(EVENT_TYPES)}")
    labels = parse_csv_set(q.getall("label", []))
    min_score = None
    if q.get("min_score"):
        try:
            min_score = float(q["min_score"])
        except ValueError:
            raise ApiError(400, "min_score must be a number") from None
        if not 0 <= min_score <= 1:
            raise ApiError(400, "min_score must be between 0 and 1")
    return EventFilter(node=node, camera=camera, types=types, labels=labels, min_score=min_score)


def _entry(value: str, what: str) -> str:
    try:
        return parse_event_id(value)[1]
    except EventIdError as e:
        raise ApiError(400, f"{what}: {e}") from None


def parse_since(request: web.Request) -> str | None:
    """Resume point: ?since=<event id> or the SSE Last-Event-ID header."""
    value = request.query.get("since") or request.headers.get("Last-Event-ID")
    return _entry(value, "since") if value else None


@routes.get("/api/v1/events")
async def history(request: web.Request) -> web.Response:
    """Past events, newest first, with the subscription filters; `before` pages back, `since` bounds below."""
    flt = parse_filter(request)
    before = request.query.get("before")
    before_entry = _entry(before, "before") if before else None
    since = request.query.get("since")
    since_entry = _entry(since, "since") if since else None  # only events after it
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "limit must be between 1 and 1000")
    log_ = request.app[keys.EVENTS]
    events, cursor = await log_.history(flt, before=before_entry, after=since_entry, limit=limit)
    node = request.app[keys.SETTINGS].node
    return web.json_response({"events": [e.to_dict() for e in events],
                              "next_before": f"{node}-{cursor}" if cursor else None})


async def _race(pump, watch) -> None:
    """Run the sender until it ends or the client goes away, then cancel the other."""
    tasks = {asyncio.create_task(pump, name="subscriber:send"), asyncio.create_task(watch, name="subscriber:watch")}
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
    since = parse_since(request)
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

    await _race(pump(), watch())
    await ws.close()
    return ws


@routes.get("/api/v1/events/stream")
async def subscribe_sse(request: web.Request) -> web.StreamResponse:
    """Live events as Server-Sent Events; honours Last-Event-ID."""
    flt = parse_filter(request)
    since = parse_since(request)
    hub = request.app[keys.HUB]
    async with sse_response(request, ping_interval=15) as resp:

        async def pump() -> None:
            async for se in hub.follow(flt, since):
                await resp.send(se.event.to_json(), id=se.event.id, event=se.event.type)

        await _race(pump(), resp.wait())
    return resp


async def _stored(request: web.Request):
    entry = _entry(request.match_info["event_id"], "event id")
    se = await request.app[keys.EVENTS].get(entry)
    if se is None or se.event.id != request.match_info["event_id"]:
        raise ApiError(404, "no such event (or it is past retention)")
    return entry, se


@routes.get("/api/v1/events/{event_id}")
async def get_event(request: web.Request) -> web.Response:
    """One event by id."""
    _, se = await _stored(request)
    return web.json_response(se.event.to_dict())


@routes.get("/api/v1/events/{event_id}/snapshot.jpg")
async def snapshot(request: web.Request) -> web.Response:
    """The JPEG kept with an event (box drawn)."""
    entry, _ = await _stored(request)
    jpeg = await request.app[keys.EVENTS].snapshot(entry)
    if jpeg is None:
        raise ApiError(404, "this event has no snapshot (or it expired)")
    return web.Response(body=jpeg, content_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400"})


