"""The gateways sharing this tier's Redis: who they are, what they run, how loaded (operators of the tier)."""

from __future__ import annotations

from aiohttp import web

from analytics.events import iso_ms
from gateway import keys
from gateway.api.auth import require
from gateway.api.errors import AccessDenied
from tiers.access import Role

routes = web.RouteTableDef()


@routes.get("/api/v1/gateways")
async def list_gateways(request: web.Request) -> web.Response:
    """Each gateway of this tier (live ones, and those gone within a day): cameras, load, capacity, last seen."""
    p = require(request, Role.OPERATOR)
    node = request.app[keys.SETTINGS].node
    if not p.covers(node):
        raise AccessDenied(403, f"the gateways of tier {node} are shown to its own operators; the token is for "
                                f"{p.node}", why="jurisdiction", node=node)
    placement = request.app[keys.PLACEMENT]
    records, live = await placement.membership.records()
    out = []
    for g in records:
        out.append({
            "id": g.id, "version": g.version, "address": g.address, "alive": g.id in live,
            "draining": g.draining, "this": g.id == placement.gateway_id, "cameras": g.cameras,
            "asked_fps": g.asked_fps, "analyzed_fps": g.analyzed_fps, "capacity_fps": g.capacity_fps,
            "load": g.load, "started_at": iso_ms(g.started_at),
            "last_seen": iso_ms(g.seen_ms / 1000) if g.seen_ms else None,
        })
    return web.json_response({"node": node, "gateways": out, "unplaced": placement.unplaced})
