"""The tier bridge over HTTP: how far behind the forwarding to the parent tier is, and the tiers below."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from gateway import keys
from gateway.api.auth import require
from tiers.access import Role
from tiers.contract import TierKeys

routes = web.RouteTableDef()


async def registered_children(app: web.Application) -> list[dict[str, Any]]:
    """The child tiers registered here (se:tiers: node, gateway, connected_at, last_seen), by node."""
    raw = await app[keys.REDIS].hgetall(TierKeys().tiers)
    out = []
    for _node, body in sorted(raw.items()):
        try:
            d = json.loads(body)
        except ValueError:
            continue
        if isinstance(d, dict):
            out.append(d)
    return out


@routes.get("/api/v1/bridge")
async def bridge_report(request: web.Request) -> web.Response:
    """Forwarding lag per stream (entries and seconds behind, last forwarded id, counts), link state,
    hop latencies, and the child tiers registered here (viewer or above)."""
    who = require(request, Role.VIEWER)
    app = request.app
    node = app[keys.SETTINGS].node
    bridge = app.get(keys.BRIDGE)
    report = await bridge.report() if bridge is not None else None
    if report is not None and not who.covers(node):
        report["uplink"] = None  # where the parent tier lives is for this tier's own staff
    children = [c for c in await registered_children(app) if who.covers(str(c.get("node", "")))]
    relay = app.get(keys.RELAY)  # streams asked of or through this tier: bytes per hop, with or without an uplink
    return web.json_response({"node": node, "uplink": report is not None, "bridge": report, "children": children,
                              "relay": relay.report() if relay is not None else None})


async def health(app: web.Application) -> dict[str, Any] | None:
    """The bridge part of /healthz: connected, and how far events lag (None without an uplink)."""
    bridge = app.get(keys.BRIDGE)
    if bridge is None:
        return None
    try:
        rep = await asyncio.wait_for(bridge.report(), 2)
    except (RedisError, OSError, asyncio.TimeoutError):
        return health_offline(app)
    ev = rep["streams"]["events"]
    return {"connected": rep["connected"], "events_behind": ev["behind"], "seconds_behind": ev["seconds_behind"]}


def health_offline(app: web.Application) -> dict[str, Any] | None:
    """The bridge part of /healthz when this tier's own Redis cannot be read."""
    bridge = app.get(keys.BRIDGE)
    if bridge is None:
        return None
    return {"connected": bridge.connected, "events_behind": None, "seconds_behind": None}
